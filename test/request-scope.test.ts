import t from 'tap'
import { DeadlineWheel, type Clock } from '../src/deadline-wheel.js'
import { abortReasons, HiBeaverError } from '../src/errors.js'
import { ScopeManager } from '../src/request-scope.js'

class FakeClock implements Clock {
  time = 1_000
  now (): number { return this.time }
}

function setup () {
  const clock = new FakeClock()
  const scopes = new ScopeManager({ clock, tickMs: 5 })
  return { clock, scopes }
}

t.test('the deadline aborts with DEADLINE_EXCEEDED, never before it is due', async (t) => {
  const { clock, scopes } = setup()
  const scope = scopes.create({ budgetMs: 100 })

  clock.time += 99
  scopes.wheel.expireDue()
  t.equal(scope.aborted, false, 'not aborted 1 ms early')
  t.equal(scope.remaining(), 1)

  clock.time += 1
  scopes.wheel.expireDue()
  t.equal(scope.reason?.code, 'DEADLINE_EXCEEDED')
  t.equal(scope.signal.aborted, true, 'a signal made after the abort is born aborted')
  t.equal(scope.signal.reason, scope.reason, 'the signal carries the typed reason')
  t.equal(scope.remaining(), 0)
  scope.dispose()
})

t.test('client close and shutdown abort with their own typed reasons', async (t) => {
  const { scopes } = setup()
  const a = scopes.create({ budgetMs: 1000 })
  const b = scopes.create({ budgetMs: 1000 })
  const signal = a.signal

  a.abort(abortReasons.clientClosed())
  t.equal(signal.aborted, true)
  t.equal((signal.reason as HiBeaverError).code, 'CLIENT_CLOSED')

  t.equal(scopes.abortAll(abortReasons.shuttingDown), 1, 'shutdown reaches the scope still live')
  t.equal(b.reason?.code, 'SHUTTING_DOWN')
  t.equal(a.reason?.code, 'CLIENT_CLOSED', 'an aborted scope keeps its first reason')
})

t.test('the first cause wins and stays the reason', async (t) => {
  const { clock, scopes } = setup()
  const scope = scopes.create({ budgetMs: 10 })
  const seen: string[] = []
  scope.onAbort((reason) => seen.push(reason.code))

  t.equal(scope.abort(abortReasons.shuttingDown()), true)
  t.equal(scope.abort(abortReasons.clientClosed()), false)
  clock.time += 50
  scopes.wheel.expireDue()

  t.equal(scope.reason?.code, 'SHUTTING_DOWN')
  t.same(seen, ['SHUTTING_DOWN'], 'callbacks run once, with the first reason')
})

t.test('onAbort runs at once on an aborted scope, and its removal works', async (t) => {
  const { scopes } = setup()
  const scope = scopes.create({ budgetMs: 1000 })
  let calls = 0
  const remove = scope.onAbort(() => calls++)
  remove()
  scope.abort(abortReasons.clientClosed())
  t.equal(calls, 0, 'a removed callback is not called')

  scope.onAbort(() => calls++)
  t.equal(calls, 1, 'registered after the abort: called at once')
})

t.test('disposal stops what the request left running, refuses new work, and leaves nothing behind', async (t) => {
  const { clock, scopes } = setup()
  const scope = scopes.create({ budgetMs: 10 })
  const signal = scope.signal
  const seen: string[] = []
  scope.onAbort((reason) => seen.push(reason.code))
  scope.dispose()
  scope.dispose()
  t.same(seen, ['REQUEST_FINISHED'], 'work still registered is stopped once')
  t.equal(signal.reason, scope.reason, 'the signal carries the same reason')
  t.equal(scope.reason?.code, 'REQUEST_FINISHED')

  clock.time += 100
  scopes.wheel.expireDue()
  t.equal(scope.reason?.code, 'REQUEST_FINISHED', 'the deadline of a finished request never fires')
  t.equal(scope.abort(abortReasons.clientClosed()), false, 'nor does anything else')
  t.throws(() => scope.throwIfAborted(), { code: 'REQUEST_FINISHED' }, 'work started afterwards is refused')
  t.equal(scopes.live, 0)
  t.equal(scopes.wheel.pending, 0)
})

t.test('a deadline that has passed is acted on before the shared timer fires', async (t) => {
  const { clock, scopes } = setup()
  const scope = scopes.create({ budgetMs: 10 })
  t.equal(scope.expireIfDue(), undefined, 'not due yet')

  clock.time += 10
  t.equal(scope.aborted, false, 'the timer has not fired')
  t.equal(scope.expireIfDue()?.code, 'DEADLINE_EXCEEDED', 'due: aborted on asking')
  t.equal(scopes.wheel.pending, 0, 'and taken off the wheel')
  t.throws(() => scope.throwIfAborted(), { code: 'DEADLINE_EXCEEDED' })
})

t.test('after 10,000 scopes no timer, slot or callback is left', async (t) => {
  const { clock, scopes } = setup()
  for (let i = 0; i < 10_000; i++) {
    const scope = scopes.create({ budgetMs: 1 + (i % 500) })
    scope.onAbort(() => {})
    if (i % 3 === 0) scope.abort(abortReasons.clientClosed())
    if (i % 3 === 1) {
      clock.time += 1
      scopes.wheel.expireDue()
    }
    scope.dispose()
  }
  t.equal(scopes.live, 0, 'no live scope')
  t.equal(scopes.wheel.pending, 0, 'no pending deadline')
  t.equal(scopes.wheel.running, false, 'the shared timer is stopped')
})

t.test('the shared timer fires a real deadline on its own', async (t) => {
  const scopes = new ScopeManager({ tickMs: 5 })
  const scope = scopes.create({ budgetMs: 20 })
  const started = performance.now()
  // The wheel's timer is unref'd (a server's sockets keep the process alive); this test has none.
  const keepAlive = setTimeout(() => {}, 10_000)
  const reason = await new Promise<HiBeaverError>((resolve) => scope.onAbort(resolve))
  clearTimeout(keepAlive)
  t.equal(reason.code, 'DEADLINE_EXCEEDED')
  t.ok(performance.now() - started >= 19, 'not before its deadline')
  scope.dispose()
  t.equal(scopes.wheel.running, false)
})

t.test('an item added while the wheel expires lands in a later slot', async (t) => {
  const clock = new FakeClock()
  const wheel = new DeadlineWheel({ clock, tickMs: 5 })
  let late = 0
  wheel.add({
    expire: () => { wheel.add({ expire: () => late++ }, clock.time) }
  }, clock.time + 5)
  clock.time += 5
  wheel.expireDue()
  t.equal(wheel.pending, 1, 'the re-armed item is pending, not lost')
  clock.time += 5
  wheel.expireDue()
  t.equal(late, 1)
  t.equal(wheel.running, false)
})

t.test('protected work holds back the answer, not the abort', async (t) => {
  const { scopes } = setup()
  const scope = scopes.create({ budgetMs: 1000 })
  let finish = (): void => {}
  const work = scope.protect(new Promise<void>((resolve) => { finish = resolve }))
  const order: string[] = []

  scope.abort(abortReasons.deadline(1000))
  t.equal(scope.aborted, true, 'the scope aborts on time')
  t.equal(scope.protecting, true)
  scope.whenUnprotected(() => order.push('unprotected'))
  t.same(order, [], 'waits for the protected work')

  finish()
  await work
  t.same(order, ['unprotected'])
  t.equal(scope.protecting, false)
  scope.whenUnprotected(() => order.push('at once'))
  t.same(order, ['unprotected', 'at once'])
  scope.dispose()
})
