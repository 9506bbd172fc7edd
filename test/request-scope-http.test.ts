import { once } from 'node:events'
import { connect } from 'node:net'
import t from 'tap'
import { coreHandlers, probe, releases } from './fixtures/core-handlers.js'
import { startApp, type LogLine } from './helpers/app.js'
import { openPost, postJson } from './helpers/http.js'
import type { HiBeaverError } from '../src/errors.js'

const finished = (requestId: string) => (line: LogLine) =>
  line.msg === 'request finished' && line.requestId === requestId

t.test('a POST with a body whose client waits is never aborted', async (t) => {
  const server = await startApp({ handlers: coreHandlers })
  t.teardown(() => server.close())

  const requestId = 'waiting-client-1'
  const aborted: HiBeaverError[] = []
  const onAborted = (id: string, reason: HiBeaverError) => { if (id === requestId) aborted.push(reason) }
  probe.on('aborted', onAborted)
  t.teardown(() => probe.off('aborted', onAborted))

  const { response } = openPost(`${server.url}/handlers/wait-for-release`, { payload: 'x'.repeat(4096) }, {
    'x-request-id': requestId
  })
  await once(probe, 'started')
  // Node closes the request stream once the body is read; Fastify's own request.signal aborts
  // about 20 ms later. Give that a wide margin to happen before releasing the handler.
  await new Promise((resolve) => setTimeout(resolve, 300))
  t.same(aborted, [], 'the signal did not abort while the client waited')
  releases.get(requestId)?.()

  t.equal(await response, 200, 'the client gets its answer')
  const line = await server.waitForLog(finished(requestId))
  t.equal(line.outcome, 'ok')
  // Once answered, the request is over, and so is anything it left listening on its signal.
  t.same(aborted.map((reason) => reason.code), ['REQUEST_FINISHED'], 'it ended with the request, not before')
})

t.test('a client that destroys its socket mid-handler aborts the scope as CLIENT_CLOSED', async (t) => {
  const server = await startApp({ handlers: coreHandlers })
  t.teardown(() => server.close())

  const requestId = 'leaving-client-1'
  const { req } = openPost(`${server.url}/handlers/wait-for-release`, {}, { 'x-request-id': requestId })
  const [startedId] = await once(probe, 'started') as [string]
  t.equal(startedId, requestId)

  const abortedEvent = once(probe, 'aborted') as Promise<[string, HiBeaverError]>
  const destroyedAt = performance.now()
  req.destroy()
  const [id, reason] = await abortedEvent
  const latencyMs = performance.now() - destroyedAt
  t.equal(id, requestId)
  t.equal(reason.code, 'CLIENT_CLOSED')
  t.ok(latencyMs < 1000, `aborted promptly (${latencyMs.toFixed(1)} ms)`)

  const line = await server.waitForLog(finished(requestId))
  t.equal(line.outcome, 'client_closed')
  t.equal(line.status, 499)
  t.equal(line.level, 30, 'routine cancellation logs at info')
  t.equal(server.app.scopes.live, 0, 'no live scope is left')
})

t.test('the deadline answers 504 DEADLINE_EXCEEDED', async (t) => {
  const server = await startApp({ handlers: coreHandlers })
  t.teardown(() => server.close())

  const res = await postJson(`${server.url}/handlers/wait-for-release`, {}, { 'x-request-timeout-ms': '100' })
  t.equal(res.status, 504)
  t.equal(res.body.code, 'DEADLINE_EXCEEDED')
  t.match(res.headers['content-type'], /^application\/problem\+json/)

  const line = await server.waitForLog(finished(String(res.headers['x-request-id'])))
  t.equal(line.outcome, 'deadline_exceeded')
  t.equal(line.budgetMs, 100)
})

