-- llmtap PostgreSQL schema, version 1.
--
-- llm_requests: one row per request; columns are ingest/record.Record in
-- snake_case. event_id is the idempotency key: writers insert with
-- ON CONFLICT (event_id) DO NOTHING, so a replayed event is stored once.
-- The table is not partitioned: a partitioned table's unique key must contain
-- the partition column (event_id, ts), and the extra partition maintenance did
-- not pay at the ingest rates measured (see ingest/store/postgres doc).
-- Token columns and ttfb/ttft are NULL when not reported (distinct from 0).
CREATE TABLE IF NOT EXISTS llm_requests (
    event_id          uuid             NOT NULL PRIMARY KEY,
    ts                timestamptz      NOT NULL,
    source            text             NOT NULL DEFAULT '',
    consumer          text             NOT NULL DEFAULT '',
    key_id            text             NOT NULL DEFAULT '',
    key_prefix        text             NOT NULL DEFAULT '',
    client_ip         text             NOT NULL DEFAULT '',
    method            text             NOT NULL DEFAULT '',
    path              text             NOT NULL DEFAULT '',
    request_id        text             NOT NULL DEFAULT '',
    endpoint          text             NOT NULL DEFAULT '',
    model             text             NOT NULL DEFAULT '',
    status            integer          NOT NULL DEFAULT 0,
    stream            boolean          NOT NULL DEFAULT false,
    latency_ms        double precision NOT NULL DEFAULT 0,
    ttfb_ms           double precision,
    ttft_ms           double precision,
    prompt_tokens     bigint,
    completion_tokens bigint,
    total_tokens      bigint,
    usage_source      text             NOT NULL DEFAULT '',
    prompt            text             NOT NULL DEFAULT '',
    response          text             NOT NULL DEFAULT '',
    reasoning         text             NOT NULL DEFAULT '',
    tool_calls        text             NOT NULL DEFAULT '',
    finish_reason     text             NOT NULL DEFAULT '',
    error             text             NOT NULL DEFAULT '',
    request_headers   text             NOT NULL DEFAULT '',
    response_headers  text             NOT NULL DEFAULT '',
    request_body      text             NOT NULL DEFAULT '',
    response_body     text             NOT NULL DEFAULT '',
    truncated         boolean          NOT NULL DEFAULT false,
    ingested_at       timestamptz      NOT NULL DEFAULT now()
);

-- Time-range scans and "most recent first" (ORDER BY ts DESC LIMIT n).
CREATE INDEX IF NOT EXISTS llm_requests_ts_idx ON llm_requests (ts);
-- Per-consumer dashboards and audit queries.
CREATE INDEX IF NOT EXISTS llm_requests_consumer_ts_idx ON llm_requests (consumer, ts);

-- llm_rejects: entries that could not be decoded, kept byte for byte.
-- id is a content hash of (source, reason, payload) computed by the writer,
-- so a retried batch does not store its rejects twice.
CREATE TABLE IF NOT EXISTS llm_rejects (
    id          uuid        NOT NULL PRIMARY KEY,
    received_at timestamptz NOT NULL,
    source      text        NOT NULL DEFAULT '',
    reason      text        NOT NULL DEFAULT '',
    payload     bytea       NOT NULL
);

CREATE INDEX IF NOT EXISTS llm_rejects_received_at_idx ON llm_rejects (received_at);
