import pg from 'pg'

// Demo data: `count` events generated inside PostgreSQL with generate_series (no rows cross the
// wire), only into an empty events table, so queries run on a realistic volume from the first
// start. Deterministic: the same count gives the same rows, over January 2025 (UTC).

export interface SeedOptions {
  connectionString: string
  count: number
}

export interface SeedResult {
  inserted: number
  durationMs: number
}

const SEED_LOCK = 'hibeaver:seed-events'

// Generated in time order, as events arrive: the indexes then grow at their right edge, which
// is several times faster than inserting at random places. Skewed choices, as real traffic is:
// low indexes are picked far more often than high ones.
const INSERT = `
INSERT INTO events (occurred_at, type, source, duration_ms, payload)
SELECT timestamptz '2025-01-01T00:00:00Z' + (g - random()) / $1::int * interval '31 days',
       (ARRAY['view', 'click', 'search', 'add-to-cart', 'checkout', 'purchase', 'signup', 'error'])
         [1 + floor(power(random(), 2) * 8)::int],
       'source-' || lpad((1 + floor(power(random(), 1.5) * 40))::int::text, 2, '0'),
       floor(-ln(1 - random()) * 120)::int,
       jsonb_build_object('seq', g, 'region', (ARRAY['eu', 'us', 'apac'])[1 + g % 3])
FROM generate_series(1, $1::int) AS g`

export async function seedEvents (options: SeedOptions): Promise<SeedResult> {
  const started = performance.now()
  if (options.count <= 0) return { inserted: 0, durationMs: 0 }

  const client = new pg.Client({ connectionString: options.connectionString, application_name: 'hibeaver-seed' })
  // A connection lost mid-seed also fails the statement running on it, which is what reports
  // it; without a listener the 'error' event itself would crash the process.
  client.on('error', () => {})
  await client.connect()
  try {
    const inserted = await insertOnce(client, options.count)
    // Fresh statistics and visibility map: without them the first reports plan badly and the
    // index-only scans read the heap.
    if (inserted > 0) await client.query('VACUUM (ANALYZE) events')
    return { inserted, durationMs: Math.round(performance.now() - started) }
  } finally {
    await client.end()
  }
}

async function insertOnce (client: pg.Client, count: number): Promise<number> {
  await client.query('BEGIN')
  try {
    await client.query('SELECT pg_advisory_xact_lock(hashtext($1))', [SEED_LOCK])
    const { rows } = await client.query<{ seeded: boolean }>('SELECT EXISTS (SELECT 1 FROM events) AS seeded')
    if (rows[0]?.seeded === true) {
      await client.query('ROLLBACK')
      return 0
    }
    await client.query('SELECT setseed(0.42)')
    const result = await client.query(INSERT, [count])
    await client.query('COMMIT')
    return result.rowCount ?? 0
  } catch (err) {
    await client.query('ROLLBACK').catch(() => {})
    throw err
  }
}
