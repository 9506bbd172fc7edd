import pg from 'pg'
import t, { type Test } from 'tap'
import recordEvents from '../handlers/record-events.js'
import { createDatabase, type Database } from '../src/database.js'
import { startApp, type StartedApp } from './helpers/app.js'
import { eventually, startTestPostgres } from './helpers/postgres.js'

const pgServer = await startTestPostgres()
t.teardown(() => pgServer.close())

async function serve (t: Test, poolMax = 2): Promise<{ app: StartedApp, db: Database }> {
  const db = createDatabase({ connectionString: pgServer.url, poolMax })
  const app = await startApp({ handlers: [recordEvents], resources: { db } })
  t.teardown(async () => {
    await app.close()
    await db.close()
  })
  return { app, db }
}

interface Answer {
  status: number
  body: { data?: Record<string, unknown>, code?: string }
}

async function post (app: StartedApp, body: unknown, signal?: AbortSignal): Promise<Answer> {
  const response = await fetch(`${app.url}/handlers/record-events`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
    ...(signal === undefined ? {} : { signal })
  })
  return { status: response.status, body: await response.json() as Answer['body'] }
}

let batches = 0
function batch (size: number, source = 'test') {
  const key = `batch-${process.pid}-${++batches}`
  const events = Array.from({ length: size }, (_, i) => ({
    occurredAt: new Date(Date.UTC(2025, 5, 1, 0, 0, i)).toISOString(),
    type: 'click',
    source,
    durationMs: i,
    payload: { key, i }
  }))
  return { idempotencyKey: key, events }
}

async function stored (key: string): Promise<{ events: number, batches: number }> {
  const [row] = await pgServer.query<{ events: string, batches: string }>(
    `SELECT (SELECT count(*) FROM events WHERE payload->>'key' = $1) AS events,
            (SELECT count(*) FROM event_batches WHERE idempotency_key = $1) AS batches`, [key])
  return { events: Number(row?.events), batches: Number(row?.batches) }
}

t.test('a batch is stored in one transaction and the answer says what was written', async (t) => {
  const { app } = await serve(t)
  const body = batch(3)
  const answer = await post(app, body)
  t.equal(answer.status, 200)
  t.match(answer.body.data, {
    idempotencyKey: body.idempotencyKey,
    recorded: 3,
    ids: [Number, Number, Number],
    replayed: false
  })
  t.same(await stored(body.idempotencyKey), { events: 3, batches: 1 })
  const ids = (answer.body.data as { ids: number[] }).ids
  const rows = await pgServer.query<{ duration_ms: number }>(
    'SELECT duration_ms FROM events WHERE id = ANY($1) ORDER BY id',
    [ids]
  )
  t.same(rows.map((row) => row.duration_ms), [0, 1, 2], 'ids in the order the events were given')
})

t.test('the same key again writes nothing and answers with the first result', async (t) => {
  const { app } = await serve(t)
  const body = batch(2)
  const first = await post(app, body)
  const second = await post(app, body)
  t.equal(second.status, 200)
  t.same(second.body.data, { ...first.body.data, replayed: true })
  t.same(await stored(body.idempotencyKey), { events: 2, batches: 1 })

  const other = await post(app, { ...batch(1), idempotencyKey: body.idempotencyKey })
  t.equal(other.status, 422, 'the key with a different batch is refused')
  t.equal(other.body.code, 'IDEMPOTENCY_KEY_REUSED', 'with a code of its own, apart from schema errors')
  t.same(await stored(body.idempotencyKey), { events: 2, batches: 1 })
})

t.test('a retry spelled differently is the same batch: key order, timestamp form', async (t) => {
  const { app } = await serve(t)
  const key = `spelling-${process.pid}`
  const first = await post(app, {
    idempotencyKey: key,
    events: [{
      occurredAt: '2025-06-01T12:00:00Z',
      type: 'click',
      source: 'test',
      durationMs: 5,
      payload: { key, nested: { a: 1, b: [1, { y: 2, x: 1 }] } }
    }]
  })
  t.match(first.body.data, { recorded: 1, replayed: false })

  const retries = [
    ['2025-06-01T12:00:00.000Z', { nested: { b: [1, { x: 1, y: 2 }], a: 1 }, key }],
    ['2025-06-01T14:00:00+02:00', { key, nested: { a: 1, b: [1, { y: 2, x: 1 }] } }]
  ] as const
  for (const [occurredAt, payload] of retries) {
    const retried = await post(app, {
      events: [{ payload, durationMs: 5, source: 'test', type: 'click', occurredAt }],
      idempotencyKey: key
    })
    t.equal(retried.status, 200, `${occurredAt}, payload keys reordered`)
    t.same(retried.body.data, { ...first.body.data, replayed: true })
  }

  const later = await post(app, {
    idempotencyKey: key,
    events: [{
      occurredAt: '2025-06-01T12:00:00.0001Z',
      type: 'click',
      source: 'test',
      durationMs: 5,
      payload: { key, nested: { a: 1, b: [1, { y: 2, x: 1 }] } }
    }]
  })
  t.equal(later.status, 422, 'another instant is another batch')
  t.same(await stored(key), { events: 1, batches: 1 })
})

