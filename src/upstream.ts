import diagnosticsChannel from 'node:diagnostics_channel'
import { Pool, type Dispatcher } from 'undici'
import type { ResourceProvider } from './resources.js'
import type { Scope } from './scope.js'
import { Admission } from './upstream-admission.js'
import { deadlineError, toUpstreamError, upstreamFailed } from './upstream-errors.js'
import { Exchange, StaleSocketError, type RawResponse } from './upstream-exchange.js'
import { basePathOf, upstreamTarget, type UpstreamQuery } from './upstream-path.js'
import { SocketReuseTracker } from './upstream-socket-reuse.js'

export type { UpstreamQuery, UpstreamQueryValue } from './upstream-path.js'

// The upstream HTTP adapter: one undici Pool for the one configured origin, owned by the
// server, and for each request a view bound to its scope. A call waits for a connection slot
// in HiBeaver's own admission queue, carries the budget left to the upstream, and is torn down
// at the socket when the scope aborts.

export interface UpstreamResponse {
  status: number
  // The parsed JSON body; null when the upstream sent none.
  body: unknown
}

export interface ScopedUpstream {
  // GET <base URL><path>?<query>. Rejects with INVALID_INPUT for a path that could leave the
  // base URL, UPSTREAM_FAILED for a 5xx, a reset or a body that is not JSON or is too large,
  // and with the scope's reason once it aborts.
  get (path: string, query?: UpstreamQuery): Promise<UpstreamResponse>
}

declare module './handler.js' {
  interface HandlerResources {
    http: ScopedUpstream
  }
}

export interface UpstreamOptions {
  baseUrl: string | URL
  // Connections to the upstream; also the number of calls in flight at once.
  connections: number
  bodyLimitBytes: number
  // undici's connect timeout belongs to the dispatcher, not to a request; a call still gives up
  // at its own deadline, and the attempt ends here at the latest.
  connectTimeoutMs?: number
  // Calls allowed to wait for a connection; beyond that a call is refused with OVERLOADED.
  maxWaiting?: number
  keepAliveTimeoutMs?: number
}

export interface UpstreamStats {
  // From undici: sockets open, and requests it is running or holding.
  connected: number
  running: number
  pending: number
  // From the admission queue: calls holding a slot, and calls waiting for one.
  admitted: number
  waiting: number
}

// Published when a call is sent again after a stale keep-alive socket: { requestId, cause }.
export const retryChannel = diagnosticsChannel.channel('hibeaver:upstream:retry')

const ERROR_BODY_DRAIN_BYTES = 64 * 1024

export class UpstreamProvider implements ResourceProvider<ScopedUpstream> {
  readonly #pool: Pool
  readonly #basePath: string
  readonly #admission: Admission
  readonly #tracker = new SocketReuseTracker()
  readonly #bodyLimitBytes: number
  #closing: Promise<void> | undefined

  constructor (options: UpstreamOptions) {
    const baseUrl = checkedBaseUrl(options.baseUrl)
    this.#basePath = basePathOf(baseUrl)
    this.#bodyLimitBytes = options.bodyLimitBytes
    this.#admission = new Admission({ slots: options.connections, maxWaiting: options.maxWaiting ?? 1024 })
    this.#pool = new Pool(baseUrl.origin, {
      connections: options.connections,
      connect: { timeout: options.connectTimeoutMs ?? 5000 },
      keepAliveTimeout: options.keepAliveTimeoutMs ?? 4000
    })
    this.#tracker.start()
  }

  forScope (scope: Scope): ScopedUpstream {
    return { get: async (path, query) => await this.get(scope, path, query) }
  }

  async get (scope: Scope, path: string, query?: UpstreamQuery): Promise<UpstreamResponse> {
    const target = upstreamTarget(this.#basePath, path, query)
    return toResponse(await this.#fetch(scope, target))
  }

  get stats (): UpstreamStats {
    const { connected, running, pending } = this.#pool.stats
    return { connected, running, pending, admitted: this.#admission.active, waiting: this.#admission.waiting }
  }

  // Refuses waiting calls at once, lets running ones finish (their scopes bound them), then
  // closes the sockets. Safe to call twice.
  async close (): Promise<void> {
    this.#closing ??= this.#shutDown(async () => await this.#pool.close())
    await this.#closing
  }

  // Like close, but running calls are torn down too.
  async destroy (): Promise<void> {
    this.#closing = this.#shutDown(async () => await this.#pool.destroy())
    await this.#closing
  }

  async #shutDown (end: () => Promise<void>): Promise<void> {
    this.#admission.close()
    try {
      await end()
    } finally {
      this.#tracker.stop()
    }
  }

  // One retry, and only for a reused socket that closed before any byte of the response:
  // the request never reached the upstream's application, so sending it again is safe.
  async #fetch (scope: Scope, target: string): Promise<RawResponse> {
    try {
      return await this.#attempt(scope, target)
    } catch (err) {
      if (!(err instanceof StaleSocketError) || scope.aborted || scope.remaining() < 1) {
        throw toUpstreamError(err, scope)
      }
      if (retryChannel.hasSubscribers) retryChannel.publish({ requestId: scope.requestId, cause: err.cause })
    }
    try {
      return await this.#attempt(scope, target)
    } catch (err) {
      throw toUpstreamError(err, scope)
    }
  }

  async #attempt (scope: Scope, target: string): Promise<RawResponse> {
    const release = await this.#admission.acquire(scope)

    // Measured after the wait for a slot, and rounded down: never more than is left.
    const budgetMs = Math.floor(scope.remaining())
    if (budgetMs < 1) {
      release()
      throw scope.reason ?? deadlineError(scope)
    }

    const exchange = new Exchange({
      limitBytes: this.#bodyLimitBytes,
      errorLimitBytes: Math.min(this.#bodyLimitBytes, ERROR_BODY_DRAIN_BYTES),
      tracker: this.#tracker,
      onFinished: release
    })
    const removeAbort = scope.onAbort((reason) => exchange.abort(reason))
    try {
      this.#pool.dispatch(dispatchOptions(scope, target, budgetMs), exchange)
      return await exchange.result
    } finally {
      removeAbort()
    }
  }
}

export function createUpstream (options: UpstreamOptions): UpstreamProvider {
  return new UpstreamProvider(options)
}

function dispatchOptions (scope: Scope, target: string, budgetMs: number): Dispatcher.DispatchOptions {
  return {
    method: 'GET',
    path: target,
    headers: {
      accept: 'application/json',
      'x-request-id': scope.requestId,
      'x-request-timeout-ms': String(budgetMs)
    },
    // Backstops to the scope's deadline, for a call that outlives its scope's timer.
    headersTimeout: budgetMs,
    bodyTimeout: budgetMs
  }
}

function toResponse (raw: RawResponse): UpstreamResponse {
  if (raw.status >= 500) throw upstreamFailed(`the upstream answered ${raw.status}`, undefined, raw.status)
  if (raw.body.length === 0) return { status: raw.status, body: null }

  try {
    return { status: raw.status, body: JSON.parse(raw.body.toString('utf8')) as unknown }
  } catch (err) {
    throw upstreamFailed('the upstream answered invalid JSON', err, raw.status)
  }
}

function checkedBaseUrl (value: string | URL): URL {
  const url = new URL(value)
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new TypeError('the upstream base URL must use http: or https:')
  }
  if (url.username !== '' || url.password !== '' || url.search !== '' || url.hash !== '') {
    throw new TypeError('the upstream base URL must not carry credentials, a query or a fragment')
  }
  return url
}
