import { setTimeout as sleep } from 'node:timers/promises'
import type { FastifyInstance } from 'fastify'
import { abortReasons, HiBeaverError } from './errors.js'
import { sendProblem } from './problem.js'
import './fastify-types.js'

export type Phase = 'running' | 'draining' | 'closing' | 'closed'

export interface Closable {
  name: string
  close (): Promise<void>
}

export interface ShutdownOptions {
  // Readiness is 503 but requests are still served, so load balancers can stop routing here.
  drainMs: number
  // In-flight requests may finish within this; then their scopes abort with SHUTTING_DOWN.
  graceMs: number
  // Closed after the last request, in reverse order of this list (the order they started in).
  resources?: readonly Closable[]
  // After the grace, how long aborted requests get to answer before their sockets are cut.
  answerMs?: number
}

declare module 'fastify' {
  interface FastifyInstance {
    lifecycle: { phase: Phase }
  }
}

// Sets the phase up and answers new requests while the listener closes. Call before routes.
export function shutdownGate (app: FastifyInstance): void {
  app.decorate('lifecycle', { phase: 'running' as Phase })

  app.addHook('onRequest', (request, reply, done) => {
    const phase = app.lifecycle.phase
    if (phase === 'running' || phase === 'draining') return done()

    const err = new HiBeaverError('SHUTTING_DOWN', 'the server is shutting down')
    request.failure = err
    sendProblem(reply, err)
  })

  // Ask keep-alive clients to reconnect elsewhere: the socket closes after this response. Every
  // response, also one to a request that arrived while running: a socket left open would be
  // closed as idle below, and a request the client sent on it meanwhile would meet a reset.
  app.addHook('onSend', (_request, reply, payload, done) => {
    if (app.lifecycle.phase !== 'running') reply.header('connection', 'close')
    done(null, payload)
  })

  // A keep-alive socket that goes idle while the server closes would otherwise hold the close
  // open until its keep-alive timeout (fastify/fastify#7044). Idle only: in-flight requests are
  // never cut here (fastify/fastify#6889).
  app.addHook('onResponse', (_request, _reply, done) => {
    if (app.lifecycle.phase === 'closing') setImmediate(() => app.server.closeIdleConnections())
    done()
  })
}

// Drain, stop accepting, let in-flight requests finish within the grace, abort what is left,
// then close resources in reverse order of start. Returns when everything is closed.
export async function shutdown (app: FastifyInstance, options: ShutdownOptions): Promise<void> {
  if (app.lifecycle.phase !== 'running') return

  app.lifecycle.phase = 'draining'
  app.log.info({ drainMs: options.drainMs, graceMs: options.graceMs }, 'shutdown started')
  if (options.drainMs > 0) await sleep(options.drainMs)

  app.lifecycle.phase = 'closing'
  const closed = app.close()
  app.server.closeIdleConnections()

  const grace = new AbortController()
  const expiry = sleep(options.graceMs, undefined, { signal: grace.signal }).then(async () => {
    const aborted = app.scopes.abortAll(abortReasons.shuttingDown)
    app.log.info({ aborted }, 'shutdown grace over, aborting in-flight requests')
    await sleep(options.answerMs ?? 1000, undefined, { signal: grace.signal })
    app.server.closeAllConnections()
  }, () => {})
  await closed
  grace.abort()
  await expiry.catch(() => {})
  // Every request's line before the resources close and before the last line of all.
  await Promise.race([app.unfinished.none(), sleep(options.answerMs ?? 1000, undefined, { ref: false })])
  app.lifecycle.phase = 'closed'

  for (const resource of [...(options.resources ?? [])].reverse()) {
    try {
      await resource.close()
    } catch (err) {
      app.log.error({ err, resource: resource.name }, 'resource failed to close')
    }
  }
}
