package dashboards

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/llmtap/llmtap/dashboards/macro"
)

// Benchmark data lives in its own databases, so `go test` (which truncates
// llmtap_test_dashboards) never drops it; it is generated once per row count
// and reused by later runs.
const (
	pgBenchDSN = "postgres://postgres@127.0.0.1:5432/llmtap_bench_dashboards?sslmode=disable"
	chBenchDSN = "clickhouse://127.0.0.1:9000/llmtap_bench_dashboards"
	// benchRowsEnv overrides the row count (default 10 M).
	benchRowsEnv = "LLMTAP_BENCH_ROWS"
	// benchDBEnv limits the run to one datasource kind.
	benchDBEnv = "LLMTAP_BENCH_DB"
	// benchDataVersion changes when the generator changes.
	benchDataVersion = 1
)

// benchEnd is the end of the 24 h window the rows are spread over.
var benchEnd = time.Date(2026, 1, 20, 0, 0, 0, 0, time.UTC)

func benchRows(b *testing.B) int {
	if s := os.Getenv(benchRowsEnv); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			b.Fatalf("%s=%q: want a positive integer", benchRowsEnv, s)
		}
		return n
	}
	return 10_000_000
}

// BenchmarkPanelQueries runs every panel query of both dashboards over
// LLMTAP_BENCH_ROWS (default 10 M) rows spread evenly over 24 h, for the full
// 24 h window, a 1 m interval and consumer = All (the default view), and
// reports p50/p95 per panel. Run with a fixed count, e.g.
//
//	go test ./dashboards -run '^$' -bench PanelQueries -benchtime 20x -timeout 2h
//
// The first run generates the rows server-side (INSERT … SELECT from
// generate_series / numbers()); that takes minutes on PostgreSQL.
func BenchmarkPanelQueries(b *testing.B) {
	ctx := context.Background()
	n := benchRows(b)
	for _, kind := range Datasources() {
		if only := os.Getenv(benchDBEnv); only != "" && only != kind {
			continue
		}
		var db *database
		if kind == Postgres {
			db = openPostgresDSN(ctx, b, pgBenchDSN)
		} else {
			db = openClickHouseDSN(ctx, b, chBenchDSN)
		}
		if err := ensureBenchData(ctx, b, db, n); err != nil {
			db.close()
			b.Fatalf("%s: generate: %v", kind, err)
		}
		panels, err := Panels(kind)
		if err != nil {
			b.Fatal(err)
		}
		for _, sel := range []selection{nil, {"team-100"}} {
			q := macro.Query{From: benchEnd.Add(-24 * time.Hour), To: benchEnd, Interval: time.Minute,
				Vars: []macro.Variable{sel.variable()}}
			for _, p := range panels {
				for _, tg := range p.Targets {
					name := fmt.Sprintf("%s/%s/%s/consumer=%s", kind, slug(p.Title), tg.RefID, sel)
					b.Run(name, func(b *testing.B) { benchQuery(b, db, tg.SQL, q) })
				}
			}
		}
		db.close()
	}
}

func benchQuery(b *testing.B, db *database, sql string, q macro.Query) {
	ctx := context.Background()
	expanded, err := db.expand(sql, q)
	if err != nil {
		b.Fatal(err)
	}
	durations := make([]time.Duration, 0, b.N)
	rows := 0
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		res, err := db.query(ctx, expanded)
		if err != nil {
			b.Fatalf("%v\n%s", err, expanded)
		}
		durations = append(durations, time.Since(start))
		rows = len(res.rows)
	}
	b.StopTimer()
	sort.Slice(durations, func(i, j int) bool { return durations[i] < durations[j] })
	pct := func(p float64) float64 {
		i := int(p*float64(len(durations))+0.999999) - 1
		return float64(durations[max(i, 0)].Microseconds()) / 1000
	}
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.95), "p95-ms")
	b.ReportMetric(float64(rows), "rows")
}

func slug(title string) string {
	var sb strings.Builder
	for _, r := range strings.ToLower(title) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			sb.WriteRune(r)
		case sb.Len() > 0 && !strings.HasSuffix(sb.String(), "_"):
			sb.WriteByte('_')
		}
	}
	return strings.TrimSuffix(sb.String(), "_")
}

