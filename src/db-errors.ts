import { HiBeaverError } from './errors.js'
import type { Scope } from './scope.js'

// How a failure from node-postgres or PostgreSQL reaches a client. Matching is on SQLSTATE codes
// and socket error codes only, never on message text.

interface Coded {
  code?: unknown
  syscall?: unknown
}

const SQLSTATE = /^[0-9A-Z]{5}$/

// SQLSTATE classes and codes that mean "the database cannot serve us now": connection
// exceptions, insufficient resources, shutdown or start-up, authentication and a missing
// database (both configuration, but the remedy is the same: an operator, then a retry).
const UNAVAILABLE_CLASSES = new Set(['08', '53', '28', '3D'])
const UNAVAILABLE_CODES = new Set(['57P01', '57P02', '57P03', '57P04', '57P05'])
const QUERY_CANCELED = '57014'
// Data exceptions raised while PostgreSQL reads a parameter: a value the client sent that it
// cannot take (a date out of range, a NUL in text, a lone surrogate). The client's mistake, and
// retrying it unchanged fails again. Others of class 22 (division by zero) are the query's own.
const INPUT_REJECTED = new Set([
  '22001', // string_data_right_truncation
  '22003', // numeric_value_out_of_range
  '22007', // invalid_datetime_format
  '22008', // datetime_field_overflow
  '22009', // invalid_time_zone_displacement_value
  '22021', // character_not_in_repertoire
  '22025', // invalid_escape_sequence
  '22P02', // invalid_text_representation
  '22P05' // untranslatable_character
])

export function sqlState (err: unknown): string | undefined {
  const code = (typeof err === 'object' && err !== null ? err as Coded : {}).code
  return typeof code === 'string' && SQLSTATE.test(code) ? code : undefined
}

// A socket-level failure (ECONNREFUSED, ECONNRESET, ETIMEDOUT, EPIPE, ENOTFOUND, ...).
function isSocketError (err: unknown): boolean {
  const { code, syscall } = typeof err === 'object' && err !== null ? err as Coded : {}
  return typeof syscall === 'string' || (typeof code === 'string' && /^E[A-Z]+$/.test(code))
}

export function unavailable (cause: unknown): HiBeaverError {
  return new HiBeaverError('DATABASE_UNAVAILABLE', 'the database is unavailable; retry later', { cause })
}

export function isUnavailable (err: unknown): boolean {
  const state = sqlState(err)
  if (state !== undefined) return UNAVAILABLE_CODES.has(state) || UNAVAILABLE_CLASSES.has(state.slice(0, 2))
  return isSocketError(err)
}

// `connectionLost`: the client saw its connection end or fail while it was ours, which is how
// node-postgres reports a dead socket ("Connection terminated unexpectedly", no code).
export function toDatabaseError (err: unknown, scope: Scope, connectionLost = false): HiBeaverError {
  if (err instanceof HiBeaverError) return err
  // Whatever happened after the scope aborted is a consequence of the abort.
  if (scope.reason !== undefined) return scope.reason
  if (sqlState(err) === QUERY_CANCELED) return canceled(err, scope)
  if (isUnavailable(err) || (connectionLost && sqlState(err) === undefined)) return unavailable(err)
  if (INPUT_REJECTED.has(sqlState(err) ?? '')) {
    return new HiBeaverError('INVALID_INPUT', 'a value is malformed or out of range for the database', { cause: err })
  }
  return new HiBeaverError('INTERNAL', 'the database query failed', { cause: err })
}

// statement_timeout is set a little past the deadline, so a 57014 with no budget left is the
// server-side backstop firing. Any other cancel came from outside (an operator): retry later.
function canceled (err: unknown, scope: Scope): HiBeaverError {
  if (scope.remaining() === 0) {
    return new HiBeaverError('DEADLINE_EXCEEDED', `the request did not finish within its ${scope.budgetMs} ms budget`,
      { cause: err })
  }
  return unavailable(err)
}
