import t from 'tap'
import dataRetrieval from '../handlers/data-retrieval.js'
import { createDatabase } from '../src/database.js'
import { createScope } from '../src/request-scope.js'
import { startApp } from './helpers/app.js'
import { eventually, startTestPostgres } from './helpers/postgres.js'
import { rejection } from './helpers/rejection.js'

// The database goes away and comes back while HiBeaver keeps running: requests fail fast with
// DATABASE_UNAVAILABLE meanwhile (not at their deadline), and are served again afterwards.

const pg = await startTestPostgres({ ownCluster: true })
t.teardown(() => pg.close())

const db = createDatabase({ connectionString: pg.url, poolMax: 2 })
t.teardown(() => db.close())

const scope = () => createScope({ budgetMs: 30_000 })

t.test('database stopped: DATABASE_UNAVAILABLE; started again: served', async (t) => {
  await db.forScope(scope()).query({ text: 'SELECT 1' })
  t.equal(db.stats().total, 1)

  await pg.stop()
  const err = await rejection(db.forScope(scope()).query({ text: 'SELECT 1' }))
  t.equal(err.code, 'DATABASE_UNAVAILABLE', 'not left to wait for its 30 s deadline')
  t.equal(err.status, 503)
  t.equal(err.retryAfter, 2)
  t.ok(err.cause instanceof Error, 'the driver\'s error kept as cause')
  t.equal((await rejection(db.ping(1000))).code, 'DATABASE_UNAVAILABLE', 'ping reports it too')
  await eventually(async () => db.stats().total === 0, 'dead connections to leave the pool')

  await pg.start()
  const { rows } = await db.forScope(scope()).query({ text: 'SELECT 2 AS two' })
  t.same(rows, [{ two: 2 }], 'served again, same adapter')
  await db.ping(1000)
})

t.test('database stopped mid-statement: DATABASE_UNAVAILABLE, no crash', async (t) => {
  const running = rejection(db.forScope(scope()).query({ text: 'SELECT pg_sleep(60)' }))
  await eventually(async () => (await pg.active()).length === 1, 'the statement to run')
  await pg.stop()
  const err = await running
  t.equal(err.code, 'DATABASE_UNAVAILABLE')
  await eventually(async () => db.stats().leased === 0 && db.stats().total === 0, 'the broken connection to go')

  await pg.start()
  const { rows } = await db.forScope(scope()).query({ text: 'SELECT 3 AS three' })
  t.same(rows, [{ three: 3 }])
})

t.test('over HTTP: 503 DATABASE_UNAVAILABLE with Retry-After, then served again without a restart', async (t) => {
  const app = await startApp({ handlers: [dataRetrieval], resources: { db } })
  t.teardown(() => app.close())
  const ask = () => fetch(`${app.url}/handlers/data-retrieval`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ query: 'event', params: { id: 1 } })
  })

  t.equal((await ask()).status, 200)
  await pg.stop()
  const down = await ask()
  t.equal(down.status, 503)
  t.equal(down.headers.get('retry-after'), '2')
  t.match(await down.json(), { code: 'DATABASE_UNAVAILABLE' })

  await pg.start()
  t.equal((await ask()).status, 200)
})
