// What under-pressure reads at rising load, to choose its thresholds from measurement.
//   node --import tsx bench/pressure.ts
// A server that never sheds takes a trivial handler, then one that blocks its loop for 2 ms a
// request (synchronous work in a handler), at rising concurrency; the child's event-loop delay
// and utilisation are sampled while the load runs.
import { fileURLToPath } from 'node:url'
import { startChild } from './lib/child.js'
import { load } from './lib/load.js'
import { round } from './lib/stats.js'

const SERVER = fileURLToPath(new URL('./overhead-server.ts', import.meta.url))
const DURATION_S = 3

interface Reading { eventLoopDelay: number, eventLoopUtilized: number }

const scenarios = [
  { name: 'trivial', path: '/handlers/noop', body: '{"message":"hi"}', connections: [1, 16, 256] },
  { name: 'blocks 2 ms', path: '/handlers/spin', body: '{"ms":2}', connections: [1, 16, 64] }
]

const server = await startChild(SERVER, ['hibeaver-unshed'])
const rows = []
try {
  for (const scenario of scenarios) {
    for (const connections of scenario.connections) {
      const readings: Reading[] = []
      const sampler = setInterval(() => {
        server.ask<Reading>('pressure').then((r) => readings.push(r), () => {})
      }, 200)
      const result = await load({
        url: server.url,
        path: scenario.path,
        body: scenario.body,
        connections,
        durationS: DURATION_S
      })
      clearInterval(sampler)
      const delays = readings.map((r) => r.eventLoopDelay).filter(Number.isFinite)
      rows.push({
        scenario: scenario.name,
        connections,
        rps: round(result.rps, 0),
        p99Ms: result.p99Ms,
        maxEventLoopDelayMs: round(Math.max(...delays), 1),
        maxEventLoopUtilization: round(Math.max(...readings.map((r) => r.eventLoopUtilized)), 3)
      })
    }
  }
} finally {
  await server.stop()
}
process.stdout.write(JSON.stringify(rows, null, 2) + '\n')
