import { extname } from 'node:path'

// What the CPU pool and its worker threads share: the task descriptor a handler passes to
// `ctx.cpu.run`, the control a task sees inside the worker, and the layout of the shared
// flags through which the main thread asks a running task to stop.

// Seen by a task inside its worker. Reading `cancelled` is one atomic load of shared memory,
// so a task can afford to check it between every chunk of its work.
export interface CpuControl {
  readonly cancelled: boolean
  // Throws CpuTaskCancelled once the request that asked for this task has ended.
  throwIfCancelled (): void
}

// A task runs in a worker thread: its input and output cross by structured clone.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type CpuTaskFunction = (input: any, control: CpuControl) => unknown

export type CpuTaskInput<Fn extends CpuTaskFunction> = Parameters<Fn>[0]
export type CpuTaskOutput<Fn extends CpuTaskFunction> = Awaited<ReturnType<Fn>>

// Names a function exported by a worker-side module. The type parameter is the function's
// type, taken with `import type` so that the main thread never loads the module itself.
export interface CpuTask<Fn extends CpuTaskFunction> {
  // file: URL of the module, with the same extension as the module that declared the task
  readonly href: string
  readonly exportName: string
  // Carries Fn for the type checker only; never set.
  readonly fn?: Fn
}

// `cpuTask<typeof countPrimes>(import.meta.url, './complex-calculation.task', 'countPrimes')`.
// The module is named without its extension: it gets the declaring module's own (.ts under
// tsx, .js once built), so one declaration works in both.
export function cpuTask<Fn extends CpuTaskFunction> (from: string, module: string, exportName: string): CpuTask<Fn> {
  const extension = extname(new URL(from).pathname)
  const href = new URL(`${module}${extension}`, from).href
  return Object.freeze({ href, exportName })
}

export class CpuTaskCancelled extends Error {
  constructor () {
    super('the cpu task was cancelled')
    this.name = 'CpuTaskCancelled'
  }
}

// Int32 slots of a task's shared flags. The main thread writes CANCEL; the worker writes the rest.
export const flag = {
  STATE: 0,
  CANCEL: 1,
  THREAD: 2
} as const
export const FLAG_SLOTS = 3

export const state = {
  WAITING: 0,
  RUNNING: 1,
  DONE: 2
} as const

export interface CpuTaskMessage {
  href: string
  exportName: string
  input: unknown
  flags: SharedArrayBuffer
}

// A stopped task's result is not wanted: its caller has been answered already.
export type CpuTaskReply = { stopped: true } | { stopped: false, value: unknown }
