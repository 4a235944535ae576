package dashboards

import (
	"context"
	"fmt"
	"math"
	"reflect"
	"sort"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/llmtap/llmtap/dashboards/macro"
	"github.com/llmtap/llmtap/schema"
)

// Test databases (COMMON.md: llmtap_test_<pkg>).
const (
	pgTestDSN = "postgres://postgres@127.0.0.1:5432/llmtap_test_dashboards?sslmode=disable"
	chTestDSN = "clickhouse://127.0.0.1:9000/llmtap_test_dashboards"
)

// row is one llm_requests row of seed data; nil pointers are NULL.
type row struct {
	ts                                 time.Time
	consumer, model, prompt, response  string
	status                             int
	stream                             bool
	latency                            float64
	ttft                               *float64
	promptTok, completionTok, totalTok *int64
}

// result is a query result with values normalised: numbers are float64,
// times time.Time (UTC), strings string, NULL nil.
type result struct {
	cols []string
	rows [][]any
}

func (r result) col(name string) int {
	for i, c := range r.cols {
		if c == name {
			return i
		}
	}
	return -1
}

// database is one real store the panels run on.
type database struct {
	kind   string
	expand func(sql string, q macro.Query) (string, error)
	query  func(ctx context.Context, sql string) (result, error)
	exec   func(ctx context.Context, sql string) error
	// seed inserts rows (COPY / batch INSERT, as the stores write; the
	// rollups follow through the database's triggers or views), after
	// emptying llm_requests and the rollups when truncate is set.
	seed  func(ctx context.Context, rows []row, truncate bool) error
	close func()
}

func openPostgres(ctx context.Context, t testing.TB) *database {
	return openPostgresDSN(ctx, t, pgTestDSN)
}

func openClickHouse(ctx context.Context, t testing.TB) *database {
	return openClickHouseDSN(ctx, t, chTestDSN)
}

func openPostgresDSN(ctx context.Context, t testing.TB, dsn string) *database {
	t.Helper()
	if err := schema.Migrate(ctx, dsn, nil); err != nil {
		t.Fatalf("migrate postgres: %v", err)
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connect postgres: %v", err)
	}
	return &database{
		kind:   Postgres,
		expand: macro.Postgres,
		exec: func(ctx context.Context, sql string) error {
			_, err := conn.Exec(ctx, sql)
			return err
		},
		query: func(ctx context.Context, sql string) (result, error) {
			rows, err := conn.Query(ctx, sql)
			if err != nil {
				return result{}, err
			}
			defer rows.Close()
			var res result
			for _, f := range rows.FieldDescriptions() {
				res.cols = append(res.cols, f.Name)
			}
			for rows.Next() {
				vals, err := rows.Values()
				if err != nil {
					return result{}, err
				}
				for i := range vals {
					vals[i] = normalise(vals[i])
				}
				res.rows = append(res.rows, vals)
			}
			return res, rows.Err()
		},
		seed: func(ctx context.Context, rs []row, truncate bool) error {
			if truncate {
				// The TRUNCATE trigger empties the rollups as well.
				if _, err := conn.Exec(ctx, "TRUNCATE llm_requests"); err != nil {
					return err
				}
			}
			src := make([][]any, len(rs))
			for i, r := range rs {
				src[i] = []any{uuid.Must(uuid.NewV7()).String(), r.ts, "proxy", r.consumer, r.model, r.status, r.stream,
					r.latency, r.ttft, r.promptTok, r.completionTok, r.totalTok, r.prompt, r.response}
			}
			_, err := conn.CopyFrom(ctx, pgx.Identifier{"llm_requests"},
				[]string{"event_id", "ts", "source", "consumer", "model", "status", "stream",
					"latency_ms", "ttft_ms", "prompt_tokens", "completion_tokens", "total_tokens", "prompt", "response"},
				pgx.CopyFromRows(src))
			if err == nil {
				_, err = conn.Exec(ctx, "ANALYZE llm_requests")
			}
			return err
		},
		close: func() { conn.Close(context.Background()) },
	}
}

