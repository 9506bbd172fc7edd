import { HiBeaverError, type ErrorCode } from './errors.js'

// A dependency that readiness asks about, such as the database on a connection of its own.
export interface ReadinessCheck {
  name: string
  // The code a timeout or an uncatalogued failure is reported with; OVERLOADED when unset.
  code?: ErrorCode
  // Rejects with a catalogue error (DATABASE_UNAVAILABLE, say) when the dependency is not usable.
  check (signal: AbortSignal): Promise<void>
}

export interface ReadinessOptions {
  timeoutMs?: number
  cacheMs?: number
}

interface Result {
  at: number
  failure: HiBeaverError | undefined
}

// Runs each check with a short timeout, at most one at a time, and caches the answer briefly:
// probes from many load balancers cost one check, and none waits behind application work.
export class Readiness {
  readonly #checks: readonly ReadinessCheck[]
  readonly #timeoutMs: number
  readonly #cacheMs: number
  #last: Result | undefined
  #running: Promise<Result> | undefined

  constructor (checks: readonly ReadinessCheck[], options: ReadinessOptions = {}) {
    this.#checks = checks
    this.#timeoutMs = options.timeoutMs ?? 1000
    this.#cacheMs = options.cacheMs ?? 1000
  }

  // Resolves with the failure, or undefined when every check passed.
  async failure (): Promise<HiBeaverError | undefined> {
    const last = this.#last
    if (last !== undefined && performance.now() - last.at < this.#cacheMs) return last.failure

    this.#running ??= this.#run().finally(() => { this.#running = undefined })
    return (await this.#running).failure
  }

  async #run (): Promise<Result> {
    let failure: HiBeaverError | undefined
    for (const check of this.#checks) {
      failure = await this.#one(check)
      if (failure !== undefined) break
    }
    this.#last = { at: performance.now(), failure }
    return this.#last
  }

  async #one (check: ReadinessCheck): Promise<HiBeaverError | undefined> {
    const signal = AbortSignal.timeout(this.#timeoutMs)
    try {
      // Raced, not trusted: a check that ignores its signal still cannot hold readiness open.
      await raceTimeout(check.check(signal), signal)
      return undefined
    } catch (err) {
      if (err instanceof HiBeaverError) return err
      const detail = signal.aborted
        ? `${check.name} did not answer within ${this.#timeoutMs} ms`
        : `${check.name} is not ready`
      return new HiBeaverError(check.code ?? 'OVERLOADED', detail, { cause: err })
    }
  }
}

function raceTimeout (work: Promise<void>, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const onAbort = (): void => reject(signal.reason as Error)
    signal.addEventListener('abort', onAbort, { once: true })
    const settle = (): void => signal.removeEventListener('abort', onAbort)
    work.then(() => { settle(); resolve() }, (err: unknown) => { settle(); reject(err) })
  })
}
