// A server for bench/upstream-cancel.ts, run as a child process: POST /handlers/external-api-call
// in one of two variants, against the upstream URL given as the second argument.
//   hibeaver  the real app, handler and adapter
//   bare      Fastify and a bare undici request: no budget, no admission, no abort on disconnect
import type { AddressInfo } from 'node:net'
import Fastify, { type FastifyInstance } from 'fastify'
import { Pool } from 'undici'
import externalApiCall from '../handlers/external-api-call.js'
import { buildApp } from '../src/app.js'
import { loadConfig } from '../src/config.js'
import { createLogger } from '../src/logger.js'
import { createUpstream } from '../src/upstream.js'

const variant = process.argv[2] ?? 'hibeaver'
const upstreamUrl = process.argv[3] ?? 'http://127.0.0.1:1'
const CONNECTIONS = 32

async function hibeaver (): Promise<FastifyInstance> {
  const config = loadConfig({ LOG_LEVEL: 'silent', PRESSURE_MAX_EVENT_LOOP_DELAY_MS: '0' })
  const http = createUpstream({ baseUrl: upstreamUrl, connections: CONNECTIONS, bodyLimitBytes: 1024 * 1024 })
  return await buildApp({
    config,
    handlers: [externalApiCall],
    resources: { http },
    logger: createLogger({ level: 'silent' })
  })
}

function bare (): FastifyInstance {
  const pool = new Pool(upstreamUrl, { connections: CONNECTIONS })
  const app = Fastify({ logger: false })
  app.post('/handlers/external-api-call', async (request) => {
    const { path } = request.body as { path: string }
    const res = await pool.request({ method: 'GET', path })
    return { data: { status: res.statusCode, body: await res.body.json() } }
  })
  return app
}

const app = variant === 'bare' ? bare() : await hibeaver()
await app.listen({ host: '127.0.0.1', port: 0 })
const { port } = app.server.address() as AddressInfo
process.send?.({ ready: true, url: `http://127.0.0.1:${port}` })
