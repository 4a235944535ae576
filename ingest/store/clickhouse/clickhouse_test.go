package clickhouse_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/llmtap/llmtap/ingest/record"
	"github.com/llmtap/llmtap/ingest/store"
	"github.com/llmtap/llmtap/ingest/store/clickhouse"
	"github.com/llmtap/llmtap/ingest/store/internal/storetest"
	"github.com/llmtap/llmtap/schema"
)

const testDSN = "clickhouse://127.0.0.1:9000/llmtap_test_store"

// setup migrates a fresh llmtap_test_store database and opens a store on it.
func setup(t testing.TB) *clickhouse.Store {
	t.Helper()
	ctx := context.Background()
	admin, err := clickhouse.New(ctx, "clickhouse://127.0.0.1:9000/default", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	if err := admin.Conn().Exec(ctx, "DROP DATABASE IF EXISTS llmtap_test_store"); err != nil {
		t.Fatal(err)
	}
	if err := schema.Migrate(ctx, testDSN, nil); err != nil {
		t.Fatal(err)
	}
	s, err := clickhouse.New(ctx, testDSN, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

const selectRecords = `SELECT toString(event_id), ts, ts_us, source, consumer, key_id, key_prefix, client_ip,
	method, path, request_id, endpoint, model, status, stream, latency_ms, ttfb_ms, ttft_ms,
	prompt_tokens, completion_tokens, total_tokens, usage_source, prompt, response, reasoning,
	tool_calls, finish_reason, error, request_headers, response_headers, request_body,
	response_body, truncated, ingested_at
	FROM llm_requests ORDER BY ts, ts_us, event_id`

func suite(s *clickhouse.Store) *storetest.Suite {
	conn := s.Conn()
	ctx := context.Background()
	return &storetest.Suite{
		Store: s,
		Reset: func(t *testing.T) {
			for _, q := range []string{"TRUNCATE TABLE llm_requests", "TRUNCATE TABLE llm_rejects"} {
				if err := conn.Exec(ctx, q); err != nil {
					t.Fatal(err)
				}
			}
		},
		Records: func(t *testing.T) []record.Record {
			rows, err := conn.Query(ctx, selectRecords)
			if err != nil {
				t.Fatal(err)
			}
			defer rows.Close()
			var out []record.Record
			for rows.Next() {
				var r record.Record
				var us uint32
				var status int32
				var stream, truncated uint8
				if err := rows.Scan(&r.EventID, &r.TS, &us, &r.Source, &r.Consumer, &r.KeyID, &r.KeyPrefix, &r.ClientIP,
					&r.Method, &r.Path, &r.RequestID, &r.Endpoint, &r.Model, &status, &stream, &r.LatencyMs,
					&r.TTFBMs, &r.TTFTMs, &r.PromptTokens, &r.CompletionTokens, &r.TotalTokens, &r.UsageSource,
					&r.Prompt, &r.Response, &r.Reasoning, &r.ToolCalls, &r.FinishReason, &r.Error,
					&r.RequestHeaders, &r.ResponseHeaders, &r.RequestBody, &r.ResponseBody, &truncated,
					&r.IngestedAt); err != nil {
					t.Fatal(err)
				}
				r.TS = r.TS.UTC().Add(time.Duration(us) * time.Microsecond)
				r.IngestedAt = r.IngestedAt.UTC()
				r.Status, r.Stream, r.Truncated = int(status), stream == 1, truncated == 1
				out = append(out, r)
			}
			if err := rows.Err(); err != nil {
				t.Fatal(err)
			}
			return out
		},
		Rejects: func(t *testing.T) []record.Reject {
			rows, err := conn.Query(ctx, "SELECT received_at, source, reason, payload FROM llm_rejects ORDER BY reason, payload")
			if err != nil {
				t.Fatal(err)
			}
			defer rows.Close()
			var out []record.Reject
			for rows.Next() {
				var j record.Reject
				var p string
				if err := rows.Scan(&j.ReceivedAt, &j.Source, &j.Reason, &p); err != nil {
					t.Fatal(err)
				}
				j.Payload = []byte(p)
				out = append(out, j)
			}
			return out
		},
		Stats: func(t *testing.T) (int64, int64) {
			var n uint64
			var tok int64
			if err := conn.QueryRow(ctx, "SELECT count(), toInt64(ifNull(sum(total_tokens), 0)) FROM llm_requests").Scan(&n, &tok); err != nil {
				t.Fatal(err)
			}
			return int64(n), tok
		},
		Compact: func(t *testing.T) {
			if err := conn.Exec(ctx, "OPTIMIZE TABLE llm_requests FINAL"); err != nil {
				t.Fatal(err)
			}
		},
		Normalize: func(r record.Record) record.Record {
			r.TS = r.TS.Truncate(time.Microsecond).UTC()
			r.IngestedAt = r.IngestedAt.Truncate(time.Second).UTC()
			return r
		},
	}
}

func TestStore(t *testing.T) {
	if testing.Short() {
		t.Skip("needs ClickHouse")
	}
	s := setup(t)
	if err := s.Ping(context.Background()); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	suite(s).Run(t)
}

// TestMergeCollapsesDuplicates checks the backstop: copies of an event that
// got past the existence check (here: forced with SkipCheck) collapse when
// parts merge.
func TestMergeCollapsesDuplicates(t *testing.T) {
	if testing.Short() {
		t.Skip("needs ClickHouse")
	}
	s := setup(t)
	ctx := context.Background()
	s.SkipCheck = true
	recs := storetest.Realistic(200, 11, time.Now())
	for i := 0; i < 3; i++ {
		if err := s.Write(ctx, recs, nil); err != nil {
			t.Fatal(err)
		}
	}
	var n uint64
	if err := s.Conn().QueryRow(ctx, "SELECT count() FROM llm_requests").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 600 {
		t.Fatalf("without the check: %d rows, want 600 (test premise)", n)
	}
	if err := s.Conn().Exec(ctx, "OPTIMIZE TABLE llm_requests FINAL"); err != nil {
		t.Fatal(err)
	}
	if err := s.Conn().QueryRow(ctx, "SELECT count() FROM llm_requests").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 200 {
		t.Errorf("after OPTIMIZE FINAL: %d rows, want 200", n)
	}
}

func TestOpenDispatch(t *testing.T) {
	if testing.Short() {
		t.Skip("needs ClickHouse")
	}
	setup(t)
	ctx := context.Background()
	for _, dsn := range []string{testDSN, "tcp://127.0.0.1:9000/llmtap_test_store"} {
		st, err := store.Open(ctx, dsn, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := st.(*clickhouse.Store); !ok {
			t.Fatalf("Open gave %T", st)
		}
		if err := st.Ping(ctx); err != nil {
			t.Fatal(err)
		}
		st.Close()
	}
}

func TestPingUnmigrated(t *testing.T) {
	if testing.Short() {
		t.Skip("needs ClickHouse")
	}
	s, err := clickhouse.New(context.Background(), "clickhouse://127.0.0.1:9000/default", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	storetest.Unmigrated(t, s)
}

func TestUnavailable(t *testing.T) {
	s, err := clickhouse.New(context.Background(), "clickhouse://default:secret@127.0.0.1:1/x?dial_timeout=2s", nil)
	if err != nil {
		t.Fatalf("New must not connect: %v", err)
	}
	defer s.Close()
	storetest.Unreachable(t, s)
}

// TestRestart takes the server away through a forwarder and brings it back.
func TestRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("needs ClickHouse")
	}
	setup(t)
	fw := storetest.NewForwarder(t, "127.0.0.1:9000")
	ctx := context.Background()
	s, err := clickhouse.New(ctx, "clickhouse://"+fw.Addr+"/llmtap_test_store?dial_timeout=2s", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	recs := storetest.Realistic(20, 10, time.Now())
	if err := s.Write(ctx, recs[:10], nil); err != nil {
		t.Fatal(err)
	}
	fw.Down()
	for i := 0; i < 2; i++ {
		if err := s.Write(ctx, recs, nil); !errors.Is(err, store.ErrUnavailable) {
			t.Errorf("Write while down = %v, want ErrUnavailable", err)
		}
	}
	fw.Up()
	var err2 error
	for i := 0; i < 3; i++ { // the pool may hand out one more dead connection
		if err2 = s.Write(ctx, recs, nil); err2 == nil {
			break
		}
	}
	if err2 != nil {
		t.Fatalf("Write after restart: %v", err2)
	}
	var n uint64
	if err := s.Conn().QueryRow(ctx, "SELECT count() FROM llm_requests").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 20 {
		t.Errorf("count %d after restart and replay, want 20", n)
	}
}

// TestOutOfRangeTimes: DateTime holds 1970–2106; a record outside that
// range (a zero time) is stored clamped rather than failing its batch forever.
func TestOutOfRangeTimes(t *testing.T) {
	if testing.Short() {
		t.Skip("needs ClickHouse")
	}
	s := setup(t)
	ctx := context.Background()
	r := storetest.Sparse(time.Time{})
	r.IngestedAt = time.Time{}
	for i := 0; i < 2; i++ { // and a replay of it stores nothing
		if err := s.Write(ctx, []record.Record{r}, nil); err != nil {
			t.Fatalf("Write with zero ts: %v", err)
		}
	}
	var n uint64
	var ts time.Time
	if err := s.Conn().QueryRow(ctx, "SELECT count(), min(ts) FROM llm_requests").Scan(&n, &ts); err != nil {
		t.Fatal(err)
	}
	if n != 1 || ts.Unix() != 0 {
		t.Errorf("count %d, ts %v; want 1 row at the epoch", n, ts)
	}
}

// TestPartlyStoredBatchReleasesIDs is a regression test: a batch of which
// some events were already stored used to leave ids marked in flight (the
// release worked on the reordered slice), so the next Write with one of them
// waited forever.
func TestPartlyStoredBatchReleasesIDs(t *testing.T) {
	if testing.Short() {
		t.Skip("needs ClickHouse")
	}
	s := setup(t)
	recs := storetest.Realistic(6, 13, time.Now())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.Write(ctx, recs[:3], nil); err != nil {
		t.Fatal(err)
	}
	if err := s.Write(ctx, recs, nil); err != nil { // half stored, half new
		t.Fatal(err)
	}
	if err := s.Write(ctx, recs, nil); err != nil {
		t.Fatalf("third write of the same ids: %v (ids left in flight)", err)
	}
	var n uint64
	if err := s.Conn().QueryRow(ctx, "SELECT count() FROM llm_requests").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 6 {
		t.Errorf("rows = %d, want 6", n)
	}
}
