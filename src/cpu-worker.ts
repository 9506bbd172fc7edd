import { createRequire } from 'node:module'
import { fileURLToPath } from 'node:url'
import { threadId } from 'node:worker_threads'
import {
  CpuTaskCancelled, flag, state,
  type CpuControl, type CpuTaskFunction, type CpuTaskMessage, type CpuTaskReply
} from './cpu-task.js'

// The piscina entry of every CPU worker: loads the named task, hands it the request's shared
// cancellation flag, and reports a task that stopped because it was asked to as `stopped`.

const STOPPED: CpuTaskReply = { stopped: true }
const tasks = new Map<string, CpuTaskFunction>()
const requireTask = createRequire(import.meta.url)

class SharedFlagControl implements CpuControl {
  readonly #flags: Int32Array

  constructor (flags: Int32Array) {
    this.#flags = flags
  }

  get cancelled (): boolean {
    return Atomics.load(this.#flags, flag.CANCEL) !== 0
  }

  throwIfCancelled (): void {
    if (this.cancelled) throw new CpuTaskCancelled()
  }
}

export default async function runCpuTask (message: CpuTaskMessage): Promise<CpuTaskReply> {
  const flags = new Int32Array(message.flags)
  const control = new SharedFlagControl(flags)
  // Cancelled between dispatch and arrival (say, while this worker was booting): never started.
  if (control.cancelled) return STOPPED
  Atomics.store(flags, flag.THREAD, threadId)
  Atomics.store(flags, flag.STATE, state.RUNNING)

  try {
    const fn = await loadTask(message.href, message.exportName)
    const value: unknown = await fn(message.input, control)
    return control.cancelled ? STOPPED : { stopped: false, value }
  } catch (err) {
    // Whatever a cancelled task throws on its way out is how it stopped, not a fault.
    if (control.cancelled) return STOPPED
    throw err
  } finally {
    Atomics.store(flags, flag.STATE, state.DONE)
  }
}

async function loadTask (href: string, exportName: string): Promise<CpuTaskFunction> {
  const key = `${href}#${exportName}`
  const cached = tasks.get(key)
  if (cached !== undefined) return cached

  const module = await loadModule(href)
  const fn = module[exportName]
  if (typeof fn !== 'function') throw new TypeError(`${href} exports no function named ${exportName}`)
  tasks.set(key, fn as CpuTaskFunction)
  return fn as CpuTaskFunction
}

// Node 20 runs a worker's inherited `--import tsx` but not the ESM loader hooks it registers
// (nodejs/node#47747); tsx's require hook does work there. So a TypeScript task module is
// required (tsx compiles it to CommonJS: no top-level await in task modules), and a built one
// is imported.
async function loadModule (href: string): Promise<Record<string, unknown>> {
  if (href.endsWith('.ts')) return requireTask(fileURLToPath(href)) as Record<string, unknown>
  return await import(href) as Record<string, unknown>
}
