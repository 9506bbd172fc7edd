import { once } from 'node:events'
import { request as httpRequest } from 'node:http'
import { connect, type Socket } from 'node:net'
import { request } from 'undici'

export interface JsonResponse {
  status: number
  headers: Record<string, string | string[] | undefined>
  body: Record<string, unknown>
}

export async function postJson (
  url: string,
  body: unknown,
  headers: Record<string, string> = {}
): Promise<JsonResponse> {
  const res = await request(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body)
  })
  return { status: res.statusCode, headers: res.headers, body: await res.body.json() as Record<string, unknown> }
}

export async function getJson (url: string, headers: Record<string, string> = {}): Promise<JsonResponse> {
  const res = await request(url, { headers })
  return { status: res.statusCode, headers: res.headers, body: await res.body.json() as Record<string, unknown> }
}

// A POST over its own socket, whose whole body is sent at once and which the test can destroy
// while the server is still working on it.
export function openPost (url: string, body: unknown, headers: Record<string, string> = {}) {
  const payload = JSON.stringify(body)
  const req = httpRequest(url, {
    method: 'POST',
    agent: false,
    headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload), ...headers }
  })
  const response = new Promise<number>((resolve, reject) => {
    req.on('response', (res) => {
      res.resume()
      res.on('end', () => resolve(res.statusCode ?? 0))
    })
    req.on('error', reject)
  })
  // A destroyed request rejects; tests that destroy it do not await the response.
  response.catch(() => {})
  req.end(payload)
  return { req, response }
}

// A request as raw HTTP/1.1 text, for tests that pipeline or cut a connection by hand. The
// content-length may promise more than the body holds.
export function rawPost (
  path: string,
  requestId: string,
  body = '{}',
  contentLength = Buffer.byteLength(body)
): string {
  return `POST ${path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n` +
    `x-request-id: ${requestId}\r\ncontent-length: ${contentLength}\r\n\r\n${body}`
}

export interface RawConnection {
  socket: Socket
  // Everything the server has sent so far.
  received: () => string
  // Resolves with everything received once it satisfies `match`; rejects if the socket closes first.
  receive: (match: (text: string) => boolean) => Promise<string>
}

// A loopback connection that keeps what the server sends; errors (a reset) end up in close.
export async function rawConnection (port: number): Promise<RawConnection> {
  const socket = connect(port, '127.0.0.1')
  let text = ''
  socket.on('data', (chunk: Buffer) => { text += chunk.toString('latin1') })
  socket.on('error', () => {})
  await once(socket, 'connect')

  const receive = (match: (text: string) => boolean) => new Promise<string>((resolve, reject) => {
    const check = (): void => {
      if (!match(text)) return
      cleanup()
      resolve(text)
    }
    const closed = (): void => {
      cleanup()
      reject(new Error(`the connection closed first, after receiving: ${JSON.stringify(text.slice(0, 200))}`))
    }
    const cleanup = (): void => {
      socket.off('data', check)
      socket.off('close', closed)
    }
    socket.on('data', check)
    socket.on('close', closed)
    check()
  })
  return { socket, received: () => text, receive }
}
