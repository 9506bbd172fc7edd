import { EventEmitter } from 'node:events'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'

// A misbehaving upstream on loopback, for `npm start` without UPSTREAM_BASE_URL, for tests and
// for benchmarks. The path picks the behaviour, the query tunes it:
//   /json?delay=ms&size=bytes&status=code  JSON after a delay: what it received, padded to size
//   /trickle?chunks=n&interval=ms&chunkBytes=n  a JSON array sent one chunk per interval
//   /hang                                  headers and part of the body, then nothing
//   /reset?delay=ms                        the connection is reset after the delay, no response
//   /stale                                 reset on a reused connection, else like /json
//   /error?status=code&size=bytes          a 5xx (default 500) with a body of that size
//   /invalid-json                          200 with a body that does not parse
//   /html?status=code                      an HTML page (default 404), as a web server answers
// Tests watch it through `events` and `counters`: each request, each connection closed, with
// whether a response was still being produced on it, and each time /trickle waits for a slow
// reader. `npm start` runs it in the server's process, so what a client can ask of it is
// bounded: a body of at most MAX_BODY_BYTES, built without copying, and written no faster
// than the client reads it.

export interface DemoRequest {
  connectionId: number
  path: string
  query: Record<string, string>
  requestId: string | undefined
  timeoutMs: number | undefined
  // Epoch milliseconds, with a fraction.
  receivedAt: number
  // The connection had carried an earlier request.
  reused: boolean
}

export interface DemoConnectionClosed {
  connectionId: number
  requests: number
  // A response was still being produced when the connection closed: the client left.
  inFlight: boolean
  closedAt: number
}

export interface DemoBackpressure {
  connectionId: number
  // Bytes written but not yet taken by the socket when the demo stopped writing.
  bufferedBytes: number
}

export interface DemoUpstreamEvents {
  request: [DemoRequest]
  'connection-closed': [DemoConnectionClosed]
  backpressure: [DemoBackpressure]
}

export interface DemoCounters {
  connections: number
  open: number
  maxOpen: number
  requests: number
  closedInFlight: number
}

export interface DemoUpstream {
  readonly url: string
  readonly events: EventEmitter<DemoUpstreamEvents>
  readonly counters: Readonly<DemoCounters>
  close (): Promise<void>
}

export interface DemoUpstreamOptions {
  host?: string
  port?: number
}

interface Connection {
  id: number
  requests: number
  inFlight: boolean
}

const MAX_DELAY_MS = 10 * 60_000
// Enough to exceed the default upstream body limit (1 MiB) several times over.
export const MAX_BODY_BYTES = 4 * 1024 * 1024
export const MAX_CHUNK_BYTES = 64 * 1024
// Shared by every padded body and never written to: a body is a view of it, not a copy.
let padding: Buffer | undefined

const epochNow = () => performance.timeOrigin + performance.now()

export async function startDemoUpstream (options: DemoUpstreamOptions = {}): Promise<DemoUpstream> {
  const host = options.host ?? '127.0.0.1'
  const demo = new Demo()
  const server = createServer((req, res) => demo.handle(req, res))
  server.on('connection', (socket: Socket) => demo.track(socket))

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(options.port ?? 0, host, () => {
      server.off('error', reject)
      resolve()
    })
  })
  const { port } = server.address() as AddressInfo
  const url = `http://${host.includes(':') ? `[${host}]` : host}:${port}`
  return { url, events: demo.events, counters: demo.counters, close: async () => await closeServer(server) }
}

async function closeServer (server: Server): Promise<void> {
  const closed = new Promise<void>((resolve) => server.close(() => resolve()))
  server.closeAllConnections()
  await closed
}

class Demo {
  readonly events = new EventEmitter<DemoUpstreamEvents>()
  readonly counters: DemoCounters = { connections: 0, open: 0, maxOpen: 0, requests: 0, closedInFlight: 0 }
  readonly #connections = new WeakMap<Socket, Connection>()

  track (socket: Socket): void {
    const connection: Connection = { id: ++this.counters.connections, requests: 0, inFlight: false }
    this.#connections.set(socket, connection)
    this.counters.open++
    this.counters.maxOpen = Math.max(this.counters.maxOpen, this.counters.open)

    socket.once('close', () => {
      this.counters.open--
      if (connection.inFlight) this.counters.closedInFlight++
      this.events.emit('connection-closed', {
        connectionId: connection.id,
        requests: connection.requests,
        inFlight: connection.inFlight,
        closedAt: epochNow()
      })
    })
  }

  handle (req: IncomingMessage, res: ServerResponse): void {
    const connection = this.#connections.get(req.socket)
    if (connection === undefined) {
      req.socket.destroy()
      return
    }

    const url = new URL(req.url ?? '/', 'http://demo')
    const info = this.#describe(req, url, connection)
    connection.requests++
    connection.inFlight = true
    this.counters.requests++
    res.once('finish', () => { connection.inFlight = false })
    this.events.emit('request', info)

    const behaviour = BEHAVIOURS[url.pathname]
    if (behaviour === undefined) return sendJson(res, 404, { error: 'no such demo behaviour' })
    behaviour(req, res, info, this)
  }

  waiting (res: ServerResponse, info: DemoRequest): void {
    this.events.emit('backpressure', { connectionId: info.connectionId, bufferedBytes: res.writableLength })
  }

