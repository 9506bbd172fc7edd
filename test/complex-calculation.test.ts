import { setTimeout as sleep } from 'node:timers/promises'
import t, { type Test } from 'tap'
import { z } from 'zod'
import complexCalculation from '../handlers/complex-calculation.js'
import { createCpuPool, type CpuPool, type CpuPoolOptions } from '../src/cpu-pool.js'
import { cpuTask } from '../src/cpu-task.js'
import { defineHandler } from '../src/handler.js'
import type { countPrimes } from '../handlers/complex-calculation.task.js'
import { startApp, type StartedApp } from './helpers/app.js'
import { getJson, openPost, postJson } from './helpers/http.js'
import { chunks, chunksAbove, newProgress, nextStart, nextStop, tasks } from './fixtures/cpu-helpers.js'

// The complex-calculation handler over real sockets, on real worker threads. Two test-only
// handlers run fixture tasks through the same `ctx.cpu`: one ignores cancellation, one throws.

const LONG = 600_000
const FOREVER = 1e12

const stubbornProgress = newProgress()
const stubborn = defineHandler({
  name: 'stubborn-spin',
  description: 'spins and ignores cancellation',
  input: z.object({}),
  process: async (_input, ctx) =>
    await ctx.cpu.run(tasks.spin, { progress: stubbornProgress.buffer as SharedArrayBuffer, cooperative: false })
})
const crash = defineHandler({
  name: 'crash',
  description: 'throws inside its worker',
  input: z.object({}),
  process: async (_input, ctx) => await ctx.cpu.run(tasks.fail, 'secret internal detail')
})

// Runs a long count beside a task that fails: Promise.all answers with the failure while the
// count is still running, which nothing awaits any more.
const countPrimesTask = cpuTask<typeof countPrimes>(
  import.meta.url, '../handlers/complex-calculation.task', 'countPrimes'
)
const halfFailed = defineHandler({
  name: 'half-failed',
  description: 'a long count and a failing task side by side',
  input: z.object({}),
  process: async (_input, ctx) => await Promise.all([
    ctx.cpu.run(countPrimesTask, { below: FOREVER }),
    ctx.cpu.run(tasks.fail, 'the other half failed')
  ])
})

const primes = (below: number) => ({ task: 'count-primes', below })
const handlerUrl = (base: string, name = 'complex-calculation') => `${base}/handlers/${name}`

type Server = StartedApp & { cpu: CpuPool }

async function server (t: Test, options: CpuPoolOptions = {}, env: Record<string, string> = {}): Promise<Server> {
  const cpu = createCpuPool({ workers: 1, ...options })
  const app = await startApp({
    handlers: [complexCalculation, stubborn, crash, halfFailed],
    resources: { cpu },
    env: { DEFAULT_TIMEOUT_MS: '60000', ...env }
  })
  t.teardown(async () => {
    await app.close()
    await cpu.close()
  })
  // One trivial task per worker, all at once: every worker has booted before the test begins.
  const workers = cpu.stats().workers
  await Promise.all(Array.from({ length: workers }, () => postJson(handlerUrl(app.url), primes(2))))
  return { ...app, cpu }
}

// CPU time this process (main thread and workers) spends over a stretch of wall time.
async function cpuMsDuring (ms: number): Promise<number> {
  const before = process.cpuUsage()
  await sleep(ms)
  const used = process.cpuUsage(before)
  return (used.user + used.system) / 1000
}

async function until (condition: () => boolean): Promise<void> {
  while (!condition()) await sleep(5)
}

t.test('counts the primes below N', async (t) => {
  const { url } = await server(t)
  const expected: Array<[number, number]> = [
    [2, 0], [3, 1], [4, 2], [10, 4], [100, 25], [1_000_000, 78_498], [10_000_000, 664_579],
    [1_000_000_000, 50_847_534]
  ]
  for (const [below, count] of expected) {
    const res = await postJson(handlerUrl(url), primes(below))
    t.equal(res.status, 200, `below ${below}`)
    t.same(res.body, { data: { count } }, `π(${below - 1}) = ${count}`)
  }
})

