import { connect, type Socket } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'

// Clients that leave: each opens its own connection, sends one POST, and destroys the socket
// after a while, as a browser tab closed or a caller that gave up would.

export interface Departure {
  // When the sockets were destroyed: wall-clock epoch ms (comparable with PostgreSQL's and
  // other processes' clocks) and the high-resolution epoch this process's timers use.
  leftAt: number
  leftAtEpoch: number
}

export interface Posted {
  path: string
  body: string
}

const epochNow = () => performance.timeOrigin + performance.now()

// Resolves once the request is fully written.
function post (url: string, request: Posted): Promise<Socket> {
  const { hostname, port } = new URL(url)
  return new Promise((resolve, reject) => {
    const socket = connect(Number(port), hostname, () => {
      const head = `POST ${request.path} HTTP/1.1\r\nhost: ${hostname}\r\ncontent-type: application/json\r\n` +
        `content-length: ${Buffer.byteLength(request.body)}\r\n\r\n`
      socket.write(head + request.body, () => resolve(socket))
    })
    socket.once('error', reject)
    // Past the connect, a reset by the server is no news to a client that is leaving anyway.
    socket.once('connect', () => { socket.off('error', reject); socket.on('error', () => {}) })
  })
}

// Sends every request at once, and `afterMs` after the last is written, all clients leave
// together: one departure time for the whole wave.
export async function abandonWave (url: string, requests: readonly Posted[], afterMs: number): Promise<Departure> {
  const sockets = await Promise.all(requests.map((request) => post(url, request)))
  await sleep(afterMs)
  const departure = { leftAt: Date.now(), leftAtEpoch: epochNow() }
  for (const socket of sockets) socket.destroy()
  return departure
}

// `count` requests, `concurrency` at a time, each abandoned `afterMs` after it was sent.
export async function abandonMany (
  url: string,
  request: Posted,
  count: number,
  concurrency: number,
  afterMs: number
): Promise<void> {
  let left = count
  const lane = async (): Promise<void> => {
    while (left-- > 0) {
      const socket = await post(url, request)
      await sleep(afterMs)
      socket.destroy()
    }
  }
  await Promise.all(Array.from({ length: concurrency }, lane))
}
