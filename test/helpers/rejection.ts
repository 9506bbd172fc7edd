import { HiBeaverError } from '../../src/errors.js'

// The catalogue error a promise rejects with; anything else, or no rejection, fails the test.
export async function rejection (promise: Promise<unknown>): Promise<HiBeaverError> {
  try {
    await promise
  } catch (err) {
    if (err instanceof HiBeaverError) return err
    throw err
  }
  throw new Error('expected a rejection')
}