t.test('a handler that ignores its signal still answers at the deadline, and is named later', async (t) => {
  const server = await startApp({ handlers: coreHandlers })
  t.teardown(() => server.close())

  const started = performance.now()
  const res = await postJson(`${server.url}/handlers/ignore-signal`, { ms: 1500 }, { 'x-request-timeout-ms': '100' })
  const tookMs = performance.now() - started
  t.equal(res.status, 504)
  t.equal(res.body.code, 'DEADLINE_EXCEEDED')
  t.ok(tookMs < 1500, `answered before the handler finished (${tookMs.toFixed(0)} ms)`)

  const overrun = await server.waitForLog((line) => line.msg === 'handler overran its scope')
  t.equal(overrun.handler, 'ignore-signal')
  t.equal(overrun.reason, 'DEADLINE_EXCEEDED')
  t.ok(Number(overrun.overrunMs) >= 1000, 'the overrun is measured from the abort')
})

t.test('a handler\'s own timeout bounds its budget', async (t) => {
  const server = await startApp({ handlers: coreHandlers })
  t.teardown(() => server.close())

  const res = await postJson(`${server.url}/handlers/short-timeout`, {})
  t.equal(res.status, 504)
  const line = await server.waitForLog(finished(String(res.headers['x-request-id'])))
  t.equal(line.budgetMs, 150)

  const longer = await postJson(`${server.url}/handlers/short-timeout`, {}, { 'x-request-timeout-ms': '5000' })
  t.equal(longer.status, 504)
  const capped = await server.waitForLog(finished(String(longer.headers['x-request-id'])))
  t.equal(capped.budgetMs, 150, 'a longer client budget does not lift the handler\'s own timeout')
})

t.test('the budget header shortens, is capped, and rejects garbage', async (t) => {
  const server = await startApp({
    handlers: coreHandlers,
    env: { DEFAULT_TIMEOUT_MS: '2000', MAX_TIMEOUT_MS: '5000' }
  })
  t.teardown(() => server.close())
  const url = `${server.url}/handlers/echo`

  const budgetOf = async (header: string): Promise<unknown> => {
    const res = await postJson(url, { message: 'hi' }, { 'x-request-timeout-ms': header })
    t.equal(res.status, 200)
    return (await server.waitForLog(finished(String(res.headers['x-request-id'])))).budgetMs
  }
  t.equal(await budgetOf('250'), 250, 'a shorter budget wins')
  t.equal(await budgetOf('99999999999999999999'), 2000, 'a huge budget is capped')

  const capped = await startApp({ handlers: coreHandlers, env: { DEFAULT_TIMEOUT_MS: '5000', MAX_TIMEOUT_MS: '5000' } })
  t.teardown(() => capped.close())
  const res = await postJson(`${capped.url}/handlers/echo`, { message: 'hi' }, { 'x-request-timeout-ms': '60000' })
  t.equal((await capped.waitForLog(finished(String(res.headers['x-request-id'])))).budgetMs, 5000,
    'over MAX_TIMEOUT_MS is capped')

  for (const garbage of ['abc', '-5', '0', '1.5', '1e3', '', ' ']) {
    const bad = await postJson(url, { message: 'hi' }, { 'x-request-timeout-ms': garbage })
    t.equal(bad.status, 400, `"${garbage}" is rejected`)
    t.equal(bad.body.code, 'INVALID_INPUT')
  }
})

t.test('a deadline while the body is still arriving is answered at once, and frees the slot', async (t) => {
  const server = await startApp({ handlers: coreHandlers })
  t.teardown(() => server.close())

  // Headers promise 100 bytes of body; only a few ever come.
  const socket = connect(server.port, '127.0.0.1')
  await once(socket, 'connect')
  socket.write('POST /handlers/single HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n' +
    'x-request-timeout-ms: 200\r\nx-request-id: stalled-1\r\ncontent-length: 100\r\n\r\n{"pa')
  let received = ''
  socket.on('data', (chunk: Buffer) => { received += chunk.toString() })
  await once(socket, 'close')

  t.match(received, /^HTTP\/1\.1 504 /, 'answered 504 without the rest of the body')
  t.match(received, /"code":"DEADLINE_EXCEEDED"/)
  t.match(received, /connection: close/i, 'and the connection is closed after it')
  const line = await server.waitForLog(finished('stalled-1'))
  t.equal(line.outcome, 'deadline_exceeded')

  const next = openPost(`${server.url}/handlers/single`, {}, { 'x-request-id': 'after-stalled' })
  await once(probe, 'started')
  releases.get('after-stalled')?.()
  t.equal(await next.response, 200, 'the one concurrency slot was given back')
})
