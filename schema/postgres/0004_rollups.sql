-- Per-minute and per-hour rollups of llm_requests for the dashboards
-- (dashboards/ROLLUPS.md). A panel over 24 h of 10 M requests reads ~60 k
-- rollup rows instead of 10 M raw rows.
--
-- Consistency: statement-level triggers with transition tables keep the
-- rollups equal to the raw rows in the same transaction as the change:
--   AFTER INSERT   adds exactly the rows inserted (COPY, INSERT, and
--                  INSERT … ON CONFLICT DO NOTHING, whose transition table
--                  holds only the rows actually inserted, so a replayed
--                  event is never counted twice);
--   AFTER DELETE   subtracts the rows deleted (retention), and drops rollup
--                  rows that reach 0 requests;
--   AFTER TRUNCATE empties the rollups.
-- UPDATE is not tracked: erasure and body retention only change content
-- columns. The rolled-up columns (ts, consumer, status, latency_ms, ttft_ms,
-- token counts) must not be updated in place; delete and re-insert instead.
-- The min/max columns are clamps for the percentile estimate: a DELETE does
-- not narrow them (they stay valid bounds, only looser).
--
-- Upserts run in key order (minute or hour, then consumer), so concurrent
-- writers wait for each other on a rollup row instead of deadlocking. Two
-- writers in the same minute serialise from the trigger to their commit.
--
-- Latency and TTFT are kept as fixed log-scale histograms: int[160], bucket 1
-- holds [0, 1) ms, bucket b >= 2 holds [2^((b-2)/8), 2^((b-1)/8)) ms (9 %
-- wide), bucket 160 is open (>= ~14.7 min). llmtap_hist_quantile(h, q, min,
-- max) interpolates linearly inside the bucket holding rank q*n and clamps to
-- [min, max]: the estimate lies in the same bucket as the nearest-rank sample
-- quantile, i.e. within 9.1 % of it (and exact when min = max).
--
-- Tables (same columns in each, keyed as named):
--   llm_usage_1m      (minute, consumer)
--   llm_usage_1h      (hour, consumer)
--   llm_usage_all_1m  (minute): all consumers together, for "All" percentiles
--   llm_status_1m     (minute, consumer, status): error responses (status >= 400) only
-- "errors" counts status >= 400. "tokens" is total_tokens, or prompt +
-- completion when the total was not reported (as the panels count it).

CREATE OR REPLACE FUNCTION llmtap_hist_bucket(ms double precision) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN ms IS NULL THEN NULL
                WHEN ms < 1 THEN 1
                ELSE least(160, floor(8 * ln(ms) / ln(2))::int + 2) END
$$;

-- Aggregate step: count ms into histogram h (NULL ms is skipped).
CREATE OR REPLACE FUNCTION llmtap_hist_step(h integer[], ms double precision) RETURNS integer[]
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE b integer;
BEGIN
    IF h IS NULL THEN
        h := array_fill(0, ARRAY[160]);
    END IF;
    IF ms IS NOT NULL THEN
        b := llmtap_hist_bucket(ms);
        h[b] := h[b] + 1;
    END IF;
    RETURN h;
END
$$;

-- llmtap_hist(ms): histogram of a column.
CREATE OR REPLACE AGGREGATE llmtap_hist(double precision) (SFUNC = llmtap_hist_step, STYPE = integer[]);

-- Element-wise a + sign * b (NULL = empty).
CREATE OR REPLACE FUNCTION llmtap_hist_add(a integer[], b integer[], sign integer DEFAULT 1) RETURNS integer[]
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
    IF b IS NULL THEN
        RETURN a;
    END IF;
    IF a IS NULL THEN
        a := array_fill(0, ARRAY[cardinality(b)]);
    END IF;
    FOR i IN 1..cardinality(b) LOOP
        a[i] := coalesce(a[i], 0) + sign * b[i];
    END LOOP;
    RETURN a;
END
$$;

