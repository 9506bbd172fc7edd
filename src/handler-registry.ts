import { readdir } from 'node:fs/promises'
import { pathToFileURL } from 'node:url'
import { join } from 'node:path'
import { HANDLER_NAME, type AnyHandler } from './handler.js'

const MODULE = /^(?!.*\.d\.ts$).*\.(?:ts|js)$/

function isHandler (value: unknown): value is AnyHandler {
  if (typeof value !== 'object' || value === null) return false
  const candidate = value as Partial<AnyHandler>
  return typeof candidate.name === 'string' && HANDLER_NAME.test(candidate.name) &&
    typeof candidate.process === 'function' &&
    typeof (candidate.input as { safeParse?: unknown } | undefined)?.safeParse === 'function'
}

// Every module in `dir` whose default export is a handler definition. Modules without one
// (a handler's worker-side code, shared helpers) are skipped; two handlers with one name are
// a start-up error, not a silent override.
export async function loadHandlers (dir: string): Promise<AnyHandler[]> {
  const files = (await readdir(dir)).filter((file) => MODULE.test(file)).sort()
  const handlers: AnyHandler[] = []
  const seen = new Map<string, string>()

  for (const file of files) {
    const mod = await import(pathToFileURL(join(dir, file)).href) as { default?: unknown }
    if (!isHandler(mod.default)) continue

    const previous = seen.get(mod.default.name)
    if (previous !== undefined) {
      throw new Error(`handlers ${previous} and ${file} are both named "${mod.default.name}"`)
    }
    seen.set(mod.default.name, file)
    handlers.push(mod.default)
  }
  return handlers
}
