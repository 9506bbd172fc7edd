import v8 from 'node:v8'
import vm from 'node:vm'
import t from 'tap'
import { abortReasons, HiBeaverError } from '../src/errors.js'
import { createScope, type RequestScope } from '../src/request-scope.js'
import { startDemoUpstream, type DemoRequest } from '../src/demo-upstream.js'
import { createUpstream } from '../src/upstream.js'

// Many aborted calls against a small pool: the dispatcher never holds more sockets than its
// limit, nothing warns about listeners, every call settles, and the heap does not grow with
// the number of calls made.

const CONNECTIONS = 4
const CALLS = 1000

v8.setFlagsFromString('--expose-gc')
const gc = vm.runInNewContext('gc') as () => void

const warnings: Error[] = []
const onWarning = (warning: Error) => { warnings.push(warning) }
process.on('warning', onWarning)
t.teardown(() => { process.off('warning', onWarning) })

const demo = await startDemoUpstream()
const upstream = createUpstream({
  baseUrl: demo.url,
  connections: CONNECTIONS,
  bodyLimitBytes: 1024 * 1024,
  maxWaiting: CALLS
})
t.teardown(async () => {
  await upstream.destroy()
  await demo.close()
})

// Waits for state both ends reach on their own; by time, not by turns, since a loaded machine
// (the suite runs two files at once) takes longer to close a thousand sockets.
async function until (condition: () => boolean, what: string): Promise<void> {
  const giveUpAt = performance.now() + 10_000
  while (!condition()) {
    if (performance.now() > giveUpAt) throw new Error(`timed out waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 1))
  }
}

function requestsArrived (count: number): Promise<void> {
  return new Promise((resolve) => {
    let seen = 0
    const onRequest = (_info: DemoRequest) => {
      if (++seen < count) return
      demo.events.off('request', onRequest)
      resolve()
    }
    demo.events.on('request', onRequest)
  })
}

// Starts CALLS calls that the upstream would answer in ten minutes, waits until the pool's
// connections all carry one, aborts every scope, and returns how each call settled.
async function abortedRound (scopes: RequestScope[]): Promise<string[]> {
  const busy = requestsArrived(CONNECTIONS)
  const calls = Array.from({ length: CALLS }, (_, i) =>
    upstream.forScope(scopes[i % scopes.length] as RequestScope).get('/json', { delay: 600_000 })
      .then(() => 'answered', (err: unknown) => err instanceof HiBeaverError ? err.code : String(err)))
  await busy

  t.ok(upstream.stats.connected <= CONNECTIONS, `${upstream.stats.connected} sockets while ${CALLS} calls are open`)
  t.equal(upstream.stats.waiting, CALLS - CONNECTIONS, 'the rest wait in the admission queue, not in undici')

  for (const scope of scopes) scope.abort(abortReasons.clientClosed())
  const outcomes = await Promise.all(calls)
  for (const scope of scopes) scope.dispose()
  // Both ends have seen every socket close before the next round opens new ones.
  await until(() => upstream.stats.connected === 0 && upstream.stats.admitted === 0 && demo.counters.open === 0,
    'every socket to close at both ends')
  return outcomes
}

const scopes = (count: number) => Array.from({ length: count }, () => createScope({ budgetMs: 60_000 }))

t.test('1,000 calls, each with its own scope, all aborted', async (t) => {
  const outcomes = await abortedRound(scopes(CALLS))

  t.equal(outcomes.filter((code) => code === 'CLIENT_CLOSED').length, CALLS)
  t.same(upstream.stats, { connected: 0, running: 0, pending: 0, admitted: 0, waiting: 0 })
  t.ok(demo.counters.maxOpen <= CONNECTIONS, `the upstream saw at most ${demo.counters.maxOpen} connections at once`)
})

t.test('1,000 calls on one scope, aborted together: no listener piles up on its signal', async (t) => {
  const scope = createScope({ budgetMs: 60_000 })
  // A signal that exists is what an adapter adding one listener per call would warn about.
  t.equal(scope.signal.aborted, false)

  const outcomes = await abortedRound([scope])

  t.equal(outcomes.filter((code) => code === 'CLIENT_CLOSED').length, CALLS)
})

t.test('the heap does not grow with the number of aborted calls', async (t) => {
  const heapAfterRound: number[] = []
  for (let round = 0; round < 12; round++) {
    await abortedRound(scopes(CALLS))
    heapAfterRound.push(await settledHeap())
  }

  // The first rounds allocate what stays for good (compiled code, pool state); after that,
  // a call that stayed reachable would keep its exchange, promise and closures: several
  // hundred bytes each, megabytes over the 6,000 calls between the two samples.
  const early = median(heapAfterRound.slice(3, 6))
  const late = median(heapAfterRound.slice(9, 12))
  t.ok(late - early < 1024 * 1024, `heap ${(early / 1048576).toFixed(1)} MiB, then ${(late / 1048576).toFixed(1)} MiB`)
})

async function settledHeap (): Promise<number> {
  await new Promise((resolve) => setImmediate(resolve))
  gc()
  gc()
  return process.memoryUsage().heapUsed
}

function median (values: number[]): number {
  return [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)] ?? NaN
}

t.test('no MaxListenersExceededWarning, no warning at all', async (t) => {
  t.same(warnings.map((warning) => warning.name), [])
  t.ok(demo.counters.maxOpen <= CONNECTIONS)
  t.equal(demo.counters.connections, demo.counters.closedInFlight,
    'every connection closed mid-response: none replaced')
})
