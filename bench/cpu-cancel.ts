// CPU pool benchmark: how soon work stops after its client disconnects, and what the pool costs
// and buys against the same count-primes function called on the main thread.
//   node --import tsx bench/cpu-cancel.ts        (ROUNDS=100 by default; prints one JSON document)
import type { AddressInfo } from 'node:net'
import { availableParallelism } from 'node:os'
import { monitorEventLoopDelay } from 'node:perf_hooks'
import { setImmediate as yieldLoop, setTimeout as sleep } from 'node:timers/promises'
import { z } from 'zod'
import complexCalculation from '../handlers/complex-calculation.js'
import { countPrimesBelow, type countPrimes } from '../handlers/complex-calculation.task.js'
import { buildApp } from '../src/app.js'
import { loadConfig } from '../src/config.js'
import { createCpuPool, type CpuPool } from '../src/cpu-pool.js'
import { cpuTask } from '../src/cpu-task.js'
import { defineHandler } from '../src/handler.js'
import { createLogger } from '../src/logger.js'
import { createScope } from '../src/request-scope.js'
import { chunks, chunksAbove, newProgress, nextStart, nextStop, tasks } from '../test/fixtures/cpu-helpers.js'
import { openPost, postJson } from '../test/helpers/http.js'

const ROUNDS = Number(process.env.ROUNDS ?? 100)
const GRACE_MS = 50
const THROUGHPUT_BELOW = 100_000_000
const THROUGHPUT_TASKS = 8

const countPrimesTask = cpuTask<typeof countPrimes>(
  import.meta.url, '../handlers/complex-calculation.task', 'countPrimes'
)

const stubbornProgress = newProgress()
const stubborn = defineHandler({
  name: 'stubborn-spin',
  description: 'spins and ignores cancellation',
  input: z.object({}),
  process: async (_input, ctx) =>
    await ctx.cpu.run(tasks.spin, { progress: stubbornProgress.buffer as SharedArrayBuffer, cooperative: false })
})

function summary (samples: number[]) {
  const sorted = [...samples].sort((a, b) => a - b)
  const at = (q: number) => round(sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)] ?? NaN)
  return { n: sorted.length, p50: at(0.5), p99: at(0.99), max: at(1) }
}

const round = (ms: number) => Math.round(ms * 100) / 100

async function startServer (cpu: CpuPool) {
  const config = loadConfig({ LOG_LEVEL: 'silent', DEFAULT_TIMEOUT_MS: '600000', MAX_TIMEOUT_MS: '600000' })
  const app = await buildApp({
    config, handlers: [complexCalculation, stubborn], resources: { cpu }, logger: createLogger({ level: 'silent' })
  })
  await app.listen({ host: '127.0.0.1', port: 0 })
  const { port } = app.server.address() as AddressInfo
  return { app, url: `http://127.0.0.1:${port}/handlers/` }
}

// One request that the client abandons once its task is running; times from the socket's
// destruction to the pool's report that the work stopped, and then one small request.
async function abandon (url: string, name: string, body: unknown, id: string, running: () => Promise<unknown>) {
  const started = nextStart(id)
  const stopped = nextStop(id)
  const { req } = openPost(`${url}${name}`, body, { 'x-request-id': id })
  await started
  await running()

  const destroyedAt = performance.now()
  req.destroy()
  const stop = await stopped
  const disconnectToStopMs = performance.now() - destroyedAt

  const nextAt = performance.now()
  await postJson(`${url}complex-calculation`, { task: 'count-primes', below: 100 })
  return { how: stop.how, disconnectToStopMs, abortToStopMs: stop.stopMs, nextTaskMs: performance.now() - nextAt }
}

async function stopLatency (kind: 'cooperative' | 'terminated') {
  const cpu = createCpuPool({ workers: 1, graceMs: GRACE_MS })
  const { app, url } = await startServer(cpu)
  await postJson(`${url}complex-calculation`, { task: 'count-primes', below: 100 })

  const rounds: Array<Awaited<ReturnType<typeof abandon>>> = []
  for (let i = 0; i < ROUNDS; i++) {
    rounds.push(kind === 'cooperative'
      // The sieve is past its base primes and well into its segments after 20 ms.
      ? await abandon(url, 'complex-calculation', { task: 'count-primes', below: 1e12 }, `c${i}`, () => sleep(20))
      : await abandon(url, 'stubborn-spin', {}, `t${i}`, () => chunksAbove(stubbornProgress, chunks(stubbornProgress))))
  }
  await app.close()
  const stats = cpu.stats()
  await cpu.close()

  return {
    kind,
    graceMs: GRACE_MS,
    outcomes: Object.fromEntries(['cooperative', 'terminated', 'dequeued'].map((how) =>
      [how, rounds.filter((r) => r.how === how).length])),
    disconnectToStopMs: summary(rounds.map((r) => r.disconnectToStopMs)),
    abortToStopMs: summary(rounds.map((r) => r.abortToStopMs)),
    nextTaskMs: summary(rounds.map((r) => r.nextTaskMs)),
    workersCreated: stats.workersCreated
  }
}

// Runs `tasks` count-primes calls and watches the event loop meanwhile: blocked on the main
// thread, free with the pool.
async function throughput (label: string, run: () => Promise<unknown>) {
  const delay = monitorEventLoopDelay({ resolution: 10 })
  delay.enable()
  const startedAt = performance.now()
  await run()
  const seconds = (performance.now() - startedAt) / 1000
  delay.disable()
  return {
    label,
    tasks: THROUGHPUT_TASKS,
    below: THROUGHPUT_BELOW,
    seconds: round(seconds),
    tasksPerSecond: round(THROUGHPUT_TASKS / seconds),
    eventLoopDelayMaxMs: round(delay.max / 1e6)
  }
}

async function throughputs () {
  const main = await throughput('main thread', async () => {
    for (let i = 0; i < THROUGHPUT_TASKS; i++) {
      countPrimesBelow(THROUGHPUT_BELOW)
      await yieldLoop()
    }
  })

  const results = [main]
  for (const workers of [1, availableParallelism()]) {
    const cpu = createCpuPool({ workers })
    const run = () => cpu.forScope(createScope({ budgetMs: 600_000 })).run(countPrimesTask, { below: 100 })
    await Promise.all(Array.from({ length: workers }, run))
    results.push(await throughput(`pool, ${workers} worker${workers === 1 ? '' : 's'}`, () =>
      Promise.all(Array.from({ length: THROUGHPUT_TASKS }, () =>
        cpu.forScope(createScope({ budgetMs: 600_000 })).run(countPrimesTask, { below: THROUGHPUT_BELOW })))))
    await cpu.close()
  }
  return results
}

const startedAt = performance.now()
const result = {
  node: process.version,
  cores: availableParallelism(),
  rounds: ROUNDS,
  stop: [await stopLatency('cooperative'), await stopLatency('terminated')],
  throughput: await throughputs(),
  benchSeconds: 0
}
result.benchSeconds = round((performance.now() - startedAt) / 1000)
process.stdout.write(`${JSON.stringify(result, null, 2)}\n`)
