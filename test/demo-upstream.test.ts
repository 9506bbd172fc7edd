import { once } from 'node:events'
import { Agent, request as httpRequest, type IncomingMessage } from 'node:http'
import t from 'tap'
import { request } from 'undici'
import { startDemoUpstream, type DemoConnectionClosed, type DemoRequest } from '../src/demo-upstream.js'

// The demo upstream's behaviours, through a plain client, and what it reports to tests.

const demo = await startDemoUpstream()
t.teardown(() => demo.close())

t.test('/json answers after the delay, echoing what it received, padded to size', async (t) => {
  const arrived = once(demo.events, 'request') as Promise<[DemoRequest]>
  const started = performance.now()
  const res = await request(`${demo.url}/json?delay=50&size=500&a=1`, {
    headers: { 'x-request-id': 'demo-1', 'x-request-timeout-ms': '1234' }
  })
  const body = await res.body.json() as Record<string, unknown>

  t.ok(performance.now() - started >= 45, 'not before the delay')
  t.equal(res.statusCode, 200)
  t.equal(body.requestId, 'demo-1')
  t.equal(body.timeoutMs, 1234)
  t.same(body.query, { delay: '50', size: '500', a: '1' })
  t.equal(JSON.stringify(body).length, 500)
  const [info] = await arrived
  t.equal(info.path, '/json')
  t.equal(info.timeoutMs, 1234)
})

t.test('/json?status= picks the status', async (t) => {
  const res = await request(`${demo.url}/json?status=404`)
  await res.body.dump()
  t.equal(res.statusCode, 404)
})

t.test('/trickle sends a JSON array one chunk at a time', async (t) => {
  const res = await request(`${demo.url}/trickle?chunks=3&interval=5&chunkBytes=4`)
  t.same(await res.body.json(), ['xxxx', 'xxxx', 'xxxx'])
})

t.test('/error answers a 5xx with a body of the asked size', async (t) => {
  const res = await request(`${demo.url}/error?status=503&size=100000`)
  t.equal(res.statusCode, 503)
  t.equal((await res.body.arrayBuffer()).byteLength, 100000)
})

t.test('/invalid-json does not parse', async (t) => {
  const res = await request(`${demo.url}/invalid-json`)
  await t.rejects(res.body.json(), SyntaxError)
})

t.test('/reset resets the connection', async (t) => {
  await t.rejects(request(`${demo.url}/reset`), { code: 'ECONNRESET' })
})

t.test('/stale resets only a connection that already carried a request', async (t) => {
  const agent = new Agent({ keepAlive: true, maxSockets: 1 })
  t.teardown(() => agent.destroy())
  const get = () => new Promise<number>((resolve, reject) => {
    httpRequest(`${demo.url}/stale`, { agent }, (res) => {
      res.resume()
      res.on('end', () => resolve(res.statusCode ?? 0))
    }).on('error', reject).end()
  })

  t.equal(await get(), 200)
  await t.rejects(get(), { code: 'ECONNRESET' })
})

t.test('/hang sends headers and part of the body, then nothing; a client that leaves is reported', async (t) => {
  const arrived = once(demo.events, 'request') as Promise<[DemoRequest]>
  const req = httpRequest(`${demo.url}/hang`, { agent: false })
  req.on('error', () => {})
  req.end()
  const [res] = await once(req, 'response') as [IncomingMessage]
  const [chunk] = await once(res, 'data') as [Buffer]
  t.equal(res.statusCode, 200)
  t.equal(chunk.toString(), '{"partial":')

  const [{ connectionId }] = await arrived
  const closed = new Promise<DemoConnectionClosed>((resolve) => {
    demo.events.on('connection-closed', (info) => { if (info.connectionId === connectionId) resolve(info) })
  })
  const before = demo.counters.closedInFlight
  req.destroy()

  const info = await closed
  t.ok(info.inFlight)
  t.equal(info.requests, 1)
  t.equal(demo.counters.closedInFlight, before + 1)
})

t.test('close ends a pending delayed response and leaves no timer behind', async (t) => {
  const other = await startDemoUpstream()
  const arrived = once(other.events, 'request')
  const pending = request(`${other.url}/json?delay=600000`).catch((err: unknown) => err)
  await arrived

  await other.close()

  t.type(await pending, Error, 'the client saw its connection close')
  t.equal(other.counters.open, 0)
  // Had the ten-minute timer survived the closed response, this file would outlive tap's timeout.
})
