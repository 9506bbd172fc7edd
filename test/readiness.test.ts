import t, { type Test } from 'tap'
import dataRetrieval from '../handlers/data-retrieval.js'
import { createDatabase, databaseReadiness, type Database } from '../src/database.js'
import { HiBeaverError } from '../src/errors.js'
import { Readiness } from '../src/readiness.js'
import { startApp, type StartedApp } from './helpers/app.js'
import { getJson, postJson } from './helpers/http.js'
import { eventually, freePort, startTestPostgres } from './helpers/postgres.js'

const pgServer = await startTestPostgres({ seedEvents: 100 })
t.teardown(() => pgServer.close())

async function serve (t: Test, connectionString: string): Promise<{ app: StartedApp, db: Database }> {
  const db = createDatabase({ connectionString, poolMax: 1 })
  const app = await startApp({ handlers: [dataRetrieval], resources: { db }, readiness: [databaseReadiness(db, 1000)] })
  t.teardown(async () => {
    await app.close()
    await db.close()
  })
  return { app, db }
}

async function lockEvents (t: Test): Promise<() => Promise<void>> {
  const release = await pgServer.lockEvents()
  t.teardown(release)
  return release
}

t.test('readiness answers 200 while slow queries hold every pool connection', async (t) => {
  const { app, db } = await serve(t, pgServer.url)
  const release = await lockEvents(t)
  const holding = postJson(`${app.url}/handlers/data-retrieval`, { query: 'event', params: { id: 1 } })
  await eventually(async () => (await pgServer.active()).length === 1, 'the only connection to be busy')
  t.same(db.stats(), { total: 1, idle: 0, waiting: 0, leased: 1 }, 'the pool is exhausted')

  const ready = await getJson(`${app.url}/health/ready`)
  t.equal(ready.status, 200)
  t.same(ready.body, { status: 'ok' })
  t.equal((await pgServer.active()).length, 1, 'answered while the application statement still runs')

  await release()
  t.equal((await holding).status, 200)
})

t.test('an unreachable database: readiness 503 DATABASE_UNAVAILABLE with Retry-After, liveness 200', async (t) => {
  const nobody = new URL(pgServer.url)
  nobody.port = String(await freePort())
  const { app } = await serve(t, nobody.toString())

  const ready = await getJson(`${app.url}/health/ready`)
  t.equal(ready.status, 503)
  t.equal(ready.body.code, 'DATABASE_UNAVAILABLE')
  t.ok(Number(ready.headers['retry-after']) >= 1, 'Retry-After is set')
  t.equal((await getJson(`${app.url}/health`)).body.code, 'DATABASE_UNAVAILABLE', '/health is readiness')
  t.equal((await getJson(`${app.url}/health/live`)).status, 200, 'liveness never asks the database')
  const refused = app.logs.find((line) => line.msg === 'request finished' && line.requestId === ready.body.requestId)
  t.match(refused, { level: 30, status: 503, code: 'DATABASE_UNAVAILABLE' }, 'a refused probe has its line, at info')
  const notReady = app.logs.filter((line) => line.msg === 'not ready')
  t.equal(notReady.length, 1, 'one line when the answer turns, not one a probe')
  t.match(notReady[0], { level: 40, code: 'DATABASE_UNAVAILABLE', err: { message: String } }, 'with the cause')
})

t.test('a check that ignores its signal is answered at the timeout, with the check\'s code', async (t) => {
  let started = 0
  const readiness = new Readiness([{
    name: 'stuck',
    code: 'DATABASE_UNAVAILABLE',
    check: () => {
      started++
      return new Promise<void>(() => {})
    }
  }], { timeoutMs: 30, cacheMs: 60_000 })

  const failure = await readiness.failure()
  t.type(failure, HiBeaverError)
  t.equal(failure?.code, 'DATABASE_UNAVAILABLE')
  t.match(failure?.message, /did not answer within 30 ms/)
  t.equal(started, 1)
})

t.test('concurrent probes share one check, and the answer is cached', async (t) => {
  let started = 0
  let pass: () => void = () => {}
  const readiness = new Readiness([{
    name: 'counted',
    check: () => {
      started++
      return new Promise<void>((resolve) => { pass = resolve })
    }
  }], { timeoutMs: 5000, cacheMs: 60_000 })

  const probes = Array.from({ length: 50 }, () => readiness.failure())
  pass()
  t.same(await Promise.all(probes), Array.from({ length: 50 }, () => undefined), 'all fifty are ready')
  t.equal(await readiness.failure(), undefined)
  t.equal(started, 1, 'one check served every probe')
})

t.test('a failing check is a 503 OVERLOADED unless it names its code', async (t) => {
  const readiness = new Readiness([{ name: 'broken', check: () => Promise.reject(new Error('boom')) }])
  const failure = await readiness.failure()
  t.equal(failure?.code, 'OVERLOADED')
  t.match(failure?.message, /broken is not ready/)
  t.match(failure?.cause, { message: 'boom' })
})
