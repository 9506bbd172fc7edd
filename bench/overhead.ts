// The request scope's cost on the happy path, and its memory over many cancelled requests.
//   node --import tsx bench/overhead.ts [--quick]
// npm run bench uses the same functions (bench/compare-overhead.ts).
// Each variant runs in its own process; autocannon drives it from this one over loopback.
// Variants run interleaved over several rounds and the median is taken, since the machine is
// shared and noisy; figures are ratios against bare Fastify measured in the same run.
import { connect } from 'node:net'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { startChild, type ChildServer } from './lib/child.js'
import { load } from './lib/load.js'
import { median, round } from './lib/stats.js'

const SERVER = fileURLToPath(new URL('./overhead-server.ts', import.meta.url))
export const VARIANTS = ['bare', 'timer', 'scope', 'hibeaver', 'bare-logged', 'hibeaver-logged']

export interface VariantThroughput {
  rps: number
  ratioToBare: number
  samples: number[]
}

// Requests/s of a trivial handler in each variant (bare Fastify among them), in fresh
// processes, rounds interleaved, the median taken.
export async function throughput (variants: readonly string[], rounds: number, durationS: number):
Promise<Record<string, VariantThroughput>> {
  const rps: Record<string, number[]> = Object.fromEntries(variants.map((v) => [v, []]))
  for (let r = 0; r < rounds; r++) {
    for (const variant of r % 2 === 0 ? variants : [...variants].reverse()) {
      const server = await startChild(SERVER, [variant])
      try {
        await load({ url: server.url, path: '/handlers/noop', durationS: 1 })
        const result = await load({ url: server.url, path: '/handlers/noop', durationS })
        if (result.errors > 0 || result.non2xx > 0) {
          throw new Error(`${variant}: ${result.non2xx} non-2xx, ${result.errors} errors`)
        }
        rps[variant]?.push(round(result.rps, 0))
      } finally {
        await server.stop()
      }
    }
  }
  const bare = median(rps.bare ?? [])
  return Object.fromEntries(variants.map((variant) => {
    const value = median(rps[variant] ?? [])
    return [variant, { rps: round(value, 0), ratioToBare: round(value / bare, 3), samples: rps[variant] ?? [] }]
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

export interface HeapResult {
  requests: number
  heapBeforeMiB: number
  heapAfterMiB: number
  heapGrowthBytesPerRequest: number
  rssBeforeMiB: number
  rssAfterMiB: number
}

// Heap after `total` requests, half of them cancelled (by deadline, and a tenth by the client).
export async function heapOverCancelled (variant: string, total: number): Promise<HeapResult> {
  const server: ChildServer = await startChild(SERVER, [variant])
  try {
    await load({ url: server.url, path: '/handlers/noop', amount: 10_000 })
    const before = await server.ask<number>('heap')
    const rssBefore = await server.ask<number>('rss')

    await load({ url: server.url, path: '/handlers/noop', amount: total / 2 })
    await load({
      url: server.url,
      path: '/handlers/wait',
      amount: total / 2 - total / 20,
      headers: { 'x-request-timeout-ms': '1' }
    })
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

async function main (): Promise<void> {
  const quick = process.argv.includes('--quick')
  const total = quick ? 40_000 : 200_000
  const started = Date.now()
  const results = {
    machine: { node: process.version, cpus: (await import('node:os')).availableParallelism() },
    throughput: await throughput(VARIANTS, quick ? 1 : 3, quick ? 2 : 5),
    memory: {
      hibeaver: await heapOverCancelled('hibeaver', total),
      'any-signal': await heapOverCancelled('any-signal', total)
    },
    seconds: Math.round((Date.now() - started) / 1000)
  }
  process.stdout.write(JSON.stringify(results, null, 2) + '\n')
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) await main()
