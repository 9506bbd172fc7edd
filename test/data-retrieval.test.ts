import { subscribe, unsubscribe } from 'node:diagnostics_channel'
import t, { type Test } from 'tap'
import dataRetrieval from '../handlers/data-retrieval.js'
import { createDatabase, type Database } from '../src/database.js'
import type { CancelEvent } from '../src/db-lease.js'
import { startApp, type StartedApp } from './helpers/app.js'
import { eventually, startTestPostgres } from './helpers/postgres.js'

const pgServer = await startTestPostgres({ seedEvents: 300_000 })
t.teardown(() => pgServer.close())

const JANUARY = { from: '2025-01-01T00:00:00Z', to: '2025-02-01T00:00:00Z' }

async function serve (t: Test, poolMax = 2): Promise<{ app: StartedApp, db: Database }> {
  const db = createDatabase({ connectionString: pgServer.url, poolMax })
  const app = await startApp({ handlers: [dataRetrieval], resources: { db } })
  t.teardown(async () => {
    await app.close()
    await db.close()
  })
  return { app, db }
}

interface Answer {
  status: number
  body: { data?: unknown, code?: string, [key: string]: unknown }
  headers: Headers
}

async function post (
  app: StartedApp,
  body: unknown,
  headers: Record<string, string> = {},
  signal?: AbortSignal
): Promise<Answer> {
  const response = await fetch(`${app.url}/handlers/data-retrieval`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify(body),
    ...(signal === undefined ? {} : { signal })
  })
  return { status: response.status, body: await response.json() as Answer['body'], headers: response.headers }
}

function collectCancels (t: Test): CancelEvent[] {
  const seen: CancelEvent[] = []
  const listener = (message: unknown) => { seen.push(message as CancelEvent) }
  subscribe('hibeaver:db:cancel', listener)
  t.teardown(() => { unsubscribe('hibeaver:db:cancel', listener) })
  return seen
}

async function lockEvents (t: Test): Promise<() => Promise<void>> {
  const release = await pgServer.lockEvents()
  t.teardown(release)
  return release
}

t.test('event: one by id, or null', async (t) => {
  const { app } = await serve(t)
  const found = await post(app, { query: 'event', params: { id: 42 } })
  t.equal(found.status, 200)
  t.match(found.body, {
    data: { event: { id: 42, type: String, source: /^source-\d\d$/, durationMs: Number, occurredAt: /^2025-01-/, payload: { seq: 42 } } }
  })
  const missing = await post(app, { query: 'event', params: { id: 999_999_999 } })
  t.same(missing.body, { data: { event: null } })
})

t.test('event-counts: counts by type over a window', async (t) => {
  const { app } = await serve(t)
  const window = { from: '2025-01-10T00:00:00Z', to: '2025-01-12T00:00:00Z' }
  const answer = await post(app, { query: 'event-counts', params: window })
  t.equal(answer.status, 200)
  const expected = await pgServer.query<{ type: string, count: string }>(
    'SELECT type, count(*) AS count FROM events WHERE occurred_at >= $1 AND occurred_at < $2 ' +
      'GROUP BY type ORDER BY type',
    [window.from, window.to])
  t.same(answer.body.data, { ...window, counts: expected.map((row) => ({ type: row.type, count: Number(row.count) })) })

  const filtered = await post(app, { query: 'event-counts', params: { ...window, types: ['purchase'] } })
  t.match(filtered.body.data, { counts: [{ type: 'purchase', count: Number }] })
  t.equal((filtered.body.data as { counts: unknown[] }).counts.length, 1)
})

t.test('source-percentiles: p50, p95, p99 per source', async (t) => {
  const { app } = await serve(t)
  const answer = await post(app, {
    query: 'source-percentiles',
    params: { ...JANUARY, sources: ['source-01', 'source-02'] }
  })
  t.equal(answer.status, 200)
  const sources = (answer.body.data as { sources: Array<Record<string, number>> }).sources
  for (const source of sources) {
    for (const p of [source.p50, source.p95, source.p99] as number[]) {
      t.equal(p, Math.round(p * 1000) / 1000, 'percentiles to the microsecond, without float noise')
    }
  }
  t.match(sources, [
    { source: 'source-01', count: Number, p50: Number, p95: Number, p99: Number },
    { source: 'source-02', count: Number, p50: Number, p95: Number, p99: Number }
  ])
  for (const row of sources) {
    t.ok((row.p50 as number) <= (row.p95 as number) && (row.p95 as number) <= (row.p99 as number))
  }
})