// ensureBenchData (re)generates the rows unless the marker says they are
// there already.
func ensureBenchData(ctx context.Context, b *testing.B, db *database, n int) error {
	marker := fmt.Sprintf("v%d rows=%d end=%d", benchDataVersion, n, benchEnd.Unix())
	var create, read string
	if db.kind == Postgres {
		create = `CREATE TABLE IF NOT EXISTS dashboards_bench_meta (marker text NOT NULL)`
	} else {
		create = `CREATE TABLE IF NOT EXISTS dashboards_bench_meta (marker String) ENGINE = TinyLog`
	}
	read = `SELECT marker FROM dashboards_bench_meta`
	if err := db.exec(ctx, create); err != nil {
		return err
	}
	res, err := db.query(ctx, read)
	if err != nil {
		return err
	}
	if len(res.rows) == 1 && res.rows[0][0] == marker {
		return nil
	}
	b.Logf("%s: generating %d rows (once; marker %q)", db.kind, n, marker)
	start := time.Now()
	if db.kind == Postgres {
		err = generatePostgres(ctx, b, db, n)
	} else {
		err = generateClickHouse(ctx, b, db, n)
	}
	if err != nil {
		return err
	}
	b.Logf("%s: generated %d rows in %v", db.kind, n, time.Since(start).Round(time.Second))
	if db.kind == Postgres {
		if err := db.exec(ctx, `TRUNCATE dashboards_bench_meta`); err != nil {
			return err
		}
		return db.exec(ctx, fmt.Sprintf(`INSERT INTO dashboards_bench_meta VALUES ('%s')`, marker))
	}
	if err := db.exec(ctx, `DROP TABLE dashboards_bench_meta`); err != nil {
		return err
	}
	if err := db.exec(ctx, create); err != nil {
		return err
	}
	return insertMarkerClickHouse(ctx, db, marker)
}

// The generated traffic: 40 consumers team-100 … team-139 with a skewed
// share (team-100 is the busiest), 0.5 % unauthenticated 401s, 1.5 % 429,
// 1 % 500, 0.3 % 503; latency 100–5100 ms; half streamed with ttft 20–520
// ms; prompt 50–2050 and completion 10–1010 tokens; a ~100-character prompt
// and ~200-character response. Bodies and headers stay empty.
const (
	benchPrompt   = "Summarise the attached incident report and list the three most important follow-up actions for the team"
	benchResponse = "The incident was caused by an expired certificate on the internal load balancer. Follow-ups: automate renewal, add an expiry alert, and document the rotation runbook for the on-call engineers this quarter."
)

func generatePostgres(ctx context.Context, b *testing.B, db *database, n int) error {
	if err := db.exec(ctx, `TRUNCATE llm_requests`); err != nil {
		return err
	}
	// Dropping the secondary indexes during the load and building them after
	// is much faster than maintaining them row by row; the result is the
	// same table the migration creates.
	for _, s := range []string{`DROP INDEX IF EXISTS llm_requests_ts_idx`, `DROP INDEX IF EXISTS llm_requests_consumer_ts_idx`} {
		if err := db.exec(ctx, s); err != nil {
			return err
		}
	}
	const chunk = 1_000_000
	for lo := 1; lo <= n; lo += chunk {
		hi := min(lo+chunk-1, n)
		sql := fmt.Sprintf(`INSERT INTO llm_requests (event_id, ts, source, consumer, key_id, method, path, endpoint, model,
  status, stream, latency_ms, ttfb_ms, ttft_ms, prompt_tokens, completion_tokens, total_tokens, usage_source,
  prompt, response, finish_reason, ingested_at)
SELECT md5(i::text)::uuid, ts, 'proxy', consumer, CASE WHEN consumer = '' THEN '' ELSE 'k-' || consumer END,
  'POST', '/v1/chat/completions', 'chat', model, status, stream, latency, latency / 4,
  CASE WHEN stream THEN 20 + floor(random() * 500) END,
  CASE WHEN status = 200 THEN pt END, CASE WHEN status = 200 THEN ct END, CASE WHEN status = 200 THEN pt + ct END,
  CASE WHEN status = 200 THEN 'response' ELSE 'none' END,
  CASE WHEN status = 200 THEN '%s ' || i ELSE '' END,
  CASE WHEN status = 200 THEN '%s' ELSE '' END,
  CASE WHEN status = 200 THEN 'stop' ELSE '' END, ts
FROM (
  SELECT i, ts, consumer, model, stream, latency, pt, ct,
    CASE WHEN consumer = '' THEN 401 WHEN x < 0.015 THEN 429 WHEN x < 0.025 THEN 500 WHEN x < 0.028 THEN 503 ELSE 200 END AS status
  FROM (
    SELECT i,
      '%s'::timestamptz - make_interval(secs => i * 86400.0 / %d) AS ts,
      CASE WHEN random() < 0.005 THEN '' ELSE 'team-' || (100 + floor(40 * power(random(), 3)))::int END AS consumer,
      CASE WHEN random() < 0.7 THEN 'llama-3.1-8b' ELSE 'qwen2.5-72b' END AS model,
      random() < 0.5 AS stream,
      100 + floor(random() * 5000) AS latency,
      50 + floor(random() * 2000)::bigint AS pt,
      10 + floor(random() * 1000)::bigint AS ct,
      random() AS x
    FROM generate_series(%d, %d) AS i
  ) a
) s`, benchPrompt, benchResponse, benchEnd.Format(time.RFC3339), n, lo, hi)
		if err := db.exec(ctx, sql); err != nil {
			return err
		}
		b.Logf("postgres: %d/%d rows", hi, n)
	}
	for _, s := range []string{
		`CREATE INDEX IF NOT EXISTS llm_requests_ts_idx ON llm_requests (ts)`,
		`CREATE INDEX IF NOT EXISTS llm_requests_consumer_ts_idx ON llm_requests (consumer, ts)`,
		`VACUUM ANALYZE llm_requests`,
	} {
		if err := db.exec(ctx, s); err != nil {
			return err
		}
	}
	return nil
}

