import type { ClientBase } from 'pg'
import { abortReasons } from './errors.js'
import type { Lease } from './db-lease.js'
import { sqlState } from './db-errors.js'

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

// Settings a server may not have: undefined_object (42704) where the parameter does not exist,
// as on PostgreSQL 13 and older for client_connection_check_interval; invalid_parameter_value
// (22023) where the platform cannot honour it (it needs POLLRDHUP, so Linux only).
const NOT_SUPPORTED = new Set(['42704', '22023'])

// The server checks for a vanished client during long statements. Resolves false when this server
// cannot; any other failure rejects. `parameter` is the setting's name (PostgreSQL 14 and later).
export async function setConnectionCheck (
  client: ClientBase, intervalMs: number, parameter = 'client_connection_check_interval'
): Promise<boolean> {
  try {
    await client.query({ text: 'SELECT set_config($1, $2, false)', values: [parameter, String(intervalMs)] })
    return true
  } catch (err) {
    if (NOT_SUPPORTED.has(sqlState(err) ?? '')) return false
    throw err
  }
}
