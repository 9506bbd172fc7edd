import { existsSync } from 'node:fs'
import closeWithGrace from 'close-with-grace'
import { buildApp } from './app.js'
import { ConfigError, loadConfig, type Config } from './config.js'
import { loadHandlers } from './handler-registry.js'
import { createLogger } from './logger.js'

function readConfig (): Config {
  if (existsSync('.env')) process.loadEnvFile('.env')
  try {
    return loadConfig()
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err
    // One line that names the variable, then exit 1: nothing else has started yet.
    createLogger({ level: 'fatal' }).fatal({ variable: err.variable }, err.message)
    process.exit(1)
  }
}

const config = readConfig()
const logger = createLogger({ level: config.logLevel })
const handlers = await loadHandlers(new URL('../handlers/', import.meta.url).pathname)
const app = await buildApp({ config, handlers, logger })

closeWithGrace({ delay: config.shutdownGraceMs + 5_000, logger }, async ({ signal, err }) => {
  if (err !== undefined) logger.error({ err }, 'closing after an uncaught error')
  else logger.info({ signal }, 'shutting down')
  await app.close()
  logger.info('shutdown complete')
})

await app.listen({ host: config.host, port: config.port })
logger.info({ handlers: handlers.map((h) => h.name) }, 'hibeaver is ready')
