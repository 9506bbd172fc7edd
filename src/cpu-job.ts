import type { HiBeaverError } from './errors.js'
import type { Scope } from './scope.js'
import { FLAG_SLOTS, flag, state, type CpuTask, type CpuTaskFunction, type CpuTaskMessage } from './cpu-task.js'

export type JobPhase = 'queued' | 'running' | 'stopping' | 'terminating' | 'done'

function noop (): void {}

// One call of `ctx.cpu.run`, from its arrival to the moment its worker is free again. The
// caller's promise settles once, and may settle (on abort) well before the worker is free.
export class CpuJob {
  readonly scope: Scope
  readonly task: CpuTask<CpuTaskFunction>
  readonly promise: Promise<unknown>
  readonly flags = new Int32Array(new SharedArrayBuffer(FLAG_SLOTS * Int32Array.BYTES_PER_ELEMENT))
  // Aborting this makes piscina terminate the worker; only for a task past its grace.
  readonly terminator = new AbortController()
  phase: JobPhase = 'queued'
  readonly createdAt = performance.now()
  abortedAt = 0
  grace: NodeJS.Timeout | undefined
  removeAbortListener: () => void = noop
  readonly #input: unknown
  #resolve: (value: unknown) => void = noop
  #reject: (reason: unknown) => void = noop

  constructor (scope: Scope, task: CpuTask<CpuTaskFunction>, input: unknown) {
    this.scope = scope
    this.task = task
    this.#input = input
    this.promise = new Promise((resolve, reject) => {
      this.#resolve = resolve
      this.#reject = reject
    })
  }

  get threadId (): number {
    return Atomics.load(this.flags, flag.THREAD)
  }

  get taskStarted (): boolean {
    return Atomics.load(this.flags, flag.STATE) !== state.WAITING
  }

  get taskFinished (): boolean {
    return Atomics.load(this.flags, flag.STATE) === state.DONE
  }

  message (): CpuTaskMessage {
    return { href: this.task.href, exportName: this.task.exportName, input: this.#input, flags: this.flags.buffer }
  }

  // Settling twice is harmless: the first outcome is the caller's.
  resolve (value: unknown): void {
    const resolve = this.#resolve
    this.#settle()
    resolve(value)
  }

  reject (err: HiBeaverError): void {
    const reject = this.#reject
    this.#settle()
    reject(err)
  }

  // The worker sees the flag at its next check.
  cancel (): void {
    Atomics.store(this.flags, flag.CANCEL, 1)
  }

  clearGrace (): void {
    if (this.grace === undefined) return
    clearTimeout(this.grace)
    this.grace = undefined
  }

  #settle (): void {
    this.removeAbortListener()
    this.removeAbortListener = noop
    this.#resolve = noop
    this.#reject = noop
  }
}
