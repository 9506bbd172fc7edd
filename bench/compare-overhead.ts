import { fileURLToPath } from 'node:url'
import { startChild } from './lib/child.js'
import { load } from './lib/load.js'
import { median, round } from './lib/stats.js'

// The cost of HiBeaver's request scope on the happy path: a handler that answers at once,
// through HiBeaver and as a bare Fastify route, with bench/overhead-server.ts (the same
// servers as bench/overhead.ts). Each variant runs in a fresh process, rounds interleaved.

const SERVER = fileURLToPath(new URL('./overhead-server.ts', import.meta.url))
const VARIANTS = ['bare', 'hibeaver'] as const

export interface OverheadSettings {
  rounds: number
  durationS: number
}

export interface OverheadResult {
  bare: { rps: number, samples: number[] }
  hibeaver: { rps: number, samples: number[] }
  ratio: number
  failed: number
}

export async function overhead (settings: OverheadSettings): Promise<OverheadResult> {
  const samples: Record<(typeof VARIANTS)[number], number[]> = { bare: [], hibeaver: [] }
  let failed = 0
  for (let r = 0; r < settings.rounds; r++) {
    for (const variant of r % 2 === 0 ? VARIANTS : [...VARIANTS].reverse()) {
      const server = await startChild(SERVER, [variant])
      try {
        await load({ url: server.url, path: '/handlers/noop', durationS: 1 })
        const result = await load({ url: server.url, path: '/handlers/noop', durationS: settings.durationS })
        failed += result.errors + result.non2xx
        samples[variant].push(round(result.rps, 0))
      } finally {
        await server.stop()
      }
    }
  }
  const bare = median(samples.bare)
  const hibeaver = median(samples.hibeaver)
  return {
    bare: { rps: bare, samples: samples.bare },
    hibeaver: { rps: hibeaver, samples: samples.hibeaver },
    ratio: round(hibeaver / bare, 3),
    failed
  }
}
