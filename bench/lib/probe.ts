import { setTimeout as sleep } from 'node:timers/promises'
import { Pool } from 'undici'

// An open-loop latency probe, as a health checker or a load balancer sees a server: one GET
// every `intervalMs`, whether or not the previous one has been answered, each timed from the
// moment it was due. A closed loop would wait out a stalled server and so hide the stall.

export interface ProbeResult {
  latenciesMs: number[]
  // Answers by status code; 'error' for a request that failed or timed out.
  statuses: Record<string, number>
}

export async function probe (url: string, path: string, durationMs: number, intervalMs = 20): Promise<ProbeResult> {
  const pool = new Pool(url, { connections: 256, headersTimeout: 30_000, bodyTimeout: 30_000 })
  const latenciesMs: number[] = []
  const statuses: Record<string, number> = {}
  const count = (key: string) => { statuses[key] = (statuses[key] ?? 0) + 1 }

  const one = async (dueAt: number) => {
    try {
      const res = await pool.request({ method: 'GET', path })
      await res.body.dump()
      count(String(res.statusCode))
    } catch {
      count('error')
    }
    latenciesMs.push(performance.now() - dueAt)
  }

  const started = performance.now()
  const pending: Array<Promise<void>> = []
  for (let i = 0; i * intervalMs < durationMs; i++) {
    const dueAt = started + i * intervalMs
    const wait = dueAt - performance.now()
    if (wait > 0) await sleep(wait)
    pending.push(one(dueAt))
  }
  await Promise.all(pending)
  await pool.close()
  return { latenciesMs, statuses }
}
