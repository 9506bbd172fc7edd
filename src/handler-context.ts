import type { FastifyBaseLogger as Logger } from 'fastify'
import type { HiBeaverError } from './errors.js'
import type { HandlerContext, HandlerResources } from './handler.js'
import type { ResourceProvider } from './resources.js'
import type { Scope } from './scope.js'

export type Providers = { [K in keyof HandlerResources]?: ResourceProvider<HandlerResources[K]> }

// What a handler is given. It reads through to the request's scope, so nothing is copied per
// request; its child logger and each bound resource are made on first use only.
class Context implements Scope {
  readonly handlerName: string
  readonly #scope: Scope
  readonly #requestLog: Logger
  #log: Logger | undefined
  #bound: Map<string, unknown> | undefined

  constructor (scope: Scope, requestLog: Logger, handlerName: string) {
    this.#scope = scope
    this.#requestLog = requestLog
    this.handlerName = handlerName
  }

  get signal (): AbortSignal { return this.#scope.signal }
  get aborted (): boolean { return this.#scope.aborted }
  get reason (): HiBeaverError | undefined { return this.#scope.reason }
  get deadline (): number { return this.#scope.deadline }
  get budgetMs (): number { return this.#scope.budgetMs }
  get requestId (): string { return this.#scope.requestId }
  remaining (): number { return this.#scope.remaining() }
  expireIfDue (): HiBeaverError | undefined { return this.#scope.expireIfDue() }
  throwIfAborted (): void { this.#scope.throwIfAborted() }
  onAbort (fn: (reason: HiBeaverError) => void): () => void { return this.#scope.onAbort(fn) }
  protect<T> (work: Promise<T>): Promise<T> { return this.#scope.protect(work) }

  get log (): Logger {
    this.#log ??= this.#requestLog.child({ handler: this.handlerName })
    return this.#log
  }

  bind (key: string, provider: ResourceProvider<unknown>): unknown {
    this.#bound ??= new Map()
    let view = this.#bound.get(key)
    if (view === undefined) {
      view = provider.forScope(this.#scope)
      this.#bound.set(key, view)
    }
    return view
  }
}

export type ContextFactory = (scope: Scope, requestLog: Logger, handlerName: string) => HandlerContext

// One class per server, with a getter per configured resource. A handler that reaches for a
// resource the server was not given gets an error naming it, not `undefined`.
export function contextFactory (providers: Providers, known: readonly string[] = []): ContextFactory {
  class ServerContext extends Context {}
  const keys = new Set([...known, ...Object.keys(providers)])
  for (const key of keys) {
    const provider = providers[key as keyof Providers] as ResourceProvider<unknown> | undefined
    Object.defineProperty(ServerContext.prototype, key, {
      get (this: Context) {
        if (provider === undefined) throw new Error(`resource "${key}" is not configured on this server`)
        return this.bind(key, provider)
      }
    })
  }
  // The resource members are the getters defined above, which TypeScript cannot see.
  return (scope, requestLog, handlerName) =>
    new ServerContext(scope, requestLog, handlerName) as unknown as HandlerContext
}
