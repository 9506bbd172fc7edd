// What a departed client costs the upstream, and what the adapter costs per call.
//   node --import tsx bench/upstream-cancel.ts [--quick]
// The demo upstream and the load generator run in this process; the HiBeaver server and the
// bare baseline run as child processes (bench/upstream-server.ts). Prints one JSON document.
//   disconnect   client socket destroyed -> the upstream sees its connection close, in ms
//   adapterRps   calls/s in-process: the adapter vs a bare undici Pool.request, same upstream
//   handlerRps   requests/s over HTTP: POST /handlers/external-api-call, HiBeaver vs bare
import { availableParallelism } from 'node:os'
import { request as httpRequest, type ClientRequest } from 'node:http'
import { fileURLToPath } from 'node:url'
import { Pool } from 'undici'
import { abortReasons } from '../src/errors.js'
import { createScope } from '../src/request-scope.js'
import {
  startDemoUpstream, type DemoConnectionClosed, type DemoRequest, type DemoUpstream
} from '../src/demo-upstream.js'
import { createUpstream } from '../src/upstream.js'
import { startChild } from './lib/child.js'
import { load } from './lib/load.js'
import { median, round, summarize } from './lib/stats.js'

const quick = process.argv.includes('--quick')
const SERVER = fileURLToPath(new URL('./upstream-server.ts', import.meta.url))
const SAMPLES = quick ? 100 : 300
const ROUNDS = quick ? 1 : 3
const DURATION_MS = quick ? 1500 : 3000
const CONCURRENCY = 32

const demo = await startDemoUpstream()

function nextRequest (): Promise<DemoRequest> {
  return new Promise((resolve) => demo.events.once('request', resolve))
}

function closedConnection (upstream: DemoUpstream, connectionId: number): Promise<DemoConnectionClosed> {
  return new Promise((resolve) => {
    const onClosed = (info: DemoConnectionClosed) => {
      if (info.connectionId !== connectionId) return
      upstream.events.off('connection-closed', onClosed)
      resolve(info)
    }
    upstream.events.on('connection-closed', onClosed)
  })
}

function post (url: string, body: unknown): ClientRequest {
  const payload = JSON.stringify(body)
  const req = httpRequest(`${url}/handlers/external-api-call`, {
    method: 'POST',
    agent: false,
    headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) }
  })
  req.on('error', () => {})
  req.end(payload)
  return req
}

// A client posts a call the upstream would answer in ten minutes, and leaves once the upstream
// has it. Measured: from the client's socket destroy to the upstream's connection close.
async function disconnectOverHttp (serverUrl: string): Promise<number> {
  const arrived = nextRequest()
  const req = post(serverUrl, { path: '/json', query: { delay: 600_000 } })
  const { connectionId } = await arrived
  const closed = closedConnection(demo, connectionId)
  const destroyedAt = performance.timeOrigin + performance.now()
  req.destroy()
  return (await closed).closedAt - destroyedAt
}

// The same through the adapter alone: the scope aborts, the upstream sees the close.
async function disconnectInProcess (): Promise<number[]> {
  const upstream = createUpstream({ baseUrl: demo.url, connections: 4, bodyLimitBytes: 1024 * 1024 })
  const samples: number[] = []
  for (let i = 0; i < SAMPLES; i++) {
    const scope = createScope({ budgetMs: 600_000 })
    const arrived = nextRequest()
    const call = upstream.forScope(scope).get('/json', { delay: 600_000 }).catch(() => {})
    const closed = closedConnection(demo, (await arrived).connectionId)
    const abortedAt = performance.timeOrigin + performance.now()
    scope.abort(abortReasons.clientClosed())
    samples.push((await closed).closedAt - abortedAt)
    await call
    scope.dispose()
  }
  await upstream.close()
  return samples
}

