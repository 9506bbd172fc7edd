import { randomUUID } from 'node:crypto'
import { STATUS_CODES, type IncomingMessage, type ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import type { FastifyBaseLogger } from 'fastify'
import { HiBeaverError, type ErrorCode } from './errors.js'
import { problemDocument } from './problem.js'

// Node's HTTP parser rejects some requests before Fastify sees them: a malformed request line,
// a bad content-length, headers over the size limit. They get a problem document too, and the
// one log line every request gets, instead of Node's own plain answer.
const PARSER_CODES: Readonly<Record<string, ErrorCode>> = {
  HPE_HEADER_OVERFLOW: 'HEADERS_TOO_LARGE',
  ERR_HTTP_REQUEST_TIMEOUT: 'DEADLINE_EXCEEDED'
}

const DETAILS: Partial<Record<ErrorCode, string>> = {
  HEADERS_TOO_LARGE: 'the request line and headers are over the size limit'
}

const NOBODY_TO_ANSWER = new Set(['ECONNRESET', 'HPE_INVALID_EOF_STATE'])

// Node's own field: the response the socket is writing, or null between requests.
type InFlightSocket = Socket & {
  _httpMessage?: ServerResponse | null
  // Node's HTTP parser, and the request it is reading.
  parser?: { incoming?: IncomingMessage | null } | null
}

// The request in flight is still sending its body, and that body is what the parser refused (a
// malformed chunk): its read fails, so the request is answered 400 through its own route, log
// line included, and the connection closes after the answer. A request whose body is complete is
// not at fault (the garbage belongs to a next one) and has no reader left to fail: false.
function failBodyRead (res: ServerResponse, err: Error): boolean {
  const req = res.req
  if (req.complete || req.listenerCount('error') === 0) return false
  res.setHeader('connection', 'close')
  req.emit('error', new HiBeaverError('INVALID_INPUT', 'the request body is not valid HTTP', { cause: err }))
  return true
}

export function clientErrorHandler (log: FastifyBaseLogger) {
  return function onClientError (err: Error & { code?: string }, socket: InFlightSocket): void {
    // Nobody to answer: a reset, a half-written socket, or a connection that ended mid-request
    // (an aborted upload), whose request gets its own line when its response closes. And an
    // answer written while a response is in flight (garbage pipelined behind a valid request)
    // would be read by the client as that request's answer: the connection is beyond repair.
    if (!socket.writable || NOBODY_TO_ANSWER.has(err.code ?? '')) {
      socket.destroy()
      return
    }
    const inFlight = socket._httpMessage
    if (inFlight != null) {
      if (!failBodyRead(inFlight, err)) socket.destroy()
      return
    }
    // Answered already (a 404, a 503 at a concurrency limit) while its body was still arriving:
    // the bad bytes are that request's, and a second answer would be one too many.
    const incoming = socket.parser?.incoming
    if (incoming != null && !incoming.complete) {
      socket.destroy()
      return
    }

    const code = PARSER_CODES[err.code ?? ''] ?? 'INVALID_INPUT'
    const failure = new HiBeaverError(code, DETAILS[code] ?? 'the request is not valid HTTP', { cause: err })
    const requestId = randomUUID()
    const body = JSON.stringify(problemDocument(failure, requestId))
    socket.end(
      `HTTP/1.1 ${failure.status} ${STATUS_CODES[failure.status] ?? 'Error'}\r\n` +
      'content-type: application/problem+json\r\n' +
      `content-length: ${Buffer.byteLength(body)}\r\n` +
      `x-request-id: ${requestId}\r\n` +
      'connection: close\r\n\r\n' + body
    )
    log.info({ requestId, status: failure.status, outcome: 'error', code, parserError: err.code }, 'request finished')
  }
}
