import { setTimeout as sleep } from 'node:timers/promises'
import type { DemoConnectionClosed, DemoRequest, DemoUpstream } from '../src/demo-upstream.js'
import { waitQuiet, type BenchServer } from './compare-servers.js'
import { abandonWave, type Posted } from './lib/abandon.js'
import type { ActivitySampler } from './lib/pg-activity.js'
import { cpuSeconds, cpuSecondsOf } from './lib/proc.js'
import { round, summarize } from './lib/stats.js'

// Work done for clients that have left. Requests go out in waves: a wave's clients all send at
// once and all leave together, `leaveAfterMs` later; the next wave starts when the resource is
// idle again. Each resource is watched from outside the server where that is possible:
//   db        pg_stat_activity: statement time past the clients' departure; and the CPU time
//             its PostgreSQL backend processes burned meanwhile (/proc)
//   cpu       the server process's CPU time (/proc) from the departure until it is idle again
//   upstream  the demo upstream: how long it went on producing answers nobody would read
// Disconnect-to-stop is, per unit of work, from the departure to its end: the statement's end
// as PostgreSQL reports it, the calculation's end as its server reports it, the upstream's
// connection close (or its answer's completion, when the connection stayed open).

export interface WaveSettings {
  waves: number
  perWave: number
}

export interface WasteResult {
  requests: number
  // Statements, calculations or upstream requests that were seen, started for those requests.
  work: number
  // Resource seconds spent after the clients had left.
  secondsAfterLeave: number
  // Database only: CPU seconds of the server's PostgreSQL backends after the clients left.
  backendCpuSeconds?: number
  // CPU only: how each calculation ended (completed, dequeued, cooperative, terminated).
  stoppedHow?: Record<string, number>
  stopMs: ReturnType<typeof summarize>
}

export const LEAVE_AFTER_MS = 100

function posted (path: string, body: unknown): Posted {
  return { path, body: JSON.stringify(body) }
}

function result (requests: number, work: number, seconds: number, stops: number[]): WasteResult {
  return { requests, work, secondsAfterLeave: round(seconds, 3), stopMs: summarize(stops) }
}

export const HEAVY_REPORT = {
  query: 'source-percentiles',
  params: { from: '2025-01-01T00:00:00Z', to: '2025-02-01T00:00:00Z' }
}

// The month's report, several hundred ms each on the seeded table.
export async function databaseWaste (
  server: BenchServer,
  sampler: ActivitySampler,
  settings: WaveSettings
): Promise<WasteResult> {
  const request = posted('/handlers/data-retrieval', HEAVY_REPORT)
  let work = 0
  let seconds = 0
  let backendCpu = 0
  const stops: number[] = []

  for (let wave = 0; wave < settings.waves; wave++) {
    const sentAt = Date.now()
    const { leftAt } = await abandonWave(server.url, Array(settings.perWave).fill(request), LEAVE_AFTER_MS)
    // The sampler has seen every session by now: each has been running its report for 100 ms.
    const before = await cpuSecondsOf(sampler.pids(server.app))
    await sampler.waitIdle(server.app, leftAt, 120_000)
    await waitQuiet(server, 'db')
    for (const [pid, after] of await cpuSecondsOf(sampler.pids(server.app))) {
      backendCpu += after - (before.get(pid) ?? 0)
    }

    for (const statement of sampler.statements(server.app, sentAt)) {
      const endedAt = statement.endedAt ?? Date.now()
      // Short statements (HiBeaver's SET of statement_timeout) that ended before the clients
      // left are not work done for nobody; the report is.
      if (endedAt < leftAt) continue
      work++
      seconds += (endedAt - Math.max(statement.startedAt, leftAt)) / 1000
      stops.push(endedAt - leftAt)
    }
  }
  return { ...result(settings.waves * settings.perWave, work, seconds, stops), backendCpuSeconds: round(backendCpu, 2) }
}

export const HEAVY_CALCULATION = { task: 'count-primes', below: 100_000_000 }

