import { readFile } from 'node:fs/promises'

// A process's resource use read from Linux's /proc, from outside: it needs no answer from the
// process, so it is right even while that process's event loop is blocked.

// USER_HZ: the unit of utime and stime, 100 on every mainstream Linux architecture.
const TICKS_PER_SECOND = 100

// User plus system CPU time of every thread of `pid`, in seconds (10 ms resolution).
export async function cpuSeconds (pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8')
  // Fields after "pid (comm) ": the command may hold spaces, so split after its last ')'.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  const utime = Number(fields[11])
  const stime = Number(fields[12])
  return (utime + stime) / TICKS_PER_SECOND
}

// The peak resident set size of `pid` so far (VmHWM), in bytes.
export async function peakRss (pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8')
  const match = /^VmHWM:\s+(\d+) kB$/m.exec(status)
  return match === null ? Number.NaN : Number(match[1]) * 1024
}

// CPU seconds of each process in `pids` that still exists.
export async function cpuSecondsOf (pids: readonly number[]): Promise<Map<number, number>> {
  const out = new Map<number, number>()
  await Promise.all(pids.map(async (pid) => {
    try {
      out.set(pid, await cpuSeconds(pid))
    } catch {
      // Gone: a connection closed since it was seen.
    }
  }))
  return out
}
