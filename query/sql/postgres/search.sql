-- llmtap audit query "search" (PostgreSQL).
--
-- Requests whose prompt or response contains :'text', ignoring case
-- (a plain substring: % and _ are not wildcards), newest first, at most
-- :'limit' rows.
--
-- Parameters are psql variables; llmtap turns each :'name' into a bind
-- parameter ($1, $2, …), so values never become SQL text. Run by hand:
--
--   psql "postgres://postgres@127.0.0.1:5432/llmtap" \
--     -v from=2026-01-01T00:00:00Z -v to=2026-01-02T00:00:00Z \
--     -v consumer= -v key_id= -v text=invoice -v limit=100 -f query/sql/postgres/search.sql
--
-- Every variable named above must be set (an empty consumer or key_id means
-- all). The window is [from, to) on ts. Times print as UTC RFC 3339 text.
SELECT
    to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS time,
    consumer,
    model,
    status,
    prompt,
    response,
    latency_ms,
    total_tokens,
    event_id::text AS event_id
FROM llm_requests
WHERE ts >= :'from'::timestamptz
  AND ts < :'to'::timestamptz
  AND (:'consumer' = '' OR consumer = :'consumer')
  AND (:'key_id' = '' OR key_id = :'key_id')
  AND (strpos(lower(prompt), lower(:'text')) > 0
       OR strpos(lower(response), lower(:'text')) > 0)
ORDER BY ts DESC, event_id DESC
LIMIT :'limit'::bigint;
