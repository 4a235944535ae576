package dashboards

import (
	"context"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/llmtap/llmtap/ingest/record"
	chstore "github.com/llmtap/llmtap/ingest/store/clickhouse"
	pgstore "github.com/llmtap/llmtap/ingest/store/postgres"
)

// rollupChecks compare each rollup table with the same aggregate computed
// from llm_requests: raw and rollup queries return (key, values…) rows that
// must match exactly. PostgreSQL also checks that each histogram holds one
// count per latency / TTFT value.
var rollupChecks = map[string][]struct{ name, raw, rollup string }{
	Postgres: {
		{"llm_usage_1m", pgRawUsage("minute", "|| '|' || consumer"),
			`SELECT minute::text || '|' || consumer, ` + pgRollupUsageCols + ` FROM llm_usage_1m`},
		{"llm_usage_1h", pgRawUsage("hour", "|| '|' || consumer"),
			`SELECT hour::text || '|' || consumer, ` + pgRollupUsageCols + ` FROM llm_usage_1h`},
		{"llm_usage_all_1m", pgRawUsage("minute", ""),
			`SELECT minute::text, ` + pgRollupUsageCols + ` FROM llm_usage_all_1m`},
		{"llm_status_1m", `SELECT date_trunc('minute', ts)::text || '|' || consumer || '|' || status, count(*)
FROM llm_requests WHERE status >= 400 GROUP BY 1`,
			`SELECT minute::text || '|' || consumer || '|' || status, requests FROM llm_status_1m`},
	},
	ClickHouse: {
		{"llm_usage_1m", chRawUsage("toStartOfMinute", ", '|', consumer"),
			`SELECT concat(toString(minute), '|', consumer) AS k, ` + chRollupUsageCols + ` FROM llm_usage_1m GROUP BY k`},
		{"llm_usage_1h", chRawUsage("toStartOfHour", ", '|', consumer"),
			`SELECT concat(toString(hour), '|', consumer) AS k, ` + chRollupUsageCols + ` FROM llm_usage_1h GROUP BY k`},
		{"llm_usage_all_1m", `SELECT toString(toStartOfMinute(ts)) AS k, count() FROM llm_requests GROUP BY k`,
			`SELECT toString(minute) AS k, countMerge(requests) FROM llm_usage_all_1m GROUP BY k`},
		{"llm_status_1m", `SELECT concat(toString(toStartOfMinute(ts)), '|', consumer, '|', toString(status)) AS k, count()
FROM llm_requests WHERE status >= 400 GROUP BY k`,
			`SELECT concat(toString(minute), '|', consumer, '|', toString(status)) AS k, sum(requests) FROM llm_status_1m GROUP BY k`},
	},
}

const pgRollupUsageCols = `requests, errors, prompt_tokens, completion_tokens, tokens,
  (SELECT sum(x) FROM unnest(latency_hist) x), coalesce((SELECT sum(x) FROM unnest(ttft_hist) x), 0)`

func pgRawUsage(unit, key string) string {
	return `SELECT date_trunc('` + unit + `', ts)::text ` + key + `, count(*), count(*) FILTER (WHERE status >= 400),
  coalesce(sum(prompt_tokens), 0), coalesce(sum(completion_tokens), 0),
  coalesce(sum(coalesce(total_tokens, coalesce(prompt_tokens, 0) + coalesce(completion_tokens, 0))), 0),
  count(latency_ms), count(ttft_ms)
FROM llm_requests GROUP BY 1`
}

const chRollupUsageCols = `countMerge(requests), countIfMerge(errors), sumMerge(prompt_sum), sumMerge(completion_sum), sumMerge(tokens_sum)`

func chRawUsage(fn, key string) string {
	return `SELECT concat(toString(` + fn + `(ts))` + key + `) AS k, count(), countIf(status >= 400),
  sum(ifNull(prompt_tokens, 0)), sum(ifNull(completion_tokens, 0)),
  sum(ifNull(total_tokens, ifNull(prompt_tokens, 0) + ifNull(completion_tokens, 0)))
FROM llm_requests GROUP BY k`
}

