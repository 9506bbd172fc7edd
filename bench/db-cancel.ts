// What a departed client costs PostgreSQL, and what the database adapter costs per call.
//   node --import tsx bench/db-cancel.ts [--quick]
// An embedded PostgreSQL (temp directory, seeded) and the load generator run in this process; the
// HiBeaver server and the bare baseline run as child processes (bench/db-server.ts). Prints one
// JSON document.
//   disconnect   client socket destroyed during a heavy report -> the server aborts the scope
//                (detect), the statement ends on the server (ended: its 57014 arrived), the
//                cancel connection is closed by the server (confirmed), the statement is no longer
//                active in pg_stat_activity (gone, polled); for the bare server, gone only
//   adapterRps   `event` lookups per second in-process: the adapter vs a plain pg.Pool query
//                (both make a request scope per call, as the server does)
//   handlerRps   requests/s over HTTP of the `event` lookup: HiBeaver's data-retrieval (the
//                adapter) vs a HiBeaver handler on a plain pg.Pool (same app, no adapter), and
//                Fastify + plain pg (no HiBeaver at all) for scale
import { mkdtemp, rm } from 'node:fs/promises'
import { request as httpRequest, type ClientRequest } from 'node:http'
import { availableParallelism, tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import pg from 'pg'
import { createDatabase } from '../src/database.js'
import { startEmbeddedPostgres } from '../src/embedded-postgres.js'
import { migrate } from '../src/migrate.js'
import { createScope } from '../src/request-scope.js'
import { seedEvents } from '../src/seed.js'
import { freePort } from '../test/helpers/postgres.js'
import { startChild, type ChildServer } from './lib/child.js'
import { load } from './lib/load.js'
import { median, round, summarize } from './lib/stats.js'

const quick = process.argv.includes('--quick')
const SERVER = fileURLToPath(new URL('./db-server.ts', import.meta.url))
const SEED = quick ? 200_000 : 500_000
const CANCELS = quick ? 100 : 200
const BARE_SAMPLES = quick ? 5 : 10
const ROUNDS = quick ? 1 : 3
const PAIRS = quick ? 4 : 10
const DURATION_S = quick ? 2 : 3
const CONCURRENCY = 16
const REPORT = { query: 'source-percentiles', params: { from: '2025-01-01T00:00:00Z', to: '2025-02-01T00:00:00Z' } }
const EVENT = { query: 'event', params: { id: 4242 } }

const dataDir = await mkdtemp(join(tmpdir(), 'hibeaver-bench-'))
const cluster = await startEmbeddedPostgres({ dataDir, port: await freePort(), settings: { max_connections: '100' } })
const url = cluster.connectionString
await migrate({ connectionString: url })
const seeded = await seedEvents({ connectionString: url, count: SEED })
const observer = new pg.Client({ connectionString: url, application_name: 'hibeaver-bench' })
await observer.connect()
// The seed's dirty pages written out now, not by a checkpoint in the middle of a measurement.
await observer.query('CHECKPOINT')

const epochNow = () => performance.timeOrigin + performance.now()

function post (serverUrl: string, body: unknown): ClientRequest {
  const payload = JSON.stringify(body)
  const req = httpRequest(`${serverUrl}/handlers/data-retrieval`, {
    method: 'POST',
    agent: false,
    headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) }
  })
  req.on('error', () => {})
  req.end(payload)
  return req
}

async function reportRunning (applicationName: string): Promise<boolean> {
  const { rows } = await observer.query(
    `SELECT 1 FROM pg_stat_activity WHERE application_name = $1 AND state = 'active'
        AND query LIKE '%percentile_cont%'`, [applicationName])
  return rows.length > 0
}

async function until (probe: () => Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = performance.now() + timeoutMs
  while (!await probe()) {
    if (performance.now() > deadline) throw new Error('timed out')
  }
}

interface CancelMessage {
  cancel: { abortedAt: number, endedAt: number, confirmedAt: number, delivered: boolean }
}

function nextCancel (server: ChildServer): Promise<CancelMessage['cancel']> {
  return new Promise((resolve) => {
    const onMessage = (message: Partial<CancelMessage>) => {
      if (message.cancel === undefined) return
      server.child.off('message', onMessage)
      resolve(message.cancel)
    }
    server.child.on('message', onMessage)
  })
}

async function disconnectHibeaver () {
  const server = await startChild(SERVER, ['hibeaver', url])
  const samples = { detect: [] as number[], ended: [] as number[], confirmed: [] as number[], gone: [] as number[] }
  let undelivered = 0
  for (let i = 0; i < CANCELS; i++) {
    const req = post(server.url, REPORT)
    await until(() => reportRunning('hibeaver'))
    const cancelled = nextCancel(server)
    const destroyedAt = epochNow()
    req.destroy()
    await until(async () => !await reportRunning('hibeaver'))
    samples.gone.push(epochNow() - destroyedAt)
    const event = await cancelled
    if (!event.delivered) undelivered++
    samples.detect.push(event.abortedAt - destroyedAt)
    samples.ended.push(event.endedAt - destroyedAt)
    samples.confirmed.push(event.confirmedAt - destroyedAt)
  }
  await server.stop()
  return {
    cancels: CANCELS,
    undelivered,
    detectMs: summarize(samples.detect),
    endedMs: summarize(samples.ended),
    confirmedMs: summarize(samples.confirmed),
    goneFromPgStatActivityMs: summarize(samples.gone)
  }
}

