import { spawn } from 'node:child_process'
import { once } from 'node:events'
import t from 'tap'
import { ConfigError, loadConfig } from '../src/config.js'

t.test('defaults apply when nothing is set, and empty strings count as unset', async (t) => {
  const config = loadConfig({ PORT: '', DEFAULT_TIMEOUT_MS: '2500' })
  t.equal(config.port, 3000)
  t.equal(config.defaultTimeoutMs, 2500)
  t.equal(config.databaseUrl, undefined)
  t.equal(config.dbMaxWaiting, 1024)
  t.equal(loadConfig({ HOST: '::1', PORT: '08080' }).port, 8080, 'leading zeros are still decimal')
  t.equal(loadConfig({ HOST: 'db-1.internal' }).host, 'db-1.internal')
  t.equal(loadConfig({ PRESSURE_MAX_EVENT_LOOP_UTILIZATION: '0.95' }).pressure.maxEventLoopUtilization, 0.95)
  t.ok(config.cpuWorkers >= 1)
})

t.test('each bad value names its variable', async (t) => {
  const cases: Array<[Record<string, string>, string, RegExp]> = [
    [{ PORT: 'abc' }, 'PORT', /integer from 0 to 65535/],
    [{ PORT: '70000' }, 'PORT', /integer/],
    [{ DEFAULT_TIMEOUT_MS: '-1' }, 'DEFAULT_TIMEOUT_MS', /integer/],
    [{ DEFAULT_TIMEOUT_MS: '9000', MAX_TIMEOUT_MS: '100' }, 'DEFAULT_TIMEOUT_MS', /MAX_TIMEOUT_MS/],
    [{ LOG_LEVEL: 'loud' }, 'LOG_LEVEL', /one of/],
    [{ CPU_WORKERS: '0' }, 'CPU_WORKERS', /integer/],
    [{ DB_MAX_WAITING: '-1' }, 'DB_MAX_WAITING', /integer from 0 to 1000000/],
    [{ UPSTREAM_BASE_URL: 'ftp://x' }, 'UPSTREAM_BASE_URL', /http/],
    [{ PRESSURE_MAX_EVENT_LOOP_UTILIZATION: '1.5' }, 'PRESSURE_MAX_EVENT_LOOP_UTILIZATION', /from 0 to 1/],
    [{ PRESSURE_MAX_EVENT_LOOP_UTILIZATION: ' ' }, 'PRESSURE_MAX_EVENT_LOOP_UTILIZATION', /from 0 to 1/],
    // What Number() would have taken: a blank is not 0, hex and exponents are not decimals.
    [{ PORT: ' ' }, 'PORT', /integer/],
    [{ SHUTDOWN_GRACE_MS: '\t' }, 'SHUTDOWN_GRACE_MS', /integer/],
    [{ PORT: '0x50' }, 'PORT', /integer/],
    [{ DEFAULT_TIMEOUT_MS: '1e3' }, 'DEFAULT_TIMEOUT_MS', /integer/],
    [{ PORT: '3.3e3' }, 'PORT', /integer/],
    [{ BODY_LIMIT_BYTES: '1.5' }, 'BODY_LIMIT_BYTES', /integer/],
    [{ MAX_TIMEOUT_MS: '5' }, 'MAX_TIMEOUT_MS', /\(5\) must not be below DEFAULT_TIMEOUT_MS \(10000\)/],
    [{ UPSTREAM_BASE_URL: 'http://user:pw@example.com/' }, 'UPSTREAM_BASE_URL', /no credentials/],
    [{ UPSTREAM_BASE_URL: 'http://example.com/?a=1' }, 'UPSTREAM_BASE_URL', /query/],
    [{ HOST: '999.1.1.1' }, 'HOST', /IP address or a host name/],
    [{ HOST: 'bad host' }, 'HOST', /IP address or a host name/]
  ]
  for (const [env, variable, message] of cases) {
    const err = t.throws(() => loadConfig(env)) as ConfigError
    t.equal(err.variable, variable)
    t.match(err.message, message)
  }
})

t.test('a password in a bad URL is never echoed', async (t) => {
  const err = t.throws(() => loadConfig({ DATABASE_URL: 'mysql://admin:hunter2@db/x' })) as ConfigError
  t.equal(err.variable, 'DATABASE_URL')
  t.notMatch(err.message, /hunter2/)
})

t.test('a bad value stops start-up with exit code 1 and one line naming it', async (t) => {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], {
    env: { ...process.env, PORT: 'not-a-port', DATABASE_URL: '', UPSTREAM_BASE_URL: '' },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  let output = ''
  child.stdout.on('data', (chunk: Buffer) => { output += chunk.toString() })
  child.stderr.on('data', (chunk: Buffer) => { output += chunk.toString() })
  const [code] = await once(child, 'exit') as [number]

  t.equal(code, 1)
  const lines = output.trim().split('\n')
  t.equal(lines.length, 1, 'exactly one line')
  const line = JSON.parse(lines[0] ?? '{}') as { msg: string, variable: string, level: number }
  t.equal(line.variable, 'PORT')
  t.match(line.msg, /^invalid environment: PORT /)
  t.equal(line.level, 60)
})
