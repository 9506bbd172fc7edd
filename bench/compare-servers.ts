import { setTimeout as sleep } from 'node:timers/promises'
import { fileURLToPath } from 'node:url'
import { startChild, type ChildServer } from './lib/child.js'
import { ChildChannel } from './lib/child-channel.js'
import { cpuSeconds } from './lib/proc.js'

// The two servers compared by `npm run bench`, each in a process of its own, against the same
// database and the same demo upstream.

export type ServerKind = 'naive' | 'hibeaver'
export const SERVER_KINDS: readonly ServerKind[] = ['naive', 'hibeaver']

export interface Backends {
  databaseUrl: string
  upstreamUrl: string
}

export type Resource = 'http' | 'db' | 'cpu'
export type Busy = Record<Resource, number>

export interface BenchServer {
  readonly kind: ServerKind
  readonly url: string
  readonly pid: number
  // The application_name of its PostgreSQL sessions.
  readonly app: string
  readonly channel: ChildChannel
  stop (): Promise<void>
}

const FILES: Record<ServerKind, string> = {
  naive: fileURLToPath(new URL('./naive-server.ts', import.meta.url)),
  hibeaver: fileURLToPath(new URL('./compare-hibeaver-server.ts', import.meta.url))
}

export const APP_NAMES: Record<ServerKind, string> = { naive: 'hibeaver-naive', hibeaver: 'hibeaver-bench' }

export async function startBenchServer (kind: ServerKind, backends: Backends): Promise<BenchServer> {
  const child: ChildServer = await startChild(
    FILES[kind],
    [backends.databaseUrl, backends.upstreamUrl, APP_NAMES[kind]]
  )
  const pid = child.child.pid
  if (pid === undefined) {
    await child.stop()
    throw new Error(`the ${kind} server has no pid`)
  }
  // ChildServer.stop() waits for an 'exit' that never comes again for a child it already killed.
  let stopping: Promise<void> | undefined
  const stop = () => {
    stopping ??= child.stop()
    return stopping
  }
  return { kind, url: child.url, pid, app: APP_NAMES[kind], channel: new ChildChannel(child.child), stop }
}

// Waits until the server holds no work of `resource` and has burned no CPU for a while: a naive
// server may still have requests to read that its blocked event loop has not seen yet, and a
// worker may still be on its way out.
export async function waitQuiet (server: BenchServer, resource: Resource, timeoutMs = 120_000): Promise<void> {
  const QUIET_MS = 150
  const until = performance.now() + timeoutMs
  while (performance.now() < until) {
    const before = await cpuSeconds(server.pid)
    const busy = await server.channel.ask<Busy>('busy', timeoutMs)
    await sleep(QUIET_MS)
    const burned = await cpuSeconds(server.pid) - before
    // One tick of slack: a timer or a GC slice, not work.
    if (busy[resource] === 0 && burned <= 0.011) return
  }
  throw new Error(`the ${server.kind} server was still busy with ${resource} after ${timeoutMs} ms`)
}
