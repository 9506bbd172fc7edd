import { setTimeout as sleep } from 'node:timers/promises'
import pg from 'pg'

// Watches PostgreSQL itself, through pg_stat_activity, to see which statements of a server ran
// and when they ended: the database's own account, the same for every server measured.
// A statement is a (pid, query_start) pair seen in state 'active'. Its end is read from
// state_change once the session is seen idle (exact, to the microsecond); when the session has
// moved on to another statement or gone, the next sign of that bounds it instead.

export interface Statement {
  app: string
  pid: number
  // Wall-clock epoch milliseconds.
  startedAt: number
  endedAt: number | undefined
}

interface Row {
  app: string
  pid: number
  state: string | null
  started: string | null
  changed: string | null
}

const SAMPLE = `SELECT application_name AS app, pid, state,
                       extract(epoch FROM query_start) * 1000 AS started,
                       extract(epoch FROM state_change) * 1000 AS changed
                  FROM pg_stat_activity
                 WHERE application_name = ANY ($1) AND backend_type = 'client backend'`

export class ActivitySampler {
  readonly #client: pg.Client
  readonly #apps: string[]
  readonly #intervalMs: number
  readonly #open = new Map<number, Statement>()
  readonly #done: Statement[] = []
  readonly #pids = new Map<string, Set<number>>()
  #running: Promise<void> | undefined
  #stopping = false
  #lastSampleAt = 0

  constructor (url: string, apps: string[], intervalMs = 10) {
    this.#client = new pg.Client({ connectionString: url, application_name: 'hibeaver-bench-sampler' })
    this.#client.on('error', () => {})
    this.#apps = apps
    this.#intervalMs = intervalMs
  }

  async start (): Promise<void> {
    await this.#client.connect()
    this.#running = this.#loop()
  }

  async stop (): Promise<void> {
    this.#stopping = true
    await this.#running?.catch(() => {})
    await this.#client.end().catch(() => {})
  }

  // Statements of `app` that started at or after `since`, the ones still running included.
  statements (app: string, since: number): Statement[] {
    return [...this.#done, ...this.#open.values()].filter((s) => s.app === app && s.startedAt >= since)
  }

  // The backend processes of `app` seen so far, idle ones included.
  pids (app: string): number[] {
    return [...this.#pids.get(app) ?? []]
  }

  // Waits until a sample taken after `after` shows no statement of `app` running.
  async waitIdle (app: string, after: number, timeoutMs: number): Promise<void> {
    const until = performance.now() + timeoutMs
    while (performance.now() < until) {
      if (this.#lastSampleAt > after && ![...this.#open.values()].some((s) => s.app === app)) return
      await sleep(this.#intervalMs)
    }
    throw new Error(`statements of ${app} still running after ${timeoutMs} ms`)
  }

  async #loop (): Promise<void> {
    while (!this.#stopping) {
      const { rows } = await this.#client.query<Row>(SAMPLE, [this.#apps])
      this.#update(rows, Date.now())
      await sleep(this.#intervalMs)
    }
  }

  #update (rows: Row[], sampledAt: number): void {
    const seen = new Set<number>()
    for (const row of rows) {
      seen.add(row.pid)
      this.#pids.set(row.app, (this.#pids.get(row.app) ?? new Set()).add(row.pid))
      const open = this.#open.get(row.pid)
      const started = Number(row.started)
      if (row.state === 'active') {
        if (open?.startedAt === started) continue
        // Another statement now: the previous one ended before this one started.
        if (open !== undefined) this.#close(open, started)
        this.#open.set(row.pid, { app: row.app, pid: row.pid, startedAt: started, endedAt: undefined })
      } else if (open !== undefined) {
        const changed = Number(row.changed)
        this.#close(open, changed >= open.startedAt ? changed : sampledAt)
      }
    }
    // Sessions that went away: their statement ended before this sample.
    for (const open of this.#open.values()) {
      if (!seen.has(open.pid)) this.#close(open, sampledAt)
    }
    this.#lastSampleAt = sampledAt
  }

  #close (statement: Statement, endedAt: number): void {
    statement.endedAt = endedAt
    this.#open.delete(statement.pid)
    this.#done.push(statement)
  }
}
