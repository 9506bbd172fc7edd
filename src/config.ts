import { isIP } from 'node:net'
import { availableParallelism } from 'node:os'
import { z } from 'zod'

const MiB = 1024 * 1024

// Plain decimal digits only: Number() would also take ' ', '0x50' and '1e3', so a stray space
// would quietly become port 0 or no shutdown grace.
const int = (min: number, max: number) => {
  const error = `must be an integer from ${min} to ${max}`
  return z.string({ error }).regex(/^\d{1,16}$/, { error }).transform(Number)
    .pipe(z.number().min(min, { error }).max(max, { error }))
}
const fraction = () => {
  const error = 'must be a number from 0 to 1'
  return z.string({ error }).regex(/^(0(\.\d+)?|1(\.0+)?)$/, { error }).transform(Number)
}
// An IP address, or a host name made of DNS labels; '999.1.1.1' is neither.
const host = () => z.string().refine((value) => isIP(value) !== 0 || (!/^[\d.]+$/.test(value) && HOSTNAME.test(value)), {
  message: 'must be an IP address or a host name'
})
const HOSTNAME = /^(?=.{1,253}$)[a-z\d]([a-z\d-]{0,61}[a-z\d])?(\.[a-z\d]([a-z\d-]{0,61}[a-z\d])?)*$/i
const url = (protocols: string[]) => z.string().refine((value) => {
  if (!URL.canParse(value)) return false
  return protocols.includes(new URL(value).protocol)
}, { message: `must be a URL with scheme ${protocols.join(' or ')}` })

// Every variable, its default and its bounds. `.env.example` documents each one; keep them in step.
const schema = z.object({
  HOST: host().default('127.0.0.1'),
  PORT: int(0, 65535).default(3000),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'], {
    error: 'must be one of fatal, error, warn, info, debug, trace, silent'
  }).default('info'),
  BODY_LIMIT_BYTES: int(1, 64 * MiB).default(1 * MiB),

  DEFAULT_TIMEOUT_MS: int(1, 3_600_000).default(10_000),
  MAX_TIMEOUT_MS: int(1, 3_600_000).default(60_000),
  SHUTDOWN_GRACE_MS: int(0, 600_000).default(10_000),
  SHUTDOWN_DRAIN_MS: int(0, 600_000).default(0),
  HANDLER_MAX_CONCURRENCY: int(0, 1_000_000).default(0),

  DATABASE_URL: url(['postgres:', 'postgresql:']).optional(),
  PG_DATA_DIR: z.string().min(1).default('.data/postgres'),
  PG_PORT: int(1, 65535).default(54329),
  DB_POOL_MAX: int(1, 1000).default(10),
  DB_MAX_WAITING: int(0, 1_000_000).default(1024),
  SEED_EVENTS: int(0, 100_000_000).default(1_000_000),

  UPSTREAM_BASE_URL: url(['http:', 'https:']).refine((value) => {
    const { username, password, search, hash } = new URL(value)
    return username === '' && password === '' && search === '' && hash === ''
  }, { message: 'must be a plain origin and path: no credentials, query or fragment' }).optional(),
  UPSTREAM_CONNECTIONS: int(1, 10_000).default(64),
  UPSTREAM_BODY_LIMIT_BYTES: int(1, 512 * MiB).default(1 * MiB),
  UPSTREAM_CONNECT_TIMEOUT_MS: int(1, 600_000).default(5000),
  UPSTREAM_MAX_WAITING: int(0, 1_000_000).default(1024),

  CPU_WORKERS: int(1, 256).default(availableParallelism()),
  CPU_QUEUE_MAX: int(0, 100_000).default(64),
  CPU_GRACE_MS: int(0, 60_000).default(50),
  CPU_WORKER_MAX_OLD_MB: int(16, 65_536).default(256),

  // From bench/pressure.ts (bench/results/pressure.json): a healthy loop under full load reads
  // at most ~6 ms of delay; one whose handlers block reads 24 ms (p99 65 ms) to 86 ms (p99 1.6 s).
  // Utilisation read 0.71 to 0.90 in both cases and does not separate them: off by default.
  PRESSURE_MAX_EVENT_LOOP_DELAY_MS: int(0, 60_000).default(50),
  PRESSURE_MAX_EVENT_LOOP_UTILIZATION: fraction().default(0),
  PRESSURE_MAX_HEAP_USED_BYTES: int(0, Number.MAX_SAFE_INTEGER).default(0),
  PRESSURE_MAX_RSS_BYTES: int(0, Number.MAX_SAFE_INTEGER).default(0),
  PRESSURE_SAMPLE_INTERVAL_MS: int(50, 60_000).default(250)
})

export type Env = z.output<typeof schema>

// The names of every variable HiBeaver reads.
export const ENV_VARIABLES: readonly string[] = Object.keys(schema.shape)

