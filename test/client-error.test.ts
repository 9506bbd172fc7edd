import { once } from 'node:events'
import t from 'tap'
import type { HiBeaverError } from '../src/errors.js'
import { coreHandlers, probe, started } from './fixtures/core-handlers.js'
import { startApp, type LogLine, type StartedApp } from './helpers/app.js'
import { getJson, rawConnection, rawPost } from './helpers/http.js'

const finished = (requestId: string) => (line: LogLine) =>
  line.msg === 'request finished' && line.requestId === requestId

// Lines are written in order: once a later request's line is in, no earlier event adds one.
async function linesSettled (server: StartedApp, requestId: string): Promise<LogLine[]> {
  await getJson(`${server.url}/health/live`, { 'x-request-id': requestId })
  await server.waitForLog(finished(requestId))
  return server.logs.filter((line) => line.msg === 'request finished' && line.requestId !== requestId)
}

t.test('an upload cut off mid-body is one client_closed line, not a made-up 400 as well', async (t) => {
  const server = await startApp({ handlers: coreHandlers })
  t.teardown(() => server.close())

  const { socket } = await rawConnection(server.port)
  socket.write(rawPost('/handlers/wait-for-release', 'upload-1', '{"payload":"xxx', 1000))
  socket.destroy()

  const line = await server.waitForLog(finished('upload-1'))
  t.equal(line.status, 499)
  t.equal(line.outcome, 'client_closed')
  const lines = await linesSettled(server, 'after-upload')
  t.equal(lines.length, 1, 'the upload is the only other line')
  t.notOk(lines.some((l) => l.parserError !== undefined), 'the end of the connection is no parser error')
  t.equal(server.app.scopes.live, 0, 'no live scope is left')
})

t.test('garbage pipelined behind a request never reaches that request\'s client as its answer', async (t) => {
  const server = await startApp({ handlers: coreHandlers })
  t.teardown(() => server.close())
  const reasons: string[] = []
  const onAborted = (id: string, reason: HiBeaverError) => { if (id === 'good-1') reasons.push(reason.code) }
  probe.on('aborted', onAborted)
  t.teardown(() => probe.off('aborted', onAborted))

  const { socket, received } = await rawConnection(server.port)
  const running = started('good-1')
  socket.write(rawPost('/handlers/wait-for-release', 'good-1'))
  await running
  socket.write('GARBAGE\r\n\r\n')
  await once(socket, 'close')

  t.equal(received(), '', 'nothing was written: an answer now would be read as good-1\'s')
  const line = await server.waitForLog(finished('good-1'))
  t.equal(line.outcome, 'client_closed')
  t.same(reasons, ['CLIENT_CLOSED'], 'the request in flight is stopped, its connection gone')
  const lines = await linesSettled(server, 'after-garbage')
  t.equal(lines.length, 1, 'good-1 is the only other line')
  t.notOk(lines.some((l) => l.parserError !== undefined), 'no line for the garbage')
})

t.test('a malformed chunk in a body still arriving is that request\'s 400, answered and logged once', async (t) => {
  const server = await startApp({ handlers: coreHandlers })
  t.teardown(() => server.close())

  const { socket, received } = await rawConnection(server.port)
  socket.write('POST /handlers/echo HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n' +
    'x-request-id: bad-chunk-1\r\ntransfer-encoding: chunked\r\n\r\n5\r\n{"mes\r\nZZ\r\n')
  await once(socket, 'close')

  t.match(received(), /^HTTP\/1\.1 400 /, 'the client that is still waiting gets its answer')
  t.match(received(), /"code":"INVALID_INPUT"/)
  t.match(received(), /connection: close/i, 'and the connection, whose parser is spent, closes after it')
  const line = await server.waitForLog(finished('bad-chunk-1'))
  t.match(line, { status: 400, outcome: 'error', code: 'INVALID_INPUT' })
  const lines = await linesSettled(server, 'after-bad-chunk')
  t.equal(lines.length, 1, 'one line for it, no second parser line')
})

t.test('a bad chunk after its request was answered (an unknown handler) adds no second answer', async (t) => {
  const server = await startApp({ handlers: coreHandlers })
  t.teardown(() => server.close())

  const { socket, received, receive } = await rawConnection(server.port)
  socket.write('POST /handlers/nope HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n' +
    'x-request-id: answered-1\r\ntransfer-encoding: chunked\r\n\r\n5\r\n{"mes\r\n')
  await receive((text) => text.includes('"code":"UNKNOWN_HANDLER"'))
  socket.write('ZZ\r\n')
  await once(socket, 'close')

  t.equal(received().match(/HTTP\/1\.1 /g)?.length, 1, 'one answer on the wire')
  const lines = await linesSettled(server, 'after-answered')
  t.same(lines.map((line) => [line.requestId, line.status]), [['answered-1', 404]], 'one line, the 404')
})

t.test('garbage on a connection of its own is still answered 400 with a problem document', async (t) => {
  const server = await startApp({ handlers: coreHandlers })
  t.teardown(() => server.close())

  const { socket, received } = await rawConnection(server.port)
  socket.write('GARBAGE\r\n\r\n')
  await once(socket, 'close')
  t.match(received(), /^HTTP\/1\.1 400 /)
  t.match(received(), /"code":"INVALID_INPUT"/)
  const line = await server.waitForLog((l) => l.msg === 'request finished' && l.parserError !== undefined)
  t.equal(line.status, 400)
})
