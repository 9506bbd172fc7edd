import { z } from 'zod'
import { defineHandler } from '../src/handler.js'
import type { QuerySpec } from '../src/database.js'

// Reads from PostgreSQL through named, parameterised queries only: a client picks a query by
// name and gives its parameters; no SQL text from a client is ever run. Each query ends on the
// server when its request does.

const instant = z.iso.datetime({ offset: true })
const label = z.string().min(1).max(64)

const window = z.strictObject({
  from: instant,
  to: instant
})
const windowInOrder = { message: '"from" must be before "to"', path: ['to'] }
// A bound that is not an instant has its own error already; order is judged between two instants.
const inOrder = ({ from, to }: { from: string, to: string }) => {
  const [start, end] = [Date.parse(from), Date.parse(to)]
  return Number.isNaN(start) || Number.isNaN(end) || start < end
}

const input = z.discriminatedUnion('query', [
  z.strictObject({
    query: z.literal('event'),
    params: z.strictObject({ id: z.number().int().min(1).max(Number.MAX_SAFE_INTEGER) })
  }),
  z.strictObject({
    query: z.literal('event-counts'),
    params: window.extend({ types: z.array(label).min(1).max(50).optional() }).refine(inOrder, windowInOrder)
  }),
  z.strictObject({
    query: z.literal('source-percentiles'),
    params: window.extend({ sources: z.array(label).min(1).max(50).optional() }).refine(inOrder, windowInOrder)
  })
])

type Input = z.output<typeof input>

// Interpolated percentiles of whole milliseconds, to a microsecond: 359.3, not 359.29999999999563.
const ms = (value: number | undefined) => value === undefined ? null : Math.round(value * 1000) / 1000

// Windows are half-open, [from, to). A missing filter is a NULL array, which matches everything.
const queries = {
  event: (params: Extract<Input, { query: 'event' }>['params']): QuerySpec => ({
    name: 'data-retrieval:event',
    text: `SELECT id, occurred_at AS "occurredAt", type, source, duration_ms AS "durationMs", payload,
                  recorded_at AS "recordedAt"
             FROM events WHERE id = $1`,
    values: [params.id]
  }),
  'event-counts': (params: Extract<Input, { query: 'event-counts' }>['params']): QuerySpec => ({
    name: 'data-retrieval:event-counts',
    text: `SELECT type, count(*) AS count
             FROM events
            WHERE occurred_at >= $1 AND occurred_at < $2 AND ($3::text[] IS NULL OR type = ANY ($3))
            GROUP BY type ORDER BY type`,
    values: [params.from, params.to, params.types ?? null]
  }),
  'source-percentiles': (params: Extract<Input, { query: 'source-percentiles' }>['params']): QuerySpec => ({
    name: 'data-retrieval:source-percentiles',
    text: `SELECT source, count(*) AS count,
                  percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY duration_ms) AS p
             FROM events
            WHERE occurred_at >= $1 AND occurred_at < $2 AND ($3::text[] IS NULL OR source = ANY ($3))
            GROUP BY source ORDER BY source`,
    values: [params.from, params.to, params.sources ?? null]
  })
}

interface PercentileRow {
  source: string
  count: number
  p: [number, number, number]
}

export default defineHandler({
  name: 'data-retrieval',
  description: 'Runs a named query on the events table: event, event-counts or source-percentiles',
  input,
  async process (input, ctx) {
    switch (input.query) {
      case 'event': {
        const { rows } = await ctx.db.query(queries.event(input.params))
        return { event: rows[0] ?? null }
      }
      case 'event-counts': {
        const { rows } = await ctx.db.query<{ type: string, count: number }>(queries['event-counts'](input.params))
        return { from: input.params.from, to: input.params.to, counts: rows }
      }
      case 'source-percentiles': {
        const { rows } = await ctx.db.query<PercentileRow>(queries['source-percentiles'](input.params))
        const sources = rows.map(({ source, count, p }) => ({
          source,
          count,
          p50: ms(p[0]),
          p95: ms(p[1]),
          p99: ms(p[2])
        }))
        return { from: input.params.from, to: input.params.to, sources }
      }
    }
  }
})