// keyed reads (key, values…) rows into key → "v1 v2 …".
func (db *database) keyed(t *testing.T, sql string) map[string]string {
	t.Helper()
	res, err := db.query(context.Background(), sql)
	if err != nil {
		t.Fatalf("%v\n%s", err, sql)
	}
	out := map[string]string{}
	for _, r := range res.rows {
		vals := make([]string, 0, len(r)-1)
		for _, v := range r[1:] {
			vals = append(vals, fmt.Sprint(v))
		}
		out[fmt.Sprint(r[0])] = strings.Join(vals, " ")
	}
	return out
}

// checkRollups asserts every rollup table equals the aggregate of the raw
// rows; it returns the number of raw rows.
func (db *database) checkRollups(t *testing.T, when string) int {
	t.Helper()
	for _, c := range rollupChecks[db.kind] {
		raw, roll := db.keyed(t, c.raw), db.keyed(t, c.rollup)
		if len(raw) == 0 {
			t.Errorf("%s: %s: no raw rows", when, c.name)
		}
		for k, v := range raw {
			if roll[k] != v {
				t.Errorf("%s: %s[%s] = %q, raw rows give %q", when, c.name, k, roll[k], v)
			}
		}
		for k, v := range roll {
			if _, ok := raw[k]; !ok {
				t.Errorf("%s: %s[%s] = %q has no raw rows", when, c.name, k, v)
			}
		}
	}
	res, err := db.query(context.Background(), "SELECT count(*) FROM llm_requests")
	if err != nil {
		t.Fatal(err)
	}
	return int(res.rows[0][0].(float64))
}

// storeRecords are requests for the store test at T0+2h (outside the other
// assertions' ranges): three consumers over three minutes, some errors,
// some streams.
func storeRecords(n int) []record.Record {
	var out []record.Record
	for i := 0; i < n; i++ {
		r := record.Record{
			EventID:   uuid.Must(uuid.NewV7()).String(),
			TS:        t0.Add(2*time.Hour + time.Duration(i)*700*time.Millisecond).UTC(),
			Source:    "proxy",
			Consumer:  []string{"store-a", "store-b", ""}[i%3],
			Model:     "m1",
			Status:    []int{200, 200, 200, 429, 200, 500, 200}[i%7],
			LatencyMs: float64(40 + 37*(i%50)),
			Prompt:    "p", Response: "r",
			IngestedAt: time.Now().UTC(),
		}
		if i%2 == 0 {
			r.Stream, r.TTFTMs = true, f64(float64(5+i%40))
		}
		if r.Status == 200 {
			r.PromptTokens, r.CompletionTokens = i64(int64(i%13)), i64(int64(i%5))
			if i%4 != 0 {
				r.TotalTokens = i64(int64(i%13 + i%5))
			}
		}
		out = append(out, r)
	}
	return out
}

