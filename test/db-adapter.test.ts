import { subscribe, unsubscribe } from 'node:diagnostics_channel'
import { Client } from 'pg'
import t, { type Test } from 'tap'
import { createDatabase, type Database, type DatabaseOptions, type Queryable } from '../src/database.js'
import type { CancelEvent } from '../src/db-lease.js'
import { setConnectionCheck } from '../src/db-session.js'
import { abortReasons } from '../src/errors.js'
import { createScope } from '../src/request-scope.js'
import type { Scope } from '../src/scope.js'
import { eventually, startTestPostgres } from './helpers/postgres.js'
import { rejection } from './helpers/rejection.js'

const pg = await startTestPostgres()
t.teardown(() => pg.close())

function open (t: Test, options: Partial<DatabaseOptions> = {}): Database {
  const db = createDatabase({ connectionString: pg.url, poolMax: 2, ...options })
  t.teardown(() => db.close())
  return db
}

// Collects what a diagnostics channel publishes while a test runs.
function collect<T> (t: Test, name: string): T[] {
  const seen: T[] = []
  const listener = (message: unknown) => { seen.push(message as T) }
  subscribe(name, listener)
  t.teardown(() => { unsubscribe(name, listener) })
  return seen
}

const backendPid = async (db: Database, scope: Scope) =>
  (await db.forScope(scope).query<{ pid: number }>({ text: 'SELECT pg_backend_pid() AS pid' })).rows[0]?.pid

t.test('an abort cancels the statement on the server and the connection is reused', async (t) => {
  const db = open(t, { poolMax: 1 })
  const cancels = collect<CancelEvent>(t, 'hibeaver:db:cancel')
  const pid = await backendPid(db, createScope({ budgetMs: 5000 }))

  const scope = createScope({ budgetMs: 60_000 })
  const running = db.forScope(scope).query({ text: 'SELECT pg_sleep(60)' })
  await eventually(async () => (await pg.active()).length === 1, 'the statement to run')
  scope.abort(abortReasons.clientClosed())

  const err = await rejection(running)
  t.equal(err.code, 'CLIENT_CLOSED', 'rejected with the scope\'s reason')
  await eventually(async () => (await pg.active()).length === 0, 'the statement to end on the server')
  await eventually(async () => db.stats().leased === 0, 'the lease to settle')
  t.match(cancels, [{ delivered: true, reason: 'CLIENT_CLOSED', processID: pid }], 'one cancel request, delivered')
  t.equal(await backendPid(db, createScope({ budgetMs: 5000 })), pid, 'the same connection serves the next request')
  t.same(db.stats(), { total: 1, idle: 1, waiting: 0, leased: 0 })
})

t.test('a deadline during a statement: DEADLINE_EXCEEDED and the statement gone', async (t) => {
  const db = open(t)
  const scope = createScope({ budgetMs: 300 })
  const err = await rejection(db.forScope(scope).query({ text: 'SELECT pg_sleep(60)' }))
  t.equal(err.code, 'DEADLINE_EXCEEDED')
  t.equal(err.status, 504)
  await eventually(async () => (await pg.active()).length === 0, 'the statement to end on the server')
})

// A scope whose abort never fires: only the server-side backstop can end the statement.
function deafScope (budgetMs: number): Scope {
  const deadline = performance.now() + budgetMs
  return {
    get signal (): AbortSignal { return new AbortController().signal },
    aborted: false,
    reason: undefined,
    deadline: Date.now() + budgetMs,
    budgetMs,
    requestId: 'deaf',
    remaining: () => Math.max(0, deadline - performance.now()),
    expireIfDue: () => undefined,
    throwIfAborted: () => {},
    onAbort: () => () => {},
    protect: (work) => work
  }
}

t.test('statement_timeout follows the remaining budget as a server-side backstop', async (t) => {
  const db = open(t)
  const started = performance.now()
  const err = await rejection(db.forScope(deafScope(400)).query({ text: 'SELECT pg_sleep(60)' }))
  t.equal(err.code, 'DEADLINE_EXCEEDED')
  t.match(err.cause, { code: '57014' }, 'the server cancelled it')
  t.ok(performance.now() - started >= 400, 'not before the deadline')
})

