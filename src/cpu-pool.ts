import { availableParallelism } from 'node:os'
import { extname } from 'node:path'
import type { ResourceLimits } from 'node:worker_threads'
import { Piscina } from 'piscina'
import { HiBeaverError } from './errors.js'
import type { ResourceProvider } from './resources.js'
import type { Scope } from './scope.js'
import { CpuJob } from './cpu-job.js'
import { cpuFaultChannel, cpuStartChannel, cpuStopChannel, type CpuPoolStats, type CpuStopHow } from './cpu-events.js'
import type { CpuTask, CpuTaskFunction, CpuTaskInput, CpuTaskOutput, CpuTaskReply } from './cpu-task.js'

// CPU-bound work on worker threads, bound to each request's scope. A task of an aborted request
// is dropped from the queue if it has not started; if it has, it is asked to stop through a
// shared flag, and its worker is terminated (and replaced) if it has not stopped within the
// grace. Either way the caller's promise rejects with the scope's reason at once.

export interface ScopedCpu {
  run<Fn extends CpuTaskFunction> (task: CpuTask<Fn>, input: CpuTaskInput<Fn>): Promise<CpuTaskOutput<Fn>>
}

declare module './handler.js' {
  interface HandlerResources {
    cpu: ScopedCpu
  }
}

export interface CpuPoolOptions {
  // worker threads; default: the cores available
  workers?: number
  // tasks waiting for a worker before run() answers OVERLOADED; default 64
  queueMax?: number
  // how long an aborted task may take to see its flag before its worker is terminated; default 50
  graceMs?: number
  // per worker; default maxOldGenerationSizeMb 256
  resourceLimits?: ResourceLimits
  // how long close() lets running tasks finish before it terminates them; default 10 000
  closeTimeoutMs?: number
}

export interface CpuPool extends ResourceProvider<ScopedCpu> {
  stats (): CpuPoolStats
}

export function createCpuPool (options: CpuPoolOptions = {}): CpuPool {
  return new PiscinaCpuPool(options)
}

// Same extension as this module: the .ts source under tsx, the .js file once built.
const workerEntry = new URL(`./cpu-worker${extname(new URL(import.meta.url).pathname)}`, import.meta.url).href

const overloaded = () => new HiBeaverError('OVERLOADED', 'every cpu worker is busy and the queue is full')
const closing = (cause?: unknown) =>
  new HiBeaverError('SHUTTING_DOWN', 'the cpu pool is closing', cause === undefined ? {} : { cause })

