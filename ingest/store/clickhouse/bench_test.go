package clickhouse

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/llmtap/llmtap/ingest/record"
	"github.com/llmtap/llmtap/ingest/store/internal/storetest"
	"github.com/llmtap/llmtap/schema"
)

const benchDSN = "clickhouse://127.0.0.1:9000/llmtap_bench_store"

// benchStores migrates llmtap_bench_store (with llm_requests_ceiling, a
// plain MergeTree with the same columns and sorting key) and one more
// database per extra store, all empty; it returns the main store and the
// extra ones.
func benchStores(b *testing.B, extra ...string) (*Store, []*Store) {
	ctx := context.Background()
	if err := schema.Migrate(ctx, benchDSN, nil); err != nil {
		b.Fatal(err)
	}
	s, err := New(ctx, benchDSN, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	var ddl string
	if err := s.conn.QueryRow(ctx, "SELECT create_table_query FROM system.tables WHERE database = currentDatabase() AND name = 'llm_requests'").Scan(&ddl); err != nil {
		b.Fatal(err)
	}
	plain := strings.Replace(strings.Replace(ddl, "ReplacingMergeTree", "MergeTree", 1), ".llm_requests ", ".llm_requests_ceiling ", 1)
	qs := []string{"DROP TABLE IF EXISTS llm_requests_ceiling", plain, "TRUNCATE TABLE llm_requests"}
	var chainDDL string
	if err := s.conn.QueryRow(ctx, "SELECT create_table_query FROM system.tables WHERE database = currentDatabase() AND name = 'llm_chain'").Scan(&chainDDL); err != nil {
		b.Fatal(err)
	}
	qs = append(qs, "TRUNCATE TABLE llm_chain")
	for _, e := range extra {
		db := "llmtap_bench_store_" + e
		qs = append(qs, "DROP DATABASE IF EXISTS "+db, "CREATE DATABASE "+db,
			strings.Replace(ddl, "llmtap_bench_store.", db+".", 1),
			strings.Replace(chainDDL, "llmtap_bench_store.", db+".", 1))
	}
	for _, q := range qs {
		if err := s.conn.Exec(ctx, q); err != nil {
			b.Fatalf("%s: %v", q, err)
		}
	}
	var out []*Store
	for _, e := range extra {
		x, err := New(ctx, "clickhouse://127.0.0.1:9000/llmtap_bench_store_"+e, nil)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { x.Close() })
		out = append(out, x)
	}
	return s, out
}

// BenchmarkWriteClickHouse measures Write with realistic records (2–8 KB of
// bodies, 70 % streamed) per batch size, interleaved with the ceiling: the
// same column-wise batch insert into a plain MergeTree with the same columns
// and sorting key, without de-duplication. Also: "nocheck", Write without
// the pre-insert existence check (what the check costs), and "literal", the
// check with keys in the query text instead of an external table.
func BenchmarkWriteClickHouse(b *testing.B) {
	for _, size := range []int{1000, 5000} {
		b.Run(fmt.Sprintf("batch=%d", size), func(b *testing.B) {
			s, x := benchStores(b, "nocheck", "literal")
			nc, lit := x[0], x[1]
			nc.SkipCheck, lit.LiteralCheck = true, true
			ctx := context.Background()
			write := func(st *Store) func([]record.Record) error {
				return func(recs []record.Record) error { return st.Write(ctx, recs, nil) }
			}
			chPIDs := storetest.PIDsOf("clickhouse-serv")
			storetest.ServerPIDs = func() []int { return chPIDs }
			defer func() { storetest.ServerPIDs = nil }()
			storetest.Interleave(b, size, 50000, []storetest.Variant{
				{Name: "ceiling", Write: func(recs []record.Record) error { return ceiling(ctx, s, recs) }},
				{Name: "store", Write: write(s)},
				{Name: "nocheck", Write: write(nc)},
				{Name: "literal", Write: write(lit)},
			})
		})
	}
}

// ceiling inserts recs as Write would, minus idempotency: id parsing and
// one column-wise batch into the plain MergeTree.
func ceiling(ctx context.Context, s *Store, recs []record.Record) error {
	rs := make([]*record.Record, len(recs))
	ids := make([]uuid.UUID, len(recs))
	for i := range recs {
		rs[i] = &recs[i]
		ids[i] = uuid.MustParse(recs[i].EventID)
	}
	return InsertRecords(ctx, s.conn, "llm_requests_ceiling", rs, ids, time.Now())
}
