import { HiBeaverError } from './errors.js'
import type { Scope } from './scope.js'

// Hands out a resource's slots (upstream connections, database connections), FIFO, each waiter
// bounded by its scope. It exists because the libraries' own queues do not let an aborted
// waiter go: undici 7 settles an aborted request queued inside a client only when a connection
// frees up (nodejs/undici#386), and pg-pool keeps a waiter whose caller gave up in its queue.
// Here a waiting call leaves the moment its scope aborts, and the resource is never asked for
// more than it has, so its own queue stays empty.

export type Release = () => void

interface Waiter {
  grant (release: Release): void
  refuse (err: HiBeaverError): void
}

export interface AdmissionOptions {
  // What a slot is, for messages: 'upstream connection', say.
  resource: string
  slots: number
  // Calls allowed to wait for a slot; one more is refused with OVERLOADED.
  maxWaiting: number
}

export class Admission {
  readonly #name: string
  readonly #slots: number
  readonly #maxWaiting: number
  // A Set keeps insertion order (FIFO) and removes an aborted waiter in O(1).
  readonly #waiters = new Set<Waiter>()
  #active = 0
  #closed = false

  constructor (options: AdmissionOptions) {
    this.#name = options.resource
    this.#slots = options.slots
    this.#maxWaiting = options.maxWaiting
  }

  get active (): number {
    return this.#active
  }

  get waiting (): number {
    return this.#waiters.size
  }

  // Resolves with the slot's release function, to be called exactly when the dispatcher is done
  // with the request (not when the caller gave up on it).
  async acquire (scope: Scope): Promise<Release> {
    if (this.#closed) throw new HiBeaverError('SHUTTING_DOWN', `the ${this.#name} pool is closing`)
    scope.throwIfAborted()
    if (this.#active < this.#slots && this.#waiters.size === 0) return this.#take()
    if (this.#waiters.size >= this.#maxWaiting) {
      throw new HiBeaverError('OVERLOADED', `too many calls are waiting for a free ${this.#name}`)
    }
    return await this.#wait(scope)
  }

  // Refuses every waiting call; calls holding a slot finish on their own.
  close (): void {
    this.#closed = true
    const waiters = [...this.#waiters]
    this.#waiters.clear()
    for (const waiter of waiters) waiter.refuse(new HiBeaverError('SHUTTING_DOWN', `the ${this.#name} pool is closing`))
  }

  #wait (scope: Scope): Promise<Release> {
    return new Promise<Release>((resolve, reject) => {
      const waiter: Waiter = {
        grant: (release) => {
          removeAbort()
          resolve(release)
        },
        refuse: (err) => {
          removeAbort()
          reject(err)
        }
      }
      this.#waiters.add(waiter)
      // Added after the waiter: an already aborted scope calls back at once and finds it.
      const removeAbort = scope.onAbort((reason) => {
        this.#waiters.delete(waiter)
        reject(reason)
      })
    })
  }

  #take (): Release {
    this.#active++
    let released = false
    return () => {
      if (released) return
      released = true
      this.#active--
      this.#next()
    }
  }

  #next (): void {
    const waiter = this.#waiters.values().next()
    if (waiter.done === true || this.#active >= this.#slots) return

    this.#waiters.delete(waiter.value)
    waiter.value.grant(this.#take())
  }
}
