import diagnosticsChannel from 'node:diagnostics_channel'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import t, { type Test } from 'tap'
import { abortReasons } from '../src/errors.js'
import { createScope, type RequestScope } from '../src/request-scope.js'
import {
  startDemoUpstream, type DemoConnectionClosed, type DemoRequest, type DemoUpstream
} from '../src/demo-upstream.js'
import { createUpstream, retryChannel, type UpstreamOptions, type UpstreamProvider } from '../src/upstream.js'
import { rejection } from './helpers/rejection.js'

// Adapter-level tests over real loopback sockets against the demo upstream. Every test waits on
// events the upstream reports (a request arrived, a connection closed), not on time.

interface Setup {
  demo: DemoUpstream
  upstream: UpstreamProvider
}

async function setup (t: Test, options: Partial<UpstreamOptions> = {}): Promise<Setup> {
  const demo = await startDemoUpstream()
  const upstream = createUpstream({ baseUrl: demo.url, connections: 2, bodyLimitBytes: 1024 * 1024, ...options })
  t.teardown(async () => {
    await upstream.destroy()
    await demo.close()
  })
  return { demo, upstream }
}

function scopeFor (t: Test, budgetMs = 30_000): RequestScope {
  const scope = createScope({ budgetMs })
  t.teardown(() => scope.dispose())
  return scope
}

function nextRequest (demo: DemoUpstream, path: string): Promise<DemoRequest> {
  return new Promise((resolve) => {
    const onRequest = (info: DemoRequest) => {
      if (info.path !== path) return
      demo.events.off('request', onRequest)
      resolve(info)
    }
    demo.events.on('request', onRequest)
  })
}

function connectionClosed (demo: DemoUpstream, connectionId: number): Promise<DemoConnectionClosed> {
  return new Promise((resolve) => {
    const onClosed = (info: DemoConnectionClosed) => {
      if (info.connectionId !== connectionId) return
      demo.events.off('connection-closed', onClosed)
      resolve(info)
    }
    demo.events.on('connection-closed', onClosed)
  })
}

// undici learns of its own socket's close a few event-loop turns after the upstream does.
async function until (condition: () => boolean): Promise<void> {
  for (let turn = 0; turn < 1000 && !condition(); turn++) await new Promise((resolve) => setImmediate(resolve))
}

// Collects what would crash a server: an 'error' event nobody listens to surfaces as an
// uncaught exception (nodejs/undici#3353), a forgotten promise as an unhandled rejection.
const crashes: unknown[] = []
const onCrash = (err: unknown) => { crashes.push(err) }
process.on('uncaughtException', onCrash)
process.on('unhandledRejection', onCrash)
t.teardown(() => {
  process.off('uncaughtException', onCrash)
  process.off('unhandledRejection', onCrash)
})
const settleTicks = async () => {
  for (let i = 0; i < 5; i++) await new Promise((resolve) => setImmediate(resolve))
}

t.test('answers the status and JSON body, sending the request id and the budget left', async (t) => {
  const { upstream } = await setup(t)
  const scope = scopeFor(t, 5000)

  const answer = await upstream.forScope(scope).get('/json', { a: '1', b: [2, true] })

  t.equal(answer.status, 200)
  const body = answer.body as { path: string, query: Record<string, string>, requestId: string, timeoutMs: number }
  t.equal(body.path, '/json')
  t.same(body.query, { a: '1', b: 'true' }, 'the last of a repeated key, as URLSearchParams reads it')
  t.equal(body.requestId, scope.requestId)
  t.ok(body.timeoutMs > 0 && body.timeoutMs <= 5000)
})

t.test('a 4xx is an answer, not a failure', async (t) => {
  const { upstream } = await setup(t)
  const answer = await upstream.forScope(scopeFor(t)).get('/json', { status: 404 })
  t.equal(answer.status, 404)
})

t.test('a 4xx that is not JSON, such as an HTML error page, answers its text', async (t) => {
  const { upstream } = await setup(t)
  const http = upstream.forScope(scopeFor(t))

  const answer = await http.get('/html', { status: 404 })

  t.equal(answer.status, 404)
  t.type(answer.body, 'string')
  t.match(answer.body, /<h1>404<\/h1>/)
  const err = await rejection(http.get('/html', { status: 200 }))
  t.equal(err.code, 'UPSTREAM_FAILED', 'a 2xx must still be JSON')
})

