-- llmtap export (ClickHouse): every column of llm_requests in a window, in
-- time order. `llmtap export` runs this file once per slice of the window
-- (see export_plan.sql) and writes JSONL or CSV, where ts carries ts_us
-- (microseconds), so the file has the same columns as from PostgreSQL.
-- No FINAL (it costs several times the query on 18.16): an event that a
-- replay stored twice has the same ts, ts_us and event_id, so its copies
-- arrive next to each other in this order and llmtap writes the first only.
-- (By hand, add FINAL after llm_requests to get each event once.)
--
-- Parameters use {name:Type}; llmtap renders each as an escaped literal. By
-- hand, with a client that has query parameters (ClickHouse 19.15 and later):
--
--   clickhouse-client --database llmtap \
--     --param_from='2026-01-01 00:00:00' --param_to='2026-01-02 00:00:00' \
--     --param_consumer='' --param_key_id='' \
--     --multiquery < query/sql/clickhouse/export.sql
--
-- The window is [from, to) on ts (whole seconds, UTC); an empty consumer or
-- key_id means all.
SELECT
    toString(event_id) AS event_id,
    ts,
    ts_us,
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
WHERE ts >= {from:DateTime}
  AND ts < {to:DateTime}
  AND ({consumer:String} = '' OR consumer = {consumer:String})
  AND ({key_id:String} = '' OR key_id = {key_id:String})
ORDER BY ts, ts_us, event_id;
