import t, { type Test } from 'tap'
import { createCpuPool, type CpuPool, type CpuPoolOptions } from '../src/cpu-pool.js'
import { abortReasons, hasCode, HiBeaverError } from '../src/errors.js'
import { createScope, ScopeManager, type RequestScope } from '../src/request-scope.js'
import {
  chunks, chunksAbove, newProgress, nextFault, nextStop, progressSlot, settledAtOnce, tasks
} from './fixtures/cpu-helpers.js'

// Real worker threads, driven by real request scopes. Whether a task's CPU work has stopped is
// read from the progress counter it keeps in shared memory, after an event that proves the
// worker has moved on (it served another task, or it exited).

const LONG = 600_000

function pool (t: Test, options: CpuPoolOptions = {}): CpuPool {
  const cpu = createCpuPool({ workers: 1, ...options })
  t.teardown(() => cpu.close())
  return cpu
}

function scope (budgetMs = LONG): RequestScope {
  return createScope({ budgetMs })
}

async function echoThread (cpu: CpuPool): Promise<number> {
  const reply = await cpu.forScope(scope()).run(tasks.echo, 'next')
  return reply.threadId
}

// Starts an endless spin task and waits until it is running on its worker.
async function spinning (cpu: CpuPool, s: RequestScope, cooperative: boolean) {
  const progress = newProgress()
  const result = cpu.forScope(s).run(tasks.spin, { progress: progress.buffer as SharedArrayBuffer, cooperative })
  result.catch(() => {})
  await chunksAbove(progress)
  return { progress, result }
}

t.test('runs a task on a worker thread and returns its result', async (t) => {
  const cpu = pool(t)
  const reply = await cpu.forScope(scope()).run(tasks.echo, { n: 1 })

  t.same(reply.input, { n: 1 })
  t.not(reply.threadId, 0, 'not the main thread')
  t.match(cpu.stats(), { completed: 1, running: 0, queued: 0, faults: 0 })
})

t.test('cooperative stop: the caller rejects at once, the task stops, the same worker serves on', async (t) => {
  const cpu = pool(t, { graceMs: LONG })
  const s = scope()
  const { progress, result } = await spinning(cpu, s, true)
  const stop = nextStop(s.requestId)

  const reason = abortReasons.clientClosed()
  s.abort(reason)
  const { atOnce, error } = await settledAtOnce(result)
  t.ok(atOnce, 'rejected before the worker answered')
  t.equal(error, reason, 'with the scope reason itself')

  const event = await stop
  t.equal(event.how, 'cooperative')
  const frozen = chunks(progress)
  t.equal(await echoThread(cpu), Atomics.load(progress, progressSlot.THREAD), 'same worker')
  t.equal(chunks(progress), frozen, 'no chunk after the stop')
  t.match(cpu.stats(), { cooperative: 1, terminated: 0, workersCreated: 1, running: 0 })
})

t.test('a task that ignores the flag is terminated after the grace and its worker replaced', async (t) => {
  const cpu = pool(t, { graceMs: 20 })
  const s = scope()
  const { progress, result } = await spinning(cpu, s, false)
  const stop = nextStop(s.requestId)

  const reason = abortReasons.clientClosed()
  s.abort(reason)
  const { atOnce, error } = await settledAtOnce(result)
  t.ok(atOnce, 'rejected at once, not after the grace')
  t.equal(error, reason)

  const event = await stop
  t.equal(event.how, 'terminated')
  t.ok(event.stopMs >= 20, 'not before the grace')
  const frozen = chunks(progress)
  t.not(await echoThread(cpu), Atomics.load(progress, progressSlot.THREAD), 'a new worker')
  t.equal(chunks(progress), frozen, 'no chunk after the exit')
  t.match(cpu.stats(), { terminated: 1, cooperative: 0, workersCreated: 2, threads: 1 })
})

t.test('deadline: rejects DEADLINE_EXCEEDED and the task stops', async (t) => {
  const cpu = pool(t, { graceMs: LONG })
  // A warm worker starts the task within milliseconds; the budget leaves a wide margin for that.
  await echoThread(cpu)
  const s = scope(500)
  const { progress, result } = await spinning(cpu, s, true)
  const stop = nextStop(s.requestId)

  const error = await result.catch((err: unknown) => err)
  t.ok(hasCode(error, 'DEADLINE_EXCEEDED'))
  t.equal((await stop).how, 'cooperative')
  const frozen = chunks(progress)
  await echoThread(cpu)
  t.equal(chunks(progress), frozen)
})

