import diagnosticsChannel from 'node:diagnostics_channel'
import type { Dispatcher } from 'undici'
import type { ResourceProvider } from './resources.js'
import type { Scope } from './scope.js'
import { Admission } from './admission.js'
import { deadlineError, toUpstreamError, upstreamFailed } from './upstream-errors.js'
import { Exchange, StaleSocketError, type RawResponse } from './upstream-exchange.js'
import { basePathOf, upstreamTarget, type UpstreamQuery } from './upstream-path.js'
import type { UpstreamSlot } from './upstream-slot.js'
import { UpstreamSlots } from './upstream-slots.js'

export type { UpstreamQuery, UpstreamQueryValue } from './upstream-path.js'

// The upstream HTTP adapter: a set of connection slots for the one configured origin, owned by
// the server, and for each request a view bound to its scope. A call waits for a slot in
// HiBeaver's own admission queue, connects under its scope when the slot has no connection,
// carries the budget left to the upstream, and is torn down at the socket when the scope aborts.

export interface UpstreamResponse {
  status: number
  // The parsed JSON body; null when the upstream sent none. A 3xx or 4xx answer that is not
  // JSON, such as an HTML error page, comes as its text.
  body: unknown
}

export interface ScopedUpstream {
  // GET <base URL><path>?<query>. Rejects with INVALID_INPUT for a path that could leave the
  // base URL, UPSTREAM_FAILED for a 5xx, a reset, a 2xx body that is not JSON or a body that
  // is too large, and with the scope's reason once it aborts.
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
  // A connection attempt ends here at the latest, and sooner when the call's budget runs out.
  connectTimeoutMs?: number
  // Calls allowed to wait for a connection; beyond that a call is refused with OVERLOADED.
  maxWaiting?: number
  keepAliveTimeoutMs?: number
  // A reused connection that resets this soon after the request was written, before any byte
  // of the answer, is taken for one the upstream had closed while idle, and the call is sent
  // again. A stale socket fails within a round trip of the write; 200 ms covers a distant
  // upstream and a busy event loop, while an upstream that works on a request for longer and
  // then fails does not get it twice.
  staleWindowMs?: number
}

export interface UpstreamStats {
  // From undici: connections open, and requests it is running or holding.
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

interface Lease {
  slot: UpstreamSlot
  // Gives the slot back; called once, when undici is done with the call or it never got there.
  done: () => void
}

export class UpstreamProvider implements ResourceProvider<ScopedUpstream> {
  readonly #slots: UpstreamSlots
  readonly #basePath: string
  readonly #admission: Admission
  readonly #bodyLimitBytes: number
  readonly #connectTimeoutMs: number
  readonly #staleWindowMs: number
  #closing: Promise<void> | undefined

  constructor (options: UpstreamOptions) {
    const baseUrl = checkedBaseUrl(options.baseUrl)
    this.#basePath = basePathOf(baseUrl)
    this.#bodyLimitBytes = options.bodyLimitBytes
    this.#connectTimeoutMs = options.connectTimeoutMs ?? 5000
    this.#staleWindowMs = options.staleWindowMs ?? 200
    this.#admission = new Admission({
      resource: 'upstream connection',
      slots: options.connections,
      maxWaiting: options.maxWaiting ?? 1024
    })
    this.#slots = new UpstreamSlots({
      origin: new URL(baseUrl.origin),
      size: options.connections,
      keepAliveTimeoutMs: options.keepAliveTimeoutMs ?? 4000
    })
  }

  forScope (scope: Scope): ScopedUpstream {
    return { get: async (path, query) => await this.get(scope, path, query) }
  }

  async get (scope: Scope, path: string, query?: UpstreamQuery): Promise<UpstreamResponse> {
    const target = upstreamTarget(this.#basePath, path, query)
    return toResponse(await this.#fetch(scope, target))
  }

  get stats (): UpstreamStats {
    const { connected, running, pending } = this.#slots.stats
    return { connected, running, pending, admitted: this.#admission.active, waiting: this.#admission.waiting }
  }

  // Refuses waiting calls at once, lets running ones finish (their scopes bound them), then
  // closes the sockets. Safe to call twice.
  async close (): Promise<void> {
    this.#closing ??= this.#shutDown(async () => await this.#slots.close())
    await this.#closing
  }

  // Like close, but running calls are torn down too.
  async destroy (): Promise<void> {
    this.#closing = this.#shutDown(async () => await this.#slots.destroy())
    await this.#closing
  }

  async #shutDown (end: () => Promise<void>): Promise<void> {
    this.#admission.close()
    await end()
  }

  // One retry, and only when the upstream cannot have read the request: a kept socket that
  // failed within the stale window of the write and before any byte of the response, or that
  // closed before the request was written at all.
  async #fetch (scope: Scope, target: string): Promise<RawResponse> {
    try {
      return await this.#attempt(scope, target)
    } catch (err) {
      if (!(err instanceof StaleSocketError) || scope.expireIfDue() !== undefined || scope.remaining() < 1) {
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
    const { slot, done } = await this.#lease(scope)

    // Measured once the connection exists, and rounded down: never more than is left.
    const budgetMs = Math.floor(scope.remaining())
    if (budgetMs < 1) {
      done()
      throw scope.expireIfDue() ?? deadlineError(scope)
    }

    const exchange = new Exchange({
      limitBytes: this.#bodyLimitBytes,
      errorLimitBytes: Math.min(this.#bodyLimitBytes, ERROR_BODY_DRAIN_BYTES),
      connection: slot,
      staleWindowMs: this.#staleWindowMs,
      onFinished: done
    })
    const removeAbort = scope.onAbort((reason) => exchange.abort(reason))
    try {
      slot.dispatch(dispatchOptions(scope, target, budgetMs), exchange)
      return await exchange.result
    } finally {
      removeAbort()
    }
  }

  // A slot from the admission queue, then its connection: the one it kept, or one made now.
  async #lease (scope: Scope): Promise<Lease> {
    const release = await this.#admission.acquire(scope)
    const slot = this.#slots.take()
    // Filed back by the state of its connection before the next waiter is let in.
    const done = () => {
      this.#slots.give(slot)
      release()
    }

    try {
      await slot.connect(scope, this.#connectTimeoutMs)
    } catch (err) {
      done()
      throw err
    }
    return { slot, done }
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

  const text = raw.body.toString('utf8')
  try {
    return { status: raw.status, body: JSON.parse(text) as unknown }
  } catch (err) {
    // A 4xx is an answer whatever its format; a 2xx is the document the handler asked for.
    if (raw.status >= 300) return { status: raw.status, body: text }
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
