import { once } from 'node:events'
import t from 'tap'
import { coreHandlers, probe, releases } from './fixtures/core-handlers.js'
import { startApp } from './helpers/app.js'
import { getJson, postJson } from './helpers/http.js'

t.test('a handler at its concurrency limit answers 503 OVERLOADED at once, then recovers', async (t) => {
  const server = await startApp({ handlers: coreHandlers })
  t.teardown(() => server.close())

  const first = postJson(`${server.url}/handlers/single`, {}, { 'x-request-id': 'single-1' })
  await once(probe, 'started')

  const second = await postJson(`${server.url}/handlers/single`, {}, { 'x-request-id': 'single-2' })
  t.equal(second.status, 503)
  t.equal(second.body.code, 'OVERLOADED')
  t.ok(Number(second.headers['retry-after']) >= 1, 'with Retry-After')
  t.equal(second.headers['x-request-id'], 'single-2', 'with its request id')
  t.equal(second.body.requestId, 'single-2')
  t.equal((await postJson(`${server.url}/handlers/echo`, { message: 'x' })).status, 200,
    'other handlers are unaffected')

  releases.get('single-1')?.()
  t.equal((await first).status, 200)
  // The slot is given back when the first response closes.
  await server.waitForLog((l) => l.msg === 'request finished' && l.requestId === 'single-1')
  const third = postJson(`${server.url}/handlers/single`, {}, { 'x-request-id': 'single-3' })
  await once(probe, 'started')
  releases.get('single-3')?.()
  t.equal((await third).status, 200, 'served again once the slot is free')
})

t.test('a client that leaves gives its slot back', async (t) => {
  const server = await startApp({ handlers: coreHandlers, env: { DEFAULT_TIMEOUT_MS: '100' } })
  t.teardown(() => server.close())

  t.equal((await postJson(`${server.url}/handlers/single`, {})).status, 504)
  const next = postJson(`${server.url}/handlers/single`, {}, { 'x-request-id': 'single-after-504' })
  await once(probe, 'started')
  releases.get('single-after-504')?.()
  t.equal((await next).status, 200, 'a request that ended in 504 freed its slot')
})

t.test('a blocked event loop sheds load with 503 and Retry-After, and recovers', async (t) => {
  const server = await startApp({
    handlers: coreHandlers,
    env: { PRESSURE_MAX_EVENT_LOOP_DELAY_MS: '50', PRESSURE_SAMPLE_INTERVAL_MS: '50' }
  })
  t.teardown(() => server.close())
  t.equal((await getJson(`${server.url}/health/ready`)).status, 200)

  // Block this process's loop (the server runs in it) well past the threshold. The sampling
  // timer runs before the request is read, so the request meets the fresh sample.
  const until = performance.now() + 400
  while (performance.now() < until);

  const [shed, live] = await Promise.all([
    postJson(`${server.url}/handlers/echo`, { message: 'x' }),
    getJson(`${server.url}/health/live`)
  ])
  let res = shed
  t.equal(res.status, 503, 'shed while the delay is over its threshold')
  t.equal(res.body.code, 'OVERLOADED')
  t.ok(Number(res.headers['retry-after']) >= 1)
  t.equal(live.status, 200, 'liveness does not shed, in the same moment')

  for (let i = 0; i < 100 && res.status === 503; i++) {
    await new Promise((resolve) => setTimeout(resolve, 20))
    res = await postJson(`${server.url}/handlers/echo`, { message: 'x' })
  }
  t.equal(res.status, 200, 'served again once the loop is free')
})
