import { invalidInput } from './errors.js'
import type { AnyHandler } from './handler.js'

export const BUDGET_HEADER = 'x-request-timeout-ms'

export function effectiveTimeout (handler: AnyHandler, defaultTimeoutMs: number): number {
  return Math.min(defaultTimeoutMs, handler.timeoutMs ?? defaultTimeoutMs)
}

// The request's budget: the handler's effective timeout, shortened by the client's header,
// which is itself capped. A header that is not a positive integer is the client's mistake.
export function budgetFromHeader (
  header: string | string[] | undefined,
  timeoutMs: number,
  maxTimeoutMs: number
): number {
  if (header === undefined) return timeoutMs

  const text = (Array.isArray(header) ? header[0] : header)?.trim() ?? ''
  if (!/^\d+$/.test(text) || /^0+$/.test(text)) {
    throw invalidInput(`${BUDGET_HEADER} must be a positive integer of milliseconds`)
  }
  // A number too long for exact arithmetic is still far over the cap, so Number() is enough.
  return Math.min(timeoutMs, Number(text), maxTimeoutMs)
}
