-- llmtap audit query "errors" (PostgreSQL).
--
-- Failed requests (status >= 400; 499 means the client left) per status
-- code and consumer, with the first and last time seen. Most frequent first.
--
-- Parameters are psql variables; llmtap turns each :'name' into a bind
-- parameter ($1, $2, …), so values never become SQL text. Run by hand:
--
--   psql "postgres://postgres@127.0.0.1:5432/llmtap" \
--     -v from=2026-01-01T00:00:00Z -v to=2026-01-02T00:00:00Z \
--     -v consumer= -v key_id= -f query/sql/postgres/errors.sql
--
-- Every variable named above must be set (an empty consumer or key_id means
-- all). The window is [from, to) on ts. Times print as UTC RFC 3339 text.
SELECT
    status,
    consumer,
    count(*)::bigint                                                      AS requests,
    to_char(min(ts) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS first_seen,
    to_char(max(ts) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS last_seen
FROM llm_requests
WHERE ts >= :'from'::timestamptz
  AND ts < :'to'::timestamptz
  AND (:'consumer' = '' OR consumer = :'consumer')
  AND (:'key_id' = '' OR key_id = :'key_id')
  AND status >= 400
GROUP BY status, consumer
ORDER BY requests DESC, status, consumer COLLATE "C";
