import type { IncomingHttpHeaders } from 'node:http'
import type { Socket } from 'node:net'
import type { Dispatcher } from 'undici'
import type { SocketUse } from './upstream-slot.js'

// One request/response on the dispatcher, as an undici dispatch handler rather than through
// request(): there is no body stream, so an abort after the headers cannot turn into an 'error'
// event nobody listens to (nodejs/undici#3353), and the size limit is checked per chunk, before
// the bytes are kept.

export interface RawResponse {
  status: number
  headers: IncomingHttpHeaders
  body: Buffer
}

export class ResponseTooLargeError extends Error {
  readonly code = 'RESPONSE_TOO_LARGE'
  readonly status: number
  readonly limitBytes: number

  constructor (status: number, limitBytes: number) {
    super(`response body over ${limitBytes} bytes`)
    this.name = 'ResponseTooLargeError'
    this.status = status
    this.limitBytes = limitBytes
  }
}

// The connection failed before any byte of the response, soon after the request was written on
// a socket that had served an earlier one, or closed before it was written at all: most likely
// the upstream closed it while it sat idle, and never read the request.
export class StaleSocketError extends Error {
  constructor (cause: unknown) {
    super('a kept connection closed before the upstream read the request', { cause })
    this.name = 'StaleSocketError'
  }
}

const CLOSED_CODES = new Set(['ECONNRESET', 'EPIPE', 'UND_ERR_SOCKET'])

export interface ExchangeOptions {
  limitBytes: number
  // 5xx bodies are read only to keep the connection; beyond this they cost a reconnect instead.
  errorLimitBytes: number
  // The connection the request goes out on, asked for its socket when undici starts writing.
  connection: { started: () => SocketUse }
  // How soon after the write a reset still counts as a stale socket rather than a failure.
  staleWindowMs: number
  // Called once, when undici is done with the request (completed, failed or aborted).
  onFinished: () => void
}

export class Exchange implements Dispatcher.DispatchHandler {
  readonly result: Promise<RawResponse>
  readonly #options: ExchangeOptions
  #resolve!: (response: RawResponse) => void
  #reject!: (err: unknown) => void
  #stopped: Error | undefined
  #settled = false
  #finished = false
  #status = 0
  #headers: IncomingHttpHeaders = {}
  #limit: number
  #chunks: Buffer[] = []
  #bytes = 0
  #socket: Socket | undefined
  #reused = false
  #bytesReadAtSend = 0
  #sentAt = 0

  constructor (options: ExchangeOptions) {
    this.#options = options
    this.#limit = options.limitBytes
    this.result = new Promise((resolve, reject) => {
      this.#resolve = resolve
      this.#reject = reject
    })
  }

  // The caller is rejected first and at once; the exchange is stopped at the socket after.
  abort (reason: Error): void {
    this.#settle(reason)
    this.#stop(reason)
  }

  onRequestStart (): void {
    // Aborted while the request waited for its turn on the socket the call had connected.
    // Throwing here makes undici drop the request before writing it and keep the socket for the
    // next call.
    if (this.#stopped !== undefined) throw this.#stopped

    const { socket, reused } = this.#options.connection.started()
    this.#socket = socket
    this.#reused = reused
    this.#bytesReadAtSend = socket.bytesRead
    this.#sentAt = performance.now()
  }

  onResponseStart (_controller: Dispatcher.DispatchController, status: number, headers: IncomingHttpHeaders): void {
    if (status < 200) return

    this.#status = status
    this.#headers = headers
    if (status >= 500) this.#limit = Math.min(this.#limit, this.#options.errorLimitBytes)
    const length = Number(headers['content-length'])
    if (length > this.#limit) this.abort(new ResponseTooLargeError(status, this.#limit))
  }

  onResponseData (_controller: Dispatcher.DispatchController, chunk: Buffer): void {
    // The parser may still hand over the rest of a chunk that arrived with the abort.
    if (this.#stopped !== undefined) return

    this.#bytes += chunk.length
    if (this.#bytes > this.#limit) return this.abort(new ResponseTooLargeError(this.#status, this.#limit))
    this.#chunks.push(chunk)
  }

  onResponseEnd (): void {
    this.#finish()
    if (this.#settled) return
    const body = Buffer.concat(this.#chunks, this.#bytes)
    this.#settle(undefined, { status: this.#status, headers: this.#headers, body })
  }

  onResponseError (_controller: Dispatcher.DispatchController | undefined, err: Error): void {
    this.#finish()
    this.#settle(this.#isStale(err) ? new StaleSocketError(err) : err)
  }

  #isStale (err: Error): boolean {
    const code = (err as { code?: unknown }).code
    if (typeof code !== 'string' || !CLOSED_CODES.has(code)) return false
    // Failed before undici started writing it: the upstream never saw it.
    if (this.#socket === undefined) return this.#stopped === undefined
    if (!this.#reused || this.#status !== 0) return false
    // A kept socket the upstream had closed fails within a round trip of the write. A failure
    // later than that most likely came from an upstream that read the request and broke while
    // working on it: sending it again could do the work twice.
    if (performance.now() - this.#sentAt > this.#options.staleWindowMs) return false
    // Not one byte of the response may have arrived, not even part of the status line.
    return this.#socket.bytesRead === this.#bytesReadAtSend
  }

  // Destroying the socket with our own error makes undici fail the running request with it.
  // controller.abort() would destroy it with an informational error instead, after which undici
  // 7 puts the aborted request back in its queue to send again (nodejs/undici#5845). Before
  // onRequestStart there is no request on the wire: the flag makes onRequestStart drop it.
  #stop (reason: Error): void {
    if (this.#stopped !== undefined || this.#finished) return
    this.#stopped = reason
    this.#socket?.destroy(reason)
  }

  #finish (): void {
    if (this.#finished) return
    this.#finished = true
    this.#options.onFinished()
  }

  #settle (err: unknown, response?: RawResponse): void {
    if (this.#settled) return
    this.#settled = true
    this.#chunks = []
    if (response === undefined) this.#reject(err)
    else this.#resolve(response)
  }
}
