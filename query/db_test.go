package query

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/jackc/pgx/v5"

	"github.com/llmtap/llmtap/ingest/record"
	"github.com/llmtap/llmtap/schema"
)

// Test stores: PostgreSQL and ClickHouse from scripts/services.sh, with this
// package's own databases (llmtap_test_query…).
func pgDSN(db string) string {
	if h := os.Getenv("LLMTAP_TEST_PG_HOST"); h != "" {
		return "postgres://postgres@" + h + "/" + db + "?sslmode=disable"
	}
	return "postgres://postgres@127.0.0.1:5432/" + db + "?sslmode=disable"
}

func chDSN(db string) string {
	if h := os.Getenv("LLMTAP_TEST_CH_HOST"); h != "" {
		return "clickhouse://" + h + "/" + db
	}
	return "clickhouse://127.0.0.1:9000/" + db
}

// freshStores drops database db on both servers, migrates it with package
// schema and returns the DSNs by dialect. It skips under -short.
func freshStores(t testing.TB, db string) map[string]string {
	t.Helper()
	if testing.Short() {
		t.Skip("needs PostgreSQL and ClickHouse (scripts/services.sh)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	admin, err := pgx.Connect(ctx, pgDSN("postgres"))
	if err != nil {
		t.Fatalf("postgres: %v", err)
	}
	if _, err := admin.Exec(ctx, "DROP DATABASE IF EXISTS "+db+" WITH (FORCE)"); err != nil {
		t.Fatalf("postgres: drop %s: %v", db, err)
	}
	admin.Close(ctx)

	opts, err := schema.CHOptions(chDSN("default"))
	if err != nil {
		t.Fatal(err)
	}
	ch, err := clickhouse.Open(opts)
	if err != nil {
		t.Fatalf("clickhouse: %v", err)
	}
	if err := ch.Exec(ctx, "DROP DATABASE IF EXISTS "+db); err != nil {
		t.Fatalf("clickhouse: drop %s: %v", db, err)
	}
	ch.Close()

	dsns := map[string]string{Postgres: pgDSN(db), ClickHouse: chDSN(db)}
	for _, dsn := range dsns {
		if err := schema.Migrate(ctx, dsn, nil); err != nil {
			t.Fatalf("migrate %s: %v", dsn, err)
		}
	}
	return dsns
}

// seed writes recs with plain inserts (no dedupe: seeding a record twice on
// ClickHouse stores it twice, like a racing replay would).
func seed(t testing.TB, dsn string, recs []record.Record) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	d, err := schema.Dialect(dsn)
	if err != nil {
		t.Fatal(err)
	}
	if d == Postgres {
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		rows := make([][]any, len(recs))
		for i, r := range recs {
			rows[i] = []any{r.EventID, r.TS, r.Source, r.Consumer, r.KeyID, r.KeyPrefix, r.ClientIP,
				r.Method, r.Path, r.RequestID, r.Endpoint, r.Model, r.Status, r.Stream, r.LatencyMs,
				r.TTFBMs, r.TTFTMs, r.PromptTokens, r.CompletionTokens, r.TotalTokens, r.UsageSource,
				r.Prompt, r.Response, r.Reasoning, r.ToolCalls, r.FinishReason, r.Error,
				r.RequestHeaders, r.ResponseHeaders, r.RequestBody, r.ResponseBody, r.Truncated, r.IngestedAt}
		}
		if _, err := conn.CopyFrom(ctx, pgx.Identifier{"llm_requests"}, ExportColumns[:colChainBatch], pgx.CopyFromRows(rows)); err != nil {
			t.Fatalf("seed postgres: %v", err)
		}
		return
	}
	opts, err := schema.CHOptions(dsn)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := clickhouse.Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cols := append([]string{"event_id", "ts", "ts_us"}, ExportColumns[2:colChainBatch]...)
	batch, err := conn.PrepareBatch(ctx, "INSERT INTO llm_requests ("+strings.Join(cols, ", ")+")")
	if err != nil {
		t.Fatalf("seed clickhouse: %v", err)
	}
	b2u := func(b bool) uint8 {
		if b {
			return 1
		}
		return 0
	}
	for _, r := range recs {
		ts := r.TS.UTC()
		if err := batch.Append(r.EventID, ts.Truncate(time.Second), uint32(ts.Nanosecond()/1000), r.Source, r.Consumer,
			r.KeyID, r.KeyPrefix, r.ClientIP, r.Method, r.Path, r.RequestID, r.Endpoint, r.Model,
			int32(r.Status), b2u(r.Stream), r.LatencyMs, r.TTFBMs, r.TTFTMs, r.PromptTokens,
			r.CompletionTokens, r.TotalTokens, r.UsageSource, r.Prompt, r.Response, r.Reasoning,
			r.ToolCalls, r.FinishReason, r.Error, r.RequestHeaders, r.ResponseHeaders, r.RequestBody,
			r.ResponseBody, b2u(r.Truncated), r.IngestedAt.UTC().Truncate(time.Second)); err != nil {
			t.Fatalf("seed clickhouse: %v", err)
		}
	}
	if err := batch.Send(); err != nil {
		t.Fatalf("seed clickhouse: %v", err)
	}
}

// seedBoth seeds the same records into every store.
func seedBoth(t testing.TB, dsns map[string]string, recs []record.Record) {
	t.Helper()
	for _, dsn := range dsns {
		seed(t, dsn, recs)
	}
}

func i64(v int64) *int64     { return &v }
func f64(v float64) *float64 { return &v }

// uuidN returns a fixed, valid UUIDv7-shaped id whose order follows n.
func uuidN(n int) string {
	return fmt.Sprintf("01900000-0000-7000-8000-%012x", n)
}