// A count that takes a core a quarter of a second.
export async function cpuWaste (server: BenchServer, settings: WaveSettings): Promise<WasteResult> {
  const request = posted('/handlers/complex-calculation', HEAVY_CALCULATION)
  let seconds = 0
  let work = 0
  const stops: number[] = []
  const stoppedHow: Record<string, number> = {}

  for (let wave = 0; wave < settings.waves; wave++) {
    const sentAt = Date.now()
    const { leftAt } = await abandonWave(server.url, Array(settings.perWave).fill(request), LEAVE_AFTER_MS)
    const before = await cpuSeconds(server.pid)
    await waitQuiet(server, 'cpu')
    seconds += await cpuSeconds(server.pid) - before

    for (const stop of server.channel.events('cpu-stop', sentAt)) {
      work++
      stops.push(Math.max(0, stop.at - leftAt))
      const how = String(stop.how)
      stoppedHow[how] = (stoppedHow[how] ?? 0) + 1
    }
  }
  return { ...result(settings.waves * settings.perWave, work, seconds, stops), stoppedHow }
}

export const SLOW_UPSTREAM_MS = 1000

interface Served { receivedAt: number, connectionId: number, closedAt?: number }

// An upstream that takes a second to answer.
export async function upstreamWaste (
  server: BenchServer,
  demo: DemoUpstream,
  settings: WaveSettings
): Promise<WasteResult> {
  let seconds = 0
  let work = 0
  const stops: number[] = []

  for (let wave = 0; wave < settings.waves; wave++) {
    const tag = `${server.kind}-${wave}`
    const served = watchUpstream(demo, tag)
    const request = posted('/handlers/external-api-call', {
      path: '/json',
      query: { delay: SLOW_UPSTREAM_MS, wave: tag }
    })
    const { leftAtEpoch } = await abandonWave(server.url, Array(settings.perWave).fill(request), LEAVE_AFTER_MS)
    const ends = await served.settled(settings.perWave, leftAtEpoch, SLOW_UPSTREAM_MS + 10_000)
    served.stop()
    await waitQuiet(server, 'http')

    for (const endedAt of ends) {
      work++
      seconds += Math.max(0, endedAt - leftAtEpoch) / 1000
      stops.push(Math.max(0, endedAt - leftAtEpoch))
    }
  }
  return result(settings.waves * settings.perWave, work, seconds, stops)
}

// The demo upstream's account of one wave's requests: each one's end is the close of its
// connection while the answer was still being produced, or else the answer's completion, due
// SLOW_UPSTREAM_MS after it arrived (the demo's own timer).
function watchUpstream (demo: DemoUpstream, tag: string) {
  const requests: Served[] = []
  const onRequest = (info: DemoRequest) => {
    if (info.query.wave === tag) requests.push({ receivedAt: info.receivedAt, connectionId: info.connectionId })
  }
  const onClosed = (info: DemoConnectionClosed) => {
    if (!info.inFlight) return
    const served = requests.find((r) => r.connectionId === info.connectionId && r.closedAt === undefined)
    if (served !== undefined) served.closedAt = info.closedAt
  }
  demo.events.on('request', onRequest)
  demo.events.on('connection-closed', onClosed)

  const endOf = (r: Served) => r.closedAt ?? r.receivedAt + SLOW_UPSTREAM_MS
  const epochNow = () => performance.timeOrigin + performance.now()

  return {
    // A request that never reached the upstream is given up two seconds after the departure.
    async settled (count: number, leftAt: number, timeoutMs: number): Promise<number[]> {
      const until = performance.now() + timeoutMs
      while (performance.now() < until) {
        const ends = requests.map(endOf)
        const arrived = requests.length >= count || epochNow() > leftAt + 2000
        if (arrived && ends.every((end) => end + 20 < epochNow())) return ends
        await sleep(20)
      }
      throw new Error(`upstream requests of wave ${tag} did not settle in ${timeoutMs} ms`)
    },
    stop () {
      demo.events.off('request', onRequest)
      demo.events.off('connection-closed', onClosed)
    }
  }
}
