import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { request } from 'undici'
import { eventually, freePort } from './helpers/postgres.js'
import { spawnServerProcess, startServerProcess } from './helpers/process.js'

// The whole process with its embedded PostgreSQL, as `npm start` runs it: what a kill -9, a
// signal during start-up and Ctrl-C in a terminal leave behind. One data directory for the file.

const dataDir = await mkdtemp(join(tmpdir(), 'hibeaver-process-'))
t.teardown(() => rm(dataDir, { recursive: true, force: true }))
const env = {
  PG_DATA_DIR: dataDir,
  PG_PORT: String(await freePort()),
  SEED_EVENTS: '20000',
  UPSTREAM_BASE_URL: '',
  DATABASE_URL: ''
}

async function postmasterPid (): Promise<number> {
  return Number((await readFile(join(dataDir, 'postmaster.pid'), 'utf8')).split('\n', 1)[0])
}

// Running, and not a zombie waiting to be reaped.
async function alive (pid: number): Promise<boolean> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => undefined)
  return stat !== undefined && stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z'
}

async function eventById (url: string): Promise<number> {
  const res = await request(`${url}/handlers/data-retrieval`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ query: 'event', params: { id: 1 } })
  })
  await res.body.dump()
  return res.statusCode
}

t.test('a killed server leaves its PostgreSQL running; the next start stops it and serves', async (t) => {
  const first = await startServerProcess(env)
  const orphan = await postmasterPid()
  first.child.kill('SIGKILL')
  await first.exit
  t.ok(await alive(orphan), 'the embedded server outlived the process that started it')

  const second = await startServerProcess(env)
  const stopped = await second.waitForLog((line) => line.msg.startsWith('stopped an embedded postgres'))
  t.equal(stopped.pid, orphan, 'the orphan is named')
  t.notOk(await alive(orphan), 'and gone')
  t.equal(await eventById(second.url), 200, 'the data is served')

  // Several connections in the pool when it closes: each must end before its server does.
  const statuses = await Promise.all(Array.from({ length: 8 }, async () => await eventById(second.url)))
  t.same(new Set(statuses), new Set([200]))
  const running = await postmasterPid()
  second.child.kill('SIGTERM')
  t.equal(await second.exit, 0)
  t.equal(second.lines.at(-1)?.msg, 'shutdown complete')
  t.same(
    second.lines.filter((line) =>
      line.level >= 40 && line.msg !== 'stopped an embedded postgres left running by an earlier process'),
    [],
    'a clean stop says nothing alarming: no connection was cut under the pool'
  )
  t.notOk(await alive(running), 'a clean stop stops the embedded server')
})

t.test('a signal during start-up closes what start-up opened, and exits 0', async (t) => {
  const server = spawnServerProcess(env)
  await server.waitForLog((line) => line.msg === 'embedded postgres started')
  const pid = await postmasterPid()
  server.child.kill('SIGTERM')

  t.equal(await server.exit, 0)
  t.equal(server.lines.at(-1)?.msg, 'shutdown complete')
  await eventually(async () => !await alive(pid), 'the embedded server to stop')
})

t.test('npm start: Ctrl-C to the terminal\'s process group drains with the database still up', async (t) => {
  // The launcher leads a process group, as a shell would start it; Ctrl-C signals all of it.
  const server = await startServerProcess({ ...env, SHUTDOWN_DRAIN_MS: '1000' }, {
    entry: 'src/launcher.ts',
    detached: true
  })
  const group = server.child.pid as number
  process.kill(-group, 'SIGINT')
  await server.waitForLog((line) => line.msg === 'shutting down')

  t.equal(await eventById(server.url), 200, 'a request during the drain is served by the database')
  t.equal(await server.exit, 0, 'the server exits 0, and so does npm start')
  t.equal(server.lines.filter((line) => line.msg === 'shutting down').length, 1, 'one signal reached the server')
  t.equal(server.lines.at(-1)?.msg, 'shutdown complete')
})

t.test('a launcher killed during the drain leaves the drain to finish', async (t) => {
  const server = await startServerProcess(
    { ...env, SHUTDOWN_DRAIN_MS: '1000' },
    { entry: 'src/launcher.ts', detached: true }
  )
  server.child.kill('SIGINT')
  await server.waitForLog((line) => line.msg === 'shutting down')
  server.child.kill('SIGKILL')
  await server.exit

  await eventually(async () => server.lines.at(-1)?.msg === 'shutdown complete', 'the server to finish its shutdown')
  t.same(server.lines.filter((line) => line.level >= 50), [], 'no forced exit: the lifeline is not a second signal')
})

t.test('a launcher killed outright takes its server down cleanly, not into orphanhood', async (t) => {
  const server = await startServerProcess(env, { entry: 'src/launcher.ts', detached: true })
  const pid = await postmasterPid()
  server.child.kill('SIGKILL')
  await server.exit

  // The server writes to the same pipe after the launcher has gone.
  await eventually(async () => server.lines.at(-1)?.msg === 'shutdown complete', 'the server to shut down')
  t.ok(server.lines.some((line) => line.msg === 'shutting down' && line.signal === 'SIGTERM'), 'as on SIGTERM')
  await eventually(async () => !await alive(pid), 'the embedded server to stop')
})