export interface Config {
  host: string
  port: number
  logLevel: Env['LOG_LEVEL']
  bodyLimitBytes: number
  defaultTimeoutMs: number
  maxTimeoutMs: number
  shutdownGraceMs: number
  shutdownDrainMs: number
  handlerMaxConcurrency: number
  databaseUrl: string | undefined
  pgDataDir: string
  pgPort: number
  dbPoolMax: number
  dbMaxWaiting: number
  seedEvents: number
  upstreamBaseUrl: string | undefined
  upstreamConnections: number
  upstreamBodyLimitBytes: number
  upstreamConnectTimeoutMs: number
  upstreamMaxWaiting: number
  cpuWorkers: number
  cpuQueueMax: number
  cpuGraceMs: number
  cpuWorkerMaxOldMb: number
  pressure: {
    maxEventLoopDelayMs: number
    maxEventLoopUtilization: number
    maxHeapUsedBytes: number
    maxRssBytes: number
    sampleIntervalMs: number
  }
}

export class ConfigError extends Error {
  readonly variable: string

  constructor (variable: string, message: string) {
    super(`invalid environment: ${variable} ${message}`)
    this.name = 'ConfigError'
    this.variable = variable
  }
}

// Empty strings count as unset, as they do in most .env conventions.
function present (env: NodeJS.ProcessEnv): Record<string, string> {
  const out: Record<string, string> = {}
  for (const [key, value] of Object.entries(env)) {
    if (value !== undefined && value !== '') out[key] = value
  }
  return out
}

export function loadConfig (env: NodeJS.ProcessEnv = process.env): Config {
  const given = present(env)
  const parsed = schema.safeParse(given)
  if (!parsed.success) {
    const issue = parsed.error.issues[0]
    const variable = String(issue?.path[0] ?? 'environment')
    // A URL can carry a password: its value is never echoed.
    const got = env[variable] === undefined || /URL|PASSWORD|SECRET/.test(variable)
      ? ''
      : ` (got ${JSON.stringify(env[variable])})`
    throw new ConfigError(variable, `${issue?.message ?? 'is invalid'}${got}`)
  }
  checkTimeouts(parsed.data, given)
  return toConfig(parsed.data)
}

// Named after the variable that was set: MAX_TIMEOUT_MS=5 alone is MAX's mistake, not DEFAULT's.
function checkTimeouts (env: Env, given: Record<string, string>): void {
  const { DEFAULT_TIMEOUT_MS: def, MAX_TIMEOUT_MS: max } = env
  if (def <= max) return
  if (given.DEFAULT_TIMEOUT_MS === undefined) {
    throw new ConfigError('MAX_TIMEOUT_MS', `(${max}) must not be below DEFAULT_TIMEOUT_MS (${def})`)
  }
  throw new ConfigError('DEFAULT_TIMEOUT_MS', `(${def}) must not exceed MAX_TIMEOUT_MS (${max})`)
}

function toConfig (env: Env): Config {
  return {
    host: env.HOST,
    port: env.PORT,
    logLevel: env.LOG_LEVEL,
    bodyLimitBytes: env.BODY_LIMIT_BYTES,
    defaultTimeoutMs: env.DEFAULT_TIMEOUT_MS,
    maxTimeoutMs: env.MAX_TIMEOUT_MS,
    shutdownGraceMs: env.SHUTDOWN_GRACE_MS,
    shutdownDrainMs: env.SHUTDOWN_DRAIN_MS,
    handlerMaxConcurrency: env.HANDLER_MAX_CONCURRENCY,
    databaseUrl: env.DATABASE_URL,
    pgDataDir: env.PG_DATA_DIR,
    pgPort: env.PG_PORT,
    dbPoolMax: env.DB_POOL_MAX,
    dbMaxWaiting: env.DB_MAX_WAITING,
    seedEvents: env.SEED_EVENTS,
    upstreamBaseUrl: env.UPSTREAM_BASE_URL,
    upstreamConnections: env.UPSTREAM_CONNECTIONS,
    upstreamBodyLimitBytes: env.UPSTREAM_BODY_LIMIT_BYTES,
    upstreamConnectTimeoutMs: env.UPSTREAM_CONNECT_TIMEOUT_MS,
    upstreamMaxWaiting: env.UPSTREAM_MAX_WAITING,
    cpuWorkers: env.CPU_WORKERS,
    cpuQueueMax: env.CPU_QUEUE_MAX,
    cpuGraceMs: env.CPU_GRACE_MS,
    cpuWorkerMaxOldMb: env.CPU_WORKER_MAX_OLD_MB,
    pressure: {
      maxEventLoopDelayMs: env.PRESSURE_MAX_EVENT_LOOP_DELAY_MS,
      maxEventLoopUtilization: env.PRESSURE_MAX_EVENT_LOOP_UTILIZATION,
      maxHeapUsedBytes: env.PRESSURE_MAX_HEAP_USED_BYTES,
      maxRssBytes: env.PRESSURE_MAX_RSS_BYTES,
      sampleIntervalMs: env.PRESSURE_SAMPLE_INTERVAL_MS
    }
  }
}