t.test('concurrent requests with one key: one copy', async (t) => {
  const { app } = await serve(t, 4)
  const body = batch(5)
  const answers = await Promise.all(Array.from({ length: 4 }, () => post(app, body)))
  t.same(answers.map((answer) => answer.status), [200, 200, 200, 200])
  t.equal(answers.filter((answer) => answer.body.data?.replayed === false).length, 1, 'one of them wrote')
  t.same(await stored(body.idempotencyKey), { events: 5, batches: 1 })
})

t.test('aborted before COMMIT: nothing written; retried with the same key: one copy', async (t) => {
  const { app, db } = await serve(t)
  const body = batch(4)

  // An exclusive lock on events holds the INSERT inside the transaction, before COMMIT.
  const locker = new pg.Client({ connectionString: pgServer.url, application_name: 'hibeaver-test' })
  await locker.connect()
  t.teardown(() => locker.end())
  await locker.query('BEGIN')
  await locker.query('LOCK TABLE events IN EXCLUSIVE MODE')

  const client = new AbortController()
  const request = post(app, body, client.signal).catch((err: unknown) => err)
  await eventually(
    async () => (await pgServer.active()).some((s) => s.wait_event_type === 'Lock'),
    'the INSERT to wait'
  )
  client.abort()
  t.match(await request, { name: 'AbortError' })
  await eventually(async () => (await pgServer.active()).length === 0, 'the INSERT to be cancelled')
  await locker.query('COMMIT')
  await eventually(async () => db.stats().leased === 0, 'the connection to settle')
  t.same(await stored(body.idempotencyKey), { events: 0, batches: 0 }, 'rolled back')

  const retried = await post(app, body)
  t.match(retried.body.data, { recorded: 4, replayed: false })
  const again = await post(app, body)
  t.match(again.body.data, { recorded: 4, replayed: true })
  t.same(await stored(body.idempotencyKey), { events: 4, batches: 1 }, 'one copy')
})

t.test('bad batches: 400 INVALID_INPUT', async (t) => {
  const { app, db } = await serve(t)
  const good = batch(1)
  const bad = [
    { events: good.events },
    { ...good, idempotencyKey: 'has spaces' },
    { ...good, events: [] },
    batch(1001),
    { ...good, events: [{ ...good.events[0], durationMs: -1 }] },
    { ...good, events: [{ ...good.events[0], occurredAt: 'now' }] },
    { ...good, events: [{ ...good.events[0], id: 7 }] },
    { ...good, events: [{ ...good.events[0], payload: { list: Array.from({ length: 3000 }, (_, i) => i) } }] }
  ]
  for (const body of bad) {
    const answer = await post(app, body)
    t.equal(answer.status, 400)
    t.equal(answer.body.code, 'INVALID_INPUT')
  }
  // Too deep for JSON.stringify on this side too, so the body is written out by hand.
  const deep = JSON.stringify({ ...good, events: [{ ...good.events[0], payload: { a: 'DEEP' } }] })
    .replace('"DEEP"', '['.repeat(5000) + ']'.repeat(5000))
  const response = await fetch(`${app.url}/handlers/record-events`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: deep
  })
  t.equal(response.status, 400, 'a payload 5,000 levels deep')
  t.equal((await response.json() as { code: string }).code, 'INVALID_INPUT')
  t.equal(db.stats().total, 0, 'none of them reached the database')
})

t.test('values PostgreSQL refuses are 400 and write nothing', async (t) => {
  const { app } = await serve(t)
  const cases = [
    { name: 'NUL in a label', event: { type: 'a\u0000b' } },
    { name: 'NUL in the payload', event: { payload: { a: '\u0000' } } },
    { name: 'a lone surrogate', event: { payload: { a: '\ud800' } } },
    { name: 'an offset PostgreSQL cannot hold', event: { occurredAt: '2025-01-01T00:00:00+23:59' } }
  ]
  for (const { name, event } of cases) {
    const body = batch(1)
    const answer = await post(app, { ...body, events: [{ ...body.events[0], ...event }] })
    t.equal(answer.status, 400, name)
    t.equal(answer.body.code, 'INVALID_INPUT', name)
    t.same(await stored(body.idempotencyKey), { events: 0, batches: 0 }, `${name}: nothing written`)
  }
})

t.test('a deadline that passes during COMMIT still answers with what was written', async (t) => {
  const { app } = await serve(t)
  // A deferred trigger makes COMMIT itself take 600 ms, for this test's rows only.
  await pgServer.query(`CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS
    $$ BEGIN IF NEW.source = 'slow-commit' THEN PERFORM pg_sleep(0.6); END IF; RETURN NULL; END $$`)
  await pgServer.query(`CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT ON events
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION slow_commit()`)
  t.teardown(() => pgServer.query('DROP TRIGGER slow_commit ON events; DROP FUNCTION slow_commit()'))

  const body = batch(1, 'slow-commit')
  const response = await fetch(`${app.url}/handlers/record-events`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-request-timeout-ms': '300' },
    body: JSON.stringify(body)
  })
  const answer = await response.json() as Answer['body']
  t.equal(response.status, 200, 'not 504: the COMMIT had been sent')
  t.match(answer.data, { idempotencyKey: body.idempotencyKey, recorded: 1, replayed: false })
  t.same(await stored(body.idempotencyKey), { events: 1, batches: 1 })
  const line = await app.waitForLog((l) =>
    l.msg === 'request finished' && l.handler === 'record-events' && l.budgetMs === 300)
  t.equal(line.outcome, 'ok')
})
