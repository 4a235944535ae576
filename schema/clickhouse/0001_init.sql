-- llmtap ClickHouse schema, version 1. Runs on ClickHouse 18.16 and current
-- releases (no LowCardinality, TTL or DateTime64 here). {{codec_text}} is
-- filled in by schema.Migrate after SELECT version(): CODEC(ZSTD(1)) for the
-- large text columns on servers >= 20.1, nothing on older ones (18.16 has no
-- column codecs and compresses with its default, LZ4).
--
-- llm_requests: one row per request; columns are ingest/record.Record in
-- snake_case, plus ts_us. ts is DateTime('UTC') (seconds, 18.16 has no
-- DateTime64); ts_us holds the microseconds within that second, so
-- ts + ts_us / 1e6 is the exact start time (same precision as PostgreSQL).
-- Booleans are UInt8 (0/1). Token columns and ttfb/ttft are NULL when not
-- reported (distinct from 0).
--
-- Idempotency: the writer skips events whose event_id is already stored
-- (pre-insert check) and never writes one event twice concurrently from one
-- process. As a backstop, ReplacingMergeTree collapses rows with equal
-- ORDER BY key (consumer, ts, event_id) at merge time; a replay carries the
-- same consumer and ts, so it collapses. Queries need no FINAL.
CREATE TABLE IF NOT EXISTS llm_requests (
    event_id          UUID,
    ts                DateTime('UTC'),
    ts_us             UInt32,
    source            String,
    consumer          String,
    key_id            String,
    key_prefix        String,
    client_ip         String,
    method            String,
    path              String,
    request_id        String,
    endpoint          String,
    model             String,
    status            Int32,
    stream            UInt8,
    latency_ms        Float64,
    ttfb_ms           Nullable(Float64),
    ttft_ms           Nullable(Float64),
    prompt_tokens     Nullable(Int64),
    completion_tokens Nullable(Int64),
    total_tokens      Nullable(Int64),
    usage_source      String,
    prompt            String {{codec_text}},
    response          String {{codec_text}},
    reasoning         String {{codec_text}},
    tool_calls        String {{codec_text}},
    finish_reason     String,
    error             String,
    request_headers   String {{codec_text}},
    response_headers  String {{codec_text}},
    request_body      String {{codec_text}},
    response_body     String {{codec_text}},
    truncated         UInt8,
    ingested_at       DateTime('UTC')
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (consumer, ts, event_id);

-- llm_rejects: entries that could not be decoded, kept byte for byte.
-- id is a content hash of (source, reason, payload) computed by the writer,
-- which skips ids already stored; ReplacingMergeTree on id is the backstop
-- (a retry has a new received_at, so id alone is the key).
CREATE TABLE IF NOT EXISTS llm_rejects (
    id          UUID,
    received_at DateTime('UTC'),
    source      String,
    reason      String,
    payload     String {{codec_text}}
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(received_at)
ORDER BY id;
