import { fork, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'

export interface ChildServer {
  url: string
  child: ChildProcess
  // Asks the child for a measurement (after a full GC) and waits for the answer.
  ask<T> (what: string): Promise<T>
  stop (): Promise<void>
}

interface Ready { ready: true, url: string }
interface Answer { answer: string, value: unknown }

// Starts a benchmark server in its own process, so the load generator and the server do not
// share an event loop. The child reports its URL over IPC once it listens.
export async function startChild (file: string, args: string[], env: Record<string, string> = {}): Promise<ChildServer> {
  const child = fork(file, args, {
    execArgv: ['--import', 'tsx', '--expose-gc'],
    env: { ...process.env, ...env },
    stdio: ['ignore', 'ignore', 'inherit', 'ipc']
  })
  const [message] = await once(child, 'message') as [Ready]

  return {
    url: message.url,
    child,
    ask: async <T>(what: string): Promise<T> => {
      child.send({ ask: what })
      for (;;) {
        const [reply] = await once(child, 'message') as [Answer]
        if (reply.answer === what) return reply.value as T
      }
    },
    stop: async () => {
      if (child.exitCode !== null) return
      const exited = once(child, 'exit')
      child.kill('SIGKILL')
      await exited
    }
  }
}

// The child side: answers measurement questions from the parent.
export function serveMeasurements (answers: Record<string, () => unknown>): void {
  process.on('message', (message: { ask?: string }) => {
    const ask = message.ask
    if (ask === undefined) return
    const answer = answers[ask]
    process.send?.({ answer: ask, value: answer === undefined ? null : answer() })
  })
}

export function heapAfterGc (): number {
  const gc = (globalThis as { gc?: () => void }).gc
  gc?.()
  gc?.()
  return process.memoryUsage().heapUsed
}
