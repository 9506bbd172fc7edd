import type { HiBeaverError } from './errors.js'

// What a resource adapter sees of a request's cancellation scope. The implementation lives in
// request-scope.ts; adapters depend only on this shape, so they can be driven by any scope.
export interface Scope {
  // Created on first access: a request that never reads it pays for no AbortController.
  readonly signal: AbortSignal
  // True once the scope has aborted or its request has finished.
  readonly aborted: boolean
  // The first abort cause (CLIENT_CLOSED, DEADLINE_EXCEEDED, SHUTTING_DOWN, or REQUEST_FINISHED
  // for work still running when the request was answered), else undefined.
  readonly reason: HiBeaverError | undefined
  // Absolute deadline, epoch milliseconds.
  readonly deadline: number
  // The whole budget this request was given, in ms.
  readonly budgetMs: number
  readonly requestId: string
  // Milliseconds left before the deadline, never negative.
  remaining (): number
  // Aborts at once when the deadline has passed but the shared timer has not fired yet; returns
  // the abort reason, if any. Adapters ask it before they start work.
  expireIfDue (): HiBeaverError | undefined
  // Throws the abort reason when the scope has aborted, or its deadline has passed.
  throwIfAborted (): void
  // Runs `fn` once when the scope aborts (at once if it already has); returns its removal.
  // Cheaper than a signal listener, and removed when the scope is disposed in any case.
  onAbort (fn: (reason: HiBeaverError) => void): () => void
  // Work that must not be cut short once started, such as a COMMIT that was sent. The scope
  // still aborts on time, but the answer waits for this work to settle and gives the handler a
  // turn, so it can say what happened. Returns `work`.
  protect<T> (work: Promise<T>): Promise<T>
}
