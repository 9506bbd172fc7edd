import { readFile } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import pg from 'pg'
import { startEmbeddedPostgres } from '../../src/embedded-postgres.js'
import { migrate } from '../../src/migrate.js'
import { seedEvents } from '../../src/seed.js'
import { freePort } from '../../test/helpers/postgres.js'

// The benchmark's own PostgreSQL: an embedded cluster in a data directory of its own under
// .data/ (git-ignored), seeded once and reused by every later run, so only the first run pays
// for the seed. The directory name carries the seed count: another count gets another cluster.

export interface BenchPostgres {
  readonly url: string
  readonly dataDir: string
  // Rows inserted by this run (0 when the cluster was seeded before) and how long it took.
  readonly seeded: { inserted: number, durationMs: number }
  readonly serverVersion: string
  stop (): Promise<void>
}

// A benchmark database, not a store of record: durability settings only slow the seed down.
const SETTINGS = {
  fsync: 'off',
  synchronous_commit: 'off',
  full_page_writes: 'off',
  shared_buffers: '256MB',
  max_connections: '100'
}

export async function startBenchPostgres (seedCount: number, root = '.data'): Promise<BenchPostgres> {
  const dataDir = resolve(root, `bench-postgres-${seedCount}`)
  await stopLeftover(dataDir)
  const embedded = await startEmbeddedPostgres({ dataDir, port: await freePort(), settings: SETTINGS })
  try {
    await migrate({ connectionString: embedded.connectionString })
    const seeded = await seedEvents({ connectionString: embedded.connectionString, count: seedCount })
    const serverVersion = await warm(embedded.connectionString)
    return { url: embedded.connectionString, dataDir, seeded, serverVersion, stop: () => embedded.stop() }
  } catch (err) {
    await embedded.stop()
    throw err
  }
}

// Reads the table and its report index once, so the first measured query is not the one that
// pulls them from disk. Answers the server's version.
async function warm (url: string): Promise<string> {
  const client = new pg.Client({ connectionString: url, application_name: 'hibeaver-bench' })
  await client.connect()
  try {
    await client.query('SELECT count(*), sum(duration_ms) FROM events')
    await client.query(`SELECT source, count(*) FROM events
                         WHERE occurred_at >= '2025-01-01' AND occurred_at < '2025-02-01' GROUP BY source`)
    const { rows } = await client.query<{ server_version: string }>('SHOW server_version')
    return rows[0]?.server_version ?? 'unknown'
  } finally {
    await client.end()
  }
}

// A run that was killed (SIGKILL, a crash) leaves its postmaster running on this data directory;
// a new one could not start there. It is ours, so it is asked for a fast shutdown.
async function stopLeftover (dataDir: string): Promise<void> {
  const pid = await postmasterPid(dataDir)
  if (pid === undefined || !alive(pid)) return
  process.kill(pid, 'SIGINT')
  const until = performance.now() + 15_000
  while (alive(pid) && performance.now() < until) await new Promise((resolve) => setTimeout(resolve, 50))
}

async function postmasterPid (dataDir: string): Promise<number | undefined> {
  try {
    const pid = Number((await readFile(join(dataDir, 'postmaster.pid'), 'utf8')).split('\n')[0])
    return Number.isInteger(pid) && pid > 0 ? pid : undefined
  } catch {
    return undefined
  }
}

function alive (pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}