t.test('a 204 is an answer with no body', async (t) => {
  const { upstream } = await setup(t)
  t.same(await upstream.forScope(scopeFor(t)).get('/json', { status: 204 }), { status: 204, body: null })
})

t.test('a path under the base URL path', async (t) => {
  const demo = await startDemoUpstream()
  const upstream = createUpstream({ baseUrl: `${demo.url}/api/`, connections: 1, bodyLimitBytes: 1024 })
  t.teardown(async () => {
    await upstream.destroy()
    await demo.close()
  })
  const seen = nextRequest(demo, '/api/json')

  const answer = await upstream.forScope(scopeFor(t)).get('/json')

  t.equal((await seen).path, '/api/json')
  t.equal(answer.status, 404)
})

t.test('an unsafe path is refused before anything is sent', async (t) => {
  const { demo, upstream } = await setup(t)
  for (const path of ['//evil.example/x', 'http://evil.example/', '/a/../b', '/%2e%2e/x', '/a%2fb', '/a\\b']) {
    const err = await rejection(upstream.forScope(scopeFor(t)).get(path))
    t.equal(err.code, 'INVALID_INPUT', path)
  }
  t.equal(demo.counters.requests, 0)
})

t.test('a client that leaves closes the upstream connection', async (t) => {
  const { demo, upstream } = await setup(t)
  const scope = scopeFor(t)
  const arrived = nextRequest(demo, '/json')

  const call = rejection(upstream.forScope(scope).get('/json', { delay: 600_000 }))
  const { connectionId } = await arrived
  const closed = connectionClosed(demo, connectionId)
  scope.abort(abortReasons.clientClosed())

  t.equal((await call).code, 'CLIENT_CLOSED')
  const info = await closed
  t.ok(info.inFlight, 'the upstream was still producing the response when its connection closed')
  await until(() => upstream.stats.connected === 0)
  t.same(upstream.stats, { connected: 0, running: 0, pending: 0, admitted: 0, waiting: 0 })
  t.equal(demo.counters.connections, 1, 'no replacement connection opened for the aborted call')
})

t.test('a call aborted as its new connection is handed to undici is never sent, and the socket is kept', async (t) => {
  const { demo, upstream } = await setup(t, { connections: 1 })
  const scope = scopeFor(t)
  const onBeforeConnect = () => scope.abort(abortReasons.clientClosed())
  diagnosticsChannel.subscribe('undici:client:beforeConnect', onBeforeConnect)
  t.teardown(() => diagnosticsChannel.unsubscribe('undici:client:beforeConnect', onBeforeConnect))

  t.equal((await rejection(upstream.forScope(scope).get('/json'))).code, 'CLIENT_CLOSED')
  diagnosticsChannel.unsubscribe('undici:client:beforeConnect', onBeforeConnect)
  await until(() => upstream.stats.admitted === 0)
  t.equal((await upstream.forScope(scopeFor(t)).get('/json')).status, 200)

  t.equal(demo.counters.requests, 1, 'only the second call reached the upstream')
  t.equal(demo.counters.connections, 1, 'on the socket the first call had opened')
})

t.test('a deadline shorter than the upstream delay rejects with DEADLINE_EXCEEDED', async (t) => {
  const { demo, upstream } = await setup(t)
  const scope = scopeFor(t, 300)
  const arrived = nextRequest(demo, '/json')
  const started = performance.now()

  const call = rejection(upstream.forScope(scope).get('/json', { delay: 600_000 }))
  const closed = connectionClosed(demo, (await arrived).connectionId)

  const err = await call
  t.equal(err.code, 'DEADLINE_EXCEEDED')
  t.equal(err, scope.reason, 'the scope\'s own reason')
  t.ok(performance.now() - started >= 290, 'not before the deadline')
  t.ok((await closed).inFlight)
})

t.test('headers, then a body that hangs: a deadline error and nothing unhandled', async (t) => {
  const { demo, upstream } = await setup(t)
  const scope = scopeFor(t, 300)
  const arrived = nextRequest(demo, '/hang')
  const before = crashes.length

  const call = rejection(upstream.forScope(scope).get('/hang'))
  const closed = connectionClosed(demo, (await arrived).connectionId)

  t.equal((await call).code, 'DEADLINE_EXCEEDED')
  await closed
  await settleTicks()
  t.equal(crashes.length, before, 'no uncaught exception, no unhandled rejection')
})

