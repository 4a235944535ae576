-- llmtap export (PostgreSQL): every column of llm_requests in a window, in
-- time order. `llmtap export` runs this file once per slice of the window
-- (see export_plan.sql) inside one REPEATABLE READ READ ONLY transaction, so
-- the whole file is one consistent snapshot, and writes JSONL or CSV.
--
-- Parameters are psql variables, bound as $1, $2, … by llmtap. By hand:
--
--   psql "postgres://postgres@127.0.0.1:5432/llmtap" \
--     -v from=2026-01-01T00:00:00Z -v to=2026-01-02T00:00:00Z \
--     -v consumer= -v key_id= -f query/sql/postgres/export.sql
--
-- The window is [from, to) on ts; an empty consumer or key_id means all.
SELECT
    event_id::text AS event_id,
    ts,
    source,
    consumer,
    key_id,
    key_prefix,
    client_ip,
    method,
    path,
    request_id,
    endpoint,
    model,
    status,
    stream,
    latency_ms,
    ttfb_ms,
    ttft_ms,
    prompt_tokens,
    completion_tokens,
    total_tokens,
    usage_source,
    prompt,
    response,
    reasoning,
    tool_calls,
    finish_reason,
    error,
    request_headers,
    response_headers,
    request_body,
    response_body,
    truncated,
    ingested_at,
    chain_batch,
    text_hash,
    body_hash
FROM llm_requests
WHERE ts >= :'from'::timestamptz
  AND ts < :'to'::timestamptz
  AND (:'consumer' = '' OR consumer = :'consumer')
  AND (:'key_id' = '' OR key_id = :'key_id')
ORDER BY ts, event_id;
