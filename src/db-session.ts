import type { ClientBase } from 'pg'
import { abortReasons } from './errors.js'
import type { Lease } from './db-lease.js'

// statement_timeout follows the remaining budget: a server-side backstop for when HiBeaver's own
// cancel cannot reach the server. It is set a little past the deadline, so HiBeaver's cancel
// normally comes first, and only when the session's value is out of range: a round trip per
// request would cost more than the backstop is worth.

const sessions = new WeakMap<ClientBase, { statementTimeoutMs: number }>()

function slack (budgetMs: number): number {
  return Math.min(1000, Math.max(50, Math.ceil(budgetMs / 8)))
}

// Returns undefined when the session's value will do, which is the common case.
export function applyStatementTimeout (lease: Lease): Promise<void> | undefined {
  const { client, scope } = lease
  const desired = Math.ceil(scope.remaining())
  if (desired <= 0) return Promise.reject(scope.reason ?? abortReasons.deadline(scope.budgetMs))

  const current = sessions.get(client)?.statementTimeoutMs
  if (current !== undefined && current >= desired && current <= desired + 2 * slack(desired)) return undefined

  const value = desired + slack(desired)
  // Unknown until the server confirms: a cancelled SET may or may not have taken effect.
  sessions.delete(client)
  return lease.query({ text: 'SELECT set_config($1, $2, false)', values: ['statement_timeout', String(value)] })
    .then(() => { sessions.set(client, { statementTimeoutMs: value }) })
}
