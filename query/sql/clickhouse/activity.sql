-- llmtap audit query "activity" (ClickHouse; runs on 18.16 and current releases).
--
-- Everything one consumer or one key did in the window, in time order,
-- at most {limit:UInt32} rows (set consumer or key_id, or both). stream
-- prints as 1/0 (UInt8); llmtap shows it as true/false.
--
-- Parameters use ClickHouse's query-parameter syntax {name:Type}. llmtap
-- replaces each with a literal it renders itself (times as toDateTime(…, 'UTC'),
-- strings quoted with every backslash and quote escaped, numbers as digits),
-- so a value can never change the query. Run by hand with a client that has
-- query parameters (ClickHouse 19.15 and later):
--
--   clickhouse-client --database llmtap \
--     --param_from='2026-01-01 00:00:00' --param_to='2026-01-02 00:00:00' \
--     --param_consumer='' --param_key_id='k_123' --param_limit=1000 \
--     --multiquery < query/sql/clickhouse/activity.sql
--
-- (clickhouse-client 18.x has no --param_: replace each {name:Type} by a
-- quoted literal, or print the filled-in query with query.Render.)
-- Every parameter named above must be set (an empty consumer or key_id means
-- all). The window is [from, to) on ts (whole seconds, UTC). FINAL merges
-- rows that a replayed event may have stored twice before ClickHouse's
-- background merge, so nothing is counted twice. Times print as UTC RFC 3339
-- text with microseconds from ts + ts_us.
SELECT
    concat(formatDateTime(ts, '%Y-%m-%dT%H:%M:%S'), '.', substring(toString(1000000 + ts_us), 2), 'Z') AS time,
    toString(event_id) AS event_id,
    source,
    consumer,
    key_id,
    key_prefix,
    client_ip,
    method,
    path,
    model,
    status,
    stream,
    latency_ms,
    ttft_ms,
    prompt_tokens,
    completion_tokens,
    total_tokens,
    finish_reason,
    error,
    prompt,
    response
FROM llm_requests FINAL
WHERE ts >= {from:DateTime}
  AND ts < {to:DateTime}
  AND ({consumer:String} = '' OR consumer = {consumer:String})
  AND ({key_id:String} = '' OR key_id = {key_id:String})
ORDER BY ts, ts_us, event_id
LIMIT {limit:UInt32};