// testRollupsEqualRaw checks the rollups against the raw rows after the
// seed (COPY / batch INSERT), then after writes through the real store,
// including a replay of the same events (the rollups must not count them
// twice) and, on PostgreSQL, the staging path (INSERT … ON CONFLICT DO
// NOTHING) and a retention-style DELETE. Adds rows: runs after the panel
// assertions.
func (db *database) testRollupsEqualRaw(t *testing.T) {
	ctx := context.Background()
	before := db.checkRollups(t, "seed")

	var (
		write   func([]record.Record) error
		setMode = func(string) {}
	)
	switch db.kind {
	case Postgres:
		s, err := pgstore.New(ctx, pgTestDSN, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		write = func(rs []record.Record) error { return s.Write(ctx, rs, nil) }
		setMode = func(m string) {
			if m == "stage" {
				s.SetMode(pgstore.ModeStage)
			} else {
				s.SetMode(pgstore.ModeCopy)
			}
		}
	default:
		// A store per write: with the store as of this commit, a Write
		// whose batch was partly stored already leaves some ids marked in
		// flight (writeRecords compacts the ids slice that the release
		// function holds), and a later Write of one of them spins forever
		// in acquire. Reported to the store owner.
		write = func(rs []record.Record) error {
			s, err := chstore.New(ctx, chTestDSN, nil)
			if err != nil {
				return err
			}
			defer s.Close()
			return s.Write(ctx, rs, nil)
		}
	}

	recs := storeRecords(300)
	if err := write(recs[:200]); err != nil {
		t.Fatalf("store write: %v", err)
	}
	if got := db.checkRollups(t, "after store write"); got != before+200 {
		t.Errorf("after store write: %d raw rows, want %d", got, before+200)
	}
	// A replay overlapping the stored events plus 100 new ones: only the
	// new ones may count, through the staging path on PostgreSQL too.
	setMode("stage")
	if err := write(recs[100:]); err != nil {
		t.Fatalf("store replay: %v", err)
	}
	setMode("copy")
	if err := write(recs[150:250]); err != nil {
		t.Fatalf("store replay: %v", err)
	}
	if got := db.checkRollups(t, "after replay"); got != before+300 {
		t.Errorf("after replay: %d raw rows, want %d", got, before+300)
	}

	// The panels show the stored requests.
	q := mq([2]time.Time{t0.Add(2 * time.Hour), t0.Add(2*time.Hour + 10*time.Minute)}, time.Hour, selection{"store-a", "store-b"})
	res := db.run(t, TitleUsageTable, "A", q)
	total := 0.0
	for _, r := range res.rows {
		total += r[1].(float64)
	}
	if total != 200 {
		t.Errorf("usage table for store-a+store-b: %v requests, want 200", total)
	}

	if db.kind != Postgres {
		return
	}
	// Retention deletes old rows: the DELETE trigger subtracts them (and
	// drops rollup rows that reach zero).
	if err := db.exec(ctx, `DELETE FROM llm_requests WHERE ts < '`+t0.Add(2*time.Hour+time.Minute).Format(time.RFC3339)+`' AND consumer = 'store-a'`); err != nil {
		t.Fatal(err)
	}
	if err := db.exec(ctx, `DELETE FROM llm_requests WHERE ts >= '`+t0.Add(2*time.Hour+3*time.Minute).Format(time.RFC3339)+`' AND ts < '`+t0.Add(3*time.Hour).Format(time.RFC3339)+`'`); err != nil {
		t.Fatal(err)
	}
	db.checkRollups(t, "after delete")
}

// TestHistogramQuantile checks llmtap_hist_quantile (PostgreSQL) against
// exact quantiles on distributions of 1000 values: within 9.1 % (one
// bucket) of the nearest-rank quantile, and exact for a single value. (Below
// 1 ms the error is absolute, < 1 ms; above ~14.7 min the last bucket is
// open and only the max clamps.)
func TestHistogramQuantile(t *testing.T) {
	if testing.Short() {
		t.Skip("needs PostgreSQL")
	}
	ctx := context.Background()
	db := openPostgres(ctx, t)
	defer db.close()
	for _, tc := range []struct {
		name, values string // SQL over i = 1..1000
	}{
		{"uniform 100-5100 ms", "100 + (i * 7919 % 5000)"},
		{"exponential", "-ln((i - 0.5) / 1000.0) * 800"},
		{"1 ms to 10 min, log-uniform", "power(2, i / 1000.0 * 19.2)"},
		{"single value", "42"},
	} {
		for _, q := range []float64{0.5, 0.95, 0.99} {
			sql := fmt.Sprintf(`WITH v AS (SELECT (%s)::float8 AS x FROM generate_series(1, 1000) AS i)
SELECT llmtap_hist_quantile(llmtap_hist(x), %v, min(x), max(x)),
  percentile_disc(%v) WITHIN GROUP (ORDER BY x) FROM v`, tc.values, q, q)
			res, err := db.query(ctx, sql)
			if err != nil {
				t.Fatalf("%v\n%s", err, sql)
			}
			got, exact := res.rows[0][0].(float64), res.rows[0][1].(float64)
			tol := 0.091 * exact
			if tc.name == "single value" {
				tol = 0
			}
			if math.Abs(got-exact) > tol {
				t.Errorf("%s q=%v: %v, exact %v (off %.1f %%)", tc.name, q, got, exact, 100*math.Abs(got-exact)/exact)
			}
		}
	}
}
