import diagnosticsChannel from 'node:diagnostics_channel'
import { once } from 'node:events'
import net, { type Socket } from 'node:net'
import { Worker } from 'node:worker_threads'
import t, { type Test } from 'tap'
import { abortReasons } from '../src/errors.js'
import { createScope, type RequestScope } from '../src/request-scope.js'
import { createUpstream, type UpstreamOptions, type UpstreamProvider } from '../src/upstream.js'
import { rejection } from './helpers/rejection.js'

// The connection phase of an upstream call, against a listener that does not accept: its
// thread is blocked, so the kernel completes handshakes only until the accept queue is full and
// then drops SYNs, as a black-holed host would. Real sockets on loopback; every step waits on an
// event (a socket created, a call settled), and time appears only as lower bounds.

const BACKLOG = 1

// Runs in a worker: listens, reports its port, then blocks its thread until the gate opens;
// after that it answers each request with the budget header it carried.
const LISTENER = `
const { parentPort, workerData } = require('node:worker_threads')
const server = require('node:http').createServer((req, res) => {
  const timeoutMs = Number(req.headers['x-request-timeout-ms'])
  parentPort.postMessage({ timeoutMs, receivedAt: performance.timeOrigin + performance.now() })
  res.writeHead(200, { 'content-type': 'application/json' })
  res.end('{}')
})
server.listen({ port: 0, host: '127.0.0.1', backlog: ${BACKLOG} }, () => {
  parentPort.postMessage(server.address().port)
  Atomics.wait(workerData, 0, 0)
})
`

interface Arrival {
  timeoutMs: number
  receivedAt: number
}

interface StalledListener {
  url: string
  // Lets the listener accept again: a dropped SYN is sent again about a second later.
  open (): void
  nextArrival (): Promise<Arrival>
}

async function stalledListener (t: Test): Promise<StalledListener> {
  const gate = new Int32Array(new SharedArrayBuffer(4))
  const worker = new Worker(LISTENER, { eval: true, workerData: gate })
  const [port] = await once(worker, 'message') as [number]
  const fillers: Socket[] = []
  t.teardown(async () => {
    for (const socket of fillers) socket.destroy()
    await worker.terminate()
  })

  // Linux queues backlog + 1 completed handshakes; the next SYN is dropped.
  for (let i = 0; i <= BACKLOG; i++) {
    const socket = net.connect(port, '127.0.0.1').on('error', () => {})
    fillers.push(socket)
    await once(socket, 'connect')
  }
  return {
    url: `http://127.0.0.1:${port}`,
    open: () => {
      Atomics.store(gate, 0, 1)
      Atomics.notify(gate, 0)
    },
    nextArrival: async () => (await once(worker, 'message') as [Arrival])[0]
  }
}

function upstreamFor (t: Test, url: string, options: Partial<UpstreamOptions> = {}): UpstreamProvider {
  const upstream = createUpstream({
    baseUrl: url, connections: 1, bodyLimitBytes: 1024, connectTimeoutMs: 600_000, ...options
  })
  t.teardown(() => upstream.destroy())
  return upstream
}

function scopeFor (t: Test, budgetMs = 30_000): RequestScope {
  const scope = createScope({ budgetMs })
  t.teardown(() => scope.dispose())
  return scope
}

// The next client socket this process creates, once its connect has been issued.
function nextConnect (): Promise<Socket> {
  return new Promise((resolve) => {
    const onSocket = (message: unknown) => {
      diagnosticsChannel.unsubscribe('net.client.socket', onSocket)
      const { socket } = message as { socket: Socket }
      // Node issues the connect on the next tick; a turn of the event loop is past it.
      setImmediate(() => resolve(socket))
    }
    diagnosticsChannel.subscribe('net.client.socket', onSocket)
  })
}

