import type { PoolClient, QueryConfig, QueryResult, QueryResultRow } from 'pg'
import { sendCancelRequest, type CancelTarget } from './db-cancel.js'
import { toDatabaseError, unavailable } from './db-errors.js'
import type { HiBeaverError } from './errors.js'
import type { Scope } from './scope.js'

// One pool client checked out for one request scope. A statement in flight when the scope
// aborts is cancelled on the server at once while the caller is rejected with the abort reason.
// The client goes back to the pool only when its last statement has ended, any cancel request
// has been dealt with by the server and no transaction is open; otherwise it is destroyed.

export interface CancelEvent {
  requestId: string
  processID: number | null
  reason: HiBeaverError['code']
  // performance.now() readings: when the scope aborted, and when the statement ended on the wire.
  abortedAt: number
  endedAt: number
  // The server closed the cancel connection, so it has signalled the backend.
  delivered: boolean
}

export interface LeaseOptions {
  // How long, after an abort, the statement may take to end and the cancel to be confirmed
  // before the connection is destroyed instead; also bounds the clean-up ROLLBACK.
  settleTimeoutMs: number
  onCancel: (event: CancelEvent) => void
  // The lease has given its client back (clean) or destroyed it (with the reason).
  onDone: (lease: Lease, destroyed: Error | undefined) => void
}

const noop = () => {}

export class Lease {
  readonly client: PoolClient
  readonly scope: Scope
  readonly #options: LeaseOptions
  // Ends (never rejects) when every statement issued so far has ended on the wire.
  #tail: Promise<void> = Promise.resolve()
  #inFlight = 0
  #cancel: Promise<boolean> | undefined
  #lost: unknown
  #released = false
  readonly #onError = (err: unknown) => { this.#lost ??= err }
  readonly #onEnd = () => { this.#lost ??= new Error('connection ended') }

  constructor (client: PoolClient, scope: Scope, options: LeaseOptions) {
    this.client = client
    this.scope = scope
    this.#options = options
    // While checked out, the pool listens to nothing on the client: an 'error' here with no
    // listener would crash the process.
    client.on('error', this.#onError)
    client.on('end', this.#onEnd)
  }

  get lost (): boolean {
    return this.#lost !== undefined
  }

  // `shielded`: not raced against the scope and never cancelled (a COMMIT once sent).
  async query<R extends QueryResultRow> (config: QueryConfig, shielded = false): Promise<QueryResult<R>> {
    this.scope.throwIfAborted()
    // One statement at a time, queued here rather than in the driver, so that after an abort
    // no statement is left waiting to be sent.
    const turn = this.#tail
    let ended = noop
    const done = new Promise<void>((resolve) => { ended = resolve })
    this.#tail = turn.then(() => done)
    let pending: Promise<QueryResult<R>> | undefined
    try {
      await turn
      this.scope.throwIfAborted()
      if (this.#lost !== undefined) throw unavailable(this.#lost)
      pending = this.client.query<R>(config)
      this.#inFlight++
      const settled = () => {
        this.#inFlight--
        ended()
      }
      pending.then(settled, settled)
      return shielded ? await pending : await this.#race(pending)
    } catch (err) {
      if (pending === undefined) ended()
      throw toDatabaseError(err, this.scope, this.lost)
    }
  }

  #race<T> (pending: Promise<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const off = this.scope.onAbort((reason) => {
        // The lease keeps the client out of circulation until the cancel is dealt with.
        this.#cancelOnServer(reason)
        reject(reason)
      })
      pending.then((value) => { off(); resolve(value) }, (err: unknown) => { off(); reject(err) })
    })
  }

  #cancelOnServer (reason: HiBeaverError): void {
    if (this.#cancel !== undefined || this.#lost !== undefined) return
    const abortedAt = performance.now()
    const target = this.client as unknown as CancelTarget
    this.#cancel = sendCancelRequest(target, this.#options.settleTimeoutMs)
    Promise.all([this.#tail, this.#cancel]).then(([, delivered]) => {
      this.#options.onCancel({
        requestId: this.scope.requestId,
        processID: target.processID,
        reason: reason.code,
        abortedAt,
        endedAt: performance.now(),
        delivered
      })
    }, noop)
  }

  // Safe to call twice. The caller is never kept waiting: settling happens in the background.
  release (): void {
    if (this.#released) return
    this.#released = true
    // The common case, decided at once: nothing running, nothing cancelled, no transaction.
    if (this.#inFlight === 0 && this.#cancel === undefined && this.#lost === undefined &&
      this.client.getTransactionStatus() === 'I') {
      this.#giveBack(undefined)
      return
    }
    this.#settle().then((problem) => this.#giveBack(problem), (err: unknown) => this.#giveBack(toError(err)))
  }

  // Resolves with the reason to destroy the connection, or undefined when it is clean.
  async #settle (): Promise<Error | undefined> {
    const timeoutMs = this.#options.settleTimeoutMs
    if (this.#cancel === undefined) {
      // A statement left running without an abort (a handler that stopped waiting for it)
      // ends by itself, at the latest at statement_timeout.
      await this.#tail
    } else {
      if (!await within(this.#tail, timeoutMs)) return new Error('statement did not end after cancel')
      if (!await this.#cancel) return new Error('cancel request not confirmed')
    }
    if (this.#lost !== undefined) return toError(this.#lost)
    if (this.client.getTransactionStatus() === 'I') return undefined

    // A transaction left open (aborted before COMMIT, or a failed statement inside it).
    const rollback = this.client.query('ROLLBACK').then(() => true, () => false)
    if (!await within(rollback, timeoutMs) || this.#lost !== undefined) return new Error('rollback failed')
    return this.client.getTransactionStatus() === 'I' ? undefined : new Error('transaction still open')
  }

  #giveBack (problem: Error | undefined): void {
    this.client.removeListener('error', this.#onError)
    this.client.removeListener('end', this.#onEnd)
    // A statement that may still run is cut off now rather than at the pool's leisure.
    if (problem !== undefined) this.client.connection.stream.destroy()
    this.client.release(problem)
    this.#options.onDone(this, problem)
  }
}

function toError (value: unknown): Error {
  return value instanceof Error ? value : new Error(String(value))
}

// Whether `promise` settles within `ms`; it never rejects here (the tail does not).
async function within (promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined
  const late = new Promise<boolean>((resolve) => {
    timer = setTimeout(() => resolve(false), ms)
    timer.unref()
  })
  try {
    return await Promise.race([promise.then(() => true), late])
  } finally {
    clearTimeout(timer)
  }
}