t.test('inputs outside the schema are 400 INVALID_INPUT', async (t) => {
  const { url } = await server(t)
  const bad = [
    primes(1), primes(1.5), primes(1e13), { task: 'count-primes', below: '100' },
    { task: 'count-primes' }, { task: 'sort-stars', below: 100 }, { ...primes(100), extra: true }
  ]
  for (const body of bad) {
    const res = await postJson(handlerUrl(url), body)
    t.equal(res.status, 400, JSON.stringify(body))
    t.equal(res.body.code, 'INVALID_INPUT')
  }
})

t.test('client disconnects mid-task: the task stops, CPU goes flat, the same worker serves on', async (t) => {
  const app = await server(t, { graceMs: LONG })
  const { url, cpu } = app
  const started = nextStart('gone-1')
  const stopped = nextStop('gone-1')

  const { req } = openPost(handlerUrl(url), primes(FOREVER), { 'x-request-id': 'gone-1' })
  await started
  t.ok(await cpuMsDuring(300) >= 100, 'the sieve is burning CPU')
  req.destroy()

  t.equal((await stopped).how, 'cooperative')
  t.ok(await cpuMsDuring(300) < 100, 'CPU time goes flat')
  const line = await app.waitForLog((l) => l.requestId === 'gone-1' && l.msg === 'request finished')
  t.equal(line.outcome, 'client_closed')
  t.same((await postJson(handlerUrl(url), primes(1_000_000))).body, { data: { count: 78_498 } })
  t.match(cpu.stats(), { workersCreated: 1, cooperative: 1, terminated: 0, running: 0 })
})

t.test('deadline: 504 DEADLINE_EXCEEDED, and the task stopped', async (t) => {
  const { url, cpu } = await server(t, { graceMs: LONG })
  const stopped = nextStop('late-1')

  const res = await postJson(handlerUrl(url), primes(FOREVER), {
    'x-request-timeout-ms': '300',
    'x-request-id': 'late-1'
  })
  t.equal(res.status, 504)
  t.equal(res.body.code, 'DEADLINE_EXCEEDED')
  t.equal((await stopped).how, 'cooperative')
  t.ok(await cpuMsDuring(300) < 100, 'CPU time goes flat')
  t.match(cpu.stats(), { running: 0, terminated: 0 })
})

t.test('queue full: 503 OVERLOADED with Retry-After at once', async (t) => {
  const { url, cpu } = await server(t, { queueMax: 0, graceMs: LONG })
  const started = nextStart('busy-1')
  const busy = openPost(handlerUrl(url), primes(FOREVER), { 'x-request-id': 'busy-1' })
  await started

  const res = await postJson(handlerUrl(url), primes(100))
  t.equal(res.status, 503)
  t.equal(res.body.code, 'OVERLOADED')
  t.ok(Number(res.headers['retry-after']) >= 1, 'Retry-After')
  t.equal(cpu.stats().running, 1, 'answered while the worker is still busy')
  busy.req.destroy()
})

t.test('while every worker is busy, GET /health keeps answering 200', async (t) => {
  // Under-pressure answers 503 once the event loop stalls past 200 ms: a 200 means it did not.
  // (A sample interval near its 10 ms histogram resolution reads as no samples: always 503.)
  const env = { PRESSURE_MAX_EVENT_LOOP_DELAY_MS: '200', PRESSURE_SAMPLE_INTERVAL_MS: '50' }
  const { url, cpu } = await server(t, { workers: 2, graceMs: LONG }, env)
  const ids = ['load-1', 'load-2']
  const started = Promise.all(ids.map((id) => nextStart(id)))
  const load = ids.map((id) => openPost(handlerUrl(url), primes(FOREVER), { 'x-request-id': id }))
  await started

  const statuses = new Set<number>()
  for (let poll = 0; poll < 50; poll++) {
    statuses.add((await getJson(`${url}/health`)).status)
  }
  t.same([...statuses], [200], '50 polls, all 200')
  t.equal(cpu.stats().running, 2, 'both workers still busy throughout')
  for (const { req } of load) req.destroy()
})

