import { subscribe, unsubscribe } from 'node:diagnostics_channel'
import t from 'tap'
import { z } from 'zod'
import { createDatabase, type ScopedDatabase } from '../src/database.js'
import type { CancelEvent } from '../src/db-lease.js'
import { HiBeaverError } from '../src/errors.js'
import { defineHandler } from '../src/handler.js'
import { startApp } from './helpers/app.js'
import { eventually, startTestPostgres } from './helpers/postgres.js'

// A request's scope ends with its answer: a statement its handler started and never awaited is
// cancelled on the server then, and its database handle takes no more work.

const pg = await startTestPostgres()
t.teardown(() => pg.close())

// What the handler left behind, for the test to look at once the answer is in.
let leftRunning: Promise<unknown> = Promise.resolve()
let keptDb: ScopedDatabase | undefined

const fireAndForget = defineHandler({
  name: 'fire-and-forget',
  description: 'starts a long statement and answers without waiting for it',
  input: z.object({}),
  async process (_input, ctx) {
    keptDb = ctx.db
    // Settled to a value at once, so its rejection is never unhandled while the test waits.
    leftRunning = ctx.db.query({ text: 'SELECT pg_sleep(60)' }).then(() => undefined, (err: unknown) => err)
    await eventually(async () => (await pg.active()).length === 1, 'the statement to run')
    return { started: true }
  }
})

t.test('a statement the handler did not await is cancelled on the server when the request is answered', async (t) => {
  const db = createDatabase({ connectionString: pg.url, poolMax: 1 })
  const app = await startApp({ handlers: [fireAndForget], resources: { db } })
  t.teardown(async () => {
    await app.close()
    await db.close()
  })
  const cancels: CancelEvent[] = []
  const onCancel = (message: unknown) => { cancels.push(message as CancelEvent) }
  subscribe('hibeaver:db:cancel', onCancel)
  t.teardown(() => { unsubscribe('hibeaver:db:cancel', onCancel) })

  const response = await fetch(`${app.url}/handlers/fire-and-forget`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: '{}'
  })
  t.equal(response.status, 200)
  t.same(await response.json(), { data: { started: true } })

  t.match(await leftRunning, { code: 'REQUEST_FINISHED' }, 'the statement is rejected with REQUEST_FINISHED')
  await eventually(async () => (await pg.active()).length === 0, 'the statement to end on the server')
  await eventually(async () => db.stats().leased === 0, 'the lease to settle')
  t.match(cancels, [{ reason: 'REQUEST_FINISHED', delivered: true }], 'one cancel request, delivered')
  t.same(db.stats(), { total: 1, idle: 1, waiting: 0, leased: 0 }, 'the connection is back, clean')

  const late = await (keptDb as ScopedDatabase).query({ text: 'SELECT 1' }).then(() => undefined, (err: unknown) => err)
  t.ok(late instanceof HiBeaverError && late.code === 'REQUEST_FINISHED', 'the request\'s handle takes no more work')
})
