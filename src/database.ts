import { channel } from 'node:diagnostics_channel'
import { once } from 'node:events'
import { setTimeout as sleep } from 'node:timers/promises'
import pg, { type ClientConfig, type PoolClient, type QueryResult, type QueryResultRow } from 'pg'
import { Admission, type Release } from './admission.js'
import { Lease, watchConnection, type CancelEvent, type LeaseOptions } from './db-lease.js'
import { applyStatementTimeout, setConnectionCheck } from './db-session.js'
import { unavailable } from './db-errors.js'
import { HiBeaverError } from './errors.js'
import type { ReadinessCheck } from './readiness.js'
import type { ResourceProvider } from './resources.js'
import type { Scope } from './scope.js'

// The PostgreSQL adapter. Every wait is bounded by the request's scope: getting a pool client
// (node-postgres's pool.connect() can wait forever, brianc/node-postgres#2704, so requests wait
// in HiBeaver's admission queue instead and pg-pool's own queue stays empty), the statement
// (cancelled on the server when the scope aborts, statement_timeout as a backstop) and the
// transaction (rolled back unless COMMIT was sent). Handlers see only ScopedDatabase.

export interface DatabaseOptions {
  connectionString: string
  poolMax?: number
  // Requests allowed to wait for a connection when all are in use; one more gets OVERLOADED.
  maxWaiting?: number
  applicationName?: string
  // One connection attempt, at most; the request's budget bounds it further.
  connectTimeoutMs?: number
  idleTimeoutMs?: number
  // How long a statement may take to end after its cancel before its connection is destroyed.
  settleTimeoutMs?: number
  // PostgreSQL checks that the client is still there during long statements (0: off).
  connectionCheckIntervalMs?: number
  // The server ends a session left idle inside a transaction: a backstop, never reached normally.
  idleInTransactionTimeoutMs?: number
}

export interface QuerySpec {
  // Set to reuse a prepared statement on each connection.
  name?: string
  text: string
  values?: unknown[]
}

export interface Queryable {
  query<R extends QueryResultRow = QueryResultRow> (query: QuerySpec): Promise<QueryResult<R>>
}

export interface ScopedDatabase extends Queryable {
  // BEGIN, `work`, COMMIT on one connection. Aborted before COMMIT is sent: rolled back. Once
  // COMMIT is sent it is neither cancelled nor raced: the transaction's outcome is known.
  transaction<T> (work: (tx: Queryable) => Promise<T>): Promise<T>
}

export interface DatabaseStats {
  // Connections open and idle in the pool (node-postgres's counts), and requests waiting for
  // one in HiBeaver's admission queue (an aborted request leaves it at once).
  total: number
  idle: number
  waiting: number
  // Checked out by requests, including those still settling after an abort.
  leased: number
}

export interface Database extends ResourceProvider<ScopedDatabase> {
  // A fresh connection outside the pool and `SELECT 1`; rejects with DATABASE_UNAVAILABLE.
  ping (timeoutMs?: number): Promise<void>
  stats (): DatabaseStats
}

declare module './handler.js' {
  interface HandlerResources {
    db: ScopedDatabase
  }
}

// Diagnostics, for the edge to log or measure: a statement cancelled on the server (CancelEvent),
// a connection destroyed instead of returned ({ err }), an idle connection's error ({ err }).
export const channels = {
  cancel: channel('hibeaver:db:cancel'),
  destroyed: channel('hibeaver:db:destroyed'),
  idleError: channel('hibeaver:db:idle-error')
}

const INT8_OID = 20

// bigint ids and counts as numbers while they are exact, as strings beyond. Set per pool, not on
// pg.types, so nothing else in the process is affected.
const types = {
  getTypeParser (oid: number, format?: 'text' | 'binary') {
    if (oid === INT8_OID && format !== 'binary') return parseInt8
    return pg.types.getTypeParser(oid, format) as (text: string) => unknown
  }
} as ClientConfig['types']

function parseInt8 (text: string): number | string {
  const value = Number(text)
  return Number.isSafeInteger(value) ? value : text
}

export function createDatabase (options: DatabaseOptions): Database {
  return new PgDatabase(options)
}

