import type { Scope } from './scope.js'

// A resource kind owned by the server (a pool, a dispatcher) that hands each request a view
// bound to that request's scope. Handlers only ever see the bound view.
export interface ResourceProvider<T> {
  forScope (scope: Scope): T
  // Drains and releases everything; safe to call twice.
  close (): Promise<void>
}
