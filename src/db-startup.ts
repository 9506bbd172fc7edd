import type { Logger } from 'pino'
import { createDatabase, type Database, type DatabaseOptions } from './database.js'
import { startEmbeddedPostgres, type EmbeddedPostgres } from './embedded-postgres.js'
import { migrate } from './migrate.js'
import { seedEvents } from './seed.js'

// Start-up of the database side, in order: the server (DATABASE_URL, or an embedded PostgreSQL
// in its data directory), the schema, the demo data, then the pool. Shutdown in reverse.

export interface StartDatabaseOptions {
  // Unset: an embedded PostgreSQL in `dataDir`, listening on 127.0.0.1:`port`.
  databaseUrl?: string | undefined
  dataDir: string
  port: number
  poolMax: number
  // Requests allowed to wait for a connection (the adapter's default when unset).
  maxWaiting?: number
  // Events generated into an empty events table (0: none).
  seedEvents: number
  log?: Logger
  // Further adapter options (timeouts, application name).
  database?: Omit<DatabaseOptions, 'connectionString' | 'poolMax' | 'maxWaiting'>
}

export interface StartedDatabase {
  readonly database: Database
  readonly embedded: EmbeddedPostgres | undefined
  // Drains the pool, then stops the embedded server if there is one; safe to call twice.
  stop (): Promise<void>
}

export async function startDatabase (options: StartDatabaseOptions): Promise<StartedDatabase> {
  const log = options.log
  const embedded = options.databaseUrl === undefined ? await startEmbedded(options) : undefined
  const connectionString = options.databaseUrl ?? (embedded as EmbeddedPostgres).connectionString

  try {
    const applied = await migrate({ connectionString, log: (line) => log?.debug({ line }, 'migration progress') })
    log?.info({ applied }, 'database schema up to date')
    const seeded = await seedEvents({ connectionString, count: options.seedEvents })
    if (seeded.inserted > 0) log?.info(seeded, 'demo events seeded')
  } catch (err) {
    await embedded?.stop()
    throw err
  }

  const database = createDatabase({
    ...options.database,
    connectionString,
    poolMax: options.poolMax,
    ...(options.maxWaiting === undefined ? {} : { maxWaiting: options.maxWaiting })
  })
  let stopping: Promise<void> | undefined
  const stop = async () => {
    await database.close()
    await embedded?.stop()
  }
  return {
    database,
    embedded,
    stop: () => {
      stopping ??= stop()
      return stopping
    }
  }
}

async function startEmbedded (options: StartDatabaseOptions): Promise<EmbeddedPostgres> {
  const embedded = await startEmbeddedPostgres({
    dataDir: options.dataDir,
    port: options.port,
    onLog: (line) => options.log?.debug({ line }, 'postgres')
  })
  if (embedded.orphanStopped !== undefined) {
    options.log?.warn(
      { pid: embedded.orphanStopped, dataDir: embedded.dataDir },
      'stopped an embedded postgres left running by an earlier process'
    )
  }
  options.log?.info({ dataDir: embedded.dataDir, port: embedded.port }, 'embedded postgres started')
  return embedded
}
