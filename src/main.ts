import { existsSync } from 'node:fs'
import closeWithGrace from 'close-with-grace'
import { ConfigError, loadConfig, type Config } from './config.js'
import { createLogger } from './logger.js'
import { startServer } from './server.js'

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
const server = await startServer(config, logger).catch((err: unknown) => {
  // startServer has closed what it started; one line says why, as for a bad environment.
  logger.fatal({ err }, 'hibeaver failed to start')
  process.exit(1)
})

// A second signal exits at once (close-with-grace); the delay is a last resort past the grace.
closeWithGrace({
  delay: config.shutdownDrainMs + config.shutdownGraceMs + 15_000,
  logger: { error: (message: unknown) => logger.error(message) }
}, async ({ signal, err }) => {
  if (err !== undefined) logger.error({ err }, 'closing after an uncaught error')
  else logger.info({ signal }, 'shutting down')
  await server.close()
  logger.info('shutdown complete')
})
