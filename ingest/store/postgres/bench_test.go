package postgres

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/llmtap/llmtap/ingest/record"
	"github.com/llmtap/llmtap/ingest/store/internal/storetest"
	"github.com/llmtap/llmtap/schema"
)

const benchDSN = "postgres://postgres@127.0.0.1:5432/llmtap_bench_store?sslmode=disable"

func benchStore(b *testing.B) *Store {
	ctx := context.Background()
	if err := schema.Migrate(ctx, benchDSN, nil); err != nil {
		b.Fatal(err)
	}
	s, err := New(ctx, benchDSN, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	// The ceiling's table: same columns, compression, primary key, indexes
	// and rollup trigger (LIKE copies no triggers; the rollups are part of
	// what a row of llm_requests costs the database).
	for _, q := range []string{
		"DROP TABLE IF EXISTS llm_requests_ceiling",
		"CREATE TABLE llm_requests_ceiling (LIKE llm_requests INCLUDING ALL)",
		`CREATE TRIGGER llm_requests_ceiling_rollup AFTER INSERT ON llm_requests_ceiling
			REFERENCING NEW TABLE AS llmtap_new_rows FOR EACH STATEMENT EXECUTE FUNCTION llmtap_rollup_trigger()`,
		"TRUNCATE llm_requests, llm_chain",
		"CHECKPOINT",
	} {
		if _, err := s.pool.Exec(ctx, q); err != nil {
			b.Fatal(err)
		}
	}
	return s
}

// BenchmarkWritePostgres measures Write with realistic records (2–8 KB of
// bodies, 70 % streamed) per batch size, interleaved with the ceiling:
// plain binary COPY (pgx CopyFrom) of the same kind of rows into a table with
// the same indexes and no idempotency, and with the other write modes
// (staging table + INSERT … ON CONFLICT; multi-row INSERT … ON CONFLICT).
// Each variant's tables start empty and grow alike.
func BenchmarkWritePostgres(b *testing.B) {
	for _, size := range []int{1000, 5000} {
		b.Run(fmt.Sprintf("batch=%d", size), func(b *testing.B) {
			s := benchStore(b)
			ctx := context.Background()
			mode := func(m Mode) func([]record.Record) error {
				return func(recs []record.Record) error { s.SetMode(m); return s.Write(ctx, recs, nil) }
			}
			storetest.ServerPIDs = func() []int {
				rows, _ := s.pool.Query(ctx, "SELECT pid FROM pg_stat_activity WHERE datname = current_database() OR backend_type IN ('walwriter', 'checkpointer', 'background writer')")
				pids, _ := pgx.CollectRows(rows, pgx.RowTo[int32])
				out := make([]int, len(pids))
				for i, p := range pids {
					out[i] = int(p)
				}
				return out
			}
			defer func() { storetest.ServerPIDs = nil }()
			storetest.Interleave(b, size, 20000, []storetest.Variant{
				{Name: "ceiling", Write: func(recs []record.Record) error { return copyCeiling(ctx, s, recs) }},
				{Name: "copy", Write: mode(ModeCopy)},
				{Name: "stage", Write: mode(ModeStage)},
				{Name: "insert", Write: mode(ModeInsert)},
			})
		})
	}
}

// copyCeiling is the database's own ceiling: one transaction, one binary
// COPY straight into the table, nothing else.
func copyCeiling(ctx context.Context, s *Store, recs []record.Record) error {
	return copyInto(ctx, s, "llm_requests_ceiling", recs)
}

// BenchmarkPostgresLayouts compares the ceiling (binary COPY) into table
// layouts that 0001_init.sql chose between: the chosen one (primary key
// event_id, btree ts, btree (consumer, ts)); BRIN instead of btree on ts; and
// monthly range partitions on ts (primary key (event_id, ts), as partitioned
// tables require), with the same indexes.
func BenchmarkPostgresLayouts(b *testing.B) {
	s := benchStore(b)
	ctx := context.Background()
	now := time.Now().UTC()
	month := time.Date(now.Year(), now.Month(), 1, 0, 0, 0, 0, time.UTC)
	qs := []string{
		"DROP TABLE IF EXISTS llm_requests_brin, llm_requests_part",
		"CREATE TABLE llm_requests_brin (LIKE llm_requests INCLUDING DEFAULTS INCLUDING COMPRESSION)",
		"ALTER TABLE llm_requests_brin ADD PRIMARY KEY (event_id)",
		"CREATE INDEX ON llm_requests_brin USING brin (ts)",
		"CREATE INDEX ON llm_requests_brin (consumer, ts)",
		"CREATE TABLE llm_requests_part (LIKE llm_requests INCLUDING DEFAULTS INCLUDING COMPRESSION) PARTITION BY RANGE (ts)",
		"ALTER TABLE llm_requests_part ADD PRIMARY KEY (event_id, ts)",
		"CREATE INDEX ON llm_requests_part (ts)",
		"CREATE INDEX ON llm_requests_part (consumer, ts)",
		"CREATE TABLE llm_requests_part_default PARTITION OF llm_requests_part DEFAULT",
	}
	for m := -2; m <= 1; m++ {
		from, to := month.AddDate(0, m, 0), month.AddDate(0, m+1, 0)
		qs = append(qs, fmt.Sprintf("CREATE TABLE llm_requests_part_%s PARTITION OF llm_requests_part FOR VALUES FROM ('%s') TO ('%s')",
			from.Format("200601"), from.Format(time.RFC3339), to.Format(time.RFC3339)))
	}
	for _, q := range qs {
		if _, err := s.pool.Exec(ctx, q); err != nil {
			b.Fatalf("%s: %v", q, err)
		}
	}
	into := func(table string) func([]record.Record) error {
		return func(recs []record.Record) error { return copyInto(ctx, s, table, recs) }
	}
	storetest.ServerPIDs = func() []int {
		rows, _ := s.pool.Query(ctx, "SELECT pid FROM pg_stat_activity WHERE datname = current_database() OR backend_type IN ('walwriter', 'checkpointer', 'background writer')")
		pids, _ := pgx.CollectRows(rows, pgx.RowTo[int32])
		out := make([]int, len(pids))
		for i, p := range pids {
			out[i] = int(p)
		}
		return out
	}
	defer func() { storetest.ServerPIDs = nil }()
	storetest.Interleave(b, 5000, 20000, []storetest.Variant{
		{Name: "btree", Write: into("llm_requests_ceiling")},
		{Name: "brin", Write: into("llm_requests_brin")},
		{Name: "partitioned", Write: into("llm_requests_part")},
	})
}

func copyInto(ctx context.Context, s *Store, table string, recs []record.Record) error {
	b, err := prepare(recs, nil)
	if err != nil {
		return err
	}
	defer b.waitHashed()
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(ctx)
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{table}, requestColumns, &recordSource{b: b}); err != nil {
		return err
	}
	return tx.Commit(ctx)
}
