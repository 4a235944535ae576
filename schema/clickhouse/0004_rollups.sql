-- Per-minute and per-hour rollups of llm_requests for the dashboards
-- (dashboards/ROLLUPS.md). A panel over 24 h of 10 M requests reads ~60 k
-- rollup rows (or fewer) instead of 10 M raw rows. Runs on 18.16 and current
-- releases.
--
-- Tables (AggregatingMergeTree: read them with -Merge combinators, e.g.
-- countMerge(requests), sumMerge(tokens_sum),
-- quantilesTDigestMerge(0.5, 0.95)(latency_q)[2]):
--   llm_usage_1m      (minute, consumer)
--   llm_usage_1h      (hour, consumer)
--   llm_usage_all_1m  (minute): all consumers together, for "All" percentiles
--   llm_status_1m     (minute, consumer, status), SummingMergeTree: error
--                     responses (status >= 400) only; read with sum(requests)
-- errors counts status >= 400; tokens_sum is total_tokens, or prompt +
-- completion when the total was not reported (as the panels count it).
-- Percentiles are t-digest estimates (within a few % of the exact value on
-- dense data; see dashboards/ROLLUPS.md for measured errors).
--
-- Consistency: a materialized view per table sees every INSERT block into
-- llm_requests and adds it, so rows written by the store appear in the
-- rollups at once. What the views do not follow:
--   * A duplicate that slips past the writer's pre-insert check (two
--     processes writing the same retried event at once) is counted twice by
--     the rollups for good; the raw table counts it twice only until its
--     parts merge (ReplacingMergeTree).
--   * ALTER TABLE llm_requests UPDATE (erasure of content columns) does not
--     touch the rolled-up columns: nothing to do.
--   * ALTER TABLE llm_requests DELETE and TRUNCATE are not seen. Retention
--     that deletes raw rows older than a cutoff must also delete the rollup
--     rows before it, e.g. for cutoff C:
--       ALTER TABLE llm_usage_1m     DELETE WHERE minute < toStartOfMinute(C)
--       ALTER TABLE llm_usage_all_1m DELETE WHERE minute < toStartOfMinute(C)
--       ALTER TABLE llm_status_1m    DELETE WHERE minute < toStartOfMinute(C)
--       ALTER TABLE llm_usage_1h     DELETE WHERE hour   < toStartOfHour(C)
--     (the minute or hour holding C keeps the counts of its deleted rows).
-- Aliases must not repeat a source column name: 18.16 substitutes the alias
-- inside the aggregate (sumState(x) AS prompt_tokens would fail).

CREATE TABLE IF NOT EXISTS llm_usage_1m (
    minute         DateTime('UTC'),
    consumer       String,
    requests       AggregateFunction(count),
    errors         AggregateFunction(countIf, UInt8),
    prompt_sum     AggregateFunction(sum, Int64),
    completion_sum AggregateFunction(sum, Int64),
    tokens_sum     AggregateFunction(sum, Int64),
    latency_q      AggregateFunction(quantilesTDigest(0.5, 0.95), Float64),
    ttft_q         AggregateFunction(quantilesTDigestIf(0.5, 0.95), Float64, UInt8)
) ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (minute, consumer);

CREATE TABLE IF NOT EXISTS llm_usage_1h (
    hour           DateTime('UTC'),
    consumer       String,
    requests       AggregateFunction(count),
    errors         AggregateFunction(countIf, UInt8),
    prompt_sum     AggregateFunction(sum, Int64),
    completion_sum AggregateFunction(sum, Int64),
    tokens_sum     AggregateFunction(sum, Int64),
    latency_q      AggregateFunction(quantilesTDigest(0.5, 0.95), Float64),
    ttft_q         AggregateFunction(quantilesTDigestIf(0.5, 0.95), Float64, UInt8)
) ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (hour, consumer);

CREATE TABLE IF NOT EXISTS llm_usage_all_1m (
    minute         DateTime('UTC'),
    requests       AggregateFunction(count),
    latency_q      AggregateFunction(quantilesTDigest(0.5, 0.95), Float64),
    ttft_q         AggregateFunction(quantilesTDigestIf(0.5, 0.95), Float64, UInt8)
) ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY minute;

CREATE TABLE IF NOT EXISTS llm_status_1m (
    minute   DateTime('UTC'),
    consumer String,
    status   Int32,
    requests UInt64
) ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (minute, consumer, status);

