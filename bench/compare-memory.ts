import type { DemoUpstream } from '../src/demo-upstream.js'
import { startBenchServer, waitQuiet, type Backends, type ServerKind } from './compare-servers.js'
import { abandonMany } from './lib/abandon.js'
import { load } from './lib/load.js'
import { peakRss } from './lib/proc.js'
import { round } from './lib/stats.js'

// Memory over many cancelled requests, in a fresh server process: RSS and heap (after a full
// GC) once warmed up, and again once the server has finished with 10,000 requests whose clients
// left 20 ms after sending them, each waiting on a 100 ms upstream answer.

export interface MemorySettings {
  requests: number
  concurrency: number
}

export interface MemoryResult {
  requests: number
  rssBeforeMiB: number
  rssAfterMiB: number
  peakRssMiB: number
  heapBeforeMiB: number
  heapAfterMiB: number
  // From the last client leaving to the server holding no upstream call.
  drainS: number
  // Requests the upstream saw, of all those abandoned.
  upstreamRequests: number
}

const MiB = 2 ** 20
const UPSTREAM_DELAY_MS = 100
const LEAVE_AFTER_MS = 20

export async function memory (
  kind: ServerKind,
  backends: Backends,
  demo: DemoUpstream,
  settings: MemorySettings
): Promise<MemoryResult> {
  const server = await startBenchServer(kind, backends)
  try {
    const path = '/handlers/external-api-call'
    await load({ url: server.url, path, body: JSON.stringify({ path: '/json' }), amount: 2000, connections: 16 })
    await waitQuiet(server, 'http')
    const heapBefore = await server.channel.ask<number>('heap')
    const rssBefore = await server.channel.ask<number>('rss')

    const seenBefore = demo.counters.requests
    const body = JSON.stringify({ path: '/json', query: { delay: UPSTREAM_DELAY_MS } })
    await abandonMany(server.url, { path, body }, settings.requests, settings.concurrency, LEAVE_AFTER_MS)
    const leftAt = performance.now()
    await waitQuiet(server, 'http')
    const drainS = (performance.now() - leftAt) / 1000
    const heapAfter = await server.channel.ask<number>('heap')
    const rssAfter = await server.channel.ask<number>('rss')

    return {
      requests: settings.requests,
      rssBeforeMiB: round(rssBefore / MiB, 1),
      rssAfterMiB: round(rssAfter / MiB, 1),
      peakRssMiB: round(await peakRss(server.pid) / MiB, 1),
      heapBeforeMiB: round(heapBefore / MiB, 1),
      heapAfterMiB: round(heapAfter / MiB, 1),
      drainS: round(drainS, 2),
      upstreamRequests: demo.counters.requests - seenBefore
    }
  } finally {
    await server.stop()
  }
}
