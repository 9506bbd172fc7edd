import { channel } from 'node:diagnostics_channel'

// What the CPU pool reports; the edge decides what to log.

// A task handed to a worker, after `queuedMs` waiting for one.
export interface CpuStartEvent {
  requestId: string
  task: string
  queuedMs: number
}

// How a task of an aborted request ended:
// - dequeued: it was still waiting, and never started;
// - cooperative: it saw the shared flag and returned; its worker lives on;
// - terminated: it ignored the flag past the grace, and its worker was terminated and replaced.
export type CpuStopHow = 'dequeued' | 'cooperative' | 'terminated'

export interface CpuStopEvent {
  requestId: string
  task: string
  how: CpuStopHow
  // From the abort to the moment the work stopped, as the main thread sees it: the task's reply
  // for a cooperative stop, the worker's exit for a termination.
  stopMs: number
}

// A task that failed on its own (threw, ran out of memory, exited its worker), or a pool error
// outside any task. The request, if any, was answered INTERNAL.
export interface CpuFaultEvent {
  requestId?: string
  task?: string
  error: unknown
}

export const cpuStartChannel = channel('hibeaver:cpu:start')
export const cpuStopChannel = channel('hibeaver:cpu:stop')
export const cpuFaultChannel = channel('hibeaver:cpu:fault')

export interface CpuPoolStats {
  // configured worker threads, and those alive now (fewer while one is being replaced)
  workers: number
  threads: number
  // tasks on a worker, including aborted ones not yet stopped; tasks waiting for a worker
  running: number
  queued: number
  completed: number
  dequeued: number
  cooperative: number
  terminated: number
  faults: number
  overloaded: number
  workersCreated: number
}
