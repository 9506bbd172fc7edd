import { Writable } from 'node:stream'
import type { AddressInfo } from 'node:net'
import type { FastifyInstance } from 'fastify'
import { buildApp, type AppOptions } from '../../src/app.js'
import { loadConfig } from '../../src/config.js'
import { createLogger } from '../../src/logger.js'

export interface LogLine {
  level: number
  msg: string
  [field: string]: unknown
}

export interface StartedApp {
  app: FastifyInstance
  url: string
  port: number
  logs: LogLine[]
  // Resolves with the first log line that matches, now or later.
  waitForLog (match: (line: LogLine) => boolean): Promise<LogLine>
  close (): Promise<void>
}

export interface StartOptions extends Omit<AppOptions, 'config' | 'logger'> {
  env?: Record<string, string>
}

// A real server on a real loopback socket, with its log lines captured as parsed JSON.
export async function startApp (options: StartOptions): Promise<StartedApp> {
  const logs: LogLine[] = []
  const waiters = new Set<{ match: (line: LogLine) => boolean, resolve: (line: LogLine) => void }>()
  const destination = new Writable({
    write (chunk: Buffer, _encoding, callback) {
      for (const text of chunk.toString('utf8').split('\n')) {
        if (text === '') continue
        const line = JSON.parse(text) as LogLine
        logs.push(line)
        for (const waiter of waiters) {
          if (waiter.match(line)) {
            waiters.delete(waiter)
            waiter.resolve(line)
          }
        }
      }
      callback()
    }
  })

  // Load shedding is off unless a test asks for it: a busy test process must not shed its own requests.
  const config = loadConfig({
    LOG_LEVEL: 'debug',
    PRESSURE_MAX_EVENT_LOOP_DELAY_MS: '0',
    PRESSURE_MAX_EVENT_LOOP_UTILIZATION: '0',
    ...options.env
  })
  const logger = createLogger({ level: config.logLevel, destination })
  const { env: _env, ...appOptions } = options
  const app = await buildApp({ ...appOptions, config, logger })
  await app.listen({ host: '127.0.0.1', port: 0 })
  const { port } = app.server.address() as AddressInfo

  return {
    app,
    port,
    url: `http://127.0.0.1:${port}`,
    logs,
    waitForLog: (match) => {
      const found = logs.find(match)
      if (found !== undefined) return Promise.resolve(found)
      return new Promise((resolve) => waiters.add({ match, resolve }))
    },
    close: () => app.close()
  }
}
