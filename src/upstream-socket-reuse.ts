import diagnosticsChannel from 'node:diagnostics_channel'
import type { Socket } from 'node:net'

// Tells an exchange which socket its request went out on and whether that socket had carried a
// request before: the one case where a reset is worth a retry is a keep-alive socket that the
// upstream closed while it sat idle. undici does not hand the socket to a dispatch handler, but
// it publishes it on `undici:client:sendHeaders` synchronously after `onRequestStart` of the
// same request, so the exchange announces itself there and the next publication is its own.

export interface SendObserver {
  onSend (socket: Socket, reused: boolean): void
}

interface SendHeadersMessage {
  socket: Socket
}

const CHANNEL = 'undici:client:sendHeaders'

export class SocketReuseTracker {
  readonly #used = new WeakSet<Socket>()
  #expecting: SendObserver | undefined
  #subscribed = false

  readonly #onSendHeaders = (message: unknown): void => {
    const { socket } = message as SendHeadersMessage
    const observer = this.#expecting
    this.#expecting = undefined
    if (observer === undefined) return

    const reused = this.#used.has(socket)
    this.#used.add(socket)
    observer.onSend(socket, reused)
  }

  start (): void {
    if (this.#subscribed) return
    this.#subscribed = true
    diagnosticsChannel.subscribe(CHANNEL, this.#onSendHeaders)
  }

  stop (): void {
    if (!this.#subscribed) return
    this.#subscribed = false
    diagnosticsChannel.unsubscribe(CHANNEL, this.#onSendHeaders)
  }

  // Called from onRequestStart. If undici drops the request before writing it, nothing is
  // published; the microtask forgets the observer before any other request can be written.
  expect (observer: SendObserver): void {
    this.#expecting = observer
    queueMicrotask(() => {
      if (this.#expecting === observer) this.#expecting = undefined
    })
  }
}
