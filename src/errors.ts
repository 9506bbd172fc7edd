// The error catalogue: every failure a client can see, with its stable code and HTTP status.
// Code that handles errors matches on `code`, never on message text.

export type ErrorCode =
  | 'INVALID_INPUT'
  | 'UNKNOWN_HANDLER'
  | 'IDEMPOTENCY_KEY_REUSED'
  | 'NOT_FOUND'
  | 'PAYLOAD_TOO_LARGE'
  | 'UNSUPPORTED_MEDIA_TYPE'
  | 'HEADERS_TOO_LARGE'
  | 'DEADLINE_EXCEEDED'
  | 'CLIENT_CLOSED'
  | 'REQUEST_FINISHED'
  | 'UPSTREAM_FAILED'
  | 'OVERLOADED'
  | 'SHUTTING_DOWN'
  | 'DATABASE_UNAVAILABLE'
  | 'INTERNAL'

interface CatalogueEntry {
  status: number
  title: string
  retryAfter?: number
}

// CLIENT_CLOSED is never sent (nobody is listening); 499 is what the request log records.
// REQUEST_FINISHED is never sent either: it stops work a request left running after its answer.
export const catalogue: Readonly<Record<ErrorCode, CatalogueEntry>> = {
  INVALID_INPUT: { status: 400, title: 'Invalid input' },
  UNKNOWN_HANDLER: { status: 404, title: 'Unknown handler' },
  NOT_FOUND: { status: 404, title: 'Not found' },
  PAYLOAD_TOO_LARGE: { status: 413, title: 'Payload too large' },
  UNSUPPORTED_MEDIA_TYPE: { status: 415, title: 'Unsupported media type' },
  IDEMPOTENCY_KEY_REUSED: { status: 422, title: 'Idempotency key reused' },
  HEADERS_TOO_LARGE: { status: 431, title: 'Request header fields too large' },
  CLIENT_CLOSED: { status: 499, title: 'Client closed request' },
  REQUEST_FINISHED: { status: 499, title: 'Request finished' },
  INTERNAL: { status: 500, title: 'Internal error' },
  UPSTREAM_FAILED: { status: 502, title: 'Upstream failed' },
  OVERLOADED: { status: 503, title: 'Overloaded', retryAfter: 1 },
  SHUTTING_DOWN: { status: 503, title: 'Shutting down', retryAfter: 5 },
  DATABASE_UNAVAILABLE: { status: 503, title: 'Database unavailable', retryAfter: 2 },
  DEADLINE_EXCEEDED: { status: 504, title: 'Deadline exceeded' }
}

export interface HiBeaverErrorOptions {
  cause?: unknown
  // Extra fields for the problem document, such as validation issues. Never internals.
  details?: Record<string, unknown>
  retryAfter?: number
}

export class HiBeaverError extends Error {
  readonly code: ErrorCode
  readonly status: number
  readonly retryAfter: number | undefined
  readonly details: Record<string, unknown> | undefined

  constructor (code: ErrorCode, detail: string, options: HiBeaverErrorOptions = {}) {
    super(detail, options.cause === undefined ? undefined : { cause: options.cause })
    this.name = 'HiBeaverError'
    this.code = code
    this.status = catalogue[code].status
    this.retryAfter = options.retryAfter ?? catalogue[code].retryAfter
    this.details = options.details
  }
}

export function isHiBeaverError (err: unknown): err is HiBeaverError {
  return err instanceof HiBeaverError
}

export function hasCode (err: unknown, code: ErrorCode): boolean {
  return err instanceof HiBeaverError && err.code === code
}

// The abort reasons of a request scope. Each is made when its cause happens, so its stack
// points at the cause, and it is the `reason` of the scope's signal.
export const abortReasons = {
  clientClosed: () => new HiBeaverError('CLIENT_CLOSED', 'the client closed the connection'),
  deadline: (budgetMs: number) =>
    new HiBeaverError('DEADLINE_EXCEEDED', `the request did not finish within its ${budgetMs} ms budget`),
  shuttingDown: () => new HiBeaverError('SHUTTING_DOWN', 'the server is shutting down'),
  finished: () =>
    new HiBeaverError('REQUEST_FINISHED', 'the request has been answered; work it left running is stopped')
}

export const invalidInput = (detail: string, details?: Record<string, unknown>) =>
  new HiBeaverError('INVALID_INPUT', detail, details === undefined ? {} : { details })