  #describe (req: IncomingMessage, url: URL, connection: Connection): DemoRequest {
    const timeout = req.headers['x-request-timeout-ms']
    const requestId = req.headers['x-request-id']
    return {
      connectionId: connection.id,
      path: url.pathname,
      query: Object.fromEntries(url.searchParams),
      requestId: typeof requestId === 'string' ? requestId : undefined,
      timeoutMs: typeof timeout === 'string' ? Number(timeout) : undefined,
      receivedAt: epochNow(),
      reused: connection.requests > 0
    }
  }
}

type Behaviour = (req: IncomingMessage, res: ServerResponse, info: DemoRequest, demo: Demo) => void

const BEHAVIOURS: Readonly<Record<string, Behaviour>> = {
  '/json': (_req, res, info) => {
    const size = bounded(info.query.size, 0, MAX_BODY_BYTES)
    const status = bounded(info.query.status, 200, 599, 200)
    later(res, bounded(info.query.delay, 0, MAX_DELAY_MS), () => sendEcho(res, status, info, size))
  },
  '/stale': (req, res, info) => {
    if (info.reused) req.socket.resetAndDestroy()
    else sendEcho(res, 200, info, 0)
  },
  '/trickle': (_req, res, info, demo) => trickle(res, info, demo),
  '/hang': (_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': '1000' })
    res.write('{"partial":')
  },
  '/reset': (req, res, info) => {
    later(res, bounded(info.query.delay, 0, MAX_DELAY_MS), () => req.socket.resetAndDestroy())
  },
  '/error': (_req, res, info) => {
    const status = bounded(info.query.status, 500, 599, 500)
    const body = paddingOf(bounded(info.query.size, 0, MAX_BODY_BYTES, 16))
    res.writeHead(status, { 'content-type': 'text/plain', 'content-length': String(body.length) })
    res.end(body)
  },
  '/invalid-json': (_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' })
    res.end('{"not": json')
  },
  '/html': (_req, res, info) => {
    const status = bounded(info.query.status, 200, 599, 404)
    const body = `<!doctype html>\n<title>${status}</title>\n<h1>${status}</h1>\n`
    const length = String(Buffer.byteLength(body))
    res.writeHead(status, { 'content-type': 'text/html; charset=utf-8', 'content-length': length })
    res.end(body)
  }
}

// What the request carried, as JSON padded to `size` bytes with a view of the shared padding,
// so a large body costs neither a copy nor a serialisation of megabytes on the event loop.
function sendEcho (res: ServerResponse, status: number, info: DemoRequest, size: number): void {
  // These statuses carry no body by definition; a content-length on them is a protocol error.
  if (status === 204 || status === 304) {
    res.writeHead(status)
    res.end()
    return
  }
  const base = {
    path: info.path,
    query: info.query,
    requestId: info.requestId ?? null,
    timeoutMs: info.timeoutMs ?? null
  }
  const empty = JSON.stringify({ ...base, padding: '' })
  const room = size - empty.length
  if (room <= 0) return sendJson(res, status, base)

  // Up to the padding's opening quote, the padding, then its closing quote and the brace.
  const open = Buffer.from(empty.slice(0, -2))
  const body = [open, paddingOf(room), Buffer.from('"}')]
  const length = body.reduce((total, part) => total + part.length, 0)
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': String(length) })
  for (const part of body) res.write(part)
  res.end()
}

function paddingOf (bytes: number): Buffer {
  padding ??= Buffer.alloc(MAX_BODY_BYTES, 'x')
  return padding.subarray(0, bytes)
}

// Runs `fn` after `delayMs` unless the response closes first: a departed client leaves no timer.
function later (res: ServerResponse, delayMs: number, fn: () => void): void {
  if (delayMs === 0) return fn()
  const timer = setTimeout(fn, delayMs)
  res.once('close', () => clearTimeout(timer))
}

// One chunk per interval, and none while the socket still holds the last one: a client that
// reads slowly, or not at all, is answered at its own pace rather than buffered for.
function trickle (res: ServerResponse, info: DemoRequest, demo: Demo): void {
  const chunks = bounded(info.query.chunks, 1, 100_000, 10)
  const interval = bounded(info.query.interval, 0, MAX_DELAY_MS, 100)
  const item = `"${paddingOf(bounded(info.query.chunkBytes, 0, MAX_CHUNK_BYTES, 16)).toString('latin1')}"`
  res.writeHead(200, { 'content-type': 'application/json' })
  res.write('[')

  let sent = 0
  let timer: NodeJS.Timeout | undefined
  const schedule = (): void => { timer = setTimeout(next, interval) }
  const next = (): void => {
    const more = res.write(sent === 0 ? item : `,${item}`)
    if (++sent === chunks) {
      res.end(']')
    } else if (more) {
      schedule()
    } else {
      demo.waiting(res, info)
      res.once('drain', schedule)
    }
  }
  schedule()
  res.once('close', () => clearTimeout(timer))
}

function sendJson (res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body)
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(text)) })
  res.end(text)
}

function bounded (value: string | undefined, min: number, max: number, fallback = min): number {
  const number = Number(value)
  if (value === undefined || !Number.isInteger(number)) return fallback
  return Math.min(max, Math.max(min, number))
}