t.test('an abort while the body streams: nothing unhandled', async (t) => {
  const { demo, upstream } = await setup(t)
  const scope = scopeFor(t)
  const arrived = nextRequest(demo, '/trickle')
  const before = crashes.length

  const call = rejection(upstream.forScope(scope).get('/trickle', { chunks: 1000, interval: 5 }))
  const closed = connectionClosed(demo, (await arrived).connectionId)
  // Let a few chunks arrive so the abort lands in the middle of the body.
  await new Promise((resolve) => setTimeout(resolve, 30))
  scope.abort(abortReasons.clientClosed())

  t.equal((await call).code, 'CLIENT_CLOSED')
  t.ok((await closed).inFlight)
  await settleTicks()
  t.equal(crashes.length, before)
})

t.test('a reset on a fresh connection fails with UPSTREAM_FAILED, without a retry', async (t) => {
  const { demo, upstream } = await setup(t)

  const err = await rejection(upstream.forScope(scopeFor(t)).get('/reset'))

  t.equal(err.code, 'UPSTREAM_FAILED')
  t.equal((err.cause as { code?: string }).code, 'ECONNRESET')
  t.equal(demo.counters.requests, 1)
})

// A stale socket resets within a round trip of the write; the window is generous here so that
// a loaded machine cannot turn the retry into a 502.
t.test('a stale keep-alive socket is retried once, on a new connection', async (t) => {
  const { demo, upstream } = await setup(t, { connections: 1, staleWindowMs: 60_000 })
  const retries: unknown[] = []
  const onRetry = (message: unknown) => { retries.push(message) }
  retryChannel.subscribe(onRetry)
  t.teardown(() => retryChannel.unsubscribe(onRetry))
  const http = upstream.forScope(scopeFor(t))

  t.equal((await http.get('/stale')).status, 200, 'first call on a fresh connection')
  t.equal((await http.get('/stale')).status, 200, 'second call reset on the reused one, then retried')

  t.equal(demo.counters.requests, 3)
  t.equal(demo.counters.connections, 2)
  t.equal(retries.length, 1)
})

t.test('a reused socket that resets twice: one retry, then UPSTREAM_FAILED', async (t) => {
  const { demo, upstream } = await setup(t, { connections: 1, staleWindowMs: 60_000 })
  const http = upstream.forScope(scopeFor(t))
  await http.get('/json')

  const err = await rejection(http.get('/reset'))

  t.equal(err.code, 'UPSTREAM_FAILED')
  t.equal(demo.counters.requests, 3, 'one /json, then /reset twice')
})

t.test('a reused socket that resets after the stale window is not retried: the upstream had the request', async (t) => {
  const { demo, upstream } = await setup(t, { connections: 1, staleWindowMs: 50 })
  const retries: unknown[] = []
  const onRetry = (message: unknown) => { retries.push(message) }
  retryChannel.subscribe(onRetry)
  t.teardown(() => retryChannel.unsubscribe(onRetry))
  const http = upstream.forScope(scopeFor(t))
  await http.get('/json')

  // The reset comes at least 200 ms after the request arrived, so after the 50 ms window.
  const err = await rejection(http.get('/reset', { delay: 200 }))

  t.equal(err.code, 'UPSTREAM_FAILED')
  t.equal((err.cause as { code?: string }).code, 'ECONNRESET')
  t.equal(demo.counters.requests, 2, 'one /json, then /reset once')
  t.equal(retries.length, 0)
})

t.test('a body over the limit fails and frees its socket', async (t) => {
  for (const [label, path, query] of [
    ['with content-length', '/json', { size: 4096 }],
    ['streamed', '/trickle', { chunks: 100, interval: 1, chunkBytes: 100 }]
  ] as const) {
    await t.test(label, async (t) => {
      const { demo, upstream } = await setup(t, { connections: 1, bodyLimitBytes: 1024 })
      const arrived = nextRequest(demo, path)

      const call = rejection(upstream.forScope(scopeFor(t)).get(path, query))
      const closed = connectionClosed(demo, (await arrived).connectionId)

      const err = await call
      t.equal(err.code, 'UPSTREAM_FAILED')
      t.match(err.message, /exceeded 1024 bytes/)
      await closed
      t.equal(upstream.stats.admitted, 0, 'the slot is back')
      t.equal((await upstream.forScope(scopeFor(t)).get('/json')).status, 200, 'the only connection slot works again')
    })
  }
})

