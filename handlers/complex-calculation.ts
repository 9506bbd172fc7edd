import { z } from 'zod'
import { defineHandler } from '../src/handler.js'
import { cpuTask } from '../src/cpu-task.js'
import type { countPrimes } from './complex-calculation.task.js'

// CPU-bound work, always on the server's worker threads: the event loop stays free for other
// requests, and the calculation stops when its request ends.

const countPrimesTask = cpuTask<typeof countPrimes>(import.meta.url, './complex-calculation.task', 'countPrimes')

// 10^12 takes tens of minutes on one core; the request's deadline ends it well before.
export const MAX_BELOW = 1e12

const input = z.discriminatedUnion('task', [
  z.strictObject({
    task: z.literal('count-primes'),
    below: z.number().int().min(2).max(MAX_BELOW)
  })
])

export default defineHandler({
  name: 'complex-calculation',
  description: 'Counts the primes below N (2 to 10^12) on a worker thread; the work stops when the request ends',
  input,
  async process (input, ctx) {
    return await ctx.cpu.run(countPrimesTask, { below: input.below })
  }
})
