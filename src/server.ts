import type { FastifyInstance } from 'fastify'
import type { Logger } from 'pino'
import { buildApp } from './app.js'
import type { Config } from './config.js'
import { startDemoUpstream } from './demo-upstream.js'
import type { Providers } from './handler-context.js'
import { loadHandlers } from './handler-registry.js'
import { shutdown, type Closable } from './shutdown.js'
import { createUpstream } from './upstream.js'
import { createCpuPool } from './cpu-pool.js'
import { startDatabase } from './db-startup.js'
import { databaseReadiness } from './database.js'
import { logDiagnostics } from './diagnostics-log.js'
import type { ReadinessCheck } from './readiness.js'

export interface Server {
  app: FastifyInstance
  // Drains, closes the listener, then every resource in reverse order of start.
  close (): Promise<void>
}

const HANDLERS_DIR = new URL('../handlers/', import.meta.url).pathname
const READY_TIMEOUT_MS = 1000

// Starts every resource, then the HTTP server. A resource that fails to start closes the ones
// already started before the error goes on.
export async function startServer (config: Config, logger: Logger): Promise<Server> {
  const started: Closable[] = [{ name: 'diagnostics log', close: async () => stopLogging() }]
  const stopLogging = logDiagnostics(logger)
  const providers: Providers = {}
  const readiness: ReadinessCheck[] = []

  try {
    const db = await startDatabase({
      databaseUrl: config.databaseUrl,
      dataDir: config.pgDataDir,
      port: config.pgPort,
      poolMax: config.dbPoolMax,
      maxWaiting: config.dbMaxWaiting,
      seedEvents: config.seedEvents,
      log: logger
    })
    started.push({ name: 'database', close: () => db.stop() })
    providers.db = db.database
    // Its own connection with a short timeout: never queued behind application queries.
    readiness.push(databaseReadiness(db.database, READY_TIMEOUT_MS))

    providers.cpu = startCpu(config, started)
    providers.http = await startUpstream(config, logger, started)

    const handlers = await loadHandlers(HANDLERS_DIR)
    const app = await buildApp({ config, logger, handlers, resources: providers, readiness })
    const url = await app.listen({ host: config.host, port: config.port })
    logger.info({ url, handlers: handlers.map((h) => h.name) }, 'hibeaver is ready')

    return {
      app,
      close: () => shutdown(app, {
        drainMs: config.shutdownDrainMs,
        graceMs: config.shutdownGraceMs,
        resources: started
      })
    }
  } catch (err) {
    for (const resource of started.reverse()) await resource.close().catch(() => {})
    throw err
  }
}

async function startUpstream (config: Config, logger: Logger, started: Closable[]) {
  let baseUrl = config.upstreamBaseUrl
  if (baseUrl === undefined) {
    const demo = await startDemoUpstream({ host: '127.0.0.1', port: 0 })
    started.push({ name: 'demo upstream', close: () => demo.close() })
    baseUrl = demo.url
    logger.info({ url: demo.url }, 'demo upstream started (UPSTREAM_BASE_URL is unset)')
  }
  const upstream = createUpstream({
    baseUrl,
    connections: config.upstreamConnections,
    bodyLimitBytes: config.upstreamBodyLimitBytes,
    connectTimeoutMs: config.upstreamConnectTimeoutMs,
    maxWaiting: config.upstreamMaxWaiting
  })
  started.push({ name: 'upstream', close: () => upstream.close() })
  return upstream
}

function startCpu (config: Config, started: Closable[]) {
  const cpu = createCpuPool({
    workers: config.cpuWorkers,
    queueMax: config.cpuQueueMax,
    graceMs: config.cpuGraceMs,
    resourceLimits: { maxOldGenerationSizeMb: config.cpuWorkerMaxOldMb },
    // The requests that used the pool have finished or been aborted by the time it closes.
    closeTimeoutMs: 1000
  })
  started.push({ name: 'cpu pool', close: () => cpu.close() })
  return cpu
}