t.test('unknown query names and bad params: 400 INVALID_INPUT', async (t) => {
  const { app, db } = await serve(t)
  const bad = [
    { query: 'drop-everything', params: {} },
    { query: 'event', params: { id: 'DROP TABLE events' } },
    { query: 'event', params: { id: 1, sql: 'SELECT 1' } },
    { query: 'event', params: { id: -1 } },
    { query: 'event-counts', params: { from: '2025-01-02T00:00:00Z', to: '2025-01-01T00:00:00Z' } },
    { query: 'event-counts', params: { from: 'yesterday', to: '2025-01-01T00:00:00Z' } },
    { query: 'source-percentiles', params: { ...JANUARY, sources: [] } },
    { query: 'event' },
    { sql: 'SELECT * FROM events' }
  ]
  for (const body of bad) {
    const answer = await post(app, body)
    t.equal(answer.status, 400, JSON.stringify(body))
    t.equal(answer.body.code, 'INVALID_INPUT')
  }
  t.equal(db.stats().total, 0, 'none of them reached the database')

  const notAnInstant = await post(app, {
    query: 'event-counts',
    params: { from: 'yesterday', to: '2025-01-01T00:00:00Z' }
  })
  t.same((notAnInstant.body.errors as Array<{ path: string }>).map((e) => e.path), ['params.from'],
    'a bound that is not an instant is the one error, not also an order complaint')
})

t.test('deadline during a heavy report: 504, and the statement cancelled on the server', async (t) => {
  const { app, db } = await serve(t)
  // A warm pool: the deadline should land on the report, not on opening a connection.
  await post(app, { query: 'event', params: { id: 1 } })
  const cancels = collectCancels(t)
  // The whole table, every source: hundreds of milliseconds of sorting on 300k rows.
  const answer = await post(app, { query: 'source-percentiles', params: JANUARY }, { 'x-request-timeout-ms': '60' })
  t.equal(answer.status, 504)
  t.equal(answer.body.code, 'DEADLINE_EXCEEDED')
  await eventually(async () => cancels.length === 1, 'the cancel to be dealt with')
  t.match(cancels, [{ reason: 'DEADLINE_EXCEEDED', delivered: true }], 'cancelled mid-statement')
  t.same(await pgServer.active(), [], 'nothing of ours runs on the server')
  await eventually(async () => db.stats().leased === 0, 'the connection to come back')
  t.equal(db.stats().total, 1, 'and to stay in the pool')
})

t.test('client disconnects mid-query: cancelled on the server, pool steady, connection reused', async (t) => {
  const { app, db } = await serve(t, 2)
  await post(app, { query: 'event', params: { id: 1 } })
  const before = (await pgServer.sessions()).map((session) => session.pid)
  t.equal(before.length, 1)

  const release = await lockEvents(t)
  const cancels = collectCancels(t)
  const client = new AbortController()
  const request = post(app, { query: 'event-counts', params: JANUARY }, {}, client.signal).catch((err: unknown) => err)
  await eventually(async () => (await pgServer.active()).some((s) => s.wait_event_type === 'Lock'), 'the query to wait')
  client.abort()
  t.match(await request, { name: 'AbortError' })

  await eventually(async () => (await pgServer.active()).length === 0, 'the query to be gone from pg_stat_activity')
  await app.waitForLog((line) => line.msg === 'request finished' && line.outcome === 'client_closed')
  await release()
  await eventually(async () => db.stats().leased === 0, 'the connection to come back')
  t.match(cancels, [{ reason: 'CLIENT_CLOSED', delivered: true }])
  t.same(db.stats(), { total: 1, idle: 1, waiting: 0, leased: 0 }, 'pool size steady')

  const again = await post(app, { query: 'event', params: { id: 2 } })
  t.equal(again.status, 200)
  t.same((await pgServer.sessions()).map((session) => session.pid), before, 'the same connection served it')
})

t.test('pool exhausted: a waiting request gets its 504 within its budget, never hangs', async (t) => {
  const { app, db } = await serve(t, 1)
  const release = await lockEvents(t)
  const holder = new AbortController()
  const holding = post(app, { query: 'event', params: { id: 1 } }, {}, holder.signal).catch((err: unknown) => err)
  await eventually(async () => (await pgServer.active()).length === 1, 'the only connection to be busy')

  const started = performance.now()
  const waiting = await post(app, { query: 'event', params: { id: 2 } }, { 'x-request-timeout-ms': '200' })
  t.equal(waiting.status, 504)
  t.equal(waiting.body.code, 'DEADLINE_EXCEEDED')
  t.ok(performance.now() - started >= 190, 'it waited for its budget')

  holder.abort()
  await holding
  await release()
  await eventually(async () => db.stats().idle === 1 && db.stats().waiting === 0, 'the pool to recover')
  t.equal((await post(app, { query: 'event', params: { id: 3 } })).status, 200)
})

t.test('values the schema lets through but PostgreSQL refuses are 400, not 500', async (t) => {
  const { app } = await serve(t)
  const refused: Array<[string, unknown]> = [
    ['year 0000', { query: 'event-counts', params: { from: '0000-01-01T00:00:00Z', to: '2025-01-01T00:00:00Z' } }],
    ['a NUL in a filter', { query: 'event-counts', params: { ...JANUARY, types: ['\u0000'] } }],
    ['an offset PostgreSQL cannot hold', {
      query: 'source-percentiles', params: { from: '2025-01-01T00:00:00+23:59', to: '2025-02-01T00:00:00Z' }
    }]
  ]
  for (const [name, body] of refused) {
    const answer = await post(app, body)
    t.equal(answer.status, 400, name)
    t.equal(answer.body.code, 'INVALID_INPUT', name)
  }
  const line = await app.waitForLog((l) => l.msg === 'request finished' && l.status === 400)
  t.equal(line.level, 30, 'logged as a client error, not an internal one')
})
