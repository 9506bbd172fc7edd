import { randomUUID } from 'node:crypto'
import type { IncomingMessage } from 'node:http'
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from 'fastify'
import type { Logger } from 'pino'
import type { Config } from './config.js'
import { HiBeaverError } from './errors.js'
import type { AnyHandler } from './handler.js'
import { contextFactory, type Providers } from './handler-context.js'
import { handlerRoutes } from './handler-routes.js'
import { health } from './health.js'
import { createLogger } from './logger.js'
import { sendProblem, toHiBeaverError } from './problem.js'
import { Readiness, type ReadinessCheck } from './readiness.js'
import { ScopeManager } from './request-scope.js'
import { shutdownGate } from './shutdown.js'
import { requestLifecycle, track } from './request-log.js'
import { clientErrorHandler } from './client-error.js'
import './fastify-types.js'

export interface AppOptions {
  config: Config
  handlers: readonly AnyHandler[]
  resources?: Providers
  readiness?: readonly ReadinessCheck[]
  logger?: Logger
  scopes?: ScopeManager
}

declare module 'fastify' {
  interface FastifyInstance {
    scopes: ScopeManager
  }
}

const SANE_REQUEST_ID = /^[\w.:-]{1,128}$/

function requestId (request: IncomingMessage): string {
  const header = request.headers['x-request-id']
  return typeof header === 'string' && SANE_REQUEST_ID.test(header) ? header : randomUUID()
}

export async function buildApp (options: AppOptions): Promise<FastifyInstance> {
  const { config, handlers } = options
  const scopes = options.scopes ?? new ScopeManager()
  // Widened: Fastify's types would otherwise carry pino's Logger into every route signature.
  const logger: FastifyBaseLogger = options.logger ?? createLogger({ level: config.logLevel })

  const app = Fastify({
    loggerInstance: logger,
    // request-log.ts writes the one line each request gets.
    logController: new LogController({ disableRequestLogging: true, requestIdLogLabel: 'requestId' }),
    genReqId: requestId,
    bodyLimit: config.bodyLimitBytes,
    // `__proto__` and `constructor.prototype` keys are valid JSON: dropped, not refused as if
    // the body did not parse. No handler's input has such a key.
    onProtoPoisoning: 'remove',
    onConstructorPoisoning: 'remove',
    // Node answers a Host-less HTTP/1.1 request itself, with a bare 400 and no log line; the
    // hook below refuses it within the contract instead.
    http: { requireHostHeader: false },
    // A slow upload is bounded too, a little past the longest budget any request can have.
    requestTimeout: config.maxTimeoutMs + 5_000,
    // shutdown.ts answers requests that arrive while closing, as problem+json.
    return503OnClosing: false,
    // Requests Fastify refuses before any hook runs (a malformed URL) keep the contract too.
    frameworkErrors: (err, request, reply) => {
      track(request, reply)
      const failure = toHiBeaverError(err)
      request.failure = failure
      sendProblem(reply, failure).then(() => {}, () => {})
    },
    clientErrorHandler: clientErrorHandler(logger)
  })
  app.decorate('scopes', scopes)

  // Only JSON bodies: text/plain would reach a handler's schema as a string.
  app.removeContentTypeParser('text/plain')
  requestLifecycle(app)
  app.addHook('onRequest', (request, _reply, done) => {
    if (request.raw.httpVersion !== '1.1' || request.headers.host !== undefined) return done()
    done(new HiBeaverError('INVALID_INPUT', 'an HTTP/1.1 request must carry a Host header'))
  })
  shutdownGate(app)
  app.setErrorHandler((err, request, reply) => {
    // After an abort the scope's reason is the answer, whatever the failure it caused says.
    const reason = request.scope?.reason
    const failure = reason !== undefined && reason.code !== 'CLIENT_CLOSED' ? reason : toHiBeaverError(err)
    request.failure = failure
    return sendProblem(reply, failure)
  })
  app.setNotFoundHandler((request, reply) => {
    const failure = new HiBeaverError('NOT_FOUND', `no route for ${request.method} ${request.url.slice(0, 128)}`)
    request.failure = failure
    return sendProblem(reply, failure)
  })

  await health(app, config.pressure, new Readiness(options.readiness ?? []))
  handlerRoutes(app, {
    handlers,
    scopes,
    createContext: contextFactory(options.resources ?? {}),
    defaultTimeoutMs: config.defaultTimeoutMs,
    maxTimeoutMs: config.maxTimeoutMs,
    maxConcurrency: config.handlerMaxConcurrency
  })
  return app
}