t.test('pool exhausted: a waiting request ends at its deadline, and the pool recovers', async (t) => {
  const db = open(t, { poolMax: 1 })
  const holder = createScope({ budgetMs: 60_000 })
  const holding = db.forScope(holder).query({ text: 'SELECT pg_sleep(60)' })
  await eventually(async () => (await pg.active()).length === 1, 'the pool to be exhausted')

  const started = performance.now()
  const err = await rejection(db.forScope(createScope({ budgetMs: 250 })).query({ text: 'SELECT 1' }))
  t.equal(err.code, 'DEADLINE_EXCEEDED', 'the waiter gets its deadline')
  t.ok(performance.now() - started >= 240, 'waited for its budget')

  holder.abort(abortReasons.clientClosed())
  t.equal((await rejection(holding)).code, 'CLIENT_CLOSED')
  await eventually(async () => db.stats().idle === 1, 'the client to come back')
  t.same(db.stats(), { total: 1, idle: 1, waiting: 0, leased: 0 }, 'the abandoned wait left nothing behind')
  const { rows } = await db.forScope(createScope({ budgetMs: 5000 })).query({ text: 'SELECT 1 AS one' })
  t.same(rows, [{ one: 1 }])
})

// The only connection runs a statement that waits on a table lock until the test lets it go.
async function occupy (t: Test, db: Database): Promise<{ free: () => Promise<void> }> {
  const unlock = await pg.lockEvents()
  t.teardown(unlock)
  const holding = db.forScope(createScope({ budgetMs: 60_000 })).query({ text: 'SELECT count(*) FROM events' })
  await eventually(async () => (await pg.active()).length === 1, 'the connection to be busy')
  return {
    free: async () => {
      await unlock()
      await holding
    }
  }
}

t.test('thousands of aborted waiters leave at once, and the pool serves the next request', async (t) => {
  const WAITERS = 5000
  const db = open(t, { poolMax: 1, maxWaiting: WAITERS })
  const busy = await occupy(t, db)

  const scopes = Array.from({ length: WAITERS }, () => createScope({ budgetMs: 60_000 }))
  const waits = scopes.map((scope) => rejection(db.forScope(scope).query({ text: 'SELECT 1' })))
  t.equal(db.stats().waiting, WAITERS, 'every request waits')
  for (const scope of scopes) scope.abort(abortReasons.clientClosed())
  const codes = new Set((await Promise.all(waits)).map((err) => err.code))
  t.same([...codes], ['CLIENT_CLOSED'], 'each waiter rejected with its reason')
  t.equal(db.stats().waiting, 0, 'none of them is left waiting')

  // Were the aborted waiters still queued, the freed client would pass through each in turn.
  await busy.free()
  const { rows } = await db.forScope(createScope({ budgetMs: 5000 })).query({ text: 'SELECT 1 AS one' })
  t.same(rows, [{ one: 1 }])
  t.same(db.stats(), { total: 1, idle: 1, waiting: 0, leased: 0 })
})

t.test('past maxWaiting a request is refused at once with OVERLOADED', async (t) => {
  const db = open(t, { poolMax: 1, maxWaiting: 1 })
  const busy = await occupy(t, db)
  const waiting = db.forScope(createScope({ budgetMs: 60_000 })).query({ text: 'SELECT 1 AS one' })

  const err = await rejection(db.forScope(createScope({ budgetMs: 60_000 })).query({ text: 'SELECT 1' }))
  t.equal(err.code, 'OVERLOADED')
  t.equal(err.status, 503)
  t.equal(db.stats().waiting, 1)

  await busy.free()
  t.same((await waiting).rows, [{ one: 1 }], 'the one waiting is served')
})

t.test('an already aborted scope never takes a connection', async (t) => {
  const db = open(t)
  const scope = createScope({ budgetMs: 5000 })
  scope.abort(abortReasons.shuttingDown())
  t.equal((await rejection(db.forScope(scope).query({ text: 'SELECT 1' }))).code, 'SHUTTING_DOWN')
  t.equal(db.stats().total, 0)
})

t.test('an idle backend terminated by the server: no crash, the next request is served', async (t) => {
  const db = open(t, { poolMax: 1 })
  const idleErrors = collect<{ err: unknown }>(t, 'hibeaver:db:idle-error')
  const pid = await backendPid(db, createScope({ budgetMs: 5000 }))

  await pg.query('SELECT pg_terminate_backend($1)', [pid])
  await eventually(async () => idleErrors.length === 1, 'the pool to see its idle client die')
  t.match(idleErrors[0], { err: { code: '57P01' } })

  const next = await backendPid(db, createScope({ budgetMs: 5000 }))
  t.not(next, pid, 'served on a new connection')
  t.equal(db.stats().total, 1)
})

