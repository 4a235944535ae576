-- llmtap audit query "rpm" (PostgreSQL).
--
-- Requests per consumer per minute (UTC minute start), with errors and
-- total tokens. Minutes without requests are absent.
--
-- Parameters are psql variables; llmtap turns each :'name' into a bind
-- parameter ($1, $2, …), so values never become SQL text. Run by hand:
--
--   psql "postgres://postgres@127.0.0.1:5432/llmtap" \
--     -v from=2026-01-01T00:00:00Z -v to=2026-01-02T00:00:00Z \
--     -v consumer= -v key_id= -f query/sql/postgres/rpm.sql
--
-- Every variable named above must be set (an empty consumer or key_id means
-- all). The window is [from, to) on ts. Times print as UTC RFC 3339 text.
SELECT
    to_char(date_trunc('minute', ts AT TIME ZONE 'UTC'), 'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS minute,
    consumer,
    count(*)::bigint                                AS requests,
    (count(*) FILTER (WHERE status >= 400))::bigint AS errors,
    coalesce(sum(total_tokens), 0)::bigint          AS total_tokens
FROM llm_requests
WHERE ts >= :'from'::timestamptz
  AND ts < :'to'::timestamptz
  AND (:'consumer' = '' OR consumer = :'consumer')
  AND (:'key_id' = '' OR key_id = :'key_id')
GROUP BY 1, consumer
ORDER BY minute, consumer COLLATE "C";
