import type { Socket } from 'node:net'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { abortReasons } from './errors.js'
import './fastify-types.js'

export type Outcome = 'ok' | 'deadline_exceeded' | 'client_closed' | 'shutting_down' | 'error'

const NO_RESPONSE_STATUS = 499

// Tracks every request from arrival to the closing of its response or its connection: sets
// x-request-id, notices a client that left (the response never finished), disposes the
// request's scope and writes the one log line a finished request gets, exactly once.
export function requestLifecycle (app: FastifyInstance): void {
  app.decorate('unfinished', new Unfinished())
  app.decorateRequest('scope', null)
  app.decorateRequest('failure', null)
  app.decorateRequest('startedAt', 0)
  app.decorateRequest('bodyWait', null)

  app.addHook('onRequest', (request, reply, done) => {
    track(request, reply)
    done()
  })
}

// Also called for requests Fastify rejects before any hook runs (a malformed URL, say).
export function track (request: FastifyRequest, reply: FastifyReply): void {
  request.startedAt = performance.now()
  reply.header('x-request-id', request.id)

  // In its connection's set until it ends: whichever of the two closes comes first ends it.
  const inFlight = connectionRequests(request.raw.socket)
  const unfinished = request.server.unfinished
  const end = (): void => {
    if (!inFlight.delete(end)) return
    finish(request, reply)
    unfinished.done()
  }
  inFlight.add(end)
  unfinished.add()
  // The response side, not the request: a request stream closes as soon as its body has been
  // read, while the client is still waiting for its answer (fastify/fastify#6725).
  reply.raw.once('close', end)
}

// A pipelined request's response waits in Node's queue, unattached to the socket, and when the
// socket closes Node never closes it: its 'close' would never come. So each connection gets one
// listener of its own, however many requests it carries, that ends whatever is still in flight.
// Requests tracked but not yet finished, so that shutdown writes its last line after theirs:
// with `connection: close`, the server can report itself closed before the last response's
// 'close' event has been handled.
export class Unfinished {
  #count = 0
  #waiters: Array<() => void> = []

  add (): void {
    this.#count++
  }

  done (): void {
    if (--this.#count > 0) return
    const waiters = this.#waiters
    this.#waiters = []
    for (const wake of waiters) wake()
  }

  none (): Promise<void> {
    if (this.#count === 0) return Promise.resolve()
    return new Promise((resolve) => this.#waiters.push(resolve))
  }
}

const requestsOf = new WeakMap<Socket, Set<() => void>>()

function connectionRequests (socket: Socket): Set<() => void> {
  let ends = requestsOf.get(socket)
  if (ends === undefined) {
    const pending = new Set<() => void>()
    socket.once('close', () => { for (const end of pending) end() })
    requestsOf.set(socket, pending)
    ends = pending
  }
  return ends
}

function finish (request: FastifyRequest, reply: FastifyReply): void {
  const clientLeft = !reply.raw.writableFinished
  const scope = request.scope
  if (clientLeft) scope?.abort(abortReasons.clientClosed())
  scope?.dispose()

  const failure = request.failure
  const status = clientLeft ? NO_RESPONSE_STATUS : reply.statusCode
  // A connection cut after the deadline or at shutdown keeps that as its outcome.
  const cause = clientLeft ? scope?.reason?.code ?? 'CLIENT_CLOSED' : failure?.code
  const outcome = outcomeOf(clientLeft && cause === 'CLIENT_CLOSED', cause)
  const handler = request.routeOptions.config.handler?.name
  const fields = {
    handler,
    method: request.method,
    // The path only: a query string can carry secrets, and no route here reads one.
    url: request.url.split('?', 1)[0],
    status,
    outcome,
    code: cause,
    durationMs: Math.round((performance.now() - request.startedAt) * 10) / 10,
    budgetMs: scope?.budgetMs
  }

  if (failure !== null && failure.code === 'INTERNAL') {
    request.log.error({ ...fields, err: failure.cause ?? failure }, 'request finished')
  } else if (request.routeOptions.config.quiet === true) {
    // Health probes: routine when they pass; a refusal names a requestId someone may look up.
    request.log[failure === null ? 'debug' : 'info'](fields, 'request finished')
  } else if (failure !== null && failure.status >= 500 && failure.cause !== undefined) {
    // What a dependency said (the database unreachable, the upstream reset): the client has the
    // code, whoever runs the server needs the cause.
    request.log.warn({ ...fields, err: failure.cause }, 'request finished')
  } else {
    request.log.info(fields, 'request finished')
  }
}

function outcomeOf (clientLeft: boolean, code: string | undefined): Outcome {
  if (clientLeft) return 'client_closed'
  if (code === undefined) return 'ok'
  if (code === 'DEADLINE_EXCEEDED') return 'deadline_exceeded'
  if (code === 'SHUTTING_DOWN') return 'shutting_down'
  return 'error'
}
