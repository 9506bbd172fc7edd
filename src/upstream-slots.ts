import { buildConnector } from 'undici'
import { UpstreamSlot } from './upstream-slot.js'

// The upstream connections, one slot each, made as they are first needed. The admission queue
// decides when a call may take one; this decides which: a slot that kept its connection, most
// recently used first, so a call skips the handshake and idle sockets age out by keep-alive.

export interface UpstreamSlotsOptions {
  origin: URL
  size: number
  keepAliveTimeoutMs: number
}

export interface SlotStats {
  connected: number
  running: number
  pending: number
}

export class UpstreamSlots {
  readonly #options: UpstreamSlotsOptions
  // Each call arms its own timer for the budget it has left, so the connector's is off.
  readonly #connector = buildConnector({ timeout: 0 })
  readonly #all: UpstreamSlot[] = []
  // Free slots, the most recently given back last.
  readonly #warm: UpstreamSlot[] = []
  readonly #cold: UpstreamSlot[] = []

  constructor (options: UpstreamSlotsOptions) {
    this.#options = options
  }

  get stats (): SlotStats {
    const stats = { connected: 0, running: 0, pending: 0 }
    for (const slot of this.#all) {
      const { connected, running, pending } = slot.stats
      if (connected) stats.connected++
      stats.running += running
      stats.pending += pending
    }
    return stats
  }

  // Only for a call the admission queue has let in: there is always a free slot then.
  take (): UpstreamSlot {
    const slot = this.#warm.pop() ?? this.#cold.pop() ?? this.#create()
    slot.lend()
    return slot
  }

  give (slot: UpstreamSlot): void {
    slot.giveBack()
    if (slot.connected) this.#warm.push(slot)
    else this.#cold.push(slot)
  }

  // Lets each call holding a slot finish, then closes every connection. Safe to call twice.
  async close (): Promise<void> {
    await Promise.all(this.#all.map(async (slot) => await slot.close()))
  }

  async destroy (): Promise<void> {
    await Promise.all(this.#all.map(async (slot) => await slot.destroy()))
  }

  #create (): UpstreamSlot {
    if (this.#all.length >= this.#options.size) throw new Error('more upstream slots taken than admitted')

    const slot = new UpstreamSlot({
      origin: this.#options.origin,
      connector: this.#connector,
      keepAliveTimeoutMs: this.#options.keepAliveTimeoutMs,
      onDisconnect: this.#onDisconnect
    })
    this.#all.push(slot)
    return slot
  }

  // A lent slot is filed by its state when given back; a free one moves now.
  readonly #onDisconnect = (slot: UpstreamSlot): void => {
    const at = this.#warm.indexOf(slot)
    if (at === -1) return
    this.#warm.splice(at, 1)
    this.#cold.push(slot)
  }
}
