import { Writable } from 'node:stream'
import t from 'tap'
import { createLogger, redactText } from '../src/logger.js'

function capture () {
  const lines: Array<Record<string, unknown>> = []
  const destination = new Writable({
    write (chunk: Buffer, _encoding, callback) {
      for (const text of chunk.toString('utf8').split('\n')) {
        if (text !== '') lines.push(JSON.parse(text) as Record<string, unknown>)
      }
      callback()
    }
  })
  return { log: createLogger({ level: 'info', destination }), lines }
}

t.test('a password in a URL is hidden wherever it sits in a text', async (t) => {
  t.equal(redactText('connect postgres://admin:hunter2@10.0.0.5:5432/db failed'),
    'connect postgres://admin:[redacted]@10.0.0.5:5432/db failed')
  t.equal(redactText('redis://:s3cret@cache:6379'), 'redis://:[redacted]@cache:6379', 'no user name')
  t.equal(redactText('postgres://u:p@ss@host/db'), 'postgres://u:[redacted]@host/db', 'an unescaped @ in it')
  t.equal(redactText('a: mysql://a:1@x, b: amqp://b:2@y'), 'a: mysql://a:[redacted]@x, b: amqp://b:[redacted]@y')
  t.equal(redactText('https://example.com:8443/path?q=a:b@c'), 'https://example.com:8443/path?q=a:b@c',
    'a port and a query are not a password')
  t.equal(redactText('postgres://admin@host/db'), 'postgres://admin@host/db', 'a user without a password stays')
})

t.test('an error logged under err has no password in its message, stack, causes or fields', async (t) => {
  const { log, lines } = capture()
  const cause = new Error('auth failed for postgresql://app:s3cr3t@db.internal/app')
  const err = Object.assign(new Error('query failed on postgres://admin:hunter2@10.0.0.5/db', { cause }), {
    detail: 'tried amqp://queue:guest2@mq:5672',
    nested: { url: 'redis://:r3dis@cache' }
  })
  log.error({ err }, 'request finished')
  log.error({ err: new AggregateError([new Error('http://u:agg1@x')], 'all failed') }, 'many')

  const text = JSON.stringify(lines)
  for (const secret of ['hunter2', 's3cr3t', 'guest2', 'r3dis', 'agg1']) {
    t.notOk(text.includes(secret), `${secret} is not logged`)
  }
  const logged = lines[0]?.err as { message: string, stack: string, detail: string }
  t.match(logged.message, 'postgres://admin:[redacted]@10.0.0.5/db', 'the message keeps the rest of the address')
  t.match(logged.stack, 'postgresql://app:[redacted]@db.internal/app', 'the cause\'s stack is in, redacted')
  t.match(logged.stack, /^ {4}at /m, 'the stack is still a stack')
  t.equal(err.message, 'query failed on postgres://admin:hunter2@10.0.0.5/db', 'the error itself is untouched')
  t.same(err.nested, { url: 'redis://:r3dis@cache' }, 'and so are its objects')
})

t.test('credential fields are redacted by their names', async (t) => {
  const { log, lines } = capture()
  log.info({
    password: 'pw1',
    databaseUrl: 'postgres://app:pw2@db/app',
    connectionString: 'postgres://app:pw3@db/app',
    headers: { authorization: 'Bearer pw4', cookie: 'session=pw5' },
    req: { headers: { authorization: 'Bearer pw6', cookie: 'session=pw7' } }
  }, 'configured')

  const text = JSON.stringify(lines)
  for (const secret of ['pw1', 'pw2', 'pw3', 'pw4', 'pw5', 'pw6', 'pw7']) {
    t.notOk(text.includes(secret), `${secret} is not logged`)
  }
  t.match(lines[0], { password: '[redacted]', headers: { authorization: '[redacted]' } })
})
