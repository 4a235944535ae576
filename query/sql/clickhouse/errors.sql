-- llmtap audit query "errors" (ClickHouse; runs on 18.16 and current releases).
--
-- Failed requests (status >= 400; 499 means the client left) per status
-- code and consumer, with the first and last time seen. Most frequent first.
--
-- Parameters use ClickHouse's query-parameter syntax {name:Type}. llmtap
-- replaces each with a literal it renders itself (times as toDateTime(…, 'UTC'),
-- strings quoted with every backslash and quote escaped, numbers as digits),
-- so a value can never change the query. Run by hand with a client that has
-- query parameters (ClickHouse 19.15 and later):
--
--   clickhouse-client --database llmtap \
--     --param_from='2026-01-01 00:00:00' --param_to='2026-01-02 00:00:00' \
--     --param_consumer='' --param_key_id='' \
--     --multiquery < query/sql/clickhouse/errors.sql
--
-- (clickhouse-client 18.x has no --param_: replace each {name:Type} by a
-- quoted literal, or print the filled-in query with query.Render.)
-- Every parameter named above must be set (an empty consumer or key_id means
-- all). The window is [from, to) on ts (whole seconds, UTC). FINAL merges
-- rows that a replayed event may have stored twice before ClickHouse's
-- background merge, so nothing is counted twice. Times print as UTC RFC 3339
-- text with microseconds from ts + ts_us.
SELECT
    status,
    consumer,
    requests,
    concat(formatDateTime(toDateTime(intDiv(first_us, 1000000), 'UTC'), '%Y-%m-%dT%H:%M:%S'), '.', substring(toString(1000000 + first_us % 1000000), 2), 'Z') AS first_seen,
    concat(formatDateTime(toDateTime(intDiv(last_us, 1000000), 'UTC'), '%Y-%m-%dT%H:%M:%S'), '.', substring(toString(1000000 + last_us % 1000000), 2), 'Z') AS last_seen
FROM
(
    SELECT
        status,
        consumer,
        count()                                    AS requests,
        min(toUInt64(ts) * 1000000 + ts_us)        AS first_us,
        max(toUInt64(ts) * 1000000 + ts_us)        AS last_us
    FROM llm_requests FINAL
    WHERE ts >= {from:DateTime}
  AND ts < {to:DateTime}
  AND ({consumer:String} = '' OR consumer = {consumer:String})
  AND ({key_id:String} = '' OR key_id = {key_id:String})
      AND status >= 400
    GROUP BY status, consumer
)
ORDER BY requests DESC, status, consumer;