-- Backfill from the rows stored before the views exist, once: a re-run of
-- this file skips a table that already holds rows. Rows inserted between a
-- backfill and its view's creation are missed (run the migration before
-- starting the writers, as usual).
INSERT INTO llm_usage_1m
SELECT toStartOfMinute(ts) AS minute, consumer,
    countState() AS requests,
    countIfState(status >= 400) AS errors,
    sumState(ifNull(prompt_tokens, toInt64(0))) AS prompt_sum,
    sumState(ifNull(completion_tokens, toInt64(0))) AS completion_sum,
    sumState(ifNull(total_tokens, ifNull(prompt_tokens, toInt64(0)) + ifNull(completion_tokens, toInt64(0)))) AS tokens_sum,
    quantilesTDigestState(0.5, 0.95)(latency_ms) AS latency_q,
    quantilesTDigestIfState(0.5, 0.95)(ifNull(ttft_ms, 0.), isNotNull(ttft_ms)) AS ttft_q
FROM llm_requests
WHERE (SELECT count() FROM llm_usage_1m) = 0
GROUP BY minute, consumer;

INSERT INTO llm_usage_1h
SELECT toStartOfHour(ts) AS hour, consumer,
    countState() AS requests,
    countIfState(status >= 400) AS errors,
    sumState(ifNull(prompt_tokens, toInt64(0))) AS prompt_sum,
    sumState(ifNull(completion_tokens, toInt64(0))) AS completion_sum,
    sumState(ifNull(total_tokens, ifNull(prompt_tokens, toInt64(0)) + ifNull(completion_tokens, toInt64(0)))) AS tokens_sum,
    quantilesTDigestState(0.5, 0.95)(latency_ms) AS latency_q,
    quantilesTDigestIfState(0.5, 0.95)(ifNull(ttft_ms, 0.), isNotNull(ttft_ms)) AS ttft_q
FROM llm_requests
WHERE (SELECT count() FROM llm_usage_1h) = 0
GROUP BY hour, consumer;

INSERT INTO llm_usage_all_1m
SELECT toStartOfMinute(ts) AS minute,
    countState() AS requests,
    quantilesTDigestState(0.5, 0.95)(latency_ms) AS latency_q,
    quantilesTDigestIfState(0.5, 0.95)(ifNull(ttft_ms, 0.), isNotNull(ttft_ms)) AS ttft_q
FROM llm_requests
WHERE (SELECT count() FROM llm_usage_all_1m) = 0
GROUP BY minute;

INSERT INTO llm_status_1m
SELECT toStartOfMinute(ts) AS minute, consumer, status, count() AS requests
FROM llm_requests
WHERE status >= 400 AND (SELECT count() FROM llm_status_1m) = 0
GROUP BY minute, consumer, status;

CREATE MATERIALIZED VIEW IF NOT EXISTS llm_usage_1m_mv TO llm_usage_1m AS
SELECT toStartOfMinute(ts) AS minute, consumer,
    countState() AS requests,
    countIfState(status >= 400) AS errors,
    sumState(ifNull(prompt_tokens, toInt64(0))) AS prompt_sum,
    sumState(ifNull(completion_tokens, toInt64(0))) AS completion_sum,
    sumState(ifNull(total_tokens, ifNull(prompt_tokens, toInt64(0)) + ifNull(completion_tokens, toInt64(0)))) AS tokens_sum,
    quantilesTDigestState(0.5, 0.95)(latency_ms) AS latency_q,
    quantilesTDigestIfState(0.5, 0.95)(ifNull(ttft_ms, 0.), isNotNull(ttft_ms)) AS ttft_q
FROM llm_requests
GROUP BY minute, consumer;

CREATE MATERIALIZED VIEW IF NOT EXISTS llm_usage_1h_mv TO llm_usage_1h AS
SELECT toStartOfHour(ts) AS hour, consumer,
    countState() AS requests,
    countIfState(status >= 400) AS errors,
    sumState(ifNull(prompt_tokens, toInt64(0))) AS prompt_sum,
    sumState(ifNull(completion_tokens, toInt64(0))) AS completion_sum,
    sumState(ifNull(total_tokens, ifNull(prompt_tokens, toInt64(0)) + ifNull(completion_tokens, toInt64(0)))) AS tokens_sum,
    quantilesTDigestState(0.5, 0.95)(latency_ms) AS latency_q,
    quantilesTDigestIfState(0.5, 0.95)(ifNull(ttft_ms, 0.), isNotNull(ttft_ms)) AS ttft_q
FROM llm_requests
GROUP BY hour, consumer;

CREATE MATERIALIZED VIEW IF NOT EXISTS llm_usage_all_1m_mv TO llm_usage_all_1m AS
SELECT toStartOfMinute(ts) AS minute,
    countState() AS requests,
    quantilesTDigestState(0.5, 0.95)(latency_ms) AS latency_q,
    quantilesTDigestIfState(0.5, 0.95)(ifNull(ttft_ms, 0.), isNotNull(ttft_ms)) AS ttft_q
FROM llm_requests
GROUP BY minute;

CREATE MATERIALIZED VIEW IF NOT EXISTS llm_status_1m_mv TO llm_status_1m AS
SELECT toStartOfMinute(ts) AS minute, consumer, status, count() AS requests
FROM llm_requests
WHERE status >= 400
GROUP BY minute, consumer, status;
