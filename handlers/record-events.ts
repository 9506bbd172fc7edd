import { createHash } from 'node:crypto'
import { z } from 'zod'
import { defineHandler } from '../src/handler.js'
import { HiBeaverError } from '../src/errors.js'
import type { Queryable } from '../src/database.js'

// Stores a batch of events in one transaction, once per idempotency key. Aborted before COMMIT
// is sent: rolled back, nothing written. Once COMMIT is sent it runs to its end. The same key
// again answers with the first result and writes nothing.

export const MAX_BATCH = 1000

const label = z.string().min(1).max(64)

const MAX_PAYLOAD_DEPTH = 16
const MAX_PAYLOAD_NODES = 2000

// Walks a parsed JSON value without recursion (a deep value must not exhaust the stack before
// it is refused) and checks it is no deeper and no larger than the limits.
function boundedJson (value: unknown): boolean {
  const stack: Array<[unknown, number]> = [[value, 0]]
  let nodes = 0
  while (stack.length > 0) {
    const [node, depth] = stack.pop() as [unknown, number]
    if (++nodes > MAX_PAYLOAD_NODES || depth > MAX_PAYLOAD_DEPTH) return false
    if (typeof node !== 'object' || node === null) continue
    for (const child of Object.values(node)) stack.push([child, depth + 1])
  }
  return true
}

const input = z.strictObject({
  idempotencyKey: z.string().regex(/^[\w.:-]{1,128}$/, 'letters, digits and . _ : - only, at most 128'),
  events: z.array(z.strictObject({
    occurredAt: z.iso.datetime({ offset: true }),
    type: label,
    source: label,
    durationMs: z.number().int().min(0).max(2_147_483_647),
    payload: z.record(z.string(), z.unknown()).refine(boundedJson, {
      message: `at most ${MAX_PAYLOAD_DEPTH} levels deep and ${MAX_PAYLOAD_NODES} values`
    }).optional()
  })).min(1).max(MAX_BATCH)
})

type Batch = z.output<typeof input>

export interface Recorded {
  idempotencyKey: string
  // How many events this key wrote, and their ids in the order they were given.
  recorded: number
  ids: number[]
  // True when the key had been used before and this answer is the first one, repeated.
  replayed: boolean
}

// The key is claimed first: a second request with the same key waits on it until the first
// commits (then replays its answer) or rolls back (then writes in its place).
const CLAIM = `INSERT INTO event_batches (idempotency_key, request_hash, result) VALUES ($1, $2, '{}')
               ON CONFLICT (idempotency_key) DO NOTHING RETURNING idempotency_key`
const FIRST = 'SELECT request_hash AS "requestHash", result FROM event_batches WHERE idempotency_key = $1'
const INSERT = `INSERT INTO events (occurred_at, type, source, duration_ms, payload)
                SELECT e.occurred_at, e.type, e.source, e.duration_ms, coalesce(e.payload, '{}')
                  FROM ROWS FROM (jsonb_to_recordset($1::jsonb)
                         AS (occurred_at timestamptz, type text, source text, duration_ms int, payload jsonb))
                       WITH ORDINALITY AS e(occurred_at, type, source, duration_ms, payload, n)
                 ORDER BY e.n
                RETURNING id`
const RESULT = 'UPDATE event_batches SET result = $2 WHERE idempotency_key = $1'

// Identifies a batch by what it writes, not by how its JSON was spelled: a retry may order its
// keys differently or write a timestamp in another form, and is still the same batch. An absent
// payload is stored as {}, so it is hashed as one.
function fingerprint (events: Batch['events']): string {
  const rows = events.map((event) =>
    [instant(event.occurredAt), event.type, event.source, event.durationMs, event.payload ?? {}])
  return createHash('sha256').update(canonicalJson(rows)).digest('base64url')
}

// JSON with every object's keys sorted. Depth is bounded by the payload limit above.
function canonicalJson (value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`
  if (typeof value !== 'object' || value === null) return JSON.stringify(value)
  const entries = Object.entries(value).sort(([a], [b]) => (a < b ? -1 : 1))
  return `{${entries.map(([key, child]) => `${JSON.stringify(key)}:${canonicalJson(child)}`).join(',')}}`
}

const DATETIME = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$/

// The instant in UTC with its fraction as given, trailing zeros dropped: `…00Z`, `…00.000Z` and
// `…01:00+01:00` are one instant, while digits past the millisecond are kept, not rounded away.
function instant (text: string): string {
  const match = DATETIME.exec(text)
  const seconds = match === null ? Number.NaN : Date.parse(`${match[1]}${match[3]}`)
  if (match === null || Number.isNaN(seconds)) return text
  const fraction = (match[2] ?? '').replace(/0+$/, '')
  return new Date(seconds).toISOString().replace('.000Z', fraction === '' ? 'Z' : `.${fraction}Z`)
}

async function record (tx: Queryable, batch: Batch, hash: string): Promise<Recorded> {
  const claimed = await tx.query({ name: 'record-events:claim', text: CLAIM, values: [batch.idempotencyKey, hash] })
  if (claimed.rowCount === 0) return await replay(tx, batch.idempotencyKey, hash)

  const rows = batch.events.map((event) => ({
    occurred_at: event.occurredAt,
    type: event.type,
    source: event.source,
    duration_ms: event.durationMs,
    payload: event.payload ?? null
  }))
  const inserted = await tx.query<{ id: number }>({
    name: 'record-events:insert',
    text: INSERT,
    values: [JSON.stringify(rows)]
  })
  const ids = inserted.rows.map((row) => row.id).sort((a, b) => a - b)
  const result = { recorded: ids.length, ids }
  await tx.query({ name: 'record-events:result', text: RESULT, values: [batch.idempotencyKey, result] })
  return { idempotencyKey: batch.idempotencyKey, ...result, replayed: false }
}

async function replay (tx: Queryable, key: string, hash: string): Promise<Recorded> {
  const { rows } = await tx.query<{ requestHash: string, result: { recorded: number, ids: number[] } }>({
    name: 'record-events:first', text: FIRST, values: [key]
  })
  const first = rows[0]
  if (first === undefined) throw new Error('an idempotency key vanished between claim and read')
  if (first.requestHash !== hash) {
    throw new HiBeaverError(
      'IDEMPOTENCY_KEY_REUSED',
      'this idempotencyKey was used before for a different batch of events'
    )
  }
  return { idempotencyKey: key, ...first.result, replayed: true }
}

export default defineHandler({
  name: 'record-events',
  description: `Stores up to ${MAX_BATCH} events in one transaction, once per idempotencyKey`,
  input,
  async process (batch, ctx) {
    const hash = fingerprint(batch.events)
    return await ctx.db.transaction((tx) => record(tx, batch, hash))
  }
})
