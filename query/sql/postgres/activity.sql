-- llmtap audit query "activity" (PostgreSQL).
--
-- Everything one consumer or one key did in the window, in time order,
-- at most :'limit' rows (set consumer or key_id, or both).
--
-- Parameters are psql variables; llmtap turns each :'name' into a bind
-- parameter ($1, $2, …), so values never become SQL text. Run by hand:
--
--   psql "postgres://postgres@127.0.0.1:5432/llmtap" \
--     -v from=2026-01-01T00:00:00Z -v to=2026-01-02T00:00:00Z \
--     -v consumer= -v key_id=k_123 -v limit=1000 -f query/sql/postgres/activity.sql
--
-- Every variable named above must be set (an empty consumer or key_id means
-- all). The window is [from, to) on ts. Times print as UTC RFC 3339 text.
SELECT
    to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS time,
    event_id::text AS event_id,
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
FROM llm_requests
WHERE ts >= :'from'::timestamptz
  AND ts < :'to'::timestamptz
  AND (:'consumer' = '' OR consumer = :'consumer')
  AND (:'key_id' = '' OR key_id = :'key_id')
ORDER BY ts, event_id
LIMIT :'limit'::bigint;