t.test('a 5xx fails with UPSTREAM_FAILED', async (t) => {
  await t.test('a small body is drained and the connection kept', async (t) => {
    const { demo, upstream } = await setup(t, { connections: 1 })
    const http = upstream.forScope(scopeFor(t))

    const err = await rejection(http.get('/error', { status: 503, size: 100 }))
    await http.get('/json')

    t.equal(err.code, 'UPSTREAM_FAILED')
    t.same(err.details, { upstreamStatus: 503 })
    t.equal(demo.counters.connections, 1, 'the next call reused the connection')
  })

  await t.test('a large body is not read: the connection is closed instead', async (t) => {
    const { demo, upstream } = await setup(t, { connections: 1 })
    const arrived = nextRequest(demo, '/error')

    const call = rejection(upstream.forScope(scopeFor(t)).get('/error', { size: 16 * 1024 * 1024 }))
    const closed = connectionClosed(demo, (await arrived).connectionId)

    const err = await call
    t.equal(err.code, 'UPSTREAM_FAILED')
    t.match(err.message, /answered 500/)
    await closed
  })
})

t.test('a body that is not JSON fails with UPSTREAM_FAILED', async (t) => {
  const { upstream } = await setup(t)
  const err = await rejection(upstream.forScope(scopeFor(t)).get('/invalid-json'))
  t.equal(err.code, 'UPSTREAM_FAILED')
  t.type(err.cause, SyntaxError)
})

t.test('with every connection busy, a waiting call whose scope aborts is settled at once', async (t) => {
  const { demo, upstream } = await setup(t, { connections: 1 })
  const busyScope = scopeFor(t)
  const arrived = nextRequest(demo, '/json')
  let busySettled = false
  const busy = rejection(upstream.forScope(busyScope).get('/json', { delay: 600_000 }))
    .finally(() => { busySettled = true })
  await arrived

  const waitingScope = scopeFor(t)
  const waiting = rejection(upstream.forScope(waitingScope).get('/json'))
  t.equal(upstream.stats.waiting, 1)
  waitingScope.abort(abortReasons.clientClosed())

  t.equal((await waiting).code, 'CLIENT_CLOSED')
  t.notOk(busySettled, 'settled while the only connection is still busy')
  t.equal(upstream.stats.waiting, 0)
  t.equal(demo.counters.requests, 1, 'the aborted call never reached the upstream')

  busyScope.abort(abortReasons.clientClosed())
  t.equal((await busy).code, 'CLIENT_CLOSED')
})

t.test('a call takes a slot that kept its connection before one that has none', async (t) => {
  const { demo, upstream } = await setup(t, { connections: 4 })
  const http = upstream.forScope(scopeFor(t))

  for (let i = 0; i < 5; i++) t.equal((await http.get('/json')).status, 200)

  t.equal(demo.counters.connections, 1, 'every call went out on the first connection')
  t.same(upstream.stats, { connected: 1, running: 0, pending: 0, admitted: 0, waiting: 0 })
})

t.test('a waiting call gets the slot when the running one finishes', async (t) => {
  const { upstream } = await setup(t, { connections: 1 })
  const http = upstream.forScope(scopeFor(t))

  const answers = await Promise.all([http.get('/json', { delay: 20 }), http.get('/json'), http.get('/json')])

  t.same(answers.map((answer) => answer.status), [200, 200, 200])
  t.same(upstream.stats, { connected: 1, running: 0, pending: 0, admitted: 0, waiting: 0 })
})

