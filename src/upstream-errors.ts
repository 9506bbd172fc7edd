import { HiBeaverError } from './errors.js'
import type { Scope } from './scope.js'
import { ResponseTooLargeError, StaleSocketError } from './upstream-exchange.js'

// Turns whatever an upstream call failed with into a catalogue error. Details name the
// upstream's status at most: never its address, headers or body.

const CLOSED_CODES = new Set(['ECONNRESET', 'EPIPE', 'UND_ERR_SOCKET', 'UND_ERR_CLOSED'])
// undici's headers and body timeouts are set to the budget left, so either one firing means
// the deadline has passed, even if the scope's own timer has not fired yet.
const BUDGET_TIMEOUT_CODES = new Set(['UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT'])

export function deadlineError (scope: Scope, cause?: unknown): HiBeaverError {
  return new HiBeaverError(
    'DEADLINE_EXCEEDED',
    `the request did not finish within its ${scope.budgetMs} ms budget`,
    cause === undefined ? {} : { cause }
  )
}

export function upstreamFailed (detail: string, cause?: unknown, status?: number): HiBeaverError {
  return new HiBeaverError('UPSTREAM_FAILED', detail, {
    ...(cause === undefined ? {} : { cause }),
    ...(status === undefined ? {} : { details: { upstreamStatus: status } })
  })
}

export function toUpstreamError (err: unknown, scope: Scope): HiBeaverError {
  // The scope's first cause wins over whatever the torn-down socket reported afterwards, and a
  // deadline that has passed wins over the timer that noticed it first.
  const reason = scope.expireIfDue()
  if (reason !== undefined) return reason
  if (err instanceof HiBeaverError) return err
  if (err instanceof ResponseTooLargeError) return tooLarge(err)

  const cause = err instanceof StaleSocketError ? err.cause : err
  const code = (cause as { code?: unknown } | undefined)?.code
  if (typeof code !== 'string') return upstreamFailed('the upstream call failed', err)
  if (BUDGET_TIMEOUT_CODES.has(code)) return deadlineError(scope, err)
  if (code === 'UND_ERR_CONNECT_TIMEOUT') {
    return scope.remaining() < 1
      ? deadlineError(scope, err)
      : upstreamFailed('the upstream did not accept a connection in time', err)
  }
  if (code === 'ECONNREFUSED') return upstreamFailed('the upstream refused the connection', err)
  if (CLOSED_CODES.has(code)) return upstreamFailed('the upstream closed the connection', err)
  return upstreamFailed('the upstream call failed', err)
}

function tooLarge (err: ResponseTooLargeError): HiBeaverError {
  // A 5xx body is only ever drained, so its size is not the problem worth reporting.
  if (err.status >= 500) return upstreamFailed(`the upstream answered ${err.status}`, err, err.status)
  return upstreamFailed(`the upstream response exceeded ${err.limitBytes} bytes`, err, err.status)
}
