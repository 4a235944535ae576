-- llmtap audit query "usage" (PostgreSQL).
--
-- Per consumer: requests, errors (status >= 400), token sums (NULL usage
-- counts as 0 and is counted in requests_without_usage), and p50/p95 of
-- latency_ms by linear interpolation (percentile_cont), rounded half up to
-- 0.001 ms in floating point (floor(x * 1000 + 0.5) / 1000, the same
-- operations as in the ClickHouse file, so both give the same double).
-- Largest consumers first.
--
-- Parameters are psql variables; llmtap turns each :'name' into a bind
-- parameter ($1, $2, …), so values never become SQL text. Run by hand:
--
--   psql "postgres://postgres@127.0.0.1:5432/llmtap" \
--     -v from=2026-01-01T00:00:00Z -v to=2026-01-02T00:00:00Z \
--     -v consumer= -v key_id= -f query/sql/postgres/usage.sql
--
-- Every variable named above must be set (an empty consumer or key_id means
-- all). The window is [from, to) on ts. Times print as UTC RFC 3339 text.
SELECT
    consumer,
    count(*)::bigint                                        AS requests,
    (count(*) FILTER (WHERE status >= 400))::bigint         AS errors,
    coalesce(sum(prompt_tokens), 0)::bigint                 AS prompt_tokens,
    coalesce(sum(completion_tokens), 0)::bigint             AS completion_tokens,
    coalesce(sum(total_tokens), 0)::bigint                  AS total_tokens,
    (count(*) FILTER (WHERE total_tokens IS NULL))::bigint  AS requests_without_usage,
    floor(percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms) * 1000 + 0.5) / 1000  AS p50_latency_ms,
    floor(percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms) * 1000 + 0.5) / 1000 AS p95_latency_ms
FROM llm_requests
WHERE ts >= :'from'::timestamptz
  AND ts < :'to'::timestamptz
  AND (:'consumer' = '' OR consumer = :'consumer')
  AND (:'key_id' = '' OR key_id = :'key_id')
GROUP BY consumer
ORDER BY requests DESC, consumer COLLATE "C";
