import fc from 'fast-check'
import t from 'tap'
import { request } from 'undici'
import { coreHandlers } from './fixtures/core-handlers.js'
import { startApp } from './helpers/app.js'

// Arbitrary bodies, names and headers never crash the server and never produce a 5xx: every
// answer is 200, or a 4xx problem document with a catalogue code.
t.test('no input makes the server fail', async (t) => {
  const server = await startApp({ handlers: coreHandlers, env: { LOG_LEVEL: 'warn', BODY_LIMIT_BYTES: '4096' } })
  t.teardown(() => server.close())

  const name = fc.oneof(fc.constantFrom('echo', 'nope', 'echo/..', '%2e%2e', 'handlers'), fc.string({ maxLength: 20 }))
  const body = fc.oneof(
    fc.json({ maxDepth: 4 }),
    fc.string({ maxLength: 200 }),
    fc.record({ message: fc.oneof(fc.string({ maxLength: 150 }), fc.integer(), fc.constant(null)) })
      .map((v) => JSON.stringify(v))
  )
  const budget = fc.option(fc.oneof(fc.nat().map(String), fc.string({ maxLength: 12 })), { nil: undefined })
  const contentType = fc.constantFrom(
    'application/json',
    'application/json; charset=utf-8',
    'text/plain',
    'application/x-www-form-urlencoded'
  )

  const failures: string[] = []
  await fc.assert(fc.asyncProperty(name, body, budget, contentType, async (handler, payload, timeout, type) => {
    const headers: Record<string, string> = { 'content-type': type }
    if (timeout !== undefined && /^[\x20-\x7e]*$/.test(timeout)) headers['x-request-timeout-ms'] = timeout
    const res = await request(`${server.url}/handlers/${encodeURIComponent(handler)}`, {
      method: 'POST',
      headers,
      body: payload
    })
    const text = await res.body.text()
    const ok = res.statusCode === 200 || (res.statusCode >= 400 && res.statusCode < 500 &&
      String(res.headers['content-type']).startsWith('application/problem+json') &&
      /"code":"[A-Z_]+"/.test(text))
    if (!ok) failures.push(`${res.statusCode} ${handler} ${payload.slice(0, 60)} -> ${text.slice(0, 120)}`)
    return ok
  }), { numRuns: 400 })

  t.same(failures, [])
  t.equal((await request(`${server.url}/health/live`)).statusCode, 200, 'still alive')
})