t.test('a task whose deadline passes while it waits never starts', async (t) => {
  const cpu = pool(t, { graceMs: LONG })
  const first = scope()
  await spinning(cpu, first, true)

  const waiting = scope(100)
  const progress = newProgress()
  const stop = nextStop(waiting.requestId)
  const result = cpu.forScope(waiting).run(tasks.spin, {
    progress: progress.buffer as SharedArrayBuffer,
    cooperative: true
  })
  t.equal(cpu.stats().queued, 1)

  t.ok(hasCode(await result.catch((err: unknown) => err), 'DEADLINE_EXCEEDED'))
  t.equal((await stop).how, 'dequeued')
  t.equal(cpu.stats().queued, 0)

  first.abort(abortReasons.clientClosed())
  await echoThread(cpu)
  t.equal(Atomics.load(progress, progressSlot.STARTS), 0, 'never started')
})

// The shared deadline timer fires up to a tick late, and later still on a busy event loop: a
// worker that frees up in that window must not be handed a task whose deadline has passed.
t.test('a task whose deadline passed before the shared timer noticed is never started', async (t) => {
  const clock = { now: () => performance.now() }
  // A tick so long the timer never fires during the test: only the pool's own check can act.
  const scopes = new ScopeManager({ clock, tickMs: 3_600_000 })
  const cpu = pool(t, { graceMs: LONG })
  const first = scope()
  await spinning(cpu, first, true)

  const waiting = scopes.create({ budgetMs: 1000 })
  t.teardown(() => waiting.dispose())
  const progress = newProgress()
  const stop = nextStop(waiting.requestId)
  const result = cpu.forScope(waiting).run(tasks.spin, {
    progress: progress.buffer as SharedArrayBuffer,
    cooperative: true
  })
  result.catch(() => {})
  t.equal(cpu.stats().queued, 1)

  clock.now = () => performance.now() + 2000
  t.equal(waiting.aborted, false, 'the timer has not fired')
  first.abort(abortReasons.clientClosed())

  t.ok(hasCode(await result.catch((err: unknown) => err), 'DEADLINE_EXCEEDED'))
  t.equal((await stop).how, 'dequeued')
  await echoThread(cpu)
  t.equal(Atomics.load(progress, progressSlot.STARTS), 0, 'never started')
})

t.test('a task still running when its request is answered is stopped', async (t) => {
  const cpu = pool(t, { graceMs: LONG })
  const s = scope()
  const { progress, result } = await spinning(cpu, s, true)
  const stop = nextStop(s.requestId)

  // What the server does once the response is sent, whether or not the handler awaited the task.
  s.dispose()
  t.ok(hasCode(await result.catch((err: unknown) => err), 'REQUEST_FINISHED'))
  t.equal((await stop).how, 'cooperative')
  const frozen = chunks(progress)
  await echoThread(cpu)
  t.equal(chunks(progress), frozen, 'no chunk of work after the stop')

  const late = cpu.forScope(s).run(tasks.echo, 'after the answer')
  t.ok(hasCode(await late.catch((err: unknown) => err), 'REQUEST_FINISHED'),
    'nor does a finished request start new work')
})

t.test('a full queue answers OVERLOADED at once, and the task never starts', async (t) => {
  const cpu = pool(t, { queueMax: 1, graceMs: LONG })
  const running = scope()
  await spinning(cpu, running, true)
  const queued = scope()
  const second = cpu.forScope(queued).run(tasks.echo, 'queued')

  const progress = newProgress()
  const refused = cpu.forScope(scope()).run(tasks.spin, {
    progress: progress.buffer as SharedArrayBuffer,
    cooperative: true
  })
  const { atOnce, error } = await settledAtOnce(refused)
  t.ok(atOnce)
  t.ok(hasCode(error, 'OVERLOADED'))
  t.equal((error as HiBeaverError).status, 503)
  t.ok(((error as HiBeaverError).retryAfter ?? 0) > 0, 'with Retry-After')
  t.match(cpu.stats(), { overloaded: 1, queued: 1, running: 1 })

  running.abort(abortReasons.clientClosed())
  t.equal((await second).input, 'queued', 'the queued task runs once the worker is free')
  t.equal(Atomics.load(progress, progressSlot.STARTS), 0)
})

t.test('queueMax 0: no waiting at all while every worker is busy', async (t) => {
  const cpu = pool(t, { queueMax: 0, graceMs: LONG })
  const running = scope()
  await spinning(cpu, running, true)

  t.ok(hasCode(await cpu.forScope(scope()).run(tasks.echo, 1).catch((err: unknown) => err), 'OVERLOADED'))
  running.abort(abortReasons.clientClosed())
})

