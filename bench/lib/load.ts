import autocannon from 'autocannon'

export interface LoadOptions {
  url: string
  path: string
  durationS?: number
  amount?: number
  connections?: number
  headers?: Record<string, string>
  body?: string
}

export interface LoadResult {
  requests: number
  rps: number
  errors: number
  non2xx: number
  p50Ms: number
  p99Ms: number
}

// One bounded autocannon run against a loopback URL.
export async function load (options: LoadOptions): Promise<LoadResult> {
  const result = await autocannon({
    url: options.url + options.path,
    method: 'POST',
    connections: options.connections ?? 32,
    headers: { 'content-type': 'application/json', ...options.headers },
    body: options.body ?? '{"message":"hi"}',
    ...(options.amount === undefined ? { duration: options.durationS ?? 5 } : { amount: options.amount }),
    timeout: 10
  })
  return {
    requests: result.requests.total,
    rps: result.requests.average,
    errors: result.errors + result.timeouts,
    non2xx: result.non2xx,
    p50Ms: result.latency.p50,
    p99Ms: result.latency.p99
  }
}