t.test('the budget header never exceeds the budget left', async (t) => {
  const { demo, upstream } = await setup(t, { connections: 1 })
  const scope = scopeFor(t, 5000)
  const http = upstream.forScope(scope)
  const seen: DemoRequest[] = []
  demo.events.on('request', (info) => seen.push(info))
  const arrived = nextRequest(demo, '/json')

  // The second call waits for the first one's slot: its header must count that wait.
  const leftAtFirstCall = scope.remaining()
  const first = http.get('/json', { delay: 300 })
  await arrived
  const leftAtSecondCall = scope.remaining()
  const second = http.get('/json')
  await Promise.all([first, second])

  t.equal(seen.length, 2)
  const [one, two] = seen.map((info) => info.timeoutMs ?? Infinity) as [number, number]
  t.ok(one <= leftAtFirstCall, `first: header ${one} ms, ${leftAtFirstCall.toFixed(1)} ms left when called`)
  t.ok(two <= leftAtSecondCall - 290, `second: header ${two} ms, less the ~300 ms it waited for a slot`)
  for (const info of seen) {
    // Measured by the upstream on arrival, after the trip: a wide margin for a loaded machine.
    const leftAtArrival = scope.deadline - info.receivedAt
    t.ok((info.timeoutMs ?? Infinity) <= leftAtArrival + 25,
      `header ${info.timeoutMs} ms, ${leftAtArrival.toFixed(1)} ms left on arrival`)
  }
})

t.test('more waiting calls than allowed: OVERLOADED', async (t) => {
  const { demo, upstream } = await setup(t, { connections: 1, maxWaiting: 1 })
  const scope = scopeFor(t)
  const arrived = nextRequest(demo, '/json')
  const busy = rejection(upstream.forScope(scope).get('/json', { delay: 600_000 }))
  await arrived
  const waiting = rejection(upstream.forScope(scope).get('/json'))

  const err = await rejection(upstream.forScope(scopeFor(t)).get('/json'))

  t.equal(err.code, 'OVERLOADED')
  scope.abort(abortReasons.clientClosed())
  t.equal((await busy).code, 'CLIENT_CLOSED')
  t.equal((await waiting).code, 'CLIENT_CLOSED')
})

t.test('close refuses waiting calls and new ones with SHUTTING_DOWN', async (t) => {
  const { demo, upstream } = await setup(t, { connections: 1 })
  const busyScope = scopeFor(t)
  const arrived = nextRequest(demo, '/json')
  const busy = upstream.forScope(busyScope).get('/json', { delay: 200 })
  await arrived
  const waiting = rejection(upstream.forScope(scopeFor(t)).get('/json'))

  const closing = upstream.close()

  t.equal((await waiting).code, 'SHUTTING_DOWN')
  t.equal((await busy).status, 200, 'the running call finishes')
  await closing
  t.equal((await rejection(upstream.forScope(scopeFor(t)).get('/json'))).code, 'SHUTTING_DOWN')
  await upstream.close()
})

// An upstream that closes each connection after its answer: undici destroys the socket at
// once, its 'close' comes a turn later, and a call admitted in between must connect afresh
// instead of being handed the dying socket and sent again through the stale-socket retry.
t.test('an upstream that closes every connection: each call connects anew, none is retried', async (t) => {
  const server = createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json', connection: 'close' })
    res.end('{"ok":true}')
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())))
  const { port } = server.address() as AddressInfo
  const upstream = createUpstream({ baseUrl: `http://127.0.0.1:${port}`, connections: 2, bodyLimitBytes: 1024 })
  t.teardown(() => upstream.close())
  const retries: unknown[] = []
  const onRetry = (message: unknown) => { retries.push(message) }
  retryChannel.subscribe(onRetry)
  t.teardown(() => retryChannel.unsubscribe(onRetry))

  const http = upstream.forScope(scopeFor(t))
  const answers = await Promise.all(Array.from({ length: 4 }, async () => {
    const statuses: number[] = []
    for (let i = 0; i < 25; i++) statuses.push((await http.get('/')).status)
    return statuses
  }))
  t.same(new Set(answers.flat()), new Set([200]), 'all 100 answered')
  t.equal(retries.length, 0, 'no call was sent twice')
})

t.test('the base URL must be a plain http(s) origin and path', async (t) => {
  for (const baseUrl of ['ftp://example.com/', 'http://user:secret@example.com/', 'http://example.com/?a=1']) {
    t.throws(() => createUpstream({ baseUrl, connections: 1, bodyLimitBytes: 1 }), TypeError, baseUrl)
  }
})

t.test('nothing unhandled in the whole file', async (t) => {
  await settleTicks()
  t.same(crashes, [])
})
