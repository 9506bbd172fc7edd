import type { BenchServer, ServerKind } from './compare-servers.js'
import { load, type LoadResult } from './lib/load.js'
import { median, round } from './lib/stats.js'

// Requests per second of each handler on its happy path: nobody leaves, nothing times out.
// The two servers take turns, one round after the other, and the median round counts.

export interface ThroughputCase {
  name: string
  path: string
  body: unknown
}

export const THROUGHPUT_CASES: readonly ThroughputCase[] = [
  { name: 'external-api-call /json', path: '/handlers/external-api-call', body: { path: '/json' } },
  { name: 'data-retrieval event', path: '/handlers/data-retrieval', body: { query: 'event', params: { id: 424_242 } } },
  {
    name: 'data-retrieval source-percentiles (1 day)',
    path: '/handlers/data-retrieval',
    body: { query: 'source-percentiles', params: { from: '2025-01-10T00:00:00Z', to: '2025-01-11T00:00:00Z' } }
  },
  {
    name: 'complex-calculation count-primes 10^7',
    path: '/handlers/complex-calculation',
    body: { task: 'count-primes', below: 10_000_000 }
  }
]

export interface ThroughputSettings {
  rounds: number
  durationS: number
  connections: number
}

export type Measured = Pick<LoadResult, 'rps' | 'p50Ms' | 'p99Ms' | 'errors' | 'non2xx'> & { samples: number[] }

export type ThroughputResult = Record<string, Record<ServerKind, Measured> & { ratio: number }>

export async function throughput (
  servers: readonly BenchServer[],
  settings: ThroughputSettings
): Promise<ThroughputResult> {
  const out: ThroughputResult = {}
  for (const c of THROUGHPUT_CASES) {
    const runs = new Map<ServerKind, LoadResult[]>()
    for (let r = 0; r < settings.rounds; r++) {
      // Alternate who goes first, so neither always runs on a cooler machine.
      const order = r % 2 === 0 ? servers : [...servers].reverse()
      for (const server of order) {
        const options = {
          url: server.url,
          path: c.path,
          body: JSON.stringify(c.body),
          connections: settings.connections
        }
        await load({ ...options, durationS: 1 })
        const result = await load({ ...options, durationS: settings.durationS })
        runs.set(server.kind, [...runs.get(server.kind) ?? [], result])
      }
    }
    const naive = summarizeRuns(runs.get('naive') ?? [])
    const hibeaver = summarizeRuns(runs.get('hibeaver') ?? [])
    out[c.name] = { naive, hibeaver, ratio: round(hibeaver.rps / naive.rps, 3) }
  }
  return out
}

// The median round's figures, with every round's requests/s kept.
function summarizeRuns (results: LoadResult[]): Measured {
  const samples = results.map((r) => round(r.rps, 0))
  const mid = median(samples)
  const chosen = results.find((r) => round(r.rps, 0) === mid) ?? results[0]
  return {
    rps: round(chosen?.rps ?? Number.NaN, 0),
    p50Ms: chosen?.p50Ms ?? Number.NaN,
    p99Ms: chosen?.p99Ms ?? Number.NaN,
    errors: results.reduce((sum, r) => sum + r.errors, 0),
    non2xx: results.reduce((sum, r) => sum + r.non2xx, 0),
    samples
  }
}