for (const cooperative of [true, false]) {
  const how = cooperative ? 'cooperative' : 'terminated'
  t.test(`aborting a queued task and then the running one (${how}) leaves the pool serving`, async (t) => {
    // piscina 5.0.0 never started later tasks after this sequence (piscinajs/piscina#805).
    const cpu = pool(t, { graceMs: cooperative ? LONG : 20 })
    const running = scope()
    await spinning(cpu, running, cooperative)
    const queued = scope()
    const dropped = cpu.forScope(queued).run(tasks.echo, 'dropped')
    const later = cpu.forScope(scope()).run(tasks.echo, 'later')
    const stop = nextStop(running.requestId)

    queued.abort(abortReasons.clientClosed())
    running.abort(abortReasons.clientClosed())
    t.ok(hasCode(await dropped.catch((err: unknown) => err), 'CLIENT_CLOSED'))
    t.equal((await later).input, 'later')
    t.equal((await stop).how, how)
    t.match(cpu.stats(), { dequeued: 1, [how]: 1, running: 0, queued: 0 })
  })
}

t.test('a scope aborted before run() never reaches a worker', async (t) => {
  const cpu = pool(t)
  const s = scope()
  const reason = abortReasons.deadline(1)
  s.abort(reason)
  const progress = newProgress()

  const error = await cpu.forScope(s).run(tasks.spin, {
    progress: progress.buffer as SharedArrayBuffer,
    cooperative: true
  }).catch((err: unknown) => err)
  t.equal(error, reason)
  await echoThread(cpu)
  t.equal(Atomics.load(progress, progressSlot.STARTS), 0)
})

t.test('faults fail only their own request, with INTERNAL, and the pool keeps serving', async (t) => {
  const cpu = pool(t, { resourceLimits: { maxOldGenerationSizeMb: 64 } })
  const cases = [
    { name: 'a throw', run: (s: RequestScope) => cpu.forScope(s).run(tasks.fail, 'fixture failure'), replaced: false },
    { name: 'process.exit', run: (s: RequestScope) => cpu.forScope(s).run(tasks.exitWorker, 7), replaced: true },
    {
      name: 'running out of memory',
      run: (s: RequestScope) => cpu.forScope(s).run(tasks.exhaustMemory, undefined),
      replaced: true
    }
  ]
  for (const { name, run, replaced } of cases) {
    const before = await echoThread(cpu)
    const s = scope()
    const fault = nextFault(s.requestId)

    const error = await run(s).catch((err: unknown) => err)
    t.ok(hasCode(error, 'INTERNAL'), `${name}: INTERNAL`)
    t.ok((error as Error).cause instanceof Error, `${name}: the worker's error is the cause`)
    t.equal((await fault).task, (error as Error).message.split(' ')[2], `${name}: reported`)
    t.equal(s.aborted, false, `${name}: the scope itself is untouched`)
    const after = await echoThread(cpu)
    t.equal(after !== before, replaced, `${name}: worker ${replaced ? 'replaced' : 'kept'}`)
  }
  t.match(cpu.stats(), { faults: 3, threads: 1, running: 0 })
})

t.test('close refuses waiting and new tasks with SHUTTING_DOWN, drains running ones, ends every thread', async (t) => {
  const cpu = createCpuPool({ workers: 1 })
  const progress = newProgress()
  const running = cpu.forScope(scope()).run(tasks.spin, {
    progress: progress.buffer as SharedArrayBuffer, cooperative: true, chunks: 50
  })
  await chunksAbove(progress)
  const waiting = cpu.forScope(scope()).run(tasks.echo, 'waiting')

  const closed = cpu.close()
  t.equal(cpu.close(), closed, 'safe to call twice')
  t.ok(hasCode(await waiting.catch((err: unknown) => err), 'SHUTTING_DOWN'))
  t.ok(hasCode(await cpu.forScope(scope()).run(tasks.echo, 1).catch((err: unknown) => err), 'SHUTTING_DOWN'))
  t.equal((await running).chunks, 50, 'the running task finished')
  await closed
  t.equal(cpu.stats().threads, 0)
})

t.test('no abort listener is left on the scope, whatever the outcome', async (t) => {
  const cpu = pool(t, { graceMs: LONG })
  let live = 0
  const counted = (s: RequestScope): RequestScope => {
    const onAbort = s.onAbort.bind(s)
    s.onAbort = (fn) => {
      live++
      const remove = onAbort(fn)
      let removed = false
      return () => {
        if (!removed) live--
        removed = true
        remove()
      }
    }
    return s
  }

  await cpu.forScope(counted(scope())).run(tasks.echo, 1)
  t.equal(live, 0, 'after success')
  await cpu.forScope(counted(scope())).run(tasks.fail, 'x').catch(() => {})
  t.equal(live, 0, 'after a fault')
  const s = counted(scope())
  const { result } = await spinning(cpu, s, true)
  s.abort(abortReasons.clientClosed())
  await result.catch(() => {})
  t.equal(live, 0, 'after an abort')
})
