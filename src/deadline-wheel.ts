// One coarse timer for every request deadline. A timer per request (setTimeout plus its
// clearTimeout) is a measurable share of a trivial request's cost; here a request's deadline is
// a Set insertion and deletion in a slot of `tickMs` width, and one interval runs only while
// some deadline is pending. A deadline fires at most `tickMs` (plus timer lag) late, never early.

export interface Clock {
  // Monotonic milliseconds.
  now (): number
}

export const monotonicClock: Clock = { now: () => performance.now() }

export interface Expirable {
  expire (): void
}

export interface DeadlineWheelOptions {
  tickMs?: number
  clock?: Clock
}

export class DeadlineWheel {
  readonly #slots = new Map<number, Set<Expirable>>()
  readonly #tickMs: number
  readonly #clock: Clock
  #timer: NodeJS.Timeout | undefined
  // The next slot to expire; every slot before it has been expired already.
  #cursor = 0
  #pending = 0

  constructor (options: DeadlineWheelOptions = {}) {
    this.#tickMs = options.tickMs ?? 5
    this.#clock = options.clock ?? monotonicClock
  }

  get pending (): number {
    return this.#pending
  }

  get running (): boolean {
    return this.#timer !== undefined
  }

  // Returns the slot key, which `remove` needs.
  add (item: Expirable, at: number): number {
    if (this.#timer === undefined) this.#start()

    const key = Math.max(Math.ceil(at / this.#tickMs), this.#cursor)
    let slot = this.#slots.get(key)
    if (slot === undefined) {
      slot = new Set()
      this.#slots.set(key, slot)
    }
    slot.add(item)
    this.#pending++
    return key
  }

  remove (item: Expirable, key: number): void {
    const slot = this.#slots.get(key)
    if (slot === undefined || !slot.delete(item)) return

    this.#pending--
    if (slot.size === 0) this.#slots.delete(key)
    if (this.#pending === 0) this.#stop()
  }

  // Expires every item whose slot has passed. The interval calls it; tests with a fake clock too.
  expireDue (): void {
    const last = Math.floor(this.#clock.now() / this.#tickMs)
    while (this.#cursor <= last) {
      // The cursor moves before anything expires, so an item added by an expiry callback lands
      // in a slot still ahead of it.
      const key = this.#cursor++
      const slot = this.#slots.get(key)
      if (slot === undefined) continue

      this.#slots.delete(key)
      this.#pending -= slot.size
      for (const item of slot) item.expire()
    }
    if (this.#pending === 0) this.#stop()
  }

  #start (): void {
    this.#cursor = Math.floor(this.#clock.now() / this.#tickMs)
    // Guards only: the server's sockets keep the process alive, not a pending deadline.
    this.#timer = setInterval(() => this.expireDue(), this.#tickMs).unref()
  }

  #stop (): void {
    if (this.#timer === undefined) return
    clearInterval(this.#timer)
    this.#timer = undefined
  }
}