t.test('a task that ignores the flag is terminated and its worker replaced', async (t) => {
  const { url, cpu } = await server(t, { graceMs: 20 })
  const stopped = nextStop('stubborn-1')
  const before = chunks(stubbornProgress)
  const { req } = openPost(handlerUrl(url, 'stubborn-spin'), {}, { 'x-request-id': 'stubborn-1' })
  await chunksAbove(stubbornProgress, before)
  req.destroy()

  t.equal((await stopped).how, 'terminated')
  const frozen = chunks(stubbornProgress)
  t.same((await postJson(handlerUrl(url), primes(100))).body, { data: { count: 25 } })
  t.equal(chunks(stubbornProgress), frozen, 'the terminated task did no more work')
  t.match(cpu.stats(), { terminated: 1, workersCreated: 2, threads: 1 })
})

t.test('a crashing task fails alone, with 500 INTERNAL, and the pool keeps serving', async (t) => {
  const app = await server(t, { workers: 2 })
  const { url } = app
  const [crashed, counted] = await Promise.all([
    postJson(handlerUrl(url, 'crash'), {}, { 'x-request-id': 'crash-1' }),
    postJson(handlerUrl(url), primes(10_000_000))
  ])

  t.equal(crashed.status, 500)
  t.equal(crashed.body.code, 'INTERNAL')
  t.notMatch(JSON.stringify(crashed.body), /secret internal detail/, 'nothing internal reaches the client')
  t.same(counted.body, { data: { count: 664_579 } }, 'the request beside it is unharmed')
  const line = await app.waitForLog((l) => l.requestId === 'crash-1' && l.msg === 'request finished')
  t.match(line, { level: 50, code: 'INTERNAL', err: { message: 'secret internal detail' } }, 'logged with its cause')
  t.same((await postJson(handlerUrl(url), primes(100))).body, { data: { count: 25 } })
})

t.test('work a handler left running is stopped when its request is answered', async (t) => {
  const { url, cpu } = await server(t, { workers: 2, graceMs: LONG })
  const stopped = nextStop('half-1')
  const answer = await postJson(handlerUrl(url, 'half-failed'), {}, { 'x-request-id': 'half-1' })
  t.equal(answer.status, 500)
  t.match((await stopped).how, /^(cooperative|dequeued)$/, 'the count nobody awaited stopped without a terminate')
  t.equal(cpu.stats().running, 0, 'no worker is left busy')
  t.same((await postJson(handlerUrl(url), primes(100))).body, { data: { count: 25 } })
})

t.test('a queued request and then the running one go away: later requests still run', async (t) => {
  // piscina 5.0.0 stalled after this sequence (piscinajs/piscina#805). The terminating variant
  // is in cpu-pool.test.ts; here a long grace keeps the outcome independent of machine load.
  const { url, cpu } = await server(t, { graceMs: LONG })
  const started = nextStart('first')
  const first = openPost(handlerUrl(url), primes(FOREVER), { 'x-request-id': 'first' })
  await started
  const second = openPost(handlerUrl(url), primes(FOREVER), { 'x-request-id': 'second' })
  await until(() => cpu.stats().queued === 1)
  const later = postJson(handlerUrl(url), primes(100))
  await until(() => cpu.stats().queued === 2)

  const dropped = nextStop('second')
  second.req.destroy()
  t.equal((await dropped).how, 'dequeued')
  const stopped = nextStop('first')
  first.req.destroy()
  t.equal((await stopped).how, 'cooperative')
  t.same((await later).body, { data: { count: 25 } })
})
