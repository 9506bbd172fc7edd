import t from 'tap'
import { HiBeaverError } from '../src/errors.js'
import { basePathOf, upstreamTarget, type UpstreamQuery } from '../src/upstream-path.js'

function refusal (path: unknown, query?: UpstreamQuery): string {
  try {
    upstreamTarget('', path, query)
  } catch (err) {
    if (err instanceof HiBeaverError && err.code === 'INVALID_INPUT') return err.message
    throw err
  }
  return 'accepted'
}

t.test('paths and queries that stay under the base URL', async (t) => {
  t.equal(upstreamTarget('', '/json'), '/json')
  t.equal(upstreamTarget('/api/v1', '/items/42'), '/api/v1/items/42')
  t.equal(upstreamTarget('', '/a/b.json/'), '/a/b.json/')
  t.equal(upstreamTarget('', '/caf%C3%A9/%20x'), '/caf%C3%A9/%20x', 'percent-encoded text is fine')
  t.equal(upstreamTarget('', '/...'), '/...', 'three dots are a name, not a step up')
  t.equal(upstreamTarget('', '/%E2%80%A6'), '/%E2%80%A6', 'an ellipsis normalises to three dots: a name too')
  t.equal(upstreamTarget('', '/%EF%BC%A1'), '/%EF%BC%A1', 'a fullwidth letter is harmless')
  t.equal(upstreamTarget('', '/search', { q: 'a b&c=d', n: 3, flag: true, tag: ['x', 'y'] }),
    '/search?q=a+b%26c%3Dd&n=3&flag=true&tag=x&tag=y', 'the query is encoded, never spliced')
  t.equal(upstreamTarget('', '/x', { next: 'http://evil.example/' }), '/x?next=http%3A%2F%2Fevil.example%2F')
})

t.test('the base path', async (t) => {
  t.equal(basePathOf(new URL('http://up.example')), '')
  t.equal(basePathOf(new URL('http://up.example/')), '')
  t.equal(basePathOf(new URL('http://up.example/api/')), '/api')
})

t.test('anything that could reach another host, scheme or directory is refused', async (t) => {
  const refused: Array<[unknown, string]> = [
    ['http://evil.example/', 'absolute URL'],
    ['https://evil.example/', 'absolute URL'],
    ['evil.example/x', 'no leading slash'],
    ['//evil.example/x', 'protocol-relative'],
    ['/a//b', 'empty segment'],
    ['', 'empty'],
    [42, 'not a string'],
    ['/..', 'dot-dot'],
    ['/a/../../b', 'dot-dot'],
    ['/a/./b', 'dot'],
    ['/%2e%2e/x', 'encoded dot-dot'],
    ['/%2E%2E/x', 'encoded dot-dot, upper case'],
    ['/.%2e/x', 'half-encoded dot-dot'],
    ['/%2e/x', 'encoded dot'],
    ['/a%2fb', 'encoded slash'],
    ['/a%2Fb', 'encoded slash, upper case'],
    ['/a%5cb', 'encoded backslash'],
    ['/a\\b', 'backslash'],
    ['/\\evil.example', 'backslash'],
    ['/a%252e%252e', 'double encoding'],
    ['/..;/json', 'servlet-style dot-dot with a parameter'],
    ['/%2e%2e;/json', 'encoded dot-dot with a parameter'],
    ['/a/%3b/b', 'encoded semicolon'],
    ['/a;b=c', 'matrix parameter'],
    ['/a%00b', 'encoded NUL'],
    ['/a%0d%0aHost:%20evil', 'encoded CRLF'],
    ['/a\r\nHost: evil', 'raw CRLF'],
    ['/a\u0000b', 'raw NUL'],
    ['/a b', 'space'],
    ['/a?b=c', 'query in the path'],
    ['/a#b', 'fragment'],
    ['/é', 'raw non-ASCII'],
    ['/%zz', 'malformed escape'],
    ['/%', 'truncated escape'],
    ['/%c3%28', 'invalid UTF-8'],
    ['/%EF%BC%8E%EF%BC%8E/admin', 'fullwidth dot-dot (NFKC: "..")'],
    ['/a/%EF%BC%8E', 'fullwidth dot (NFKC: ".")'],
    ['/%E2%80%A5/admin', 'two-dot leader (NFKC: "..")'],
    ['/%E2%80%A4%E2%80%A4/admin', 'one-dot leaders (NFKC: "..")'],
    ['/%EF%B9%92%EF%B9%92/admin', 'small full stops (NFKC: "..")'],
    ['/%EF%BC%8F%EF%BC%8Fevil.example', 'fullwidth solidi (NFKC: "//")'],
    ['/a%EF%BC%8Fb', 'fullwidth solidus (NFKC: "/")'],
    ['/a%EF%BC%BCb', 'fullwidth reverse solidus (NFKC: "\\")'],
    ['/%E2%84%80', 'account-of sign (NFKC: "a/c")'],
    ['/%EF%BC%8E%EF%BC%8E%EF%BC%9B/json', 'fullwidth dot-dot and semicolon (NFKC: "..;")'],
    ['/' + 'a'.repeat(2048), 'too long']
  ]
  for (const [path, why] of refused) t.not(refusal(path), 'accepted', `${why}: ${JSON.stringify(path)}`)
})

t.test('query keys and values are checked', async (t) => {
  t.not(refusal('/x', { '': 'a' }), 'accepted', 'empty key')
  t.not(refusal('/x', { a: 'b\nc' }), 'accepted', 'control character in a value')
  t.not(refusal('/x', { 'a\r': 'b' }), 'accepted', 'control character in a key')
  t.not(refusal('/x', { a: Number.NaN }), 'accepted', 'NaN')
  t.not(refusal('/x', { a: { b: 1 } } as unknown as UpstreamQuery), 'accepted', 'nested object')
  t.not(refusal('/x', 'a=b' as unknown as UpstreamQuery), 'accepted', 'a string query')
  t.not(refusal('/x', { a: 'x'.repeat(9000) }), 'accepted', 'target too long')
})
