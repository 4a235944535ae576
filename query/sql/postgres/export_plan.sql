-- llmtap export plan (PostgreSQL): rows per UTC minute in the window.
-- `llmtap export` reads it to cut the window into slices of a bounded
-- number of rows, then runs export.sql once per slice, so neither side ever
-- sorts or holds more than one slice. Parameters as in export.sql.
SELECT
    (floor(extract(epoch FROM ts) / 60) * 60)::bigint AS minute,
    count(*)::bigint                                   AS rows
FROM llm_requests
WHERE ts >= :'from'::timestamptz
  AND ts < :'to'::timestamptz
  AND (:'consumer' = '' OR consumer = :'consumer')
  AND (:'key_id' = '' OR key_id = :'key_id')
GROUP BY 1
ORDER BY 1;
