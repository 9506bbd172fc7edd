// The baseline for `npm run bench`: HiBeaver's three handlers written the way a typical Node
// service would write them, on bare Fastify, with no cancellation anywhere. Run as a child
// process by bench/run.ts:
//   node --import tsx bench/naive-server.ts <database url> <upstream url> <application name>
// - external-api-call: an undici request with no signal and no budget;
// - data-retrieval: a pg.Pool query that is never cancelled (the same SQL as the handler's);
// - complex-calculation: the same sieve as the handler's worker, run on the event loop.
// Same routes and bodies as HiBeaver, and the handlers' own zod schemas, so one load script
// drives both servers and only the cancellation differs. Plus GET /health.
import type { AddressInfo } from 'node:net'
import Fastify, { type FastifyReply, type FastifyRequest } from 'fastify'
import pg from 'pg'
import { Pool } from 'undici'
import complexCalculation from '../handlers/complex-calculation.js'
import { countPrimesBelow } from '../handlers/complex-calculation.task.js'
import dataRetrieval from '../handlers/data-retrieval.js'
import externalApiCall from '../handlers/external-api-call.js'
import type { AnyHandler } from '../src/handler.js'
import { heapAfterGc, serveMeasurements } from './lib/child.js'
import { reportEvent } from './lib/child-channel.js'

const databaseUrl = process.argv[2] ?? 'postgres://127.0.0.1:1/none'
const upstreamUrl = process.argv[3] ?? 'http://127.0.0.1:1'
// Names this server's sessions in pg_stat_activity, where the benchmark watches them.
const applicationName = process.argv[4] ?? 'hibeaver-naive'
// HiBeaver's defaults (DB_POOL_MAX, UPSTREAM_CONNECTIONS), so both hold the same resources.
const DB_POOL_MAX = 10
const UPSTREAM_CONNECTIONS = 64

// Work still running, per resource: what the benchmark waits on before its next step.
const busy = { http: 0, db: 0, cpu: 0 }

const pool = new pg.Pool({ connectionString: databaseUrl, max: DB_POOL_MAX, application_name: applicationName })
pool.on('error', () => {})
const upstream = new Pool(upstreamUrl, { connections: UPSTREAM_CONNECTIONS })

// The handler's SQL, word for word, as named statements as the handler's are.
const EVENT = `SELECT id, occurred_at AS "occurredAt", type, source, duration_ms AS "durationMs", payload,
                  recorded_at AS "recordedAt"
             FROM events WHERE id = $1`
const EVENT_COUNTS = `SELECT type, count(*) AS count
             FROM events
            WHERE occurred_at >= $1 AND occurred_at < $2 AND ($3::text[] IS NULL OR type = ANY ($3))
            GROUP BY type ORDER BY type`
const SOURCE_PERCENTILES = `SELECT source, count(*) AS count,
                  percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY duration_ms) AS p
             FROM events
            WHERE occurred_at >= $1 AND occurred_at < $2 AND ($3::text[] IS NULL OR source = ANY ($3))
            GROUP BY source ORDER BY source`

interface Window { from: string, to: string, types?: string[], sources?: string[] }
type DataInput =
  | { query: 'event', params: { id: number } }
  | { query: 'event-counts', params: Window }
  | { query: 'source-percentiles', params: Window }

async function counted<T> (resource: keyof typeof busy, work: () => Promise<T>): Promise<T> {
  busy[resource]++
  try {
    return await work()
  } finally {
    busy[resource]--
  }
}

async function retrieve (input: DataInput) {
  switch (input.query) {
    case 'event': {
      const { rows } = await pool.query<Record<string, unknown>>({
        name: 'event', text: EVENT, values: [input.params.id]
      })
      return { event: rows[0] ?? null }
    }
    case 'event-counts': {
      const { from, to, types } = input.params
      const { rows } = await pool.query({ name: 'event-counts', text: EVENT_COUNTS, values: [from, to, types ?? null] })
      return { from, to, counts: rows }
    }
    case 'source-percentiles': {
      const { from, to, sources } = input.params
      const { rows } = await pool.query<{ source: string, count: string, p: number[] }>({
        name: 'source-percentiles', text: SOURCE_PERCENTILES, values: [from, to, sources ?? null]
      })
      return {
        from,
        to,
        sources: rows.map(({ source, count, p }) => ({ source, count: Number(count), p50: p[0], p95: p[1], p99: p[2] }))
      }
    }
  }
}

async function fetchUpstream (input: { path: string, query?: Record<string, unknown> }) {
  const search = new URLSearchParams()
  for (const [key, value] of Object.entries(input.query ?? {})) {
    for (const item of Array.isArray(value) ? value : [value]) search.append(key, String(item))
  }
  const query = search.size > 0 ? `?${search.toString()}` : ''
  const res = await upstream.request({
    method: 'GET',
    path: input.path + query,
    headers: { accept: 'application/json' }
  })
  return { status: res.statusCode, body: await res.body.json() }
}

function calculate (input: { below: number }) {
  busy.cpu++
  try {
    return { count: countPrimesBelow(input.below) }
  } finally {
    busy.cpu--
    reportEvent('cpu-stop', { how: 'completed' })
  }
}

// The handler's schema still checks the body: validation is not what is being compared.
function route<T> (handler: AnyHandler, run: (input: T) => unknown) {
  return async (request: FastifyRequest, reply: FastifyReply) => {
    const parsed = handler.input.safeParse(request.body)
    if (!parsed.success) return await reply.code(400).send({ code: 'INVALID_INPUT' })
    return { data: await run(parsed.data as T) }
  }
}

const app = Fastify({ logger: false })
app.post(
  '/handlers/external-api-call',
  route(externalApiCall, (input: { path: string }) => counted('http', () => fetchUpstream(input)))
)
app.post('/handlers/data-retrieval', route(dataRetrieval, (input: DataInput) => counted('db', () => retrieve(input))))
app.post('/handlers/complex-calculation', route(complexCalculation, calculate))
app.get('/health', async () => ({ status: 'ok' }))

await app.listen({ host: '127.0.0.1', port: 0 })
const { port } = app.server.address() as AddressInfo
serveMeasurements({ heap: heapAfterGc, rss: () => process.memoryUsage().rss, busy: () => ({ ...busy }) })
// The benchmark went away (even killed): nothing is left behind.
process.on('disconnect', () => process.exit(0))
process.send?.({ ready: true, url: `http://127.0.0.1:${port}` })
