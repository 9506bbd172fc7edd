import { connect, type Socket } from 'node:net'

// PostgreSQL's own cancellation: a new connection that sends a CancelRequest packet carrying the
// target backend's process id and secret key, then is closed by the server. node-postgres has
// `Client#cancel`, but it reads the deprecated `activeQuery`, reports no outcome and leaves its
// socket errors unhandled; HiBeaver needs to know when the request has been dealt with.

export interface CancelTarget {
  host: string
  port: number
  processID: number | null
  secretKey: unknown
}

const CANCEL_REQUEST_CODE = 80877102

function packet (processID: number, secretKey: number): Buffer {
  const buffer = Buffer.alloc(16)
  buffer.writeInt32BE(16, 0)
  buffer.writeInt32BE(CANCEL_REQUEST_CODE, 4)
  buffer.writeInt32BE(processID, 8)
  buffer.writeInt32BE(secretKey, 12)
  return buffer
}

function open (target: CancelTarget): Socket {
  // A host that is a directory means a Unix socket, as libpq and node-postgres read it.
  if (target.host.startsWith('/')) return connect({ path: `${target.host}/.s.PGSQL.${target.port}` })
  return connect({ host: target.host, port: target.port })
}

// Resolves true once the server has closed the cancel connection: by then it has signalled the
// backend, so a query sent on that backend afterwards cannot be hit by this cancel. Resolves
// false when that cannot be known (no key, connection refused, no answer within timeoutMs).
export function sendCancelRequest (target: CancelTarget, timeoutMs: number): Promise<boolean> {
  const { processID, secretKey } = target
  // node-postgres speaks protocol 3.0, whose secret key is a 32-bit integer.
  if (typeof processID !== 'number' || typeof secretKey !== 'number') return Promise.resolve(false)

  return new Promise((resolve) => {
    const socket = open(target)
    let written = false
    const finish = (delivered: boolean) => {
      clearTimeout(timer)
      socket.destroy()
      resolve(delivered)
    }
    const timer = setTimeout(() => finish(false), timeoutMs)
    timer.unref()

    socket.setNoDelay(true)
    socket.once('connect', () => {
      written = true
      socket.end(packet(processID, secretKey))
    })
    socket.once('error', () => finish(false))
    socket.once('close', () => finish(written))
    // The server sends nothing back; reading lets the socket see its end and close.
    socket.resume()
  })
}
