import type { HiBeaverError } from './errors.js'
import type { AnyHandler } from './handler.js'
import type { RequestScope } from './request-scope.js'
import type { Unfinished } from './request-log.js'

// Every decoration HiBeaver adds to Fastify, declared in one place.
declare module 'fastify' {
  interface FastifyRequest {
    // Set for handler routes, before the body is parsed.
    scope: RequestScope | null
    // The catalogue error this request was answered with, if any.
    failure: HiBeaverError | null
    startedAt: number
    // Removes the scope's watch over a body still being read; null once the handler runs.
    bodyWait: (() => void) | null
  }

  interface FastifyInstance {
    // Requests whose line has not been written yet.
    unfinished: Unfinished
  }

  interface FastifyContextConfig {
    handler?: AnyHandler
    // Routes polled by machines (health) log at debug, not info.
    quiet?: boolean
  }
}
