import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import type { LogLine } from './app.js'

export interface ServerProcess {
  child: ChildProcess
  url: string
  lines: LogLine[]
  exit: Promise<number | null>
  waitForLog (match: (line: LogLine) => boolean): Promise<LogLine>
}

export interface SpawnOptions {
  // src/main.ts by default; src/launcher.ts is what `npm start` runs.
  entry?: string
  // In a process group of its own, as a terminal session would start it.
  detached?: boolean
}

// The server's entry point in a process of its own, its stdout read as JSON log lines; resolves
// once it is ready.
export async function startServerProcess (
  env: Record<string, string>,
  options: SpawnOptions = {}
): Promise<ServerProcess> {
  const server = spawnServerProcess(env, options)
  const ready = await server.waitForLog((line) => line.msg === 'hibeaver is ready')
  return { ...server, url: String(ready.url) }
}

// The same, without waiting for it to be ready: for signals during start-up.
export function spawnServerProcess (
  env: Record<string, string>,
  options: SpawnOptions = {}
): Omit<ServerProcess, 'url'> {
  const child = spawn(process.execPath, ['--import', 'tsx', options.entry ?? 'src/main.ts'], {
    env: { ...process.env, HOST: '127.0.0.1', PORT: '0', LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'inherit'],
    detached: options.detached ?? false
  })
  const lines: LogLine[] = []
  const waiters = new Set<{ match: (line: LogLine) => boolean, resolve: (line: LogLine) => void }>()
  let rest = ''
  child.stdout?.on('data', (chunk: Buffer) => {
    const text = rest + chunk.toString('utf8')
    const parts = text.split('\n')
    rest = parts.pop() ?? ''
    for (const part of parts) {
      if (part.trim() === '') continue
      const line = JSON.parse(part) as LogLine
      lines.push(line)
      for (const waiter of waiters) {
        if (waiter.match(line)) {
          waiters.delete(waiter)
          waiter.resolve(line)
        }
      }
    }
  })
  const exit = once(child, 'exit').then(([code]) => code as number | null)
  const waitForLog = (match: (line: LogLine) => boolean): Promise<LogLine> => {
    const found = lines.find(match)
    if (found !== undefined) return Promise.resolve(found)
    return new Promise((resolve, reject) => {
      waiters.add({ match, resolve })
      exit.then(() => reject(new Error('the server exited first')), reject)
    })
  }

  return { child, lines, exit, waitForLog }
}
