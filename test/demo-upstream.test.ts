import { once } from 'node:events'
import { Agent, request as httpRequest, type IncomingMessage } from 'node:http'
import net from 'node:net'
import t from 'tap'
import { request } from 'undici'
import {
  MAX_BODY_BYTES, MAX_CHUNK_BYTES, startDemoUpstream, type DemoBackpressure, type DemoConnectionClosed, type DemoRequest
} from '../src/demo-upstream.js'

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

t.test('sizes are capped, still above the default upstream body limit', async (t) => {
  t.ok(MAX_BODY_BYTES > 1024 * 1024)

  const json = await request(`${demo.url}/json?size=1073741824`)
  t.equal((await json.body.arrayBuffer()).byteLength, MAX_BODY_BYTES, '/json')
  const error = await request(`${demo.url}/error?size=1073741824`)
  t.equal((await error.body.arrayBuffer()).byteLength, MAX_BODY_BYTES, '/error')
  const trickle = await request(`${demo.url}/trickle?chunks=2&interval=0&chunkBytes=1073741824`)
  const items = await trickle.body.json() as string[]
  t.same(items.map((item) => item.length), [MAX_CHUNK_BYTES, MAX_CHUNK_BYTES], '/trickle')
})

t.test('/trickle waits for a client that does not read', async (t) => {
  const socket = net.connect(Number(new URL(demo.url).port), '127.0.0.1').on('error', () => {})
  t.teardown(() => socket.destroy())
  await once(socket, 'connect')
  const arrived = once(demo.events, 'request') as Promise<[DemoRequest]>
  const waiting = once(demo.events, 'backpressure') as Promise<[DemoBackpressure]>

  // 64 MiB in all, more than the socket buffers on both ends hold; the client reads nothing.
  socket.write(`GET /trickle?chunks=1000&interval=0&chunkBytes=${MAX_CHUNK_BYTES} HTTP/1.1\r\nhost: demo\r\n\r\n`)

  const [{ connectionId }] = await arrived
  const [info] = await waiting
  t.equal(info.connectionId, connectionId)
  t.ok(info.bufferedBytes <= 2 * MAX_CHUNK_BYTES, `${info.bufferedBytes} bytes held in the demo, not megabytes`)

  const closed = new Promise<DemoConnectionClosed>((resolve) => {
    demo.events.on('connection-closed', (closed) => { if (closed.connectionId === connectionId) resolve(closed) })
  })
  socket.destroy()
  t.ok((await closed).inFlight, 'the client left before the end, and the demo saw it')
})

t.test('/reset?delay= resets the connection after the delay', async (t) => {
  const started = performance.now()
  await t.rejects(request(`${demo.url}/reset?delay=100`), { code: 'ECONNRESET' })
  t.ok(performance.now() - started >= 95, 'not before the delay')
})

t.test('/html answers an HTML page with the chosen status', async (t) => {
  const res = await request(`${demo.url}/html?status=404`)
  t.equal(res.statusCode, 404)
  t.match(res.headers['content-type'], /^text\/html/)
  t.match(await res.body.text(), /<h1>404<\/h1>/)
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
