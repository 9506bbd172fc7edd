import { heapOverCancelled, throughput, type HeapResult, type VariantThroughput } from './overhead.js'

// The cost of HiBeaver on the happy path (a handler that answers at once) against a bare Fastify
// route, and of its request scope alone; then the heap over many cancelled requests, against a
// server that links each request's signal to a shutdown signal with AbortSignal.any(). The
// servers are bench/overhead-server.ts's, as for bench/overhead.ts.

const VARIANTS = ['bare', 'timer', 'scope', 'hibeaver'] as const

export interface OverheadSettings {
  rounds: number
  durationS: number
  heapRequests: number
}

export interface OverheadResult {
  bare: VariantThroughput
  timer: VariantThroughput
  scope: VariantThroughput
  hibeaver: VariantThroughput
  ratio: number
  heap: { hibeaver: HeapResult, anySignal: HeapResult }
}

export async function overhead (settings: OverheadSettings): Promise<OverheadResult> {
  const rps = await throughput(VARIANTS, settings.rounds, settings.durationS)
  const pick = (variant: (typeof VARIANTS)[number]): VariantThroughput => {
    const result = rps[variant]
    if (result === undefined) throw new Error(`no figure for ${variant}`)
    return result
  }
  return {
    bare: pick('bare'),
    timer: pick('timer'),
    scope: pick('scope'),
    hibeaver: pick('hibeaver'),
    ratio: pick('hibeaver').ratioToBare,
    heap: {
      hibeaver: await heapOverCancelled('hibeaver', settings.heapRequests),
      anySignal: await heapOverCancelled('any-signal', settings.heapRequests)
    }
  }
}