func openClickHouseDSN(ctx context.Context, t testing.TB, dsn string) *database {
	t.Helper()
	if err := schema.Migrate(ctx, dsn, nil); err != nil {
		t.Fatalf("migrate clickhouse: %v", err)
	}
	opts, err := schema.CHOptions(dsn)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := clickhouse.Open(opts)
	if err != nil {
		t.Fatalf("connect clickhouse: %v", err)
	}
	return &database{
		kind:   ClickHouse,
		expand: macro.ClickHouse,
		exec:   func(ctx context.Context, sql string) error { return conn.Exec(ctx, sql) },
		query: func(ctx context.Context, sql string) (result, error) {
			return chQuery(ctx, conn, sql)
		},
		seed: func(ctx context.Context, rs []row, truncate bool) error {
			if truncate {
				// The materialized views do not follow TRUNCATE.
				for _, table := range []string{"llm_requests", "llm_usage_1m", "llm_usage_1h", "llm_usage_all_1m", "llm_status_1m"} {
					if err := conn.Exec(ctx, "TRUNCATE TABLE "+table); err != nil {
						return err
					}
				}
			}
			b, err := conn.PrepareBatch(ctx, `INSERT INTO llm_requests (event_id, ts, ts_us, source, consumer, model, status, stream,
				latency_ms, ttft_ms, prompt_tokens, completion_tokens, total_tokens, prompt, response, ingested_at)`)
			if err != nil {
				return err
			}
			for _, r := range rs {
				stream := uint8(0)
				if r.stream {
					stream = 1
				}
				if err := b.Append(uuid.Must(uuid.NewV7()), r.ts, uint32(r.ts.Nanosecond()/1000), "proxy", r.consumer, r.model,
					int32(r.status), stream, r.latency, r.ttft, r.promptTok, r.completionTok, r.totalTok, r.prompt, r.response, time.Now()); err != nil {
					return err
				}
			}
			return b.Send()
		},
		close: func() { conn.Close() },
	}
}

func chQuery(ctx context.Context, conn driver.Conn, sql string) (result, error) {
	rows, err := conn.Query(ctx, sql)
	if err != nil {
		return result{}, err
	}
	defer rows.Close()
	res := result{cols: rows.Columns()}
	types := rows.ColumnTypes()
	for rows.Next() {
		ptrs := make([]any, len(types))
		for i, ct := range types {
			ptrs[i] = reflect.New(ct.ScanType()).Interface()
		}
		if err := rows.Scan(ptrs...); err != nil {
			return result{}, err
		}
		vals := make([]any, len(ptrs))
		for i, p := range ptrs {
			vals[i] = normalise(reflect.ValueOf(p).Elem().Interface())
		}
		res.rows = append(res.rows, vals)
	}
	return res, rows.Err()
}

// normalise maps driver values onto float64 / string / time.Time / nil.
func normalise(v any) any {
	rv := reflect.ValueOf(v)
	if !rv.IsValid() {
		return nil
	}
	if rv.Kind() == reflect.Pointer {
		if rv.IsNil() {
			return nil
		}
		return normalise(rv.Elem().Interface())
	}
	switch x := v.(type) {
	case time.Time:
		return x.UTC()
	case string:
		return x
	case bool:
		if x {
			return 1.0
		}
		return 0.0
	case pgtype.Numeric:
		f, err := x.Float64Value()
		if err != nil || !f.Valid {
			return nil
		}
		return f.Float64
	}
	switch rv.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return float64(rv.Int())
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return float64(rv.Uint())
	case reflect.Float32, reflect.Float64:
		return rv.Float()
	}
	return fmt.Sprint(v)
}

// seriesPoints turns a long time series result into metric → time → value
// of the value column; a result without a metric column is keyed "".
func seriesPoints(t *testing.T, r result, value string) map[string]map[time.Time]float64 {
	t.Helper()
	ti, mi, vi := r.col("time"), r.col("metric"), r.col(value)
	if ti < 0 || vi < 0 {
		t.Fatalf("result has columns %v, want time and %s", r.cols, value)
	}
	out := map[string]map[time.Time]float64{}
	var last time.Time
	for _, row := range r.rows {
		ts := asTime(t, row[ti])
		if ts.Before(last) {
			t.Errorf("time series not ordered by time: %v after %v", ts, last)
		}
		last = ts
		m := ""
		if mi >= 0 {
			m = row[mi].(string)
		}
		if out[m] == nil {
			out[m] = map[time.Time]float64{}
		}
		if row[vi] == nil {
			t.Errorf("NULL %s at %v %s", value, ts, m)
			continue
		}
		out[m][ts] = row[vi].(float64)
	}
	return out
}

// asTime reads a time column: PostgreSQL's $__timeGroupAlias yields epoch
// seconds, ClickHouse a DateTime.
func asTime(t *testing.T, v any) time.Time {
	switch x := v.(type) {
	case time.Time:
		return x
	case float64:
		return time.Unix(int64(x), 0).UTC()
	}
	t.Fatalf("time column holds %T %v", v, v)
	return time.Time{}
}

func approx(a, b float64) bool { return math.Abs(a-b) <= 1e-6*math.Max(1, math.Abs(b)) }

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
