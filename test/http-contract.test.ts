import { once } from 'node:events'
import { connect } from 'node:net'
import t from 'tap'
import { request } from 'undici'
import { z } from 'zod'
import { HiBeaverError } from '../src/errors.js'
import { defineHandler } from '../src/handler.js'
import { coreHandlers } from './fixtures/core-handlers.js'
import { startApp } from './helpers/app.js'
import { getJson, postJson } from './helpers/http.js'

// A handler whose dependency fails the way the upstream adapter reports it: a catalogue error
// with the low-level failure as its cause.
const upstreamFails = defineHandler({
  name: 'upstream-fails',
  description: 'fails as an upstream reset would',
  input: z.object({}),
  async process () {
    throw new HiBeaverError('UPSTREAM_FAILED', 'the upstream reset the connection', {
      cause: new Error('socket hang up at 10.1.2.3:8080')
    })
  }
})

const PROBLEM_FIELDS = ['type', 'title', 'status', 'detail', 'code', 'requestId']

t.test('the HTTP contract', async (t) => {
  const server = await startApp({ handlers: [...coreHandlers, upstreamFails], env: { BODY_LIMIT_BYTES: '1024' } })
  t.teardown(() => server.close())
  const url = (path: string) => `${server.url}${path}`

  t.test('a handler answers { data }', async (t) => {
    const res = await postJson(url('/handlers/echo'), { message: 'hello' })
    t.equal(res.status, 200)
    t.same(res.body, { data: { message: 'hello' } })
    t.match(res.headers['x-request-id'], /^[0-9a-f-]{36}$/, 'a request id is made when none is sent')
  })

  t.test('problem+json for every client error, with stable codes', async (t) => {
    const cases: Array<[string, () => Promise<{ status: number, body: Record<string, unknown> }>, number, string]> = [
      ['unknown handler', () => postJson(url('/handlers/nope'), { a: 1 }), 404, 'UNKNOWN_HANDLER'],
      ['unknown handler with a bad body', () => postJson(url('/handlers/nope'), '{oops'), 404, 'UNKNOWN_HANDLER'],
      ['malformed JSON', () => postJson(url('/handlers/echo'), '{"message": '), 400, 'INVALID_INPUT'],
      ['schema mismatch', () => postJson(url('/handlers/echo'), { message: 42 }), 400, 'INVALID_INPUT'],
      ['no body', () => postJson(url('/handlers/echo'), ''), 400, 'INVALID_INPUT'],
      [
        'body too large',
        () => postJson(url('/handlers/echo'), { message: 'x'.repeat(2048) }),
        413,
        'PAYLOAD_TOO_LARGE'
      ],
      ['unknown route', () => getJson(url('/nowhere')), 404, 'NOT_FOUND']
    ]
    for (const [name, send, status, code] of cases) {
      const res = await send()
      t.equal(res.status, status, `${name}: status`)
      t.equal(res.body.code, code, `${name}: code`)
      t.same(Object.keys(res.body).filter((k) => PROBLEM_FIELDS.includes(k)).sort(), [...PROBLEM_FIELDS].sort(),
        `${name}: every problem field`)
    }

    const text = await request(url('/handlers/echo'), {
      method: 'POST', headers: { 'content-type': 'text/plain' }, body: 'hello'
    })
    t.equal(text.statusCode, 415)
    t.equal((await text.body.json() as { code: string }).code, 'UNSUPPORTED_MEDIA_TYPE')
  })

  t.test('schema errors say which field is wrong', async (t) => {
    const res = await postJson(url('/handlers/echo'), { message: 42 })
    t.match(res.body.errors, [{ path: 'message' }])
  })

  t.test('an internal error is 500 INTERNAL with nothing of the cause, logged with its stack', async (t) => {
    const res = await postJson(url('/handlers/fails'), {}, {
      'x-request-id': 'fails-1',
      authorization: 'Bearer TOPSECRET-token'
    })
    t.equal(res.status, 500)
    t.equal(res.body.code, 'INTERNAL')
    t.notMatch(JSON.stringify(res.body), /secret|hunter2|10\.0\.0\.5|at /, 'no internals reach the client')

    const line = await server.waitForLog((l) => l.msg === 'request finished' && l.requestId === 'fails-1')
    t.equal(line.level, 50, 'logged as error')
    t.equal(line.outcome, 'error')
    const err = line.err as { message: string, stack: string }
    t.match(err.stack, /secret internal detail/)
    t.match(err.message, 'postgres://admin:[redacted]@10.0.0.5/db', 'the address stays, its password does not')
    t.match(err.stack, 'caused by: Error: password authentication failed for postgresql://app:[redacted]@',
      'the cause is logged, redacted')
    const logged = JSON.stringify(server.logs)
    t.notOk(logged.includes('hunter2'), 'no password of the error in any line')
    t.notOk(logged.includes('s3cr3t'), 'no password of its cause in any line')
    t.notOk(logged.includes('TOPSECRET'), 'the authorization header is never logged')
  })

  t.test('a dependency\'s failure keeps its cause from the client and logs it at warn', async (t) => {
    const res = await postJson(url('/handlers/upstream-fails'), {}, { 'x-request-id': 'upstream-fails-1' })
    t.equal(res.status, 502)
    t.equal(res.body.code, 'UPSTREAM_FAILED')
    t.notMatch(JSON.stringify(res.body), /socket hang up|10\.1\.2\.3/, 'nothing of the cause reaches the client')

    const line = await server.waitForLog((l) => l.msg === 'request finished' && l.requestId === 'upstream-fails-1')
    t.equal(line.level, 40, 'logged as warn')
    t.match(line.err, { message: 'socket hang up at 10.1.2.3:8080' }, 'with the cause')
  })

  t.test('a name longer than the router takes is 404 UNKNOWN_HANDLER, not echoed back', async (t) => {
    const name = 'a'.repeat(5000)
    const res = await postJson(url(`/handlers/${name}`), {})
    t.equal(res.status, 404)
    t.equal(res.body.code, 'UNKNOWN_HANDLER')
    t.ok(JSON.stringify(res.body).length < 500, 'the answer does not carry the name')
  })

  t.test('__proto__ and constructor.prototype keys are valid JSON: dropped, not refused', async (t) => {
    const res = await postJson(url('/handlers/echo'), '{"__proto__":{"polluted":1},"message":"hi"}')
    t.equal(res.status, 200)
    t.same(res.body, { data: { message: 'hi' } })
    const other = await postJson(url('/handlers/echo'), '{"constructor":{"prototype":{"polluted":1}},"message":"hi"}')
    t.equal(other.status, 200)
    t.equal(({} as Record<string, unknown>).polluted, undefined, 'no prototype was touched')
  })

  t.test('x-request-id is echoed when sane, replaced when not', async (t) => {
    const sane = await postJson(url('/handlers/echo'), { message: 'a' }, { 'x-request-id': 'abc-123_X.y:z' })
    t.equal(sane.headers['x-request-id'], 'abc-123_X.y:z')
    const insane = await postJson(url('/handlers/echo'), { message: 'a' }, { 'x-request-id': 'a b<script>' })
    t.not(insane.headers['x-request-id'], 'a b<script>')
    t.equal((await getJson(url('/nowhere'), { 'x-request-id': 'nf-1' })).headers['x-request-id'], 'nf-1',
      'on errors too')
  })

  t.test('GET /handlers lists each handler with its effective timeout', async (t) => {
    const res = await getJson(url('/handlers'))
    t.equal(res.status, 200)
    const list = res.body.data as Array<{ name: string, timeoutMs: number, description: string }>
    t.same(list.map((h) => h.name).sort(), [...coreHandlers, upstreamFails].map((h) => h.name).sort())
    t.equal(list.find((h) => h.name === 'short-timeout')?.timeoutMs, 150)
    t.equal(list.find((h) => h.name === 'echo')?.timeoutMs, 10_000)
  })

  t.test('GET /health answers 200', async (t) => {
    const res = await getJson(url('/health'))
    t.equal(res.status, 200)
    t.same(res.body, { status: 'ok' })
  })
})

