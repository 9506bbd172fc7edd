import { randomUUID } from 'node:crypto'
import { abortReasons, type HiBeaverError } from './errors.js'
import { DeadlineWheel, monotonicClock, type Clock, type Expirable } from './deadline-wheel.js'
import type { Scope } from './scope.js'

type AbortCallback = (reason: HiBeaverError) => void

export interface ScopeOptions {
  budgetMs: number
  requestId?: string
  // Runs once when the scope is disposed, such as giving back a concurrency slot.
  onDispose?: () => void
}

// One request's cancellation scope: an absolute deadline, a first-cause-wins abort reason, and
// an AbortSignal made only when somebody asks for it. Disposal takes it out of every structure
// that could keep it alive: the deadline wheel and the manager's live set.
export class RequestScope implements Scope, Expirable {
  readonly requestId: string
  readonly budgetMs: number
  readonly startedAt: number
  readonly #deadlineAt: number
  readonly #manager: ScopeManager
  readonly #slot: number
  readonly #onDispose: (() => void) | undefined
  #controller: AbortController | undefined
  #reason: HiBeaverError | undefined
  #callbacks: AbortCallback[] | undefined
  #disposed = false
  #protecting = 0
  #unprotected: Array<() => void> | undefined

  constructor (manager: ScopeManager, options: ScopeOptions, now: number) {
    this.requestId = options.requestId ?? randomUUID()
    this.budgetMs = options.budgetMs
    this.startedAt = now
    this.#deadlineAt = now + options.budgetMs
    this.#manager = manager
    this.#onDispose = options.onDispose
    this.#slot = manager.wheel.add(this, this.#deadlineAt)
  }

  get signal (): AbortSignal {
    if (this.#controller === undefined) {
      this.#controller = new AbortController()
      if (this.#reason !== undefined) this.#controller.abort(this.#reason)
    }
    return this.#controller.signal
  }

  get aborted (): boolean {
    return this.#reason !== undefined
  }

  get reason (): HiBeaverError | undefined {
    return this.#reason
  }

  get disposed (): boolean {
    return this.#disposed
  }

  get deadline (): number {
    return Math.round(performance.timeOrigin + this.#deadlineAt)
  }

  remaining (): number {
    return Math.max(0, this.#deadlineAt - this.#manager.clock.now())
  }

  elapsed (): number {
    return this.#manager.clock.now() - this.startedAt
  }

  // The shared timer fires up to a tick late. Work about to start asks here first, so a
  // deadline that has passed is acted on at once rather than met by starting something.
  expireIfDue (): HiBeaverError | undefined {
    if (this.#reason === undefined && this.#manager.clock.now() >= this.#deadlineAt) this.expire()
    return this.#reason
  }

  throwIfAborted (): void {
    const reason = this.expireIfDue()
    if (reason !== undefined) throw reason
  }

  onAbort (fn: AbortCallback): () => void {
    if (this.#reason !== undefined) {
      fn(this.#reason)
      return noop
    }

    this.#callbacks ??= []
    this.#callbacks.push(fn)
    return () => this.#removeCallback(fn)
  }

  protect<T> (work: Promise<T>): Promise<T> {
    this.#protecting++
    const settled = (): void => {
      if (--this.#protecting > 0) return
      const waiting = this.#unprotected
      this.#unprotected = undefined
      if (waiting !== undefined) for (const fn of waiting) fn()
    }
    work.then(settled, settled)
    return work
  }

  // Runs `fn` at once when no protected work is pending, else once the last of it settles.
  whenUnprotected (fn: () => void): void {
    if (this.#protecting === 0) return fn()
    this.#unprotected ??= []
    this.#unprotected.push(fn)
  }

  get protecting (): boolean {
    return this.#protecting > 0
  }

  // First cause wins: later calls return false and change nothing.
  abort (reason: HiBeaverError): boolean {
    if (this.#reason !== undefined) return false

    this.#reason = reason
    this.#manager.release(this, this.#slot)
    const callbacks = this.#callbacks
    this.#callbacks = undefined
    this.#controller?.abort(reason)
    if (callbacks !== undefined) {
      for (const fn of callbacks) fn(reason)
    }
    return true
  }

  // Called by the deadline wheel. The error is made here rather than at creation: a stack per
  // request costs more than the whole scope, and a wheel tick has no useful stack to show.
  expire (): void {
    this.abort(abortReasons.deadline(this.budgetMs))
  }

  // Safe to call twice. The request is over: work it started and left running (a call nobody
  // awaited, the loser of a Promise.all) is stopped through the same callbacks as an abort,
  // and work started from now on is refused, so nothing of the scope outlives its request.
  dispose (): void {
    if (this.#disposed) return

    this.#disposed = true
    this.abort(this.#manager.finished)
    this.#onDispose?.()
  }

  #removeCallback (fn: AbortCallback): void {
    const callbacks = this.#callbacks
    if (callbacks === undefined) return
    const index = callbacks.indexOf(fn)
    if (index !== -1) callbacks.splice(index, 1)
  }
}

function noop (): void {}

export interface ScopeManagerOptions {
  clock?: Clock
  tickMs?: number
}

// Owns the deadline wheel and the set of live scopes. Shutdown walks the live set instead of
// linking every request signal to a process-wide one with AbortSignal.any(), which on Node 20
// retains each request's signal for the life of the process (nodejs/node#55351).
export class ScopeManager {
  readonly clock: Clock
  readonly wheel: DeadlineWheel
  readonly #live = new Set<RequestScope>()
  // One reason for every request that finished without an abort: it is never sent, its stack
  // would say nothing, and making one per request would cost more than the whole scope.
  readonly finished = abortReasons.finished()

  constructor (options: ScopeManagerOptions = {}) {
    this.clock = options.clock ?? monotonicClock
    this.wheel = new DeadlineWheel({
      clock: this.clock,
      ...(options.tickMs === undefined ? {} : { tickMs: options.tickMs })
    })
  }

  get live (): number {
    return this.#live.size
  }

  create (options: ScopeOptions): RequestScope {
    const scope = new RequestScope(this, options, this.clock.now())
    this.#live.add(scope)
    return scope
  }

  // Aborts every live scope with the same reason; returns how many it aborted.
  abortAll (reason: () => HiBeaverError): number {
    let count = 0
    for (const scope of [...this.#live]) {
      if (scope.abort(reason())) count++
    }
    return count
  }

  release (scope: RequestScope, slot: number): void {
    this.wheel.remove(scope, slot)
    this.#live.delete(scope)
  }
}

const defaultManager = new ScopeManager()

// A scope outside any server, for adapters and tests.
export function createScope (options: ScopeOptions): RequestScope {
  return defaultManager.create(options)
}
