import type { ChildProcess } from 'node:child_process'

// Messages between the benchmark and its server processes, past what bench/lib/child.ts
// offers: a server reports events as they happen (a calculation stopped), and the parent
// keeps every message with one listener, so none is lost between two waits.

export interface ChildEvent {
  event: string
  // Wall-clock epoch milliseconds, comparable across processes and with PostgreSQL's clock.
  at: number
  [field: string]: unknown
}

interface Answer { answer: string, value: unknown }

// The server side.
export function reportEvent (event: string, fields: Record<string, unknown> = {}): void {
  process.send?.({ ...fields, event, at: Date.now() })
}

export class ChildChannel {
  readonly #child: ChildProcess
  readonly #events: ChildEvent[] = []
  readonly #waiters = new Set<() => void>()
  readonly #asks = new Map<string, Array<(value: unknown) => void>>()

  constructor (child: ChildProcess) {
    this.#child = child
    child.on('message', (message: Partial<ChildEvent & Answer>) => {
      if (typeof message.event === 'string') this.#events.push(message as ChildEvent)
      if (typeof message.answer === 'string') this.#asks.get(message.answer)?.shift()?.(message.value)
      for (const wake of this.#waiters) wake()
    })
  }

  // Events named `event` received at or after `since` (epoch ms).
  events (event: string, since = 0): ChildEvent[] {
    return this.#events.filter((e) => e.event === event && e.at >= since)
  }

  // Resolves when `count` such events have arrived, or with false after `timeoutMs`.
  async waitForEvents (event: string, since: number, count: number, timeoutMs: number): Promise<boolean> {
    return await this.#until(() => this.events(event, since).length >= count, timeoutMs)
  }

  // The server's answer to a measurement question. A server whose event loop is blocked
  // answers late: that is itself a measurement, so the timeout is a generous backstop only.
  async ask<T> (what: string, timeoutMs = 60_000): Promise<T> {
    const answered = new Promise<unknown>((resolve) => {
      const queue = this.#asks.get(what) ?? []
      queue.push(resolve)
      this.#asks.set(what, queue)
    })
    this.#child.send({ ask: what })
    let timer: NodeJS.Timeout | undefined
    const late = new Promise<never>((_resolve, reject) => {
      timer = setTimeout(() => reject(new Error(`no answer to "${what}" in ${timeoutMs} ms`)), timeoutMs)
    })
    try {
      return await Promise.race([answered, late]) as T
    } finally {
      clearTimeout(timer)
    }
  }

  async #until (done: () => boolean, timeoutMs: number): Promise<boolean> {
    if (done()) return true
    return await new Promise((resolve) => {
      const finish = (result: boolean) => {
        clearTimeout(timer)
        this.#waiters.delete(check)
        resolve(result)
      }
      const check = () => { if (done()) finish(true) }
      const timer = setTimeout(() => finish(false), timeoutMs)
      this.#waiters.add(check)
    })
  }
}