// The naive baseline never closes the upstream connection; count how many did within 1 s.
async function bareLeftOpen (
  serverUrl: string,
  attempts: number
): Promise<{ attempts: number, closedWithin1s: number }> {
  let closedWithin1s = 0
  for (let i = 0; i < attempts; i++) {
    const arrived = nextRequest()
    const req = post(serverUrl, { path: '/json', query: { delay: 1500 } })
    const { connectionId } = await arrived
    const closed = closedConnection(demo, connectionId).then(() => true)
    req.destroy()
    const timeout = new Promise<boolean>((resolve) => setTimeout(() => resolve(false), 1000))
    if (await Promise.race([closed, timeout])) closedWithin1s++
    // Let the upstream finish the 1.5 s answer nobody reads before the next attempt.
    await new Promise((resolve) => setTimeout(resolve, 600))
  }
  return { attempts, closedWithin1s }
}

// Calls per second for `call` run by CONCURRENCY lanes for DURATION_MS.
async function callsPerSecond (call: () => Promise<unknown>): Promise<number> {
  const until = performance.now() + DURATION_MS
  let calls = 0
  const lane = async () => {
    while (performance.now() < until) {
      await call()
      calls++
    }
  }
  const started = performance.now()
  await Promise.all(Array.from({ length: CONCURRENCY }, lane))
  return calls / ((performance.now() - started) / 1000)
}

async function adapterThroughput () {
  const upstream = createUpstream({ baseUrl: demo.url, connections: CONCURRENCY, bodyLimitBytes: 1024 * 1024 })
  const pool = new Pool(demo.url, { connections: CONCURRENCY })
  const viaAdapter = async () => {
    const scope = createScope({ budgetMs: 10_000 })
    try {
      return await upstream.forScope(scope).get('/json')
    } finally {
      scope.dispose()
    }
  }
  const bareUndici = async () => {
    const res = await pool.request({ method: 'GET', path: '/json' })
    return await res.body.json()
  }

  const samples: Record<'adapter' | 'bareUndici', number[]> = { adapter: [], bareUndici: [] }
  await callsPerSecond(viaAdapter)
  await callsPerSecond(bareUndici)
  for (let i = 0; i < ROUNDS; i++) {
    samples.adapter.push(await callsPerSecond(viaAdapter))
    samples.bareUndici.push(await callsPerSecond(bareUndici))
  }
  await upstream.close()
  await pool.close()
  return ratio(samples.adapter, samples.bareUndici)
}

async function handlerThroughput () {
  const samples: Record<'hibeaver' | 'bare', number[]> = { hibeaver: [], bare: [] }
  for (let i = 0; i < ROUNDS; i++) {
    for (const variant of ['hibeaver', 'bare'] as const) {
      const server = await startChild(SERVER, [variant, demo.url])
      const options = { url: server.url, path: '/handlers/external-api-call', body: '{"path":"/json"}' }
      await load({ ...options, durationS: 1 })
      const result = await load({ ...options, durationS: DURATION_MS / 1000 })
      await server.stop()
      if (result.errors > 0 || result.non2xx > 0) {
        throw new Error(`${variant}: ${result.non2xx} non-2xx, ${result.errors} errors`)
      }
      samples[variant].push(result.rps)
    }
  }
  return ratio(samples.hibeaver, samples.bare)
}

function ratio (ours: number[], baseline: number[]) {
  const a = median(ours)
  const b = median(baseline)
  return { ours: round(a, 0), baseline: round(b, 0), ratio: round(a / b, 3), samples: { ours, baseline } }
}

async function disconnect () {
  const hibeaver = await startChild(SERVER, ['hibeaver', demo.url])
  const overHttp: number[] = []
  for (let i = 0; i < SAMPLES; i++) overHttp.push(await disconnectOverHttp(hibeaver.url))
  await hibeaver.stop()

  const bare = await startChild(SERVER, ['bare', demo.url])
  const baseline = await bareLeftOpen(bare.url, quick ? 2 : 4)
  await bare.stop()

  return {
    overHttpMs: summarize(overHttp),
    adapterOnlyMs: summarize(await disconnectInProcess()),
    bareBaseline: baseline
  }
}

const started = Date.now()
const results = {
  machine: { node: process.version, cpus: availableParallelism() },
  disconnect: await disconnect(),
  adapterRps: await adapterThroughput(),
  handlerRps: await handlerThroughput(),
  seconds: Math.round((Date.now() - started) / 1000)
}
await demo.close()
process.stdout.write(JSON.stringify(results, null, 2) + '\n')
