import { once } from 'node:events'
import type { Socket } from 'node:net'
import t from 'tap'
import { Agent, request } from 'undici'
import type { HiBeaverError } from '../src/errors.js'
import { coreHandlers, probe, releases, started } from './fixtures/core-handlers.js'
import { startApp, type LogLine } from './helpers/app.js'
import { getJson, openPost, rawConnection, rawPost } from './helpers/http.js'

const finished = (requestId: string) => (line: LogLine) =>
  line.msg === 'request finished' && line.requestId === requestId

// Node answers pipelined requests in order: the second one's response waits in a queue,
// unattached to the socket, and Node never closes it when the socket goes.
t.test('a client that leaves with a pipelined request queued aborts both, logs each once, frees the slot',
  { timeout: 10_000 }, async (t) => {
    const server = await startApp({ handlers: coreHandlers })
    t.teardown(() => server.close())
    const reasons = new Map<string, string>()
    const onAborted = (id: string, reason: HiBeaverError) => { if (!reasons.has(id)) reasons.set(id, reason.code) }
    probe.on('aborted', onAborted)
    t.teardown(() => probe.off('aborted', onAborted))

    const { socket } = await rawConnection(server.port)
    const bothRunning = started('lead-1', 'queued-1')
    // `single` allows one request at a time: a slot lost here would refuse every later one.
    socket.write(rawPost('/handlers/wait-for-release', 'lead-1') + rawPost('/handlers/single', 'queued-1'))
    await bothRunning
    socket.destroy()

    for (const requestId of ['lead-1', 'queued-1']) {
      const line = await server.waitForLog(finished(requestId))
      t.equal(line.status, 499, `${requestId}: nothing was sent`)
      t.equal(line.outcome, 'client_closed', `${requestId}: outcome`)
      t.equal(reasons.get(requestId), 'CLIENT_CLOSED', `${requestId}: its scope aborted as CLIENT_CLOSED`)
    }
    t.equal(server.app.scopes.live, 0, 'no live scope is left')

    const next = openPost(`${server.url}/handlers/single`, {}, { 'x-request-id': 'after-pipeline' })
    await started('after-pipeline')
    releases.get('after-pipeline')?.()
    t.equal(await next.response, 200, 'the concurrency slot came back')
    await server.waitForLog(finished('after-pipeline'))
    t.equal(server.logs.filter(finished('lead-1')).length, 1, 'one line for the first request')
    t.equal(server.logs.filter(finished('queued-1')).length, 1, 'one line for the queued request')
  })

t.test('a pipelined request answered in turn is logged once, as ok', async (t) => {
  const server = await startApp({ handlers: coreHandlers })
  t.teardown(() => server.close())

  const { socket, receive } = await rawConnection(server.port)
  const bothRunning = started('first-1', 'second-1')
  socket.write(rawPost('/handlers/wait-for-release', 'first-1') + rawPost('/handlers/wait-for-release', 'second-1'))
  await bothRunning
  // The second finishes first; its answer still waits for the first one's.
  releases.get('second-1')?.()
  releases.get('first-1')?.()

  for (const requestId of ['first-1', 'second-1']) {
    const line = await server.waitForLog(finished(requestId))
    t.equal(line.outcome, 'ok', `${requestId}: ok`)
    t.equal(line.status, 200)
  }
  const answers = await receive((text) => text.match(/HTTP\/1\.1 200 /g)?.length === 2)
  t.match(answers, /x-request-id: first-1[^]*x-request-id: second-1/, 'the client got both answers, in order')
  socket.destroy()
  await once(socket, 'close')
  // Lines are written in order: once a later request's line is in, the close has added its own.
  await getJson(`${server.url}/health/live`, { 'x-request-id': 'after-close' })
  await server.waitForLog(finished('after-close'))
  t.equal(server.logs.filter((l) => l.msg === 'request finished').length, 3, 'closing the socket adds no line')
})

t.test('a keep-alive connection carries many requests without piling listeners on its socket', async (t) => {
  const server = await startApp({ handlers: coreHandlers })
  t.teardown(() => server.close())
  const agent = new Agent({ connections: 1, keepAliveTimeout: 600_000, keepAliveMaxTimeout: 600_000 })
  t.teardown(() => agent.close())
  const sockets: Socket[] = []
  server.app.server.on('connection', (socket: Socket) => sockets.push(socket))

  // Counted once the server has logged the request: its response has let go of the socket.
  const send = async (requestId: string): Promise<void> => {
    const res = await request(`${server.url}/handlers/echo`, {
      method: 'POST',
      dispatcher: agent,
      headers: { 'content-type': 'application/json', 'x-request-id': requestId },
      body: '{"message":"a"}'
    })
    await res.body.dump()
    await server.waitForLog(finished(requestId))
  }
  await send('ka-0')
  const [socket] = sockets
  const listeners = socket?.listenerCount('close')
  for (let i = 1; i <= 50; i++) await send(`ka-${i}`)

  t.equal(sockets.length, 1, 'one connection carried every request')
  t.equal(socket?.listenerCount('close'), listeners, 'the socket has as many close listeners as after one request')
})