class PgDatabase implements Database {
  readonly #options: Required<DatabaseOptions>
  readonly #pool: pg.Pool
  readonly #admission: Admission
  // Each lease with its admission slot, freed once the lease is done with its client.
  readonly #leases = new Map<Lease, Release>()
  // Every connection until its socket has closed: pg-pool's end() resolves before that.
  readonly #open = new Set<pg.ClientBase>()
  #checkIntervalSupported: boolean | undefined
  #closing: Promise<void> | undefined

  constructor (options: DatabaseOptions) {
    this.#options = {
      poolMax: 10,
      maxWaiting: 1024,
      applicationName: 'hibeaver',
      connectTimeoutMs: 5000,
      idleTimeoutMs: 30_000,
      settleTimeoutMs: 5000,
      connectionCheckIntervalMs: 1000,
      idleInTransactionTimeoutMs: 60_000,
      ...options
    }
    this.#leaseOptions.settleTimeoutMs = this.#options.settleTimeoutMs
    this.#pool = this.#createPool()
    // As many slots as connections: a request holding one always finds a client, idle or new.
    this.#admission = new Admission({
      resource: 'database connection',
      slots: this.#options.poolMax,
      maxWaiting: this.#options.maxWaiting
    })
  }

  #createPool (): pg.Pool {
    const options = this.#options
    const pool = new pg.Pool({
      connectionString: options.connectionString,
      max: options.poolMax,
      idleTimeoutMillis: options.idleTimeoutMs,
      application_name: options.applicationName,
      idle_in_transaction_session_timeout: options.idleInTransactionTimeoutMs,
      keepAlive: true,
      types,
      // The connect timeout goes on the client only: on the pool it would also cap the wait for
      // a busy pool, which the request's own budget bounds instead.
      Client: clientClass(options.connectTimeoutMs),
      // pg-pool awaits this hook before handing a new client out (pg-pool 3.14 onConnect).
      // eslint-disable-next-line @typescript-eslint/no-misused-promises
      onConnect: (client: pg.ClientBase) => this.#setUp(client)
    })
    // An idle client whose server session ends (pg_terminate_backend, restart) emits 'error'
    // through the pool, which has already removed it; without a listener the process would die.
    pool.on('error', (err) => {
      // pg-pool hangs the client on the error; logged, it would show the session's cancel key.
      delete (err as { client?: unknown }).client
      channels.idleError.publish({ err })
    })
    return pool
  }

  // The server checks for a vanished client during long statements, so a HiBeaver that dies
  // mid-query does not leave its statement running. Not every server or platform has it: once
  // one says so, no connection asks again.
  async #setUp (client: pg.ClientBase): Promise<void> {
    watchConnection(client)
    this.#open.add(client)
    client.once('end', () => this.#open.delete(client))
    const interval = this.#options.connectionCheckIntervalMs
    if (interval === 0 || this.#checkIntervalSupported === false) return
    this.#checkIntervalSupported = await setConnectionCheck(client, interval)
  }

  forScope (scope: Scope): ScopedDatabase {
    return new BoundDatabase(this, scope)
  }

  // A client for `scope`, waiting at most until the scope aborts (its deadline included).
  async lease (scope: Scope): Promise<Lease> {
    if (this.#closing !== undefined) throw closed()
    const due = scope.expireIfDue()
    if (due !== undefined) throw due

    const slot = await this.#admission.acquire(scope)
    // The scope may have aborted, or the pool closed, while the grant was on its way.
    const reason = this.#closing === undefined ? scope.expireIfDue() : closed()
    if (reason !== undefined) {
      slot()
      throw reason
    }
    return await this.#connect(scope, slot)
  }

  // With a slot held the pool has an idle client or room for a new one, so pg-pool never queues
  // this call for long; only a new connection's handshake can take time.
  #connect (scope: Scope, slot: Release): Promise<Lease> {
    return new Promise((resolve, reject) => {
      let abandoned = false
      const off = scope.onAbort((reason) => {
        abandoned = true
        reject(reason)
      })
      this.#pool.connect((err, client) => {
        off()
        if (err !== undefined && err !== null) {
          slot()
          // Refused, timed out, shutting down, authentication: the database cannot serve us now.
          if (!abandoned) reject(unavailable(err))
          return
        }
        if (!abandoned) {
          resolve(this.#track(client as PoolClient, scope, slot))
          return
        }
        // Abandoned: the client goes straight back, as clean as the pool gave it, then the slot.
        client?.release()
        slot()
      })
    })
  }

  // Made once: a closure per lease would be garbage per request.
  readonly #leaseOptions: LeaseOptions = {
    settleTimeoutMs: 0,
    onCancel: (event: CancelEvent) => channels.cancel.publish(event),
    // The client is back in the pool or gone from it by now, so the next waiter finds room.
    onDone: (done: Lease, destroyed: Error | undefined) => {
      const slot = this.#leases.get(done)
      this.#leases.delete(done)
      slot?.()
      if (destroyed !== undefined) channels.destroyed.publish({ err: destroyed })
    }
  }

  #track (client: PoolClient, scope: Scope, slot: Release): Lease {
    const lease = new Lease(client, scope, this.#leaseOptions)
    this.#leases.set(lease, slot)
    return lease
  }

  async ping (timeoutMs = 1000): Promise<void> {
    const client = new pg.Client({
      connectionString: this.#options.connectionString,
      application_name: this.#options.applicationName,
      connectionTimeoutMillis: timeoutMs,
      query_timeout: timeoutMs
    })
    client.on('error', () => {})
    try {
      await client.connect()
      await client.query('SELECT 1')
    } catch (err) {
      throw unavailable(err)
    } finally {
      client.end().catch(() => {})
    }
  }

  stats (): DatabaseStats {
    return {
      total: this.#pool.totalCount,
      idle: this.#pool.idleCount,
      waiting: this.#admission.waiting,
      leased: this.#leases.size
    }
  }

  async #ended (withinMs: number): Promise<void> {
    const open = [...this.#open].map(async (client): Promise<void> => { await once(client, 'end') })
    const late = sleep(withinMs, undefined, { ref: false })
    await Promise.race([Promise.all(open), late])
  }

  // Resolves once every connection has closed, so a server stopped next does not cut a session
  // that is still saying goodbye.
  close (): Promise<void> {
    if (this.#closing === undefined) {
      this.#admission.close()
      this.#closing = this.#pool.end().then(async () => await this.#ended(CLOSE_WAIT_MS))
    }
    return this.#closing
  }
}

