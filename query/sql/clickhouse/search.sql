-- llmtap audit query "search" (ClickHouse; runs on 18.16 and current releases).
--
-- Requests whose prompt or response contains {text:String}, ignoring
-- case (a plain substring, no wildcards), newest first, at most
-- {limit:UInt32} rows.
--
-- Parameters use ClickHouse's query-parameter syntax {name:Type}. llmtap
-- replaces each with a literal it renders itself (times as toDateTime(…, 'UTC'),
-- strings quoted with every backslash and quote escaped, numbers as digits),
-- so a value can never change the query. Run by hand with a client that has
-- query parameters (ClickHouse 19.15 and later):
--
--   clickhouse-client --database llmtap \
--     --param_from='2026-01-01 00:00:00' --param_to='2026-01-02 00:00:00' \
--     --param_consumer='' --param_key_id='' --param_text='invoice' --param_limit=100 \
--     --multiquery < query/sql/clickhouse/search.sql
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
    consumer,
    model,
    status,
    prompt,
    response,
    latency_ms,
    total_tokens,
    toString(event_id) AS event_id
FROM llm_requests FINAL
WHERE ts >= {from:DateTime}
  AND ts < {to:DateTime}
  AND ({consumer:String} = '' OR consumer = {consumer:String})
  AND ({key_id:String} = '' OR key_id = {key_id:String})
  AND (positionCaseInsensitiveUTF8(prompt, {text:String}) > 0
       OR positionCaseInsensitiveUTF8(response, {text:String}) > 0)
ORDER BY ts DESC, ts_us DESC, event_id DESC
LIMIT {limit:UInt32};
