import type { FastifyBaseLogger } from 'fastify'
import type { z } from 'zod'
import type { Scope } from './scope.js'

// The resources a handler reaches through its context, each bound to the request's scope.
// Each adapter module adds its own member by declaration merging, for example:
//   declare module './handler.js' { interface HandlerResources { db: ScopedDatabase } }
// eslint-disable-next-line @typescript-eslint/no-empty-object-type
export interface HandlerResources {}

export type HandlerContext = Scope & HandlerResources & {
  readonly log: FastifyBaseLogger
  readonly handlerName: string
}

export interface HandlerDefinition<Schema extends z.ZodType = z.ZodType, Output = unknown> {
  // kebab-case; mounted at POST /handlers/<name>
  readonly name: string
  readonly description: string
  readonly input: Schema
  // The handler's own timeout; the effective one is the smallest of this and the server's default.
  readonly timeoutMs?: number
  // Most requests of this handler in flight at once; past it, 503 OVERLOADED at once rather
  // than a queue whose waiters would miss their deadlines. Unset: HANDLER_MAX_CONCURRENCY.
  readonly maxConcurrency?: number
  process (input: z.output<Schema>, ctx: HandlerContext): Promise<Output>
}

export const HANDLER_NAME = /^[a-z][a-z0-9-]{0,62}$/

// Keeps the input type of `process` tied to the schema, and checks the definition once at load.
export function defineHandler<Schema extends z.ZodType, Output> (
  definition: HandlerDefinition<Schema, Output>
): HandlerDefinition<Schema, Output> {
  if (!HANDLER_NAME.test(definition.name)) {
    throw new TypeError(`handler name "${definition.name}" must be kebab-case`)
  }
  for (const key of ['timeoutMs', 'maxConcurrency'] as const) {
    const value = definition[key]
    if (value !== undefined && !(Number.isInteger(value) && value > 0)) {
      throw new TypeError(`handler "${definition.name}": ${key} must be a positive integer`)
    }
  }
  return Object.freeze(definition)
}

// `process` is declared as a method, so any definition is assignable here.
export type AnyHandler = HandlerDefinition<z.ZodType, unknown>
