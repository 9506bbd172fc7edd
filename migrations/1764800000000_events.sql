-- Up Migration

-- Events as handlers record them. occurred_at is when it happened (client's clock), recorded_at
-- when HiBeaver stored it.
CREATE TABLE events (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  occurred_at timestamptz NOT NULL,
  type text NOT NULL,
  source text NOT NULL,
  duration_ms integer NOT NULL CHECK (duration_ms >= 0),
  payload jsonb NOT NULL DEFAULT '{}',
  recorded_at timestamptz NOT NULL DEFAULT now()
);

-- event-counts: counts by type over a window, answered from the index alone.
CREATE INDEX events_occurred_at_type_idx ON events (occurred_at, type);

-- source-percentiles: durations by source over a window, also from the index alone.
CREATE INDEX events_occurred_at_source_idx ON events (occurred_at, source) INCLUDE (duration_ms);

-- One row per idempotency key of record-events: the batch's fingerprint and the first answer.
CREATE TABLE event_batches (
  idempotency_key text PRIMARY KEY,
  request_hash text NOT NULL,
  result jsonb NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);

-- Down Migration

DROP TABLE event_batches;
DROP TABLE events;