func generateClickHouse(ctx context.Context, b *testing.B, db *database, n int) error {
	if err := db.exec(ctx, `TRUNCATE TABLE llm_requests`); err != nil {
		return err
	}
	const chunk = 1_000_000
	for lo := 0; lo < n; lo += chunk {
		cnt := min(chunk, n-lo)
		sql := fmt.Sprintf(`INSERT INTO llm_requests (event_id, ts, ts_us, source, consumer, key_id, method, path, endpoint, model,
  status, stream, latency_ms, ttfb_ms, ttft_ms, prompt_tokens, completion_tokens, total_tokens, usage_source,
  prompt, response, finish_reason, ingested_at)
SELECT generateUUIDv4(), ts, 0, 'proxy', consumer, if(consumer = '', '', concat('k-', consumer)),
  'POST', '/v1/chat/completions', 'chat', model, status, stream, latency, latency / 4,
  if(stream = 1, toNullable(toFloat64(20 + rand(7) %% 500)), CAST(NULL AS Nullable(Float64))),
  if(status = 200, toNullable(pt), CAST(NULL AS Nullable(Int64))),
  if(status = 200, toNullable(ct), CAST(NULL AS Nullable(Int64))),
  if(status = 200, toNullable(pt + ct), CAST(NULL AS Nullable(Int64))),
  if(status = 200, 'response', 'none'),
  if(status = 200, concat('%s ', toString(i)), ''),
  if(status = 200, '%s', ''),
  if(status = 200, 'stop', ''), ts
FROM (
  SELECT i, ts, consumer, model, stream, latency, pt, ct,
    toInt32(multiIf(consumer = '', 401, x < 15, 429, x < 25, 500, x < 28, 503, 200)) AS status
  FROM (
    SELECT number + %d AS i,
      toDateTime(%d - intDiv((number + %d) * 86400, %d), 'UTC') AS ts,
      if(rand(1) %% 1000 < 5, '', concat('team-', toString(100 + toUInt32(40 * pow((rand(2) %% 1000000) / 1000000, 3))))) AS consumer,
      if(rand(3) %% 10 < 7, 'llama-3.1-8b', 'qwen2.5-72b') AS model,
      toUInt8(rand(4) %% 2) AS stream,
      toFloat64(100 + rand(5) %% 5000) AS latency,
      toInt64(50 + rand(6) %% 2000) AS pt,
      toInt64(10 + rand(8) %% 1000) AS ct,
      rand(9) %% 1000 AS x
    FROM numbers(%d)
  )
)`, benchPrompt, benchResponse, lo+1, benchEnd.Unix(), lo+1, n, cnt)
		if err := db.exec(ctx, sql); err != nil {
			return err
		}
		b.Logf("clickhouse: %d/%d rows", lo+cnt, n)
	}
	return db.exec(ctx, `OPTIMIZE TABLE llm_requests`)
}

func insertMarkerClickHouse(ctx context.Context, db *database, marker string) error {
	// 18.16 + clickhouse-go: Exec("INSERT … VALUES") hangs; INSERT … SELECT works.
	return db.exec(ctx, fmt.Sprintf(`INSERT INTO dashboards_bench_meta SELECT '%s'`, marker))
}
