import { setTimeout as sleep } from 'node:timers/promises'
import { waitQuiet, type BenchServer } from './compare-servers.js'
import { load } from './lib/load.js'
import { probe, type ProbeResult } from './lib/probe.js'
import { round, summarize } from './lib/stats.js'

// Is the server still answering while its CPU handler is saturated? GET /health is probed
// every 20 ms (open loop), first with the server idle, then while clients keep it busy with
// calculations; the naive server runs them on its event loop, HiBeaver on worker threads.

export const SATURATING_CALCULATION = { task: 'count-primes', below: 50_000_000 }

export interface HealthSettings {
  durationS: number
  connections: number
}

export interface HealthResult {
  idle: ReturnType<typeof summarize>
  saturated: ReturnType<typeof summarize> & { statuses: ProbeResult['statuses'] }
  // The calculations answered meanwhile.
  calculationRps: number
}

export async function healthUnderLoad (server: BenchServer, settings: HealthSettings): Promise<HealthResult> {
  // Idle means idle: a naive server may still be working off an earlier step's calculations.
  await waitQuiet(server, 'cpu')
  const idle = await probe(server.url, '/health', 1000)

  const loading = load({
    url: server.url,
    path: '/handlers/complex-calculation',
    body: JSON.stringify(SATURATING_CALCULATION),
    connections: settings.connections,
    durationS: settings.durationS
  })
  // Probed inside the load, a second clear of its start and of its end.
  await sleep(1000)
  const saturated = await probe(server.url, '/health', (settings.durationS - 2) * 1000)
  const calculations = await loading
  // The load generator left with calculations still queued: the naive server works them off.
  await waitQuiet(server, 'cpu')

  return {
    idle: summarize(idle.latenciesMs),
    saturated: { ...summarize(saturated.latenciesMs), statuses: saturated.statuses },
    calculationRps: round(calculations.rps, 1)
  }
}
