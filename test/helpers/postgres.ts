import { mkdtemp, rm } from 'node:fs/promises'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pg from 'pg'
import { startEmbeddedPostgres, type EmbeddedPostgres } from '../../src/embedded-postgres.js'
import { migrate } from '../../src/migrate.js'
import { seedEvents } from '../../src/seed.js'

// A migrated database for one test file: a PostgreSQL cluster of its own (embedded, in a temp
// directory: initdb and start take about 0.6 s, so no cluster is shared between files), or a
// fresh database on the server at TEST_DATABASE_URL when that is set.

export interface TestPostgres {
  // Connection string of this file's database.
  readonly url: string
  readonly database: string
  // Stop and start the server again: only on a cluster of the test's own.
  readonly restartable: boolean
  stop (): Promise<void>
  start (): Promise<void>
  // Runs on a separate admin pool (application_name hibeaver-test), never on the adapter's.
  query<R extends pg.QueryResultRow = pg.QueryResultRow> (text: string, values?: unknown[]): Promise<R[]>
  // HiBeaver's sessions in this database (application_name 'hibeaver'), as pg_stat_activity shows them.
  sessions (): Promise<Session[]>
  // The statements of HiBeaver's sessions that are running now.
  active (): Promise<Session[]>
  // Holds an exclusive lock on events, so that any statement on it waits, running, on the server
  // until the returned function lets it go: a statement caught mid-flight when a test chooses.
  lockEvents (): Promise<() => Promise<void>>
  close (): Promise<void>
}

export interface Session {
  pid: number
  state: string | null
  query: string
  wait_event_type: string | null
}

export interface TestPostgresOptions {
  seedEvents?: number
  // A cluster of the test's own even when TEST_DATABASE_URL is set (to stop and start it).
  ownCluster?: boolean
}

const TEST_SETTINGS = {
  fsync: 'off',
  synchronous_commit: 'off',
  full_page_writes: 'off',
  max_connections: '60'
}

export async function startTestPostgres (options: TestPostgresOptions = {}): Promise<TestPostgres> {
  const external = process.env.TEST_DATABASE_URL
  const server = external !== undefined && external !== '' && options.ownCluster !== true
    ? await externalServer(external)
    : await embeddedServer()

  const url = server.url
  await migrate({ connectionString: url })
  if ((options.seedEvents ?? 0) > 0) await seedEvents({ connectionString: url, count: options.seedEvents ?? 0 })

  const admin = new pg.Pool({ connectionString: url, application_name: 'hibeaver-test', max: 3 })
  admin.on('error', () => {})
  const query = async <R extends pg.QueryResultRow>(text: string, values?: unknown[]) =>
    (await admin.query<R>(text, values)).rows
  const sessions = () => query<Session>(
    `SELECT pid, state, query, wait_event_type FROM pg_stat_activity
      WHERE application_name = 'hibeaver' AND datname = current_database() ORDER BY pid`)

  return {
    url,
    database: server.database,
    restartable: server.embedded !== undefined,
    stop: async () => {
      await server.embedded?.stop()
    },
    start: async () => {
      await server.embedded?.start()
    },
    query,
    sessions,
    active: async () => (await sessions()).filter((session) => session.state === 'active'),
    lockEvents: () => lockTable(url, 'events'),
    close: async () => {
      await admin.end()
      await server.close()
    }
  }
}

interface Server {
  url: string
  database: string
  embedded?: EmbeddedPostgres
  close (): Promise<void>
}

let counter = 0

async function externalServer (adminUrl: string): Promise<Server> {
  const database = `hibeaver_test_${process.pid}_${++counter}`
  await withClient(adminUrl, (client) => client.query(`CREATE DATABASE ${database}`))
  const url = new URL(adminUrl)
  url.pathname = `/${database}`
  return {
    url: url.toString(),
    database,
    close: () => withClient(adminUrl, (client) => client.query(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`))
  }
}

async function embeddedServer (): Promise<Server> {
  const dataDir = await mkdtemp(join(tmpdir(), 'hibeaver-pg-'))
  const embedded = await startEmbeddedPostgres({ dataDir, port: await freePort(), settings: TEST_SETTINGS })
  const database = 'hibeaver_test'
  await withClient(embedded.connectionString, (client) => client.query(`CREATE DATABASE ${database}`))
  const url = new URL(embedded.connectionString)
  url.pathname = `/${database}`
  return {
    url: url.toString(),
    database,
    embedded,
    close: async () => {
      await embedded.stop()
      await rm(dataDir, { recursive: true, force: true })
    }
  }
}

async function lockTable (url: string, table: string): Promise<() => Promise<void>> {
  const client = new pg.Client({ connectionString: url, application_name: 'hibeaver-test' })
  await client.connect()
  await client.query('BEGIN')
  await client.query(`LOCK TABLE ${table} IN ACCESS EXCLUSIVE MODE`)
  let released = false
  return async () => {
    if (released) return
    released = true
    await client.query('COMMIT')
    await client.end()
  }
}

async function withClient (url: string, fn: (client: pg.Client) => Promise<unknown>): Promise<void> {
  const client = new pg.Client({ connectionString: url, application_name: 'hibeaver-test' })
  await client.connect()
  try {
    await fn(client)
  } finally {
    await client.end()
  }
}

// A port nobody listens on now; the cluster binds it a moment later.
export function freePort (): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const address = server.address()
      server.close(() => resolve(typeof address === 'object' && address !== null ? address.port : 0))
    })
  })
}

// Polls `probe` until it returns true; for state that only the database can show.
export async function eventually (probe: () => Promise<boolean>, what: string, timeoutMs = 10_000): Promise<void> {
  const until = performance.now() + timeoutMs
  while (performance.now() < until) {
    if (await probe()) return
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
  throw new Error(`timed out waiting for ${what}`)
}
