import { invalidInput } from './errors.js'

// What a client may choose of an upstream request: a path below the configured base URL and a
// query. Nothing here can name another host or scheme, climb above the base path, or smuggle a
// separator past the check in an encoded form.

export type UpstreamQueryValue = string | number | boolean
export type UpstreamQuery = Readonly<Record<string, UpstreamQueryValue | readonly UpstreamQueryValue[]>>

export const MAX_PATH_LENGTH = 2048
export const MAX_TARGET_LENGTH = 8192

// RFC 3986 pchar plus '/', less ';': anything else (space, backslash, '?', '#', non-ASCII,
// control characters) has to be percent-encoded by the client or is refused. ';' is refused
// outright: servlet containers read `/..;/` as `/../`, which would climb above the base path.
const PATH_CHARS = /^[A-Za-z0-9\-._~!$&'()*+,=:@/%]*$/
const BAD_ESCAPE = /%(?![0-9A-Fa-f]{2})/
// Checked after decoding a segment, so %2e%2e, %2f, %5c, %00 and a double-encoded %25 are all
// refused as if they had been written out.
// eslint-disable-next-line no-control-regex -- control characters are exactly what it looks for
const BAD_DECODED = /[/\\%;\u0000-\u001f\u007f]/
// eslint-disable-next-line no-control-regex -- as above
const CONTROL = /[\u0000-\u001f\u007f]/

// The base URL's own path, without its trailing slash: every target starts with it.
export function basePathOf (baseUrl: URL): string {
  return baseUrl.pathname.replace(/\/+$/, '')
}

// Returns the request target (path and query) to send to the upstream origin, or throws
// INVALID_INPUT naming what is wrong.
export function upstreamTarget (basePath: string, path: unknown, query: UpstreamQuery = {}): string {
  const search = queryString(query)
  const target = `${basePath}${checkedPath(path)}${search === '' ? '' : `?${search}`}`
  if (target.length > MAX_TARGET_LENGTH) {
    throw invalidInput(`the upstream target exceeds ${MAX_TARGET_LENGTH} characters`)
  }
  return target
}

function checkedPath (path: unknown): string {
  if (typeof path !== 'string') throw invalidInput('path must be a string')
  if (path.length === 0 || path.length > MAX_PATH_LENGTH) {
    throw invalidInput(`path must have 1 to ${MAX_PATH_LENGTH} characters`)
  }
  if (path[0] !== '/') throw invalidInput('path must start with "/"')
  if (path.includes('//')) throw invalidInput('path must not contain "//"')
  if (!PATH_CHARS.test(path)) throw invalidInput('path contains a character that must be percent-encoded')
  if (BAD_ESCAPE.test(path)) throw invalidInput('path contains a malformed percent-escape')

  for (const segment of path.split('/')) checkSegment(segment)
  return path
}

function checkSegment (segment: string): void {
  let decoded: string
  try {
    decoded = decodeURIComponent(segment)
  } catch {
    throw invalidInput('path contains a malformed percent-escape')
  }
  // Checked as sent and as NFKC-normalised: an upstream that normalises Unicode reads a
  // fullwidth full stop (U+FF0E) as '.', a two-dot leader (U+2025) as '..', and a fullwidth
  // solidus (U+FF0F) as '/'.
  for (const form of [decoded, decoded.normalize('NFKC')]) {
    if (form === '.' || form === '..') throw invalidInput('path must not contain "." or ".." segments')
    if (BAD_DECODED.test(form)) throw invalidInput('path contains an encoded separator or control character')
  }
}

function queryString (query: UpstreamQuery): string {
  if (typeof query !== 'object' || query === null || Array.isArray(query)) {
    throw invalidInput('query must be an object')
  }

  const params = new URLSearchParams()
  for (const [key, value] of Object.entries(query)) {
    if (key.length === 0 || CONTROL.test(key)) {
      throw invalidInput('query keys must be non-empty, without control characters')
    }
    const values = Array.isArray(value) ? value as readonly unknown[] : [value]
    for (const item of values) params.append(key, queryValue(key, item))
  }
  return params.toString()
}

function queryValue (key: string, value: unknown): string {
  if (typeof value === 'number' && Number.isFinite(value)) return String(value)
  if (typeof value === 'boolean') return String(value)
  if (typeof value === 'string' && !CONTROL.test(value)) return value
  throw invalidInput(
    `query value of "${key}" must be a string without control characters, a finite number or a boolean`
  )
}