class PiscinaCpuPool implements CpuPool {
  readonly #piscina: Piscina
  readonly #workers: number
  readonly #queueMax: number
  readonly #graceMs: number
  readonly #queue: CpuJob[] = []
  readonly #running = new Set<CpuJob>()
  readonly #counts = {
    completed: 0, dequeued: 0, cooperative: 0, terminated: 0, faults: 0, overloaded: 0, workersCreated: 0
  }

  #closed: Promise<void> | undefined

  constructor (options: CpuPoolOptions) {
    this.#workers = options.workers ?? availableParallelism()
    this.#queueMax = options.queueMax ?? 64
    this.#graceMs = options.graceMs ?? 50
    this.#piscina = new Piscina({
      filename: workerEntry,
      minThreads: this.#workers,
      maxThreads: this.#workers,
      idleTimeout: Infinity,
      resourceLimits: options.resourceLimits ?? { maxOldGenerationSizeMb: 256 },
      closeTimeout: options.closeTimeoutMs ?? 10_000,
      recordTiming: false
    })
    this.#piscina.on('workerCreate', () => { this.#counts.workersCreated++ })
    // Piscina emits 'error' for a worker that fails while idle and for a close that times out;
    // unheard, an EventEmitter's 'error' would crash the process.
    this.#piscina.on('error', (error: unknown) => { cpuFaultChannel.publish({ error }) })
  }

  forScope (scope: Scope): ScopedCpu {
    return {
      run: <Fn extends CpuTaskFunction>(task: CpuTask<Fn>, input: CpuTaskInput<Fn>) =>
        this.#run(scope, task, input) as Promise<CpuTaskOutput<Fn>>
    }
  }

  stats (): CpuPoolStats {
    return {
      workers: this.#workers,
      threads: this.#piscina.threads.length,
      running: this.#running.size,
      queued: this.#queue.length,
      ...this.#counts
    }
  }

  // Drains: waiting tasks are refused, running ones may finish within closeTimeoutMs.
  close (): Promise<void> {
    this.#closed ??= this.#close()
    return this.#closed
  }

  async #close (): Promise<void> {
    for (const job of this.#queue.splice(0)) {
      job.phase = 'done'
      job.reject(closing())
    }
    await this.#piscina.close({ force: true })
  }

  #run (scope: Scope, task: CpuTask<CpuTaskFunction>, input: unknown): Promise<unknown> {
    const due = scope.expireIfDue()
    if (due !== undefined) return Promise.reject(due)
    if (this.#closed !== undefined) return Promise.reject(closing())
    if (this.#running.size >= this.#workers && this.#queue.length >= this.#queueMax) {
      this.#counts.overloaded++
      return Promise.reject(overloaded())
    }

    const job = new CpuJob(scope, task, input)
    job.removeAbortListener = scope.onAbort((reason) => this.#abort(job, reason))
    if (this.#running.size < this.#workers) this.#start(job)
    else this.#queue.push(job)
    return job.promise
  }

  // Piscina is handed a task only when a worker is free, so its own queue stays empty. Its
  // maxQueue does not bound tasks that carry a signal (they wait in a separate skip queue,
  // piscinajs/piscina#899), and aborting queued tasks has stalled it before (#805).
  #start (job: CpuJob): void {
    job.phase = 'running'
    this.#running.add(job)
    if (cpuStartChannel.hasSubscribers) {
      const queuedMs = performance.now() - job.createdAt
      cpuStartChannel.publish({ requestId: job.scope.requestId, task: job.task.exportName, queuedMs })
    }
    this.#piscina.run(job.message(), { signal: job.terminator.signal }).then(
      (reply: CpuTaskReply) => this.#finished(job, reply),
      (err: unknown) => this.#failed(job, err)
    )
  }

  #pump (): void {
    while (this.#running.size < this.#workers) {
      const job = this.#queue[0]
      if (job === undefined) return
      // A deadline that passed while the job waited takes it out of the queue through #abort.
      if (job.scope.expireIfDue() !== undefined) continue
      this.#queue.shift()
      this.#start(job)
    }
  }

  #finished (job: CpuJob, reply: CpuTaskReply): void {
    const phase = this.#release(job)
    if (phase === 'stopping') {
      this.#stopped(job, job.taskStarted ? 'cooperative' : 'dequeued')
    } else if (reply.stopped) {
      // Cannot happen: only an abort raises the flag, and an abort ends the 'running' phase.
      this.#fault(job, new Error('the task stopped without being asked to'))
    } else {
      this.#counts.completed++
      job.resolve(reply.value)
    }
    this.#pump()
  }

  #failed (job: CpuJob, err: unknown): void {
    const phase = this.#release(job)
    if (phase === 'stopping') {
      this.#stopped(job, job.taskStarted ? 'cooperative' : 'dequeued')
    } else if (phase === 'running') {
      this.#fault(job, err)
    }
    // 'terminating': the rejection is piscina's AbortError; the worker's exit reports the stop.
    this.#pump()
  }

  #release (job: CpuJob): CpuJob['phase'] {
    const phase = job.phase
    job.phase = 'done'
    job.clearGrace()
    this.#running.delete(job)
    return phase
  }

  #fault (job: CpuJob, err: unknown): void {
    // Terminated by close() after its timeout: the pool's doing, not the task's.
    if (this.#closed !== undefined) {
      job.reject(closing(err))
      return
    }
    this.#counts.faults++
    cpuFaultChannel.publish({ requestId: job.scope.requestId, task: job.task.exportName, error: err })
    job.reject(new HiBeaverError('INTERNAL', `cpu task ${job.task.exportName} failed`, { cause: err }))
  }

  #abort (job: CpuJob, reason: HiBeaverError): void {
    // The caller first: whatever the worker does next, this request is over.
    job.reject(reason)

    if (job.phase === 'queued') {
      this.#queue.splice(this.#queue.indexOf(job), 1)
      job.phase = 'done'
      this.#stopped(job, 'dequeued')
      return
    }
    if (job.phase !== 'running') return

    job.phase = 'stopping'
    job.abortedAt = performance.now()
    job.cancel()
    this.#armGrace(job)
  }

  #terminate (job: CpuJob): void {
    job.grace = undefined
    // Finished just now: its reply is on the way, and its worker is worth keeping.
    if (job.phase !== 'stopping' || job.taskFinished) return
    // Not started: its worker is still booting (or being replaced). It will see the flag on
    // arrival and skip the task, so there is nothing to kill; look again after another grace.
    if (!job.taskStarted) {
      this.#armGrace(job)
      return
    }

    job.phase = 'terminating'
    // Found before the abort: piscina forgets a worker as soon as it terminates it.
    const worker = this.#piscina.threads.find((thread) => thread.threadId === job.threadId)
    job.terminator.abort()
    if (worker === undefined) {
      this.#stopped(job, 'terminated')
      return
    }
    worker.once('exit', () => this.#stopped(job, 'terminated'))
  }

  #armGrace (job: CpuJob): void {
    // Guards only: a running task keeps its worker, and so the process, alive.
    job.grace = setTimeout(() => this.#terminate(job), this.#graceMs).unref()
  }

  #stopped (job: CpuJob, how: CpuStopHow): void {
    this.#counts[how]++
    if (!cpuStopChannel.hasSubscribers) return
    const stopMs = how === 'dequeued' ? 0 : performance.now() - job.abortedAt
    cpuStopChannel.publish({ requestId: job.scope.requestId, task: job.task.exportName, how, stopMs })
  }
}
