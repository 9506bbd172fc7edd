import t from 'tap'
import { HiBeaverError } from '../src/errors.js'

t.test('catalogue', async (t) => {
  const err = new HiBeaverError('OVERLOADED', 'x')
  t.equal(err.status, 503)
  t.equal(err.retryAfter, 1)
})
