import t from 'tap'
import externalApiCall from '../handlers/external-api-call.js'
import {
  startDemoUpstream, type DemoConnectionClosed, type DemoRequest, type DemoUpstream
} from '../src/demo-upstream.js'
import { createUpstream } from '../src/upstream.js'
import { startApp, type LogLine } from './helpers/app.js'
import { openPost, postJson } from './helpers/http.js'

// The handler over HTTP: a real server, the real adapter, the demo upstream, real sockets.

const demo = await startDemoUpstream()
const upstream = createUpstream({ baseUrl: demo.url, connections: 4, bodyLimitBytes: 64 * 1024 })
const server = await startApp({ handlers: [externalApiCall], resources: { http: upstream } })
t.teardown(async () => {
  await server.close()
  await upstream.close()
  await demo.close()
})

const url = `${server.url}/handlers/external-api-call`

function nextRequest (upstreamServer: DemoUpstream, path: string): Promise<DemoRequest> {
  return new Promise((resolve) => {
    const onRequest = (info: DemoRequest) => {
      if (info.path !== path) return
      upstreamServer.events.off('request', onRequest)
      resolve(info)
    }
    upstreamServer.events.on('request', onRequest)
  })
}

function connectionClosed (connectionId: number): Promise<DemoConnectionClosed> {
  return new Promise((resolve) => {
    const onClosed = (info: DemoConnectionClosed) => {
      if (info.connectionId !== connectionId) return
      demo.events.off('connection-closed', onClosed)
      resolve(info)
    }
    demo.events.on('connection-closed', onClosed)
  })
}

async function until (condition: () => boolean): Promise<void> {
  while (!condition()) await new Promise((resolve) => setTimeout(resolve, 5))
}

const finished = (requestId: string) => (line: LogLine) =>
  line.msg === 'request finished' && line.requestId === requestId

t.test('answers the upstream status and body; passes on the request id and the budget left', async (t) => {
  const arrived = nextRequest(demo, '/json')

  const res = await postJson(url, { path: '/json', query: { q: 'beaver' } }, {
    'x-request-id': 'ext-ok-1',
    'x-request-timeout-ms': '2000'
  })

  t.equal(res.status, 200)
  const data = res.body.data as { status: number, body: { query: unknown, requestId: string } }
  t.equal(data.status, 200)
  t.same(data.body.query, { q: 'beaver' })
  const info = await arrived
  t.equal(info.requestId, 'ext-ok-1')
  t.ok(info.timeoutMs !== undefined && info.timeoutMs > 0 && info.timeoutMs <= 2000, `budget header ${info.timeoutMs}`)
})

t.test('a client that disconnects closes the upstream connection', async (t) => {
  const arrived = nextRequest(demo, '/json')
  const { req } = openPost(url, { path: '/json', query: { delay: 600_000 } }, { 'x-request-id': 'ext-gone-1' })
  const { connectionId } = await arrived
  const closed = connectionClosed(connectionId)

  req.destroy()

  t.ok((await closed).inFlight, 'the upstream connection closed while its response was pending')
  const line = await server.waitForLog(finished('ext-gone-1'))
  t.equal(line.outcome, 'client_closed')
})

t.test('with every connection busy, a client that leaves while its call waits is gone from the queue at once',
  async (t) => {
    // Four calls hold the four connections; a fifth waits in HiBeaver's admission queue.
    const holders = Array.from({ length: 4 }, (_, i) =>
      openPost(url, { path: '/json', query: { delay: '3000' } }, { 'x-request-id': `holder-${i}` }))
    await until(() => upstream.stats.admitted === 4)
    const waiter = openPost(url, { path: '/json', query: { delay: '0' } }, { 'x-request-id': 'waiter-1' })
    await until(() => upstream.stats.waiting === 1)

    waiter.req.destroy()
    const line = await server.waitForLog(finished('waiter-1'))
    t.equal(line.outcome, 'client_closed')
    t.equal(upstream.stats.waiting, 0, 'the queue is empty, though no connection has freed up')
    t.equal(upstream.stats.admitted, 4, 'the four calls still hold theirs')
    for (const { req } of holders) req.destroy()
    await until(() => upstream.stats.admitted === 0)
  })

t.test('a deadline shorter than the upstream delay: 504', async (t) => {
  const started = performance.now()
  const res = await postJson(url, { path: '/json', query: { delay: 600_000 } }, { 'x-request-timeout-ms': '300' })

  t.equal(res.status, 504)
  t.equal(res.body.code, 'DEADLINE_EXCEEDED')
  t.ok(performance.now() - started >= 290, 'not before the deadline')
})

t.test('headers, then a hanging body: 504, and the server keeps serving', async (t) => {
  const res = await postJson(url, { path: '/hang' }, { 'x-request-timeout-ms': '300' })
  t.equal(res.status, 504)
  t.equal(res.body.code, 'DEADLINE_EXCEEDED')

  t.equal((await postJson(url, { path: '/json' })).status, 200)
})

t.test('an upstream 4xx is an answer: its status, and a body that is not JSON as text', async (t) => {
  const res = await postJson(url, { path: '/html', query: { status: 404 } })

  t.equal(res.status, 200)
  const data = res.body.data as { status: number, body: unknown }
  t.equal(data.status, 404)
  t.type(data.body, 'string')
  t.match(data.body, /<h1>404<\/h1>/)
})

t.test('upstream failures: 502 UPSTREAM_FAILED, with nothing internal in the answer', async (t) => {
  for (const [path, query] of [
    ['/reset', {}],
    ['/error', { status: 503 }],
    ['/invalid-json', {}],
    ['/html', { status: 200 }],
    ['/json', { size: 128 * 1024 }]
  ] as const) {
    const res = await postJson(url, { path, query })
    t.equal(res.status, 502, path)
    t.equal(res.body.code, 'UPSTREAM_FAILED', path)
    t.notMatch(JSON.stringify(res.body), /127\.0\.0\.1|ECONNRESET|stack/, `${path}: no address, errno or stack`)
  }
})

t.test('a path that would leave the base URL: 400 INVALID_INPUT, nothing sent', async (t) => {
  const before = demo.counters.requests
  for (const path of [
    '//evil.example/x', 'https://evil.example/', '/../etc/passwd', '/%2e%2e/x', '/a%2Fb', '/a\\b', '/a\nb',
    '/%EF%BC%8E%EF%BC%8E/admin', '/%EF%BC%8F%EF%BC%8Fevil.example'
  ]) {
    const res = await postJson(url, { path })
    t.equal(res.status, 400, JSON.stringify(path))
    t.equal(res.body.code, 'INVALID_INPUT')
  }
  t.equal(demo.counters.requests, before)
})

t.test('an input that is not { path, query }: 400', async (t) => {
  const res = await postJson(url, { path: '/json', host: 'evil.example' })
  t.equal(res.status, 400)
  t.equal(res.body.code, 'INVALID_INPUT')
})