t.test('sessions carry application_name and client_connection_check_interval', async (t) => {
  const db = open(t, { connectionCheckIntervalMs: 1500 })
  const { rows } = await db.forScope(createScope({ budgetMs: 5000 })).query({
    text: `SELECT current_setting('application_name') AS app,
                  current_setting('client_connection_check_interval') AS check,
                  current_setting('statement_timeout') AS timeout`
  })
  t.match(rows, [{ app: 'hibeaver', check: '1500ms' }])
  const timeoutMs = parseTimeout(rows[0]?.timeout as string)
  t.ok(timeoutMs >= 5000 && timeoutMs <= 7000, `statement_timeout ${timeoutMs} follows the budget`)
})

t.test('a server without client_connection_check_interval, or refusing its value, is not an error', async (t) => {
  const client = new Client({ connectionString: pg.url })
  await client.connect()
  t.teardown(() => client.end())

  // PostgreSQL 13 and older answer 42704 for the name, the code every server gives an unknown one.
  t.equal(await setConnectionCheck(client, 1000, 'hibeaver_no_such_setting'), false, 'unknown parameter (42704)')
  t.equal(await setConnectionCheck(client, -1), false, 'value refused (22023)')
  t.equal(await setConnectionCheck(client, 1500), true, 'supported here')
  const { rows } = await client.query<{ check: string }>(
    "SELECT current_setting('client_connection_check_interval') AS check"
  )
  t.same(rows, [{ check: '1500ms' }], 'the session is still usable')
})

function parseTimeout (text: string): number {
  const match = /^(\d+)(ms|s)$/.exec(text)
  if (match === null) return Number.NaN
  return Number(match[1]) * (match[2] === 's' ? 1000 : 1)
}

