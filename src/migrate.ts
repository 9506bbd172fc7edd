import { existsSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { runner } from 'node-pg-migrate'
import pg from 'pg'

// Schema migrations with node-pg-migrate's programmatic runner, applied at start-up. They are
// plain SQL files in migrations/, run in one transaction under node-pg-migrate's advisory lock,
// so two HiBeaver processes starting together do not both apply them.

export interface MigrateOptions {
  connectionString: string
  dir?: string
  // Receives node-pg-migrate's progress lines; silent when absent.
  log?: (message: string) => void
}

// migrations/ sits next to src/ in the repository and next to dist/ in a build.
function defaultDir (): string {
  const candidates = ['../migrations', '../../migrations'].map((path) => fileURLToPath(new URL(path, import.meta.url)))
  return candidates.find((path) => existsSync(path)) ?? candidates[0] as string
}

// Returns the names of the migrations it applied (none when the schema is up to date).
export async function migrate (options: MigrateOptions): Promise<string[]> {
  const log = options.log ?? (() => {})
  // A client of our own rather than the runner's: the runner's has no 'error' listener, and a
  // connection lost mid-migration would crash the process instead of failing the migration.
  const client = new pg.Client({ connectionString: options.connectionString, application_name: 'hibeaver-migrate' })
  client.on('error', () => {})
  await client.connect()
  try {
    const applied = await runner({
      dbClient: client,
      dir: options.dir ?? defaultDir(),
      direction: 'up',
      migrationsTable: 'pgmigrations',
      singleTransaction: true,
      checkOrder: true,
      logger: { debug: log, info: log, warn: log, error: log }
    })
    return applied.map((migration) => migration.name)
  } finally {
    await client.end()
  }
}
