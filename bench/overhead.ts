// The request scope's cost on the happy path, and its memory over many cancelled requests.
//   node --import tsx bench/overhead.ts [--quick]
// Each variant runs in its own process; autocannon drives it from this one over loopback.
// Variants run interleaved over several rounds and the median is taken, since the machine is
// shared and noisy; figures are ratios against bare Fastify measured in the same run.
import { connect } from 'node:net'
import { fileURLToPath } from 'node:url'
import { startChild, type ChildServer } from './lib/child.js'
import { load } from './lib/load.js'
import { median, round } from './lib/stats.js'

const quick = process.argv.includes('--quick')
const SERVER = fileURLToPath(new URL('./overhead-server.ts', import.meta.url))
const ROUNDS = quick ? 1 : 3
const DURATION_S = quick ? 2 : 5
const VARIANTS = ['bare', 'timer', 'scope', 'hibeaver', 'bare-logged', 'hibeaver-logged']

async function throughput () {
  const rps: Record<string, number[]> = Object.fromEntries(VARIANTS.map((v) => [v, []]))
  for (let round = 0; round < ROUNDS; round++) {
    for (const variant of VARIANTS) {
      const server = await startChild(SERVER, [variant])
      await load({ url: server.url, path: '/handlers/noop', durationS: 1 })
      const result = await load({ url: server.url, path: '/handlers/noop', durationS: DURATION_S })
      if (result.errors > 0 || result.non2xx > 0) throw new Error(`${variant}: ${result.non2xx} non-2xx, ${result.errors} errors`)
      rps[variant]?.push(result.rps)
      await server.stop()
    }
  }
  const bare = median(rps.bare ?? [])
  return Object.fromEntries(VARIANTS.map((variant) => {
    const value = median(rps[variant] ?? [])
    return [variant, { rps: round(value, 0), ratioToBare: round(value / bare, 3), samples: rps[variant] }]
  }))
}

// Opens a connection, sends one request, and destroys the socket once the server has had a
// moment to start on it: the server sees a client that left mid-request.
function abandon (url: string): Promise<void> {
  const { hostname, port } = new URL(url)
  return new Promise((resolve) => {
    const socket = connect(Number(port), hostname, () => {
      const body = '{"message":"hi"}'
      socket.write('POST /handlers/wait HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n' +
        `content-length: ${body.length}\r\n\r\n${body}`)
      setTimeout(() => socket.destroy(), 2)
    })
    socket.on('close', () => resolve())
    socket.on('error', () => {})
  })
}

async function abandonMany (url: string, count: number, concurrency = 16): Promise<void> {
  let left = count
  const lane = async (): Promise<void> => {
    while (left-- > 0) await abandon(url)
  }
  await Promise.all(Array.from({ length: concurrency }, lane))
}

// Heap after 200,000 requests, half of them cancelled (by deadline, and some by the client).
async function memory (variant: string) {
  const total = quick ? 40_000 : 200_000
  const server: ChildServer = await startChild(SERVER, [variant])
  try {
    await load({ url: server.url, path: '/handlers/noop', amount: 10_000 })
    const before = await server.ask<number>('heap')
    const rssBefore = await server.ask<number>('rss')

    await load({ url: server.url, path: '/handlers/noop', amount: total / 2 })
    await load({ url: server.url, path: '/handlers/wait', amount: total / 2 - total / 20, headers: { 'x-request-timeout-ms': '1' } })
    await abandonMany(server.url, total / 20)

    const after = await server.ask<number>('heap')
    const rssAfter = await server.ask<number>('rss')
    return {
      requests: total,
      heapBeforeMiB: round(before / 2 ** 20),
      heapAfterMiB: round(after / 2 ** 20),
      heapGrowthBytesPerRequest: round((after - before) / total),
      rssBeforeMiB: round(rssBefore / 2 ** 20),
      rssAfterMiB: round(rssAfter / 2 ** 20)
    }
  } finally {
    await server.stop()
  }
}

const started = Date.now()
const results = {
  machine: { node: process.version, cpus: (await import('node:os')).availableParallelism() },
  throughput: await throughput(),
  memory: {
    hibeaver: await memory('hibeaver'),
    'any-signal': await memory('any-signal')
  },
  seconds: Math.round((Date.now() - started) / 1000)
}
process.stdout.write(JSON.stringify(results, null, 2) + '\n')