t.test('transactions', async (t) => {
  await pg.query('CREATE TABLE tx_probe (n int)')
  t.teardown(() => pg.query('DROP TABLE tx_probe'))
  const count = async () => Number((await pg.query<{ n: string }>('SELECT count(*) AS n FROM tx_probe'))[0]?.n)

  t.test('committed when the work succeeds', async (t) => {
    const db = open(t, { poolMax: 1 })
    const before = await count()
    const result = await db.forScope(createScope({ budgetMs: 5000 })).transaction(async (tx) => {
      await tx.query({ text: 'INSERT INTO tx_probe VALUES (1), (2)' })
      return 'done'
    })
    t.equal(result, 'done')
    t.equal(await count(), before + 2)
  })

  t.test('aborted before COMMIT: rolled back, and the connection comes back clean', async (t) => {
    const db = open(t, { poolMax: 1 })
    const before = await count()
    const pid = await backendPid(db, createScope({ budgetMs: 5000 }))
    const scope = createScope({ budgetMs: 60_000 })
    const err = await rejection(db.forScope(scope).transaction(async (tx) => {
      await tx.query({ text: 'INSERT INTO tx_probe VALUES (1)' })
      scope.abort(abortReasons.clientClosed())
      await tx.query({ text: 'INSERT INTO tx_probe VALUES (2)' })
    }))
    t.equal(err.code, 'CLIENT_CLOSED')
    await eventually(async () => db.stats().leased === 0, 'the lease to settle')
    t.equal(await count(), before, 'nothing written')
    const { rows } = await db.forScope(createScope({ budgetMs: 5000 })).query({
      text: 'SELECT pg_backend_pid() AS pid, xact_start = query_start AS fresh ' +
        'FROM pg_stat_activity WHERE pid = pg_backend_pid()'
    })
    t.same(rows, [{ pid, fresh: true }], 'same connection, no transaction left open')
  })

  t.test('a failing statement inside: rolled back, error passed on', async (t) => {
    const db = open(t, { poolMax: 1 })
    const before = await count()
    const err = await rejection(db.forScope(createScope({ budgetMs: 5000 })).transaction(async (tx) => {
      await tx.query({ text: 'INSERT INTO tx_probe VALUES (1)' })
      await tx.query({ text: 'SELECT 1 / 0' })
    }))
    t.equal(err.code, 'INTERNAL')
    t.match(err.cause, { code: '22012' })
    await eventually(async () => db.stats().idle === 1, 'the client to come back')
    t.equal(await count(), before)
  })

  // node-postgres calls the failed statement back before ReadyForQuery brings the status 'E';
  // the connection must not look idle ('I') in between, or the next request would get 25P02.
  // The two messages usually arrive in one read; an error of 64 KiB spans several, so that
  // ReadyForQuery comes in a read of its own, as it now and then does with any error.
  t.test('a statement failing inside a transaction never leaves it open for the next request', async (t) => {
    const db = open(t, { poolMax: 1 })
    const failing = "BEGIN; DO $$ BEGIN RAISE EXCEPTION '%', repeat('x', 65536); END $$"
    const failures: unknown[] = []
    for (let round = 0; round < 300; round++) {
      await db.forScope(createScope({ budgetMs: 5000 })).query({ text: failing }).catch(() => {})
      await db.forScope(createScope({ budgetMs: 5000 })).query({ text: 'SELECT 1' })
        .catch((err: unknown) => failures.push((err as { cause?: { code?: string } }).cause?.code))
    }
    t.same(failures, [], 'no innocent statement failed (no 25P02)')
    t.equal(db.stats().total, 1, 'one connection throughout')
  })

  t.test('a transaction handle kept past its transaction is refused', async (t) => {
    const db = open(t, { poolMax: 1 })
    let kept: Queryable | undefined
    await db.forScope(createScope({ budgetMs: 5000 })).transaction(async (tx) => { kept = tx })
    const stale = kept as Queryable

    const before = await count()
    const err = await db.forScope(createScope({ budgetMs: 5000 })).transaction(async (tx) => {
      await tx.query({ text: 'INSERT INTO tx_probe VALUES (1)' })
      // The connection is this transaction's now: the stale handle must not reach it.
      return await rejection(stale.query({ text: 'INSERT INTO tx_probe VALUES (2)' }))
    })
    t.equal(err.code, 'INTERNAL')
    t.equal(await count(), before + 1, 'only the live transaction wrote')
  })

  t.test('a transaction a handler left open is never returned to the pool', async (t) => {
    const db = open(t, { poolMax: 1 })
    await db.forScope(createScope({ budgetMs: 5000 })).query({ text: 'BEGIN' })
    await eventually(async () => db.stats().leased === 0, 'the lease to settle')
    const { rows } = await db.forScope(createScope({ budgetMs: 5000 })).query({
      text: 'SELECT xact_start = query_start AS fresh FROM pg_stat_activity WHERE pid = pg_backend_pid()'
    })
    t.same(rows, [{ fresh: true }])
  })

  t.test('an abort during COMMIT does not interrupt it', async (t) => {
    // A deferred trigger makes COMMIT itself take time, so the abort lands inside it.
    await pg.query(`CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS
      $$ BEGIN PERFORM pg_sleep(0.5); RETURN NULL; END $$`)
    await pg.query(`CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT ON tx_probe
      DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION slow_commit()`)
    t.teardown(() => pg.query('DROP TRIGGER slow_commit ON tx_probe; DROP FUNCTION slow_commit()'))

    const db = open(t, { poolMax: 1 })
    const cancels = collect<CancelEvent>(t, 'hibeaver:db:cancel')
    const before = await count()
    const scope = createScope({ budgetMs: 60_000 })
    const committing = db.forScope(scope).transaction(async (tx) => {
      await tx.query({ text: 'INSERT INTO tx_probe VALUES (7)' })
      return 'written'
    })
    await eventually(async () => (await pg.active()).some((s) => s.query === 'COMMIT'), 'COMMIT to be running')
    scope.abort(abortReasons.deadline(60_000))
    t.equal(await committing, 'written', 'the transaction reports what it wrote')
    t.equal(await count(), before + 1)
    t.same(cancels, [], 'no cancel was sent')
  })
})

t.test('closing is safe twice and refuses new work', async (t) => {
  const db = createDatabase({ connectionString: pg.url })
  await db.forScope(createScope({ budgetMs: 5000 })).query({ text: 'SELECT 1' })
  await Promise.all([db.close(), db.close()])
  t.equal(
    (await rejection(db.forScope(createScope({ budgetMs: 5000 })).query({ text: 'SELECT 1' }))).code,
    'SHUTTING_DOWN'
  )
  t.equal(db.stats().total, 0)
})

t.test('ping answers on its own connection', async (t) => {
  const db = open(t, { poolMax: 1 })
  await db.ping(2000)
  t.equal(db.stats().total, 0, 'no pool connection used')
})
