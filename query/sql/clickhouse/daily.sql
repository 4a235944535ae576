-- llmtap audit query "daily" (ClickHouse; runs on 18.16 and current releases).
--
-- Requests and tokens per consumer per UTC day.
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
--     --multiquery < query/sql/clickhouse/daily.sql
--
-- (clickhouse-client 18.x has no --param_: replace each {name:Type} by a
-- quoted literal, or print the filled-in query with query.Render.)
-- Every parameter named above must be set (an empty consumer or key_id means
-- all). The window is [from, to) on ts (whole seconds, UTC). FINAL merges
-- rows that a replayed event may have stored twice before ClickHouse's
-- background merge, so nothing is counted twice. Times print as UTC RFC 3339
-- text with microseconds from ts + ts_us.
SELECT
    day,
    consumer,
    requests,
    errors,
    sum_prompt AS prompt_tokens,
    sum_completion AS completion_tokens,
    sum_total AS total_tokens
FROM
(
    SELECT
        formatDateTime(ts, '%Y-%m-%d')      AS day,
        consumer,
        count()                             AS requests,
        countIf(status >= 400)              AS errors,
        ifNull(sum(prompt_tokens), 0)       AS sum_prompt,
        ifNull(sum(completion_tokens), 0)   AS sum_completion,
        ifNull(sum(total_tokens), 0)        AS sum_total
    FROM llm_requests FINAL
    WHERE ts >= {from:DateTime}
      AND ts < {to:DateTime}
      AND ({consumer:String} = '' OR consumer = {consumer:String})
      AND ({key_id:String} = '' OR key_id = {key_id:String})
    GROUP BY day, consumer
)
ORDER BY day, consumer;
