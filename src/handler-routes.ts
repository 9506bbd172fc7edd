import type {
  FastifyBaseLogger as Logger, FastifyInstance, FastifyReply, FastifyRequest, onRequestHookHandler
} from 'fastify'
import type { z } from 'zod'
import { HiBeaverError, invalidInput } from './errors.js'
import type { AnyHandler } from './handler.js'
import type { ContextFactory } from './handler-context.js'
import type { RequestScope, ScopeManager } from './request-scope.js'
import { budgetFromHeader, effectiveTimeout } from './budget.js'
import './fastify-types.js'

export interface HandlerRoutesOptions {
  handlers: readonly AnyHandler[]
  scopes: ScopeManager
  createContext: ContextFactory
  defaultTimeoutMs: number
  maxTimeoutMs: number
  // Per-handler in-flight limit for handlers that set none; 0 is no limit.
  maxConcurrency: number
  // A handler still running this long after its scope aborted is reported by name.
  overrunReportMs?: number
}

export function handlerRoutes (app: FastifyInstance, options: HandlerRoutesOptions): void {
  const { handlers, scopes, defaultTimeoutMs, maxTimeoutMs } = options
  const gates = new Map(handlers.map((handler) => [handler, new ConcurrencyGate(
    handler.maxConcurrency ?? (options.maxConcurrency === 0 ? Number.POSITIVE_INFINITY : options.maxConcurrency)
  )]))

  // The scope exists before the body is read, so a slow upload spends the same budget.
  const openScope: onRequestHookHandler = (request, _reply, done) => {
    const handler = request.routeOptions.config.handler
    if (handler === undefined) return done()

    const timeoutMs = effectiveTimeout(handler, defaultTimeoutMs)
    const budgetMs = budgetFromHeader(request.headers['x-request-timeout-ms'], timeoutMs, maxTimeoutMs)
    const gate = gates.get(handler) as ConcurrencyGate
    if (!gate.enter()) {
      throw new HiBeaverError('OVERLOADED', `handler "${handler.name}" is at its concurrency limit`)
    }
    const scope = scopes.create({ budgetMs, requestId: request.id, onDispose: gate.leave })
    request.scope = scope
    request.bodyWait = scope.onAbort((reason) => endBodyWait(request, reason))
    done()
  }

  const run = runner(options)
  for (const handler of handlers) {
    app.post(`/handlers/${handler.name}`, { onRequest: openScope, config: { handler } }, run)
  }

  // Declared without a body parser in the way: an unknown name is 404 whatever its body says.
  app.post('/handlers/:name', {
    onRequest: (request, _reply, done) => {
      const { name } = request.params as { name: string }
      done(new HiBeaverError('UNKNOWN_HANDLER', `no handler is named "${name.slice(0, 64)}"`))
    }
  }, async () => undefined)

  app.get('/handlers', async () => ({
    data: handlers.map((handler) => ({
      name: handler.name,
      description: handler.description,
      timeoutMs: effectiveTimeout(handler, defaultTimeoutMs)
    }))
  }))
}

// The scope aborted while the body was still arriving. Fastify answers only once the body is
// complete, which a slow or stalled client may never make it: fail the read with the reason,
// so the error handler answers now and the connection closes after it. A client that left has
// nothing to be answered, and a body already read leaves the answer to the handler's race.
function endBodyWait (request: FastifyRequest, reason: HiBeaverError): void {
  const raw = request.raw
  if (reason.code === 'CLIENT_CLOSED' || raw.complete || raw.listenerCount('error') === 0) return
  raw.emit('error', reason)
}

class ConcurrencyGate {
  readonly #max: number
  #active = 0

  constructor (max: number) {
    this.#max = max
  }

  enter (): boolean {
    if (this.#active >= this.#max) return false
    this.#active++
    return true
  }

  readonly leave = (): void => {
    this.#active--
  }
}

function runner (options: HandlerRoutesOptions) {
  const overrunReportMs = options.overrunReportMs ?? 100

  return async function runHandler (request: FastifyRequest, reply: FastifyReply): Promise<unknown> {
    const handler = request.routeOptions.config.handler as AnyHandler
    const scope = request.scope as RequestScope
    request.bodyWait?.()
    request.bodyWait = null

    const parsed = handler.input.safeParse(request.body)
    if (!parsed.success) {
      throw invalidInput('the body does not match the handler\'s input', {
        errors: parsed.error.issues.map((issue: z.core.$ZodIssue) => ({
          path: issue.path.join('.'),
          message: issue.message
        }))
      })
    }

    const ctx = options.createContext(scope, request.log, handler.name)
    try {
      return { data: await raceScope(scope, handler, parsed.data, ctx, request.log, overrunReportMs) }
    } catch (err) {
      // Nobody is listening: answering would only write into a closed socket.
      if (scope.reason?.code === 'CLIENT_CLOSED') return reply.hijack()
      throw err
    }
  }
}

// The handler's promise raced against its scope: the client is answered at the deadline even
// when the handler ignores its signal. Such a handler is named in the log when it finally settles.
function raceScope (
  scope: RequestScope,
  handler: AnyHandler,
  input: unknown,
  ctx: ReturnType<ContextFactory>,
  log: Logger,
  overrunReportMs: number
): Promise<unknown> {
  const due = scope.expireIfDue()
  if (due !== undefined) return Promise.reject(due)

  return new Promise((resolve, reject) => {
    let abortedAt = 0
    const removeAbort = scope.onAbort((reason) => {
      abortedAt = performance.now()
      if (!scope.protecting) return reject(reason)
      // A protected step (a COMMIT once sent) runs to its end; then the handler gets one turn
      // of the event loop to answer with its outcome before the reason is sent instead.
      scope.whenUnprotected(() => setImmediate(() => reject(reason)))
    })
    const settled = (): void => {
      removeAbort()
      if (abortedAt === 0) return
      const overrunMs = Math.round(performance.now() - abortedAt)
      if (overrunMs >= overrunReportMs) {
        log.warn({ handler: handler.name, overrunMs, reason: scope.reason?.code }, 'handler overran its scope')
      }
    }

    let pending: Promise<unknown>
    try {
      pending = handler.process(input, ctx)
    } catch (err) {
      pending = Promise.reject(err)
    }
    pending.then(
      (value) => { settled(); resolve(value) },
      (err: unknown) => { settled(); reject(err) }
    )
  })
}