t.test('a call aborted while connecting gives its slot back at once and stops the attempt', async (t) => {
  const listener = await stalledListener(t)
  const upstream = upstreamFor(t, listener.url)
  const scope = scopeFor(t)
  const connecting = nextConnect()

  const call = rejection(upstream.forScope(scope).get('/json'))
  const socket = await connecting
  t.ok(socket.connecting, 'the handshake is pending')
  t.same(upstream.stats, { connected: 0, running: 0, pending: 0, admitted: 1, waiting: 0 })
  scope.abort(abortReasons.clientClosed())

  t.equal((await call).code, 'CLIENT_CLOSED')
  t.ok(socket.destroyed, 'the half-open socket is destroyed')
  t.equal(upstream.stats.admitted, 0, 'the only slot is free, long before the connect timeout')
  if (upstream.stats.admitted !== 0) return

  const other = scopeFor(t)
  const reconnecting = nextConnect()
  const next = rejection(upstream.forScope(other).get('/json'))
  await reconnecting
  t.equal(upstream.stats.waiting, 0, 'the next call took the slot without waiting')
  other.abort(abortReasons.clientClosed())
  t.equal((await next).code, 'CLIENT_CLOSED')
})

t.test('a connection attempt ends with the budget, not the connect timeout', async (t) => {
  const listener = await stalledListener(t)
  const upstream = upstreamFor(t, listener.url)
  const scope = scopeFor(t, 300)
  const connecting = nextConnect()
  const started = performance.now()

  const call = rejection(upstream.forScope(scope).get('/json'))
  const socket = await connecting

  const err = await call
  t.equal(err.code, 'DEADLINE_EXCEEDED')
  t.equal(err, scope.reason, 'the scope\'s own reason')
  t.ok(performance.now() - started >= 290, 'not before the deadline')
  t.ok(socket.destroyed, 'the half-open socket is destroyed')
  t.equal(upstream.stats.admitted, 0, 'the slot is free')
})

t.test('a connect timeout shorter than the budget: UPSTREAM_FAILED, and the slot is back', async (t) => {
  const listener = await stalledListener(t)
  const upstream = upstreamFor(t, listener.url, { connectTimeoutMs: 100 })
  const connecting = nextConnect()
  const started = performance.now()

  const call = rejection(upstream.forScope(scopeFor(t)).get('/json'))
  const socket = await connecting

  const err = await call
  t.equal(err.code, 'UPSTREAM_FAILED')
  t.match(err.message, /did not accept a connection in time/)
  t.ok(performance.now() - started >= 95, 'not before the connect timeout')
  t.ok(socket.destroyed, 'the half-open socket is destroyed')
  t.equal(upstream.stats.admitted, 0, 'the slot is free')
})

t.test('destroy stops a connection attempt', async (t) => {
  const listener = await stalledListener(t)
  const upstream = upstreamFor(t, listener.url)
  const connecting = nextConnect()

  const call = rejection(upstream.forScope(scopeFor(t)).get('/json'))
  const socket = await connecting
  await upstream.destroy()

  t.equal((await call).code, 'UPSTREAM_FAILED')
  t.ok(socket.destroyed, 'the half-open socket is destroyed')
  t.equal(upstream.stats.admitted, 0, 'the slot is free')
})

t.test('the budget header is measured once the connection exists', async (t) => {
  const listener = await stalledListener(t)
  const upstream = upstreamFor(t, listener.url)
  const scope = scopeFor(t, 10_000)
  const connecting = nextConnect()
  const arrived = listener.nextArrival()

  const call = upstream.forScope(scope).get('/json')
  const socket = await connecting
  let leftAtConnect = Infinity
  socket.once('connect', () => { leftAtConnect = scope.remaining() })
  listener.open()
  t.equal((await call).status, 200)

  // The dropped SYN is sent again about a second later: that second is not the upstream's.
  const { timeoutMs } = await arrived
  t.ok(timeoutMs <= leftAtConnect, `header ${timeoutMs} ms, ${leftAtConnect.toFixed(1)} ms left once connected`)
})
