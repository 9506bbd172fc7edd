// A benchmark server in one of several variants, run as a child process by bench/overhead.ts.
// Every variant serves POST /handlers/noop (answers at once) and POST /handlers/wait (answers
// when its request is cancelled, or after 1 s).
import { once } from 'node:events'
import type { AddressInfo } from 'node:net'
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify'
import { z } from 'zod'
import { buildApp } from '../src/app.js'
import { loadConfig } from '../src/config.js'
import { abortReasons } from '../src/errors.js'
import { defineHandler } from '../src/handler.js'
import { ScopeManager, type RequestScope } from '../src/request-scope.js'
import '../src/fastify-types.js'
import { createLogger } from '../src/logger.js'
import { heapAfterGc, serveMeasurements } from './lib/child.js'

const variant = process.argv[2] ?? 'hibeaver'
const BUDGET_MS = 1000

const noop = defineHandler({
  name: 'noop',
  description: 'answers at once',
  input: z.object({ message: z.string() }),
  async process () { return { ok: true } }
})

const noopSignal = defineHandler({
  name: 'noop-signal',
  description: 'answers at once, after reading its signal',
  input: z.object({ message: z.string() }),
  async process (_input, ctx) { return { ok: !ctx.signal.aborted } }
})

const wait = defineHandler({
  name: 'wait',
  description: 'answers when cancelled or after 1 s',
  input: z.object({ message: z.string() }),
  async process (_input, ctx) {
    await once(ctx.signal, 'abort')
    return { ok: false }
  }
})

function bare (logged = false): FastifyInstance {
  // Logged: Fastify's default request lines (two per request) into the same sink as HiBeaver's.
  const loggerInstance: FastifyBaseLogger = createLogger({
    level: logged ? 'info' : 'silent',
    destination: { write: () => true }
  })
  const app = Fastify({ loggerInstance })
  app.post('/handlers/noop', async () => ({ data: { ok: true } }))
  return app
}

// The usual hand-rolled scope: a controller and a timer per request, cleared when it ends.
function perRequestTimer (): FastifyInstance {
  const app = Fastify({ logger: false })
  app.post('/handlers/noop', async (request) => {
    const controller = new AbortController()
    const timer = setTimeout(() => controller.abort(new Error('deadline')), BUDGET_MS)
    request.raw.once('close', () => clearTimeout(timer))
    return { data: { ok: !controller.signal.aborted } }
  })
  return app
}

// Bare Fastify plus HiBeaver's request scope and nothing else: the scope's own cost, in the
// same shape as the per-request timer above. Made before the body is read, raced against the
// handler, disposed when the response closes.
function scopeOnly (): FastifyInstance {
  const app = Fastify({ logger: false })
  const scopes = new ScopeManager()
  app.decorateRequest('scope', null)
  app.addHook('onRequest', (request, reply, done) => {
    const scope = scopes.create({ budgetMs: BUDGET_MS, requestId: request.id })
    request.scope = scope
    reply.raw.once('close', () => {
      if (!reply.raw.writableFinished) scope.abort(abortReasons.clientClosed())
      scope.dispose()
    })
    done()
  })
  app.post('/handlers/noop', async (request) => {
    const scope = request.scope as RequestScope
    const data = await new Promise((resolve, reject) => {
      const off = scope.onAbort(reject)
      Promise.resolve({ ok: !scope.aborted }).then((value) => { off(); resolve(value) }, reject)
    })
    return { data }
  })
  return app
}

// The pattern that leaks on Node 20: each request's signal linked to one long-lived signal.
function anySignal (): FastifyInstance {
  const app = Fastify({ logger: false })
  const shutdown = new AbortController()
  const scoped = (request: { raw: { once: (e: string, f: () => void) => void } }) => {
    const controller = new AbortController()
    const signal = AbortSignal.any([shutdown.signal, controller.signal])
    const timer = setTimeout(() => controller.abort(new Error('deadline')), BUDGET_MS)
    request.raw.once('close', () => { clearTimeout(timer); controller.abort(new Error('closed')) })
    return { controller, signal, timer }
  }
  app.post('/handlers/noop', async (request) => ({ data: { ok: !scoped(request).signal.aborted } }))
  app.post('/handlers/wait', async (request, reply) => {
    const { signal, controller: controllerOf } = scoped(request)
    const budget = Number(request.headers['x-request-timeout-ms'] ?? BUDGET_MS)
    const timer = setTimeout(() => { controllerOf.abort(new Error('deadline')) }, budget)
    await once(signal, 'abort').catch(() => {})
    clearTimeout(timer)
    return reply.code(504).send({ code: 'DEADLINE_EXCEEDED' })
  })
  return app
}

// Blocks the event loop for `ms`: what a handler doing synchronous work does to a server.
const spin = defineHandler({
  name: 'spin',
  description: 'busy-waits on the event loop',
  input: z.object({ ms: z.number().min(0).max(100) }),
  async process (input) {
    const until = performance.now() + input.ms
    while (performance.now() < until);
    return { ok: true }
  }
})

async function hibeaver (level: string, unshed = false): Promise<FastifyInstance> {
  const pressure = unshed
    ? {
        PRESSURE_MAX_EVENT_LOOP_DELAY_MS: '0',
        PRESSURE_MAX_EVENT_LOOP_UTILIZATION: '0',
        PRESSURE_SAMPLE_INTERVAL_MS: '100'
      }
    : {}
  const config = loadConfig({ LOG_LEVEL: level, DEFAULT_TIMEOUT_MS: String(BUDGET_MS), ...pressure })
  // Log lines go nowhere, but are still made and serialised when the level lets them through.
  const logger = createLogger({ level, destination: { write: () => true } })
  return buildApp({ config, logger, handlers: [noop, noopSignal, wait, spin] })
}

const builders: Record<string, () => FastifyInstance | Promise<FastifyInstance>> = {
  bare: () => bare(),
  'bare-logged': () => bare(true),
  timer: perRequestTimer,
  scope: scopeOnly,
  'any-signal': anySignal,
  hibeaver: () => hibeaver('warn'),
  'hibeaver-logged': () => hibeaver('info'),
  // Never sheds, so its load readings can be watched at any load.
  'hibeaver-unshed': () => hibeaver('warn', true)
}

const build = builders[variant]
if (build === undefined) throw new Error(`unknown variant ${variant}`)
const app = await build()
await app.listen({ host: '127.0.0.1', port: 0 })
const { port } = app.server.address() as AddressInfo
serveMeasurements({
  heap: heapAfterGc,
  rss: () => process.memoryUsage().rss,
  // under-pressure's own readings, where the variant has it (HiBeaver's).
  pressure: () => (app as { memoryUsage?: () => unknown }).memoryUsage?.() ?? null
})
process.send?.({ ready: true, url: `http://127.0.0.1:${port}` })
