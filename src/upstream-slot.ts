import type { Socket } from 'node:net'
import { Client, errors, type buildConnector, type Dispatcher } from 'undici'
import type { Scope } from './scope.js'
import { StaleSocketError } from './upstream-exchange.js'

// One upstream connection, lent to one call at a time: an undici Client that never connects on
// its own. undici starts connecting only once a request is dispatched, and tells the request's
// handler nothing before the socket is up, so an aborted call could neither stop the attempt nor
// give its slot back until the connect timeout. Here the call that needs a connection makes it,
// under its own scope, and the Client is handed the connected socket through its `connect` hook:
// an abort destroys the half-open socket at once, the attempt never outlasts the budget left,
// and the budget sent upstream is measured once the connection exists.

export interface SocketUse {
  socket: Socket
  // The socket carried an earlier request.
  reused: boolean
}

export interface UpstreamSlotOptions {
  origin: URL
  // Shared by every slot, so TLS sessions are reused; its own timeout is off.
  connector: buildConnector.connector
  keepAliveTimeoutMs: number
  // Called when the slot's connection closes.
  onDisconnect: (slot: UpstreamSlot) => void
}

export class UpstreamSlot {
  readonly #client: Client
  readonly #options: UpstreamSlotOptions
  readonly #target: buildConnector.Options
  // Connected, and either held by the Client or about to be handed to it.
  #socket: Socket | undefined
  #handed = false
  #requests = 0
  #connecting: Socket | undefined
  #lent = false
  #onIdle: (() => void) | undefined
  #closing: Promise<void> | undefined
  #destroyed = false

  constructor (options: UpstreamSlotOptions) {
    this.#options = options
    this.#target = connectTarget(options.origin)
    this.#client = new Client(options.origin, {
      connect: this.#handOver,
      keepAliveTimeout: options.keepAliveTimeoutMs
    })
  }

  get connected (): boolean {
    return this.#socket !== undefined && !this.#socket.destroyed
  }

  get stats (): Client['stats'] {
    return this.#client.stats
  }

  lend (): void {
    this.#lent = true
  }

  giveBack (): void {
    this.#lent = false
    const onIdle = this.#onIdle
    this.#onIdle = undefined
    onIdle?.()
  }

  // Resolves once the slot has a connection: the kept one, or one made now. On abort, or once
  // the smaller of `timeoutMs` and the budget left has passed, the half-open socket is
  // destroyed and the call rejected.
  async connect (scope: Scope, timeoutMs: number): Promise<void> {
    if (this.#socket !== undefined && !this.#socket.destroyed) return
    if (this.#destroyed) throw new errors.ClientDestroyedError()
    scope.throwIfAborted()

    this.#adopt(await this.#open(scope, Math.min(timeoutMs, Math.ceil(scope.remaining()))))
  }

  dispatch (options: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler): void {
    this.#client.dispatch(options, handler)
  }

  // Asked from onRequestStart, as undici starts writing on the socket it was handed.
  started (): SocketUse {
    const socket = this.#socket
    if (socket === undefined) throw new Error('undici started a request on a socket it was not handed')
    return { socket, reused: this.#requests++ > 0 }
  }

  // Closes the connection once the call holding the slot is done. Safe to call twice.
  close (): Promise<void> {
    this.#closing ??= this.#idle().then(async () => {
      if (!this.#client.destroyed) await this.#client.close()
      this.#socket?.destroy()
    })
    return this.#closing
  }

  // Stops a connection attempt and a running request now.
  async destroy (): Promise<void> {
    this.#destroyed = true
    this.#connecting?.destroy(new errors.ClientDestroyedError())
    if (!this.#handed) this.#socket?.destroy()
    await this.#client.destroy()
  }

  #open (scope: Scope, timeoutMs: number): Promise<Socket> {
    // Made before the timer is armed, so its stack points at the call.
    const timeout = new errors.ConnectTimeoutError(`no connection within ${timeoutMs} ms`)
    return new Promise((resolve, reject) => {
      const connected: buildConnector.Callback = (...result) => {
        clearTimeout(timer)
        removeAbort()
        this.#connecting = undefined
        if (result[0] === null) resolve(result[1])
        else reject(result[0])
      }
      // undici's connector returns the socket it is connecting, though its types say void.
      const socket = this.#options.connector(this.#target, connected) as unknown as Socket
      this.#connecting = socket
      const timer = setTimeout(() => socket.destroy(timeout), timeoutMs).unref()
      const removeAbort = scope.onAbort((reason) => socket.destroy(reason))
    })
  }

  #adopt (socket: Socket): void {
    this.#socket = socket
    this.#handed = false
    this.#requests = 0
    socket.once('close', () => {
      if (this.#socket !== socket) return
      this.#socket = undefined
      this.#options.onDisconnect(this)
    })
  }

  // The Client's connect hook. undici asks only when it holds no socket, and only for a request
  // that was dispatched after its call had connected one. If that socket closed in between,
  // nothing was written: the request fails as a stale socket would, and the call may try once
  // more. undici's resume loop needs the answer on a later turn.
  readonly #handOver: buildConnector.connector = (_options, callback) => {
    const socket = this.#socket
    if (socket === undefined || this.#handed || socket.destroyed) {
      const err = new StaleSocketError(new errors.SocketError('the connection closed before the request was written'))
      queueMicrotask(() => callback(err, null))
      return
    }

    this.#handed = true
    queueMicrotask(() => callback(null, socket))
  }

  #idle (): Promise<void> {
    if (!this.#lent) return Promise.resolve()
    return new Promise((resolve) => { this.#onIdle = resolve })
  }
}

// What undici would pass its connector for this origin: a bracketed IPv6 host unbracketed.
function connectTarget (origin: URL): buildConnector.Options {
  const { host, hostname, protocol, port } = origin
  const bare = hostname.startsWith('[') ? hostname.slice(1, -1) : hostname
  return { host, hostname: bare, protocol, port }
}
