// A server for bench/db-cancel.ts, run as a child process: event lookups and reports on the
// PostgreSQL at the URL given as the second argument, in one of two variants.
//   hibeaver  the real app with two handlers: data-retrieval, through the database adapter,
//             and plain-event, the same lookup on a plain pg.Pool; reports each cancelled
//             statement to the parent over IPC (epoch milliseconds)
//   bare      Fastify and a plain pg.Pool query: no scope, no budget, no cancel on disconnect
import { subscribe } from 'node:diagnostics_channel'
import type { AddressInfo } from 'node:net'
import Fastify, { type FastifyInstance } from 'fastify'
import pg from 'pg'
import { z } from 'zod'
import dataRetrieval from '../handlers/data-retrieval.js'
import { buildApp } from '../src/app.js'
import { loadConfig } from '../src/config.js'
import { createDatabase } from '../src/database.js'
import type { CancelEvent } from '../src/db-lease.js'
import { defineHandler } from '../src/handler.js'
import { createLogger } from '../src/logger.js'

const variant = process.argv[2] ?? 'hibeaver'
const databaseUrl = process.argv[3] ?? 'postgres://127.0.0.1:1/none'
const POOL_MAX = 16

const epoch = (at: number) => performance.timeOrigin + at

async function hibeaver (): Promise<FastifyInstance> {
  // Load shedding off: the benchmark saturates the server on purpose.
  const config = loadConfig({
    LOG_LEVEL: 'silent', PRESSURE_MAX_EVENT_LOOP_DELAY_MS: '0', PRESSURE_MAX_EVENT_LOOP_UTILIZATION: '0'
  })
  const db = createDatabase({ connectionString: databaseUrl, poolMax: POOL_MAX })
  subscribe('hibeaver:db:cancel', (message) => {
    const event = message as CancelEvent
    process.send?.({
      cancel: {
        abortedAt: epoch(event.abortedAt),
        endedAt: epoch(event.endedAt),
        confirmedAt: epoch(event.confirmedAt),
        delivered: event.delivered
      }
    })
  })
  const handlers = [dataRetrieval, plainEvent()]
  return await buildApp({ config, handlers, resources: { db }, logger: createLogger({ level: 'silent' }) })
}

// A HiBeaver handler that ignores ctx.db: the app's cost without the adapter's.
function plainEvent () {
  const pool = new pg.Pool({ connectionString: databaseUrl, max: POOL_MAX, application_name: 'hibeaver-plain' })
  pool.on('error', () => {})
  return defineHandler({
    name: 'plain-event',
    description: 'event by id on a plain pg.Pool',
    input: z.strictObject({ id: z.number().int().min(1) }),
    async process (input) {
      const { rows } = await pool.query<Record<string, unknown>>({ name: 'event', text: EVENT, values: [input.id] })
      return { event: rows[0] ?? null }
    }
  })
}

// The same SQL as the handler's, as a named statement too: only the adapter differs.
const EVENT = `SELECT id, occurred_at AS "occurredAt", type, source, duration_ms AS "durationMs", payload,
                      recorded_at AS "recordedAt"
                 FROM events WHERE id = $1`
const PERCENTILES = `SELECT source, count(*) AS count,
                            percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY duration_ms) AS p
                       FROM events WHERE occurred_at >= $1 AND occurred_at < $2 GROUP BY source ORDER BY source`

interface Body {
  query: string
  params: { id: number, from: string, to: string }
}

function bare (): FastifyInstance {
  const pool = new pg.Pool({ connectionString: databaseUrl, max: POOL_MAX, application_name: 'hibeaver-bare' })
  pool.on('error', () => {})
  const app = Fastify({ logger: false })
  app.post('/handlers/data-retrieval', async (request) => {
    const { query, params } = request.body as Body
    if (query === 'event') {
      const { rows } = await pool.query<Record<string, unknown>>({ name: 'event', text: EVENT, values: [params.id] })
      return { data: { event: rows[0] ?? null } }
    }
    const { rows } = await pool.query({ name: 'percentiles', text: PERCENTILES, values: [params.from, params.to] })
    return { data: { sources: rows } }
  })
  return app
}

const app = variant === 'bare' ? bare() : await hibeaver()
await app.listen({ host: '127.0.0.1', port: 0 })
const { port } = app.server.address() as AddressInfo
process.send?.({ ready: true, url: `http://127.0.0.1:${port}` })
