import { CpuTaskCancelled, type CpuControl } from '../src/cpu-task.js'

// The worker side of the complex-calculation handler. No default export: this is not a handler.

export interface CountPrimesInput {
  below: number
}

export interface CountPrimesOutput {
  count: number
}

export function countPrimes (input: CountPrimesInput, control: CpuControl): CountPrimesOutput {
  const count = countPrimesBelow(input.below, () => control.cancelled)
  if (count === undefined) throw new CpuTaskCancelled()
  return { count }
}

// Odd numbers per segment: 128 KiB of flags, which stays in a core's L2 cache. One segment takes
// well under a millisecond, which bounds how late a cancelled count notices.
const SEGMENT = 1 << 17

const never = () => false

// π(below - 1) by a segmented sieve of Eratosthenes over odd numbers only: index i stands for
// 2i + 1, and the prime 2 is counted apart. Returns undefined when `shouldStop` says so, which
// it is asked between segments.
export function countPrimesBelow (below: number, shouldStop: () => boolean = never): number | undefined {
  if (below <= 2) return 0

  const last = Math.floor((below - 2) / 2)
  const primes = oddPrimesUpTo(integerSqrt(below - 1))
  const next = new Float64Array(primes.length)
  for (let j = 0; j < primes.length; j++) {
    const p = primes[j] as number
    next[j] = (p * p - 1) / 2
  }

  const segment = new Uint8Array(SEGMENT)
  let count = 1
  let active = 0
  for (let low = 1; low <= last; low += SEGMENT) {
    if (shouldStop()) return undefined

    const size = Math.min(SEGMENT, last - low + 1)
    // Base primes join in order of their squares, the first multiple each one crosses out.
    while (active < primes.length && (next[active] as number) < low + size) active++
    segment.fill(0, 0, size)
    crossOut(segment, size, low, primes, next, active)
    count += countZeros(segment, size)
  }
  return count
}

function crossOut (
  segment: Uint8Array, size: number, low: number, primes: Uint32Array, next: Float64Array, active: number
): void {
  for (let j = 0; j < active; j++) {
    const p = primes[j] as number
    let i = (next[j] as number) - low
    for (; i < size; i += p) segment[i] = 1
    next[j] = low + i
  }
}

function countZeros (segment: Uint8Array, size: number): number {
  let zeros = 0
  for (let i = 0; i < size; i++) {
    if (segment[i] === 0) zeros++
  }
  return zeros
}

// The odd primes up to `limit`, by a plain sieve: at most a million for the largest input.
function oddPrimesUpTo (limit: number): Uint32Array {
  const composite = new Uint8Array(limit + 1)
  const primes: number[] = []
  for (let n = 3; n <= limit; n += 2) {
    if (composite[n] === 1) continue
    primes.push(n)
    for (let m = n * n; m <= limit; m += 2 * n) composite[m] = 1
  }
  return Uint32Array.from(primes)
}

function integerSqrt (n: number): number {
  let root = Math.floor(Math.sqrt(n))
  while (root * root > n) root--
  while ((root + 1) * (root + 1) <= n) root++
  return root
}
