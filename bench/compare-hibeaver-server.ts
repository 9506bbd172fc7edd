// HiBeaver for `npm run bench`: the real app, every handler in handlers/ and the three resource
// adapters with their default settings, built as src/server.ts builds them (it keeps its
// providers to itself, and the benchmark asks them how much work they hold). Run as a child process by bench/run.ts:
//   node --import tsx bench/compare-hibeaver-server.ts <database url> <upstream url> <application name>
// It reports each stopped CPU task to the parent, as the naive server reports each finished
// calculation, and answers how much work each resource still holds.
import { subscribe } from 'node:diagnostics_channel'
import type { AddressInfo } from 'node:net'
import { fileURLToPath } from 'node:url'
import { buildApp } from '../src/app.js'
import { loadConfig } from '../src/config.js'
import { cpuStopChannel, type CpuStopEvent } from '../src/cpu-events.js'
import { createCpuPool } from '../src/cpu-pool.js'
import { createDatabase } from '../src/database.js'
import { loadHandlers } from '../src/handler-registry.js'
import { createLogger } from '../src/logger.js'
import { createUpstream } from '../src/upstream.js'
import { heapAfterGc, serveMeasurements } from './lib/child.js'
import { reportEvent } from './lib/child-channel.js'

const databaseUrl = process.argv[2] ?? 'postgres://127.0.0.1:1/none'
const upstreamUrl = process.argv[3] ?? 'http://127.0.0.1:1'
const applicationName = process.argv[4] ?? 'hibeaver'
const HANDLERS_DIR = fileURLToPath(new URL('../handlers/', import.meta.url))

// Load shedding off, as in the naive server: the figures compare the work each design does, not
// how early one refuses it. Request lines are made at info but go nowhere; warn keeps them out.
const config = loadConfig({
  LOG_LEVEL: 'warn',
  DATABASE_URL: databaseUrl,
  UPSTREAM_BASE_URL: upstreamUrl,
  PRESSURE_MAX_EVENT_LOOP_DELAY_MS: '0',
  PRESSURE_MAX_EVENT_LOOP_UTILIZATION: '0'
})
const logger = createLogger({ level: config.logLevel, destination: { write: () => true } })

const http = createUpstream({
  baseUrl: upstreamUrl,
  connections: config.upstreamConnections,
  bodyLimitBytes: config.upstreamBodyLimitBytes,
  connectTimeoutMs: config.upstreamConnectTimeoutMs,
  maxWaiting: config.upstreamMaxWaiting
})
const db = createDatabase({ connectionString: databaseUrl, poolMax: config.dbPoolMax, applicationName })
// As src/server.ts sets them up, readiness check included.
const cpu = createCpuPool({
  workers: config.cpuWorkers,
  queueMax: config.cpuQueueMax,
  graceMs: config.cpuGraceMs,
  resourceLimits: { maxOldGenerationSizeMb: config.cpuWorkerMaxOldMb },
  closeTimeoutMs: 1000
})
const readiness = [{ name: 'database', check: () => db.ping(1000) }]

subscribe(cpuStopChannel.name, (message) => {
  reportEvent('cpu-stop', { how: (message as CpuStopEvent).how })
})

const app = await buildApp({
  config,
  logger,
  handlers: await loadHandlers(HANDLERS_DIR),
  resources: { http, db, cpu },
  readiness
})
await app.listen({ host: '127.0.0.1', port: 0 })
const { port } = app.server.address() as AddressInfo

const busy = () => {
  const { admitted, waiting } = http.stats
  const { leased, waiting: dbWaiting } = db.stats()
  const { running, queued } = cpu.stats()
  return { http: admitted + waiting, db: leased + dbWaiting, cpu: running + queued }
}
serveMeasurements({ heap: heapAfterGc, rss: () => process.memoryUsage().rss, busy })
// The benchmark went away (even killed): nothing is left behind.
process.on('disconnect', () => process.exit(0))
process.send?.({ ready: true, url: `http://127.0.0.1:${port}` })