t.test('over a pressure threshold, /health and handlers answer 503 OVERLOADED with Retry-After', async (t) => {
  const server = await startApp({
    handlers: coreHandlers,
    env: { PRESSURE_MAX_HEAP_USED_BYTES: '1', PRESSURE_SAMPLE_INTERVAL_MS: '50' }
  })
  t.teardown(() => server.close())
  // under-pressure samples on an interval; wait for the first sample to land.
  let res = await getJson(`${server.url}/health`)
  for (let i = 0; i < 200 && res.status === 200; i++) {
    await new Promise((resolve) => setTimeout(resolve, 10))
    res = await getJson(`${server.url}/health`)
  }
  t.equal(res.status, 503)
  t.equal(res.body.code, 'OVERLOADED')
  t.ok(Number(res.headers['retry-after']) >= 1, 'Retry-After is set')
  t.equal(res.headers['x-request-id'], res.body.requestId, 'with its request id')

  const handler = await postJson(`${server.url}/handlers/echo`, { message: 'x' }, { 'x-request-id': 'shed-1' })
  t.equal(handler.status, 503, 'work is shed too')
  t.equal(handler.headers['x-request-id'], 'shed-1', 'with its request id')
})

t.test('requests refused before any route runs still get a problem document and a log line', async (t) => {
  const server = await startApp({ handlers: coreHandlers })
  t.teardown(() => server.close())

  const badUrl = await request(`${server.url}/handlers/%ZZ`, { method: 'POST' })
  t.equal(badUrl.statusCode, 400)
  t.match(badUrl.headers['content-type'], /^application\/problem\+json/)
  t.equal((await badUrl.body.json() as { code: string }).code, 'INVALID_INPUT')
  const id = String(badUrl.headers['x-request-id'])
  t.match(id, /^[0-9a-f-]{36}$/, 'with a request id')
  await server.waitForLog((l) => l.msg === 'request finished' && l.requestId === id)

  for (const [name, head, status, code] of [
    [
      'a bad content-length',
      'POST /handlers/echo HTTP/1.1\r\nhost: x\r\ncontent-length: abc\r\n\r\n',
      400,
      'INVALID_INPUT'
    ],
    ['no Host header', 'GET /health/live HTTP/1.1\r\nconnection: close\r\n\r\n', 400, 'INVALID_INPUT'],
    [
      'headers over the limit',
      `GET /health HTTP/1.1\r\nhost: x\r\nx-big: ${'a'.repeat(20_000)}\r\n\r\n`,
      431,
      'HEADERS_TOO_LARGE'
    ],
    ['a URL over the limit', `GET /${'a'.repeat(20_000)} HTTP/1.1\r\nhost: x\r\n\r\n`, 431, 'HEADERS_TOO_LARGE']
  ] as const) {
    const socket = connect(server.port, '127.0.0.1')
    await once(socket, 'connect')
    let received = ''
    socket.on('data', (chunk: Buffer) => { received += chunk.toString() })
    socket.on('error', () => {})
    socket.write(head)
    await once(socket, 'close')
    t.match(received, new RegExp(`^HTTP/1\\.1 ${status} [A-Z]`), name)
    t.match(received, /content-type: application\/problem\+json/i, `${name}: problem+json`)
    t.match(received, new RegExp(`"code":"${code}"`), `${name}: code`)
    const requestId = /x-request-id: ([0-9a-f-]+)/i.exec(received)?.[1]
    await server.waitForLog((l) => l.msg === 'request finished' && l.requestId === requestId)
  }
})
