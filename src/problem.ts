import type { FastifyReply } from 'fastify'
import { catalogue, HiBeaverError, type ErrorCode } from './errors.js'

// Fastify's own errors that mean the request itself is at fault, by their stable codes.
const FASTIFY_CODES: Readonly<Record<string, ErrorCode>> = {
  FST_ERR_CTP_BODY_TOO_LARGE: 'PAYLOAD_TOO_LARGE',
  FST_ERR_CTP_INVALID_MEDIA_TYPE: 'UNSUPPORTED_MEDIA_TYPE',
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: 'INVALID_INPUT',
  FST_ERR_CTP_EMPTY_JSON_BODY: 'INVALID_INPUT',
  FST_ERR_CTP_INVALID_JSON_BODY: 'INVALID_INPUT',
  FST_ERR_CTP_EMPTY_TYPE: 'UNSUPPORTED_MEDIA_TYPE',
  FST_ERR_CTP_INVALID_TYPE: 'UNSUPPORTED_MEDIA_TYPE'
}

interface MaybeCoded {
  code?: unknown
  statusCode?: unknown
}

// Everything that can reach the error handler becomes a catalogue error. Unknown errors become
// INTERNAL with the original kept as `cause`, for the log and never for the client.
export function toHiBeaverError (err: unknown): HiBeaverError {
  if (err instanceof HiBeaverError) return err

  const { code, statusCode } = (typeof err === 'object' && err !== null ? err : {}) as MaybeCoded
  // No handler's name is that long; the router's message would echo the whole URL back.
  if (code === 'FST_ERR_MAX_PARAM_LENGTH') {
    return new HiBeaverError('UNKNOWN_HANDLER', 'no handler has a name that long', { cause: err })
  }
  const mapped = typeof code === 'string' ? FASTIFY_CODES[code] : undefined
  if (mapped !== undefined) return new HiBeaverError(mapped, clientMessage(err), { cause: err })
  // A body the JSON parser rejected, or any other 4xx that Fastify raised about the request.
  if (typeof statusCode === 'number' && statusCode >= 400 && statusCode < 500) {
    return new HiBeaverError('INVALID_INPUT', clientMessage(err), { cause: err })
  }
  return new HiBeaverError('INTERNAL', 'the server failed to handle the request', { cause: err })
}

function clientMessage (err: unknown): string {
  return err instanceof Error ? err.message : 'the request is invalid'
}

export interface ProblemDocument {
  type: string
  title: string
  status: number
  detail: string
  code: ErrorCode
  requestId: string
  [extra: string]: unknown
}

export function problemDocument (err: HiBeaverError, requestId: string): ProblemDocument {
  return {
    ...err.details,
    type: `urn:hibeaver:problem:${err.code.toLowerCase().replaceAll('_', '-')}`,
    title: catalogue[err.code].title,
    status: err.status,
    detail: err.message,
    code: err.code,
    requestId
  }
}

export function sendProblem (reply: FastifyReply, err: HiBeaverError): FastifyReply {
  if (err.retryAfter !== undefined) reply.header('retry-after', String(err.retryAfter))
  return reply
    .code(err.status)
    .type('application/problem+json')
    .send(problemDocument(err, reply.request.id))
}
