import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'

// A HiBeaver killed outright (kill -9, the OOM killer) cannot stop its embedded PostgreSQL, which
// keeps running and holds the data directory's lock: the next start would fail on it. Such a
// server is ours to stop when it is an orphan, that is when no node process is its parent any
// more. One whose parent still runs belongs to another HiBeaver on the same directory and is
// left alone. Linux only: elsewhere nothing is stopped and PostgreSQL's own error stands.

const FAST_SHUTDOWN_MS = 10_000
const IMMEDIATE_SHUTDOWN_MS = 5_000

// Returns the pid of the orphan it stopped, if there was one.
export async function stopOrphanedPostgres (dataDir: string): Promise<number | undefined> {
  const pid = await postmasterPid(dataDir)
  const server = pid === undefined ? undefined : await processInfo(pid)
  if (pid === undefined || server === undefined || server.command !== 'postgres') return undefined

  const parent = await processInfo(server.parent)
  if (server.parent !== 1 && parent?.command === 'node') {
    throw new Error(`${dataDir} is in use by PostgreSQL (pid ${pid}) of another running process (pid ${server.parent})`)
  }

  // Fast shutdown first: open transactions roll back and the data is checkpointed. Immediate
  // shutdown only if that hangs; it is crash-safe too, recovery replays the log at next start.
  process.kill(pid, 'SIGINT')
  if (await exited(pid, FAST_SHUTDOWN_MS)) return pid
  process.kill(pid, 'SIGQUIT')
  if (await exited(pid, IMMEDIATE_SHUTDOWN_MS)) return pid
  throw new Error(`the orphaned PostgreSQL (pid ${pid}) on ${dataDir} did not stop`)
}

// The first line of postmaster.pid is the server's pid.
async function postmasterPid (dataDir: string): Promise<number | undefined> {
  const text = await readFile(join(dataDir, 'postmaster.pid'), 'utf8').catch(() => '')
  const pid = Number(text.split('\n', 1)[0])
  return Number.isSafeInteger(pid) && pid > 0 ? pid : undefined
}

interface ProcessInfo {
  command: string
  state: string
  parent: number
}

// /proc/<pid>/stat is "pid (comm) state ppid ...", where comm may hold spaces and parentheses.
async function processInfo (pid: number): Promise<ProcessInfo | undefined> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => undefined)
  if (stat === undefined) return undefined
  const close = stat.lastIndexOf(')')
  const [state = '', parent = ''] = stat.slice(close + 2).split(' ', 2)
  return { command: stat.slice(stat.indexOf('(') + 1, close), state, parent: Number(parent) }
}

async function exited (pid: number, withinMs: number): Promise<boolean> {
  const until = performance.now() + withinMs
  while (performance.now() < until) {
    const info = await processInfo(pid)
    // A zombie has exited; only its parent's wait() is missing.
    if (info === undefined || info.state === 'Z') return true
    await sleep(20)
  }
  return false
}
