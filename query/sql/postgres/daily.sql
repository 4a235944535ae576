-- llmtap audit query "daily" (PostgreSQL).
--
-- Requests and tokens per consumer per UTC day.
--
-- Parameters are psql variables; llmtap turns each :'name' into a bind
-- parameter ($1, $2, …), so values never become SQL text. Run by hand:
--
--   psql "postgres://postgres@127.0.0.1:5432/llmtap" \
--     -v from=2026-01-01T00:00:00Z -v to=2026-01-02T00:00:00Z \
--     -v consumer= -v key_id= -f query/sql/postgres/daily.sql
--
-- Every variable named above must be set (an empty consumer or key_id means
-- all). The window is [from, to) on ts. Times print as UTC RFC 3339 text.
SELECT
    to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD')    AS day,
    consumer,
    count(*)::bigint                                AS requests,
    (count(*) FILTER (WHERE status >= 400))::bigint AS errors,
    coalesce(sum(prompt_tokens), 0)::bigint         AS prompt_tokens,
    coalesce(sum(completion_tokens), 0)::bigint     AS completion_tokens,
    coalesce(sum(total_tokens), 0)::bigint          AS total_tokens
FROM llm_requests
WHERE ts >= :'from'::timestamptz
  AND ts < :'to'::timestamptz
  AND (:'consumer' = '' OR consumer = :'consumer')
  AND (:'key_id' = '' OR key_id = :'key_id')
GROUP BY 1, consumer
ORDER BY day, consumer COLLATE "C";
