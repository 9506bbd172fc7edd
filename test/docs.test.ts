import { readFile } from 'node:fs/promises'
import t from 'tap'
import { ENV_VARIABLES } from '../src/config.js'
import { catalogue } from '../src/errors.js'

t.test('docs/errors.md has a row for every error code', async (t) => {
  const doc = await readFile(new URL('../docs/errors.md', import.meta.url), 'utf8')
  for (const [code, { status }] of Object.entries(catalogue)) {
    t.match(doc, new RegExp(`\\| \`${code}\` \\| \\(?${status}`), code)
  }
})

t.test('.env.example lists every variable', async (t) => {
  const example = await readFile(new URL('../.env.example', import.meta.url), 'utf8')
  const listed = [...example.matchAll(/^([A-Z][A-Z0-9_]+)=/gm)].map((m) => m[1])
  t.same([...listed].sort(), [...ENV_VARIABLES].sort())
})
