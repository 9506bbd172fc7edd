import type { ClientBase, PoolClient, QueryConfig, QueryResult, QueryResultRow } from 'pg'
import { sendCancelRequest, type CancelTarget } from './db-cancel.js'
import { toDatabaseError, unavailable } from './db-errors.js'
import { HiBeaverError } from './errors.js'
import type { Scope } from './scope.js'

// One pool client checked out for one request scope. A statement in flight when the scope
// aborts is cancelled on the server at once while the caller is rejected with the abort reason.
// The client goes back to the pool only when its last statement has ended, any cancel request
// has been dealt with by the server and no transaction is open; otherwise it is destroyed.

export interface CancelEvent {
  requestId: string
  processID: number | null
  reason: HiBeaverError['code']
  // performance.now() readings: when the scope aborted, when the statement ended on the wire
  // (the server's answer to it arrived), and when the server closed the cancel connection.
  abortedAt: number
  endedAt: number
  confirmedAt: number
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

// Why a client's connection failed, if it did; recorded for the client's whole life by
// listeners attached once, when the pool opens it. While a client is checked out the pool
// listens to nothing on it, and an 'error' with no listener would crash the process.
const lostConnections = new WeakMap<ClientBase, unknown>()

export function watchConnection (client: ClientBase): void {
  client.on('error', (err) => { if (!lostConnections.has(client)) lostConnections.set(client, err) })
  client.on('end', () => {
    if (!lostConnections.has(client)) lostConnections.set(client, new Error('connection ended'))
  })
}

// node-postgres sets this once ReadyForQuery has brought the session's new transaction status;
// it is on every Client, though @types/pg does not declare it.
interface ReadyState {
  readyForQuery: boolean
}

const noop = () => {}

export class Lease {
  readonly client: PoolClient
  readonly scope: Scope
  readonly #options: LeaseOptions
  #running = false
  #whenEnded: Array<() => void> | undefined
  #cancel: Promise<boolean> | undefined
  #released = false

  constructor (client: PoolClient, scope: Scope, options: LeaseOptions) {
    this.client = client
    this.scope = scope
    this.#options = options
  }

  get #lost (): unknown {
    return lostConnections.get(this.client)
  }

  // `shielded`: not raced against the scope and never cancelled (a COMMIT once sent).
  query<R extends QueryResultRow> (config: QueryConfig, shielded = false): Promise<QueryResult<R>> {
    const due = this.scope.expireIfDue()
    if (due !== undefined) return Promise.reject(due)
    // A handle kept past its transaction would drive a connection now leased to someone else.
    if (this.#released) return Promise.reject(usedAfterRelease())
    const lost = this.#lost
    if (lost !== undefined) return Promise.reject(unavailable(lost))
    // One statement at a time, queued here rather than in the driver, so that after an abort
    // no statement is left waiting to be sent (rare: concurrent queries in one transaction).
    if (this.#running) return this.#ended().then(() => this.query<R>(config, shielded))
    return this.#issue<R>(config, shielded)
  }

  #issue<R extends QueryResultRow> (config: QueryConfig, shielded: boolean): Promise<QueryResult<R>> {
    this.#running = true
    return new Promise((resolve, reject) => {
      let off = noop
      try {
        this.client.query<R>(config, (err: Error | undefined, result: QueryResult<R>) => {
          off()
          this.#endWhenReady()
          if (err === undefined || err === null) resolve(result)
          else reject(toDatabaseError(err, this.scope, this.#lost !== undefined))
        })
      } catch (err) {
        // Refused before anything was sent (a malformed query config).
        this.#statementEnded()
        reject(toDatabaseError(err, this.scope))
        return
      }
      if (shielded) return
      off = this.scope.onAbort((reason) => {
        // The lease keeps the client out of circulation until the cancel is dealt with.
        this.#cancelOnServer(reason)
        reject(reason)
      })
    })
  }

  // node-postgres calls a failed statement back on its ErrorResponse, before the ReadyForQuery
  // that carries the new transaction status: until then getTransactionStatus() still says 'I'
  // after `BEGIN; SELECT 1/0`. So the statement has ended only once the client is ready again
  // ('drain' follows ReadyForQuery), or its connection is gone and no answer will come.
  #endWhenReady (): void {
    const client = this.client
    if ((client as unknown as ReadyState).readyForQuery || this.#lost !== undefined) {
      this.#statementEnded()
      return
    }
    const ready = () => {
      client.off('drain', ready).off('error', ready).off('end', ready)
      this.#statementEnded()
    }
    client.once('drain', ready).once('error', ready).once('end', ready)
  }

  #statementEnded (): void {
    this.#running = false
    const waiters = this.#whenEnded
    this.#whenEnded = undefined
    if (waiters !== undefined) for (const wake of waiters) wake()
  }

  // Resolves when no statement of this lease is running.
  #ended (): Promise<void> {
    if (!this.#running) return Promise.resolve()
    return new Promise((resolve) => (this.#whenEnded ??= []).push(resolve))
  }

  #cancelOnServer (reason: HiBeaverError): void {
    if (this.#cancel !== undefined || this.#lost !== undefined) return
    const abortedAt = performance.now()
    const target = this.client as unknown as CancelTarget
    this.#cancel = sendCancelRequest(target, this.#options.settleTimeoutMs)
    const stamp = (promise: Promise<unknown>) => promise.then(() => performance.now())
    Promise.all([stamp(this.#ended()), stamp(this.#cancel), this.#cancel]).then(([endedAt, confirmedAt, delivered]) => {
      this.#options.onCancel({
        requestId: this.scope.requestId,
        processID: target.processID,
        reason: reason.code,
        abortedAt,
        endedAt,
        confirmedAt,
        delivered
      })
    }, noop)
  }

  // Safe to call twice. The caller is never kept waiting: settling happens in the background.
  release (): void {
    if (this.#released) return
    this.#released = true
    // The common case, decided at once: nothing running, nothing cancelled, no transaction.
    if (!this.#running && this.#cancel === undefined && this.#lost === undefined &&
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
      await this.#ended()
    } else {
      if (!await within(this.#ended(), timeoutMs)) return new Error('statement did not end after cancel')
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
    // A statement that may still run is cut off now rather than at the pool's leisure.
    if (problem !== undefined) this.client.connection.stream.destroy()
    this.client.release(problem)
    this.#options.onDone(this, problem)
  }
}

function usedAfterRelease (): HiBeaverError {
  return new HiBeaverError('INTERNAL', 'a database handle was used after its transaction or query had ended')
}

function toError (value: unknown): Error {
  return value instanceof Error ? value : new Error(String(value))
}

// Whether `promise` settles within `ms`.
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
