import { once } from 'node:events'
import t from 'tap'
import { Agent, request } from 'undici'
import { shutdown } from '../src/shutdown.js'
import type { HiBeaverError } from '../src/errors.js'
import { coreHandlers, probe, releases, started } from './fixtures/core-handlers.js'
import { startApp } from './helpers/app.js'
import { getJson, postJson } from './helpers/http.js'

const headers = { 'content-type': 'application/json' }

t.test('an in-flight request on a keep-alive connection completes, and close does not wait for the socket',
  async (t) => {
    const server = await startApp({ handlers: coreHandlers })
    const agent = new Agent({ keepAliveTimeout: 600_000, keepAliveMaxTimeout: 600_000 })
    t.teardown(() => agent.close())

    // One request first, so the connection is a reused keep-alive one.
    const warm = await request(`${server.url}/health/live`, { dispatcher: agent })
    await warm.body.dump()

    const inFlight = request(`${server.url}/handlers/wait-for-release`, {
      method: 'POST', body: '{}', dispatcher: agent, headers: { ...headers, 'x-request-id': 'ka-1' }
    })
    await once(probe, 'started')
    const started = performance.now()
    const closing = shutdown(server.app, { drainMs: 0, graceMs: 30_000 })
    setTimeout(() => releases.get('ka-1')?.(), 200)

    const res = await inFlight
    t.equal(res.statusCode, 200, 'the in-flight request is answered, not reset')
    await res.body.dump()
    await closing
    const tookMs = performance.now() - started
    // Fastify's keep-alive timeout is 72 s; a close that waited for the idle socket would take that.
    t.ok(tookMs < 20_000, `closed after the request, not the keep-alive timeout (${Math.round(tookMs)} ms)`)
    t.equal(server.app.lifecycle.phase, 'closed')
  })

t.test('a response sent during shutdown closes its keep-alive connection, so the next request is not reset',
  async (t) => {
    const server = await startApp({ handlers: coreHandlers })
    const agent = new Agent({ connections: 1, keepAliveTimeout: 600_000, keepAliveMaxTimeout: 600_000 })
    t.teardown(() => agent.close())

    const inFlight = request(`${server.url}/handlers/wait-for-release`, {
      method: 'POST', body: '{}', dispatcher: agent, headers: { ...headers, 'x-request-id': 'ka-close-1' }
    })
    await started('ka-close-1')
    // It arrived while running; it is answered while closing, when idle sockets are being cut.
    const closing = shutdown(server.app, { drainMs: 0, graceMs: 30_000 })
    releases.get('ka-close-1')?.()

    const res = await inFlight
    t.equal(res.statusCode, 200)
    t.equal(res.headers.connection, 'close', 'the client is told the connection ends here')
    await res.body.dump()

    // The client opens a new connection, which the closed listener refuses; the old one, reused,
    // would have been cut as idle under the request.
    const next = await request(`${server.url}/handlers/echo`, {
      method: 'POST', body: '{"message":"a"}', dispatcher: agent, headers
    }).then(() => undefined, (err: unknown) => err as { code?: string })
    t.equal(next?.code, 'ECONNREFUSED', 'a refused new connection, not a reset')
    await closing
  })

t.test('during the drain delay readiness is 503 and new requests still succeed', async (t) => {
  const server = await startApp({ handlers: coreHandlers })
  const closing = shutdown(server.app, { drainMs: 500, graceMs: 1000 })

  const ready = await getJson(`${server.url}/health/ready`)
  t.equal(ready.status, 503)
  t.equal(ready.body.code, 'SHUTTING_DOWN')
  t.equal((await getJson(`${server.url}/health/live`)).status, 200, 'liveness stays 200')

  const work = await postJson(`${server.url}/handlers/echo`, { message: 'still here' })
  t.equal(work.status, 200)
  t.equal(work.headers.connection, 'close', 'clients are asked to reconnect elsewhere')
  await closing
})

t.test('requests longer than the grace get 503 SHUTTING_DOWN through their scopes', async (t) => {
  const server = await startApp({ handlers: coreHandlers })
  const reasons: string[] = []
  const onAborted = (_id: string, reason: HiBeaverError) => reasons.push(reason.code)
  probe.on('aborted', onAborted)
  t.teardown(() => probe.off('aborted', onAborted))

  const pending = postJson(`${server.url}/handlers/wait-for-release`, {})
  await once(probe, 'started')
  await shutdown(server.app, { drainMs: 0, graceMs: 200 })

  const res = await pending
  t.equal(res.status, 503)
  t.equal(res.body.code, 'SHUTTING_DOWN')
  t.ok(Number(res.headers['retry-after']) > 0)
  t.equal(res.headers['x-request-id'], res.body.requestId, 'with its request id')
  t.same(reasons, ['SHUTTING_DOWN'], 'the handler saw the shutting-down reason')
  const line = await server.waitForLog((l) => l.msg === 'request finished' && l.outcome === 'shutting_down')
  t.equal(line.status, 503)
})

t.test('resources close after the requests, in reverse order of start', async (t) => {
  const server = await startApp({ handlers: coreHandlers })
  const order: string[] = []
  const resource = (name: string) => ({ name, close: async () => { order.push(name) } })

  await shutdown(server.app, {
    drainMs: 0,
    graceMs: 100,
    resources: [resource('postgres'), resource('database'), resource('cpu'), resource('upstream')]
  })
  t.same(order, ['upstream', 'cpu', 'database', 'postgres'])
  await shutdown(server.app, { drainMs: 0, graceMs: 100 })
  t.pass('a second shutdown is a no-op')
})
