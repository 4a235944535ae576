-- Rollup histograms (0004) stored trimmed: an int[] whose bounds are the
-- first and last non-empty bucket (e.g. [53:98] for 100 ms – 5 s) instead
-- of a dense [1:160]. Same bucket numbers, so old and new values mix; the
-- rows get ~3× narrower and merging / quantiles touch ~3× fewer elements.
-- Arrays never hold NULL elements (gaps are 0); no values = '{}'.
--
-- llmtap_hist_quantiles(h, qs, min, max) computes several quantiles in one
-- pass (the panels ask for p50 and p95 together).

CREATE OR REPLACE FUNCTION llmtap_hist_step(h integer[], ms double precision) RETURNS integer[]
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE b integer;
BEGIN
    IF ms IS NULL THEN
        RETURN coalesce(h, '{}');
    END IF;
    b := llmtap_hist_bucket(ms);
    IF h IS NULL OR cardinality(h) = 0 THEN
        RETURN array_fill(1, ARRAY[1], ARRAY[b]);
    END IF;
    IF b < array_lower(h, 1) THEN
        h := array_fill(0, ARRAY[array_lower(h, 1) - b], ARRAY[b]) || h;
    ELSIF b > array_upper(h, 1) THEN
        h := h || array_fill(0, ARRAY[b - array_upper(h, 1)]);
    END IF;
    h[b] := h[b] + 1;
    RETURN h;
END
$$;

-- Element-wise a + sign * b over the union of their bounds (NULL = empty).
CREATE OR REPLACE FUNCTION llmtap_hist_add(a integer[], b integer[], sign integer DEFAULT 1) RETURNS integer[]
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    lo integer;
    hi integer;
    i  integer;
    c  integer;
BEGIN
    IF b IS NULL OR cardinality(b) = 0 THEN
        RETURN a;
    END IF;
    lo := array_lower(b, 1);
    hi := array_upper(b, 1);
    IF a IS NULL OR cardinality(a) = 0 THEN
        a := array_fill(0, ARRAY[hi - lo + 1], ARRAY[lo]);
    ELSE
        IF lo < array_lower(a, 1) THEN
            a := array_fill(0, ARRAY[array_lower(a, 1) - lo], ARRAY[lo]) || a;
        END IF;
        IF hi > array_upper(a, 1) THEN
            a := a || array_fill(0, ARRAY[hi - array_upper(a, 1)]);
        END IF;
    END IF;
    i := lo;
    FOREACH c IN ARRAY b LOOP
        a[i] := a[i] + sign * c;
        i := i + 1;
    END LOOP;
    RETURN a;
END
$$;

CREATE OR REPLACE FUNCTION llmtap_hist_merge_step(a integer[], b integer[]) RETURNS integer[]
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
    RETURN llmtap_hist_add(a, b, 1);
END
$$;

-- Quantiles qs (ascending) of histogram h, each clamped to [lo, hi] (NULL:
-- no clamp); NULL when h is empty. See 0004 for the bucket layout and the
-- error bound.
CREATE OR REPLACE FUNCTION llmtap_hist_quantiles(h integer[], qs double precision[],
    lo double precision DEFAULT NULL, hi double precision DEFAULT NULL) RETURNS double precision[]
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    total  bigint := 0;
    run    bigint := 0;
    c      integer;
    i      integer;
    k      integer := 1;
    n      integer := cardinality(qs);
    target double precision;
    b_lo   double precision;
    b_hi   double precision;
    x      double precision;
    out    double precision[] := '{}';
BEGIN
    IF h IS NULL OR cardinality(h) = 0 THEN
        RETURN NULL;
    END IF;
    FOREACH c IN ARRAY h LOOP
        total := total + c;
    END LOOP;
    IF total <= 0 THEN
        RETURN NULL;
    END IF;
    target := qs[1] * total;
    i := array_lower(h, 1);
    FOREACH c IN ARRAY h LOOP
        WHILE k <= n AND c > 0 AND run + c >= target LOOP
            b_lo := CASE WHEN i = 1 THEN 0 ELSE power(2, (i - 2) / 8.0) END;
            b_hi := power(2, (i - 1) / 8.0);
            x := b_lo + (b_hi - b_lo) * greatest(target - run, 0) / c;
            IF lo IS NOT NULL AND x < lo THEN x := lo; END IF;
            IF hi IS NOT NULL AND x > hi THEN x := hi; END IF;
            out := out || x;
            k := k + 1;
            IF k <= n THEN
                target := qs[k] * total;
            END IF;
        END LOOP;
        EXIT WHEN k > n;
        run := run + c;
        i := i + 1;
    END LOOP;
    WHILE k <= n LOOP
        out := out || hi;
        k := k + 1;
    END LOOP;
    RETURN out;
END
$$;

CREATE OR REPLACE FUNCTION llmtap_hist_quantile(h integer[], q double precision,
    lo double precision DEFAULT NULL, hi double precision DEFAULT NULL) RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT (llmtap_hist_quantiles(h, ARRAY[q], lo, hi))[1]
$$;

-- Rebuild the rollups with trimmed histograms; the lock holds writers off
-- until this commits.
LOCK TABLE llm_requests IN SHARE ROW EXCLUSIVE MODE;
TRUNCATE llm_usage_1m, llm_usage_1h, llm_usage_all_1m, llm_status_1m;
DO $$
DECLARE stmt text;
BEGIN
    FOREACH stmt IN ARRAY llmtap_rollup_sql('llm_requests', 1) LOOP
        EXECUTE stmt;
    END LOOP;
END
$$;
