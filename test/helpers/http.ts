import { request as httpRequest } from 'node:http'
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
