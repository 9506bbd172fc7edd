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
export async function startChild (
  file: string,
  args: string[],
  env: Record<string, string> = {}
): Promise<ChildServer> {
  const child = fork(file, args, {
    execArgv: ['--import', 'tsx', '--expose-gc'],
    env: { ...process.env, ...env },
    stdio: ['ignore', 'ignore', 'inherit', 'ipc']
  })
  const exited = once(child, 'exit')
  // A child that dies before it listens must not leave the bench waiting for its message.
  const message = await Promise.race([
    once(child, 'message').then(([m]) => m as Ready),
    exited.then(([code]) => { throw new Error(`${file} exited with ${String(code)} before it was ready`) })
  ])

  // One listener for the child's life: two answers in one chunk are both kept.
  const answers = new Map<string, Array<(value: unknown) => void>>()
  child.on('message', (reply: Partial<Answer>) => {
    if (typeof reply.answer === 'string') answers.get(reply.answer)?.shift()?.(reply.value)
  })

  return {
    url: message.url,
    child,
    ask: <T>(what: string): Promise<T> => new Promise<T>((resolve) => {
      const queue = answers.get(what) ?? []
      queue.push(resolve as (value: unknown) => void)
      answers.set(what, queue)
      child.send({ ask: what })
    }),
    stop: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return
      child.kill('SIGKILL')
      await exited
    }
  }
}

// The child side: answers measurement questions from the parent.
export function serveMeasurements (answers: Record<string, () => unknown>): void {
  // The parent went away (killed, crashed): nothing will ever ask again.
  process.once('disconnect', () => process.exit(0))
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