const CLOSE_WAIT_MS = 2000

function closed (): HiBeaverError {
  return new HiBeaverError('SHUTTING_DOWN', 'the database pool is closed')
}

// Readiness asks on a connection of its own, never queued behind application queries.
export function databaseReadiness (database: Database, timeoutMs: number): ReadinessCheck {
  return { name: 'database', code: 'DATABASE_UNAVAILABLE', check: () => database.ping(timeoutMs) }
}

function clientClass (connectTimeoutMs: number): typeof pg.Client {
  return class HiBeaverClient extends pg.Client {
    // Credentials travel in the connection string: the pool hides a separate password by
    // making it non-enumerable, which a spread would drop.
    constructor (config?: ClientConfig) {
      super({ ...config, connectionTimeoutMillis: connectTimeoutMs })
    }
  }
}

class BoundDatabase implements ScopedDatabase {
  readonly #db: PgDatabase
  readonly #scope: Scope

  constructor (db: PgDatabase, scope: Scope) {
    this.#db = db
    this.#scope = scope
  }

  async query<R extends QueryResultRow = QueryResultRow> (query: QuerySpec): Promise<QueryResult<R>> {
    const lease = await this.#db.lease(this.#scope)
    try {
      const setting = applyStatementTimeout(lease)
      if (setting !== undefined) await setting
      return await lease.query<R>(query)
    } finally {
      lease.release()
    }
  }

  async transaction<T> (work: (tx: Queryable) => Promise<T>): Promise<T> {
    const lease = await this.#db.lease(this.#scope)
    try {
      const setting = applyStatementTimeout(lease)
      if (setting !== undefined) await setting
      await lease.query({ text: 'BEGIN' })
      const result = await work({ query: <R extends QueryResultRow>(query: QuerySpec) => lease.query<R>(query) })
      // An abort that came while `work` was finishing still keeps COMMIT from being sent; the
      // release that follows rolls the transaction back.
      this.#scope.throwIfAborted()
      // Protected: a deadline from here on still answers with what was written.
      await this.#scope.protect(lease.query({ text: 'COMMIT' }, true))
      return result
    } finally {
      lease.release()
    }
  }
}
