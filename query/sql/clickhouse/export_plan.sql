-- llmtap export plan (ClickHouse): rows per UTC minute in the window.
-- `llmtap export` reads it to cut the window into slices of a bounded
-- number of rows, then runs export.sql once per slice, so neither side ever
-- sorts or holds more than one slice. Only sizes the slices, so no FINAL.
-- Parameters as in export.sql.
SELECT
    toInt64(intDiv(toUInt32(ts), 60) * 60) AS minute,
    toInt64(count())                       AS rows
FROM llm_requests
WHERE ts >= {from:DateTime}
  AND ts < {to:DateTime}
  AND ({consumer:String} = '' OR consumer = {consumer:String})
  AND ({key_id:String} = '' OR key_id = {key_id:String})
GROUP BY minute
ORDER BY minute;
