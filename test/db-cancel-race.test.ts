import { subscribe, unsubscribe } from 'node:diagnostics_channel'
import { setImmediate as nextTurn } from 'node:timers/promises'
import t from 'tap'
import { createDatabase } from '../src/database.js'
import { abortReasons } from '../src/errors.js'
import { createScope } from '../src/request-scope.js'
import { startTestPostgres } from './helpers/postgres.js'

// A cancel request is handled by the server some time after it is sent; if the connection were
// back in the pool by then, it would cancel the next request's statement instead (SQLSTATE
// 57014). Here an abort lands at every moment around a statement's completion, and the next
// request, queued on the same single connection, must always succeed.

const ROUNDS = 400

const pg = await startTestPostgres()
t.teardown(() => pg.close())

t.test('cancel racing completion on a pool of one never hits a later statement', async (t) => {
  const db = createDatabase({ connectionString: pg.url, poolMax: 1 })
  t.teardown(() => db.close())
  let cancels = 0
  const onCancel = () => { cancels++ }
  subscribe('hibeaver:db:cancel', onCancel)
  t.teardown(() => { unsubscribe('hibeaver:db:cancel', onCancel) })

  const outcomes = { completed: 0, aborted: 0 }
  const failures: unknown[] = []
  for (let round = 0; round < ROUNDS; round++) {
    const scope = createScope({ budgetMs: 10_000 })
    // Statements of 0 to 1 ms, aborted after 0 to 30 event-loop turns: either side may win.
    const racing = db.forScope(scope).query({ text: 'SELECT pg_sleep($1)', values: [(round % 5) / 5000] })
    const settled = racing.then(() => { outcomes.completed++ }, () => { outcomes.aborted++ })
    for (let turn = round % 31; turn > 0; turn--) await nextTurn()
    scope.abort(abortReasons.clientClosed())

    // Queued right behind: it gets the connection the moment the aborted lease gives it back,
    // and runs long enough (2 ms) for a late cancel to find it running.
    const next = db.forScope(createScope({ budgetMs: 10_000 })).query({ text: 'SELECT pg_sleep(0.002)' })
    await settled
    await next.catch((err: unknown) => failures.push(err))
  }

  t.same(failures, [], 'no later statement failed (no 57014)')
  t.equal(outcomes.completed + outcomes.aborted, ROUNDS)
  t.ok(outcomes.aborted > 0 && cancels > 0, `aborted ${outcomes.aborted}, cancels sent ${cancels}`)
  t.ok(outcomes.completed > 0, `completed before the abort ${outcomes.completed}`)
  t.ok(db.stats().total <= 1, 'never more than one connection')
})
