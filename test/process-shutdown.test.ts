import t from 'tap'
import pg from 'pg'
import { Agent, request } from 'undici'
import { eventually, startTestPostgres } from './helpers/postgres.js'
import { startServerProcess } from './helpers/process.js'

const json = { 'content-type': 'application/json' }

t.test('the whole process on SIGTERM', async (t) => {
  const db = await startTestPostgres()
  t.teardown(() => db.close())
  const env = { DATABASE_URL: db.url, SEED_EVENTS: '0', UPSTREAM_BASE_URL: '' }

  t.test('a 2-second request on a keep-alive connection completes; the process exits soon after', async (t) => {
    const server = await startServerProcess({ ...env, SHUTDOWN_GRACE_MS: '10000' })
    const agent = new Agent({ keepAliveTimeout: 600_000, keepAliveMaxTimeout: 600_000 })
    t.teardown(() => agent.close())
    await (await request(`${server.url}/health/live`, { dispatcher: agent })).body.dump()

    const pending = request(`${server.url}/handlers/external-api-call`, {
      method: 'POST',
      dispatcher: agent,
      headers: json,
      body: JSON.stringify({ path: '/json', query: { delay: '2000' } })
    })
    // The request is on its way to the upstream; the signal arrives while it waits.
    await new Promise((resolve) => setTimeout(resolve, 300))
    server.child.kill('SIGTERM')

    const res = await pending
    t.equal(res.statusCode, 200, 'the in-flight request completes')
    await res.body.dump()
    const answeredAt = performance.now()
    t.equal(await server.exit, 0, 'exit code 0')
    const afterMs = performance.now() - answeredAt
    t.ok(afterMs < 8000, `exited ${Math.round(afterMs)} ms after the answer, not after the keep-alive timeout`)
    t.equal(server.lines.at(-1)?.msg, 'shutdown complete', 'the last line')
  })

  t.test('a second signal exits at once, without waiting for the drain', async (t) => {
    // A long drain holds the first shutdown open for as long as the test could take.
    const server = await startServerProcess({ ...env, SHUTDOWN_DRAIN_MS: '60000' })
    server.child.kill('SIGINT')
    await server.waitForLog((line) => line.msg === 'shutting down')
    server.child.kill('SIGINT')

    t.equal(await server.exit, 1, 'exits at once, with 1: the shutdown was cut short')
    t.notOk(server.lines.some((line) => line.msg === 'shutdown complete'), 'it never claimed a complete shutdown')
  })

  t.test('requests past the grace get 503, their queries are cancelled, exit code 0', async (t) => {
    const server = await startServerProcess({ ...env, SHUTDOWN_GRACE_MS: '300' })
    // Hold the idempotency key's row lock, so HiBeaver's insert waits inside PostgreSQL.
    const holder = new pg.Client({ connectionString: db.url, application_name: 'hibeaver-test' })
    await holder.connect()
    t.teardown(() => holder.end())
    await holder.query('BEGIN')
    await holder.query("INSERT INTO event_batches (idempotency_key, request_hash, result) VALUES ('held', 'x', '{}')")

    const pending = request(`${server.url}/handlers/record-events`, {
      method: 'POST',
      headers: json,
      body: JSON.stringify({
        idempotencyKey: 'held',
        events: [{ occurredAt: '2026-01-01T00:00:00Z', type: 'click', source: 'web', durationMs: 1 }]
      })
    })
    await eventually(async () => (await db.active()).some((s) => s.wait_event_type === 'Lock'), 'the insert to wait')
    server.child.kill('SIGTERM')

    const res = await pending
    t.equal(res.statusCode, 503)
    t.equal((await res.body.json() as { code: string }).code, 'SHUTTING_DOWN')
    t.equal(await server.exit, 0)
    t.same(await db.active(), [], 'no query of ours is left running')
    t.equal(server.lines.at(-1)?.msg, 'shutdown complete', JSON.stringify(server.lines.slice(-4)))

    await holder.query('ROLLBACK')
    const rows = await db.query('SELECT count(*)::int AS n FROM events')
    t.equal(rows[0]?.n, 0, 'nothing was written')
  })
})