// The baseline has no cancel: the report runs to its end after the client has gone.
async function disconnectBare () {
  const server = await startChild(SERVER, ['bare', url])
  const gone: number[] = []
  for (let i = 0; i < BARE_SAMPLES; i++) {
    const req = post(server.url, REPORT)
    await until(() => reportRunning('hibeaver-bare'))
    const destroyedAt = epochNow()
    req.destroy()
    await until(async () => !await reportRunning('hibeaver-bare'))
    gone.push(epochNow() - destroyedAt)
  }
  await server.stop()
  return { goneFromPgStatActivityMs: summarize(gone) }
}

async function callsPerSecond (call: () => Promise<unknown>, seconds: number): Promise<number> {
  const stop = performance.now() + seconds * 1000
  let calls = 0
  const lane = async () => {
    while (performance.now() < stop) {
      await call()
      calls++
    }
  }
  const started = performance.now()
  await Promise.all(Array.from({ length: CONCURRENCY }, lane))
  return calls / ((performance.now() - started) / 1000)
}

async function adapterThroughput () {
  const db = createDatabase({ connectionString: url, poolMax: CONCURRENCY })
  const pool = new pg.Pool({ connectionString: url, max: CONCURRENCY })
  const spec = {
    name: 'event',
    text: 'SELECT id, occurred_at, type, source, duration_ms, payload FROM events WHERE id = $1',
    values: [4242]
  }
  const viaAdapter = async () => {
    const scope = createScope({ budgetMs: 10_000 })
    try {
      return await db.forScope(scope).query(spec)
    } finally {
      scope.dispose()
    }
  }
  // The scope is made in both: a server makes one per request whatever the handler uses.
  const plain = async () => {
    const scope = createScope({ budgetMs: 10_000 })
    try {
      return await pool.query(spec)
    } finally {
      scope.dispose()
    }
  }

  // Many short alternating rounds: on a shared machine the load drifts, and each pair of
  // neighbouring rounds sees about the same background.
  const samples = { adapter: [] as number[], plain: [] as number[] }
  await callsPerSecond(viaAdapter, 1)
  await callsPerSecond(plain, 1)
  for (let i = 0; i < PAIRS; i++) {
    const adapterFirst = i % 2 === 0
    if (adapterFirst) samples.adapter.push(await callsPerSecond(viaAdapter, 1))
    samples.plain.push(await callsPerSecond(plain, 1))
    if (!adapterFirst) samples.adapter.push(await callsPerSecond(viaAdapter, 1))
  }
  await db.close()
  await pool.end()
  return ratio(samples.adapter, samples.plain)
}

async function handlerThroughput () {
  const variants = {
    adapter: { server: 'hibeaver', path: '/handlers/data-retrieval', body: EVENT },
    plainPg: { server: 'hibeaver', path: '/handlers/plain-event', body: { id: EVENT.params.id } },
    bareFastify: { server: 'bare', path: '/handlers/data-retrieval', body: EVENT }
  }
  const rps: Record<keyof typeof variants, number[]> = { adapter: [], plainPg: [], bareFastify: [] }
  const p99: Record<keyof typeof variants, number[]> = { adapter: [], plainPg: [], bareFastify: [] }
  for (let i = 0; i < ROUNDS; i++) {
    for (const [name, variant] of Object.entries(variants) as Array<[keyof typeof variants, typeof variants.adapter]>) {
      const server = await startChild(SERVER, [variant.server, url])
      const options = { url: server.url, path: variant.path, body: JSON.stringify(variant.body), connections: 32 }
      await load({ ...options, durationS: 1 })
      const result = await load({ ...options, durationS: DURATION_S })
      await server.stop()
      if (result.errors > 0 || result.non2xx > 0) {
        throw new Error(`${name}: ${result.non2xx} non-2xx, ${result.errors} errors`)
      }
      rps[name].push(result.rps)
      p99[name].push(result.p99Ms)
    }
  }
  return {
    ...ratio(rps.adapter, rps.plainPg),
    bareFastify: round(median(rps.bareFastify), 0),
    p99Ms: { adapter: median(p99.adapter), plainPg: median(p99.plainPg), bareFastify: median(p99.bareFastify) },
    samplesBareFastify: rps.bareFastify.map((v) => round(v, 0))
  }
}

// `ratio` is the median of the rounds' own ratios, which drifting background load cancels out of.
function ratio (ours: number[], baseline: number[]) {
  const pairwise = ours.map((value, i) => value / (baseline[i] as number))
  return {
    ours: round(median(ours), 0),
    baseline: round(median(baseline), 0),
    ratio: round(median(pairwise), 3),
    samples: { ours: ours.map((v) => round(v, 0)), baseline: baseline.map((v) => round(v, 0)) }
  }
}

const started = Date.now()
try {
  const { rows } = await observer.query<{ version: string }>('SHOW server_version')
  const results = {
    machine: {
      node: process.version,
      cpus: availableParallelism(),
      postgres: rows[0]?.version,
      events: seeded.inserted,
      seedMs: seeded.durationMs
    },
    disconnect: { hibeaver: await disconnectHibeaver(), bare: await disconnectBare() },
    adapterRps: await adapterThroughput(),
    handlerRps: await handlerThroughput(),
    seconds: Math.round((Date.now() - started) / 1000)
  }
  process.stdout.write(JSON.stringify(results, null, 2) + '\n')
} finally {
  await observer.end()
  await cluster.stop()
  await rm(dataDir, { recursive: true, force: true })
}