CREATE OR REPLACE FUNCTION llmtap_hist_merge_step(a integer[], b integer[]) RETURNS integer[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT llmtap_hist_add(a, b, 1) $$;

-- llmtap_hist_merge(h): element-wise sum of histograms.
CREATE OR REPLACE AGGREGATE llmtap_hist_merge(integer[]) (SFUNC = llmtap_hist_merge_step, STYPE = integer[]);

-- q-quantile of histogram h, clamped to [lo, hi] (NULL: no clamp); NULL
-- when h is empty.
CREATE OR REPLACE FUNCTION llmtap_hist_quantile(h integer[], q double precision,
    lo double precision DEFAULT NULL, hi double precision DEFAULT NULL) RETURNS double precision
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    total  bigint := 0;
    run    bigint := 0;
    target double precision;
    c      integer;
    b_lo   double precision;
    b_hi   double precision;
    x      double precision;
BEGIN
    IF h IS NULL THEN
        RETURN NULL;
    END IF;
    FOR i IN 1..cardinality(h) LOOP
        total := total + h[i];
    END LOOP;
    IF total <= 0 THEN
        RETURN NULL;
    END IF;
    target := q * total;
    FOR i IN 1..cardinality(h) LOOP
        c := h[i];
        IF c > 0 AND run + c >= target THEN
            b_lo := CASE WHEN i = 1 THEN 0 ELSE power(2, (i - 2) / 8.0) END;
            b_hi := power(2, (i - 1) / 8.0);
            x := b_lo + (b_hi - b_lo) * greatest(target - run, 0) / c;
            IF lo IS NOT NULL AND x < lo THEN x := lo; END IF;
            IF hi IS NOT NULL AND x > hi THEN x := hi; END IF;
            RETURN x;
        END IF;
        run := run + c;
    END LOOP;
    RETURN hi;
END
$$;

CREATE TABLE IF NOT EXISTS llm_usage_1m (
    minute            timestamptz      NOT NULL,
    consumer          text             NOT NULL,
    requests          bigint           NOT NULL,
    errors            bigint           NOT NULL,
    prompt_tokens     bigint           NOT NULL,
    completion_tokens bigint           NOT NULL,
    tokens            bigint           NOT NULL,
    latency_min       double precision,
    latency_max       double precision,
    latency_hist      integer[]        NOT NULL,
    ttft_min          double precision,
    ttft_max          double precision,
    ttft_hist         integer[]        NOT NULL,
    PRIMARY KEY (minute, consumer)
);
CREATE INDEX IF NOT EXISTS llm_usage_1m_consumer_idx ON llm_usage_1m (consumer, minute);

CREATE TABLE IF NOT EXISTS llm_usage_1h (
    hour              timestamptz      NOT NULL,
    consumer          text             NOT NULL,
    requests          bigint           NOT NULL,
    errors            bigint           NOT NULL,
    prompt_tokens     bigint           NOT NULL,
    completion_tokens bigint           NOT NULL,
    tokens            bigint           NOT NULL,
    latency_min       double precision,
    latency_max       double precision,
    latency_hist      integer[]        NOT NULL,
    ttft_min          double precision,
    ttft_max          double precision,
    ttft_hist         integer[]        NOT NULL,
    PRIMARY KEY (hour, consumer)
);
CREATE INDEX IF NOT EXISTS llm_usage_1h_consumer_idx ON llm_usage_1h (consumer, hour);

CREATE TABLE IF NOT EXISTS llm_usage_all_1m (
    minute            timestamptz      NOT NULL,
    requests          bigint           NOT NULL,
    errors            bigint           NOT NULL,
    prompt_tokens     bigint           NOT NULL,
    completion_tokens bigint           NOT NULL,
    tokens            bigint           NOT NULL,
    latency_min       double precision,
    latency_max       double precision,
    latency_hist      integer[]        NOT NULL,
    ttft_min          double precision,
    ttft_max          double precision,
    ttft_hist         integer[]        NOT NULL,
    PRIMARY KEY (minute)
);

CREATE TABLE IF NOT EXISTS llm_status_1m (
    minute   timestamptz NOT NULL,
    consumer text        NOT NULL,
    status   integer     NOT NULL,
    requests bigint      NOT NULL,
    PRIMARY KEY (minute, consumer, status)
);

-- llmtap_rollup_sql returns the statements that add (sign 1) or subtract
-- (sign -1) the rows of src (a table name: llm_requests, or a trigger's
-- transition table) to the rollups, so the triggers and the backfill share
-- one text. The caller EXECUTEs them: a transition table is visible only to
-- statements run by the trigger function itself.
CREATE OR REPLACE FUNCTION llmtap_rollup_sql(src text, sign integer) RETURNS text[]
LANGUAGE plpgsql IMMUTABLE AS $fn$
DECLARE
    agg text := $$
        count(*) AS requests,
        count(*) FILTER (WHERE status >= 400) AS errors,
        coalesce(sum(prompt_tokens), 0) AS prompt_tokens,
        coalesce(sum(completion_tokens), 0) AS completion_tokens,
        coalesce(sum(coalesce(total_tokens, coalesce(prompt_tokens, 0) + coalesce(completion_tokens, 0))), 0) AS tokens,
        min(latency_ms) AS latency_min, max(latency_ms) AS latency_max, llmtap_hist(latency_ms) AS latency_hist,
        min(ttft_ms) AS ttft_min, max(ttft_ms) AS ttft_max, llmtap_hist(ttft_ms) AS ttft_hist$$;
    cols text := 'requests, errors, prompt_tokens, completion_tokens, tokens, latency_min, latency_max, latency_hist, ttft_min, ttft_max, ttft_hist';
    -- %1$s: source alias. Subtraction leaves min/max (still valid bounds).
    add text := $$
        requests          = r.requests + %1$s.requests,
        errors            = r.errors + %1$s.errors,
        prompt_tokens     = r.prompt_tokens + %1$s.prompt_tokens,
        completion_tokens = r.completion_tokens + %1$s.completion_tokens,
        tokens            = r.tokens + %1$s.tokens,
        latency_min       = least(r.latency_min, %1$s.latency_min),
        latency_max       = greatest(r.latency_max, %1$s.latency_max),
        latency_hist      = llmtap_hist_add(r.latency_hist, %1$s.latency_hist, 1),
        ttft_min          = least(r.ttft_min, %1$s.ttft_min),
        ttft_max          = greatest(r.ttft_max, %1$s.ttft_max),
        ttft_hist         = llmtap_hist_add(r.ttft_hist, %1$s.ttft_hist, 1)$$;
    sub text := $$
        requests          = r.requests - e.requests,
        errors            = r.errors - e.errors,
        prompt_tokens     = r.prompt_tokens - e.prompt_tokens,
        completion_tokens = r.completion_tokens - e.completion_tokens,
        tokens            = r.tokens - e.tokens,
        latency_hist      = llmtap_hist_add(r.latency_hist, e.latency_hist, -1),
        ttft_hist         = llmtap_hist_add(r.ttft_hist, e.ttft_hist, -1)$$;
    rng text := format($$BETWEEN (SELECT date_trunc('%%s', min(ts)) FROM %1$I) AND (SELECT max(ts) FROM %1$I)$$, src);
    out text[];
BEGIN
    IF sign > 0 THEN
        add := format(add, 'EXCLUDED');
        out := out || format($$INSERT INTO llm_usage_1m AS r (minute, consumer, %2$s)
            SELECT date_trunc('minute', ts), consumer, %3$s FROM %1$I GROUP BY 1, 2 ORDER BY 1, 2
            ON CONFLICT (minute, consumer) DO UPDATE SET %4$s$$, src, cols, agg, add);
        out := out || format($$INSERT INTO llm_usage_1h AS r (hour, consumer, %2$s)
            SELECT date_trunc('hour', ts), consumer, %3$s FROM %1$I GROUP BY 1, 2 ORDER BY 1, 2
            ON CONFLICT (hour, consumer) DO UPDATE SET %4$s$$, src, cols, agg, add);
        out := out || format($$INSERT INTO llm_usage_all_1m AS r (minute, %2$s)
            SELECT date_trunc('minute', ts), %3$s FROM %1$I GROUP BY 1 ORDER BY 1
            ON CONFLICT (minute) DO UPDATE SET %4$s$$, src, cols, agg, add);
        out := out || format($$INSERT INTO llm_status_1m AS r (minute, consumer, status, requests)
            SELECT date_trunc('minute', ts), consumer, status, count(*) FROM %1$I WHERE status >= 400
            GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
            ON CONFLICT (minute, consumer, status) DO UPDATE SET requests = r.requests + EXCLUDED.requests$$, src);
        RETURN out;
    END IF;
    out := out || format($$UPDATE llm_usage_1m AS r SET %3$s
        FROM (SELECT date_trunc('minute', ts) AS k, consumer, %2$s FROM %1$I GROUP BY 1, 2) e
        WHERE r.minute = e.k AND r.consumer = e.consumer$$, src, agg, sub);
    out := out || format($$UPDATE llm_usage_1h AS r SET %3$s
        FROM (SELECT date_trunc('hour', ts) AS k, consumer, %2$s FROM %1$I GROUP BY 1, 2) e
        WHERE r.hour = e.k AND r.consumer = e.consumer$$, src, agg, sub);
    out := out || format($$UPDATE llm_usage_all_1m AS r SET %3$s
        FROM (SELECT date_trunc('minute', ts) AS k, %2$s FROM %1$I GROUP BY 1) e
        WHERE r.minute = e.k$$, src, agg, sub);
    out := out || format($$UPDATE llm_status_1m AS r SET requests = r.requests - e.requests
        FROM (SELECT date_trunc('minute', ts) AS k, consumer, status, count(*) AS requests FROM %1$I
              WHERE status >= 400 GROUP BY 1, 2, 3) e
        WHERE r.minute = e.k AND r.consumer = e.consumer AND r.status = e.status$$, src);
    out := out || ('DELETE FROM llm_usage_1m WHERE requests <= 0 AND minute ' || format(rng, 'minute'));
    out := out || ('DELETE FROM llm_usage_1h WHERE requests <= 0 AND hour ' || format(rng, 'hour'));
    out := out || ('DELETE FROM llm_usage_all_1m WHERE requests <= 0 AND minute ' || format(rng, 'minute'));
    out := out || ('DELETE FROM llm_status_1m WHERE requests <= 0 AND minute ' || format(rng, 'minute'));
    RETURN out;
END
$fn$;

CREATE OR REPLACE FUNCTION llmtap_rollup_trigger() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE stmt text;
BEGIN
    IF TG_OP = 'INSERT' THEN
        FOREACH stmt IN ARRAY llmtap_rollup_sql('llmtap_new_rows', 1) LOOP
            EXECUTE stmt;
        END LOOP;
    ELSIF TG_OP = 'DELETE' THEN
        FOREACH stmt IN ARRAY llmtap_rollup_sql('llmtap_old_rows', -1) LOOP
            EXECUTE stmt;
        END LOOP;
    ELSE
        TRUNCATE llm_usage_1m, llm_usage_1h, llm_usage_all_1m, llm_status_1m;
    END IF;
    RETURN NULL;
END
$$;

-- CREATE TRIGGER locks llm_requests against writers until this migration
-- commits, so the backfill below sees every row and no row is counted twice.
DROP TRIGGER IF EXISTS llm_requests_rollup_insert ON llm_requests;
CREATE TRIGGER llm_requests_rollup_insert AFTER INSERT ON llm_requests
    REFERENCING NEW TABLE AS llmtap_new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION llmtap_rollup_trigger();
DROP TRIGGER IF EXISTS llm_requests_rollup_delete ON llm_requests;
CREATE TRIGGER llm_requests_rollup_delete AFTER DELETE ON llm_requests
    REFERENCING OLD TABLE AS llmtap_old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION llmtap_rollup_trigger();
DROP TRIGGER IF EXISTS llm_requests_rollup_truncate ON llm_requests;
CREATE TRIGGER llm_requests_rollup_truncate AFTER TRUNCATE ON llm_requests
    FOR EACH STATEMENT EXECUTE FUNCTION llmtap_rollup_trigger();

-- Backfill from the rows stored before this migration (from scratch, so a
-- re-run of this file gives the same result).
TRUNCATE llm_usage_1m, llm_usage_1h, llm_usage_all_1m, llm_status_1m;
DO $$
DECLARE stmt text;
BEGIN
    FOREACH stmt IN ARRAY llmtap_rollup_sql('llm_requests', 1) LOOP
        EXECUTE stmt;
    END LOOP;
END
$$;
