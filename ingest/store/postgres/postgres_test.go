package postgres_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/llmtap/llmtap/ingest/record"
	"github.com/llmtap/llmtap/ingest/store"
	"github.com/llmtap/llmtap/ingest/store/internal/storetest"
	"github.com/llmtap/llmtap/ingest/store/postgres"
	"github.com/llmtap/llmtap/schema"
)

const (
	adminDSN = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
	testDSN  = "postgres://postgres@127.0.0.1:5432/llmtap_test_store?sslmode=disable"
)

var fresh sync.Once

// setup migrates a fresh llmtap_test_store database (once per test binary)
// and opens a store on it with empty tables.
func setup(t testing.TB) *postgres.Store {
	t.Helper()
	ctx := context.Background()
	var err error
	fresh.Do(func() {
		var conn *pgx.Conn
		if conn, err = pgx.Connect(ctx, adminDSN); err != nil {
			return
		}
		defer conn.Close(ctx)
		if _, err = conn.Exec(ctx, "DROP DATABASE IF EXISTS llmtap_test_store WITH (FORCE)"); err != nil {
			return
		}
		err = schema.Migrate(ctx, testDSN, nil)
	})
	if err != nil {
		t.Fatal(err)
	}
	s, err := postgres.New(ctx, testDSN, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if _, err := s.Pool().Exec(ctx, "TRUNCATE llm_requests, llm_rejects"); err != nil {
		t.Fatal(err)
	}
	return s
}

const selectRecords = `SELECT event_id::text, ts, source, consumer, key_id, key_prefix, client_ip,
	method, path, request_id, endpoint, model, status, stream, latency_ms, ttfb_ms, ttft_ms,
	prompt_tokens, completion_tokens, total_tokens, usage_source, prompt, response, reasoning,
	tool_calls, finish_reason, error, request_headers, response_headers, request_body,
	response_body, truncated, ingested_at
	FROM llm_requests ORDER BY ts, event_id`

func suite(t *testing.T, s *postgres.Store) *storetest.Suite {
	pool := s.Pool()
	ctx := context.Background()
	return &storetest.Suite{
		Store: s,
		Reset: func(t *testing.T) {
			if _, err := pool.Exec(ctx, "TRUNCATE llm_requests, llm_rejects"); err != nil {
				t.Fatal(err)
			}
		},
		Records: func(t *testing.T) []record.Record {
			rows, err := pool.Query(ctx, selectRecords)
			if err != nil {
				t.Fatal(err)
			}
			defer rows.Close()
			var out []record.Record
			for rows.Next() {
				var r record.Record
				var status int32
				if err := rows.Scan(&r.EventID, &r.TS, &r.Source, &r.Consumer, &r.KeyID, &r.KeyPrefix, &r.ClientIP,
					&r.Method, &r.Path, &r.RequestID, &r.Endpoint, &r.Model, &status, &r.Stream, &r.LatencyMs,
					&r.TTFBMs, &r.TTFTMs, &r.PromptTokens, &r.CompletionTokens, &r.TotalTokens, &r.UsageSource,
					&r.Prompt, &r.Response, &r.Reasoning, &r.ToolCalls, &r.FinishReason, &r.Error,
					&r.RequestHeaders, &r.ResponseHeaders, &r.RequestBody, &r.ResponseBody, &r.Truncated,
					&r.IngestedAt); err != nil {
					t.Fatal(err)
				}
				r.Status = int(status)
				r.TS, r.IngestedAt = r.TS.UTC(), r.IngestedAt.UTC()
				out = append(out, r)
			}
			if err := rows.Err(); err != nil {
				t.Fatal(err)
			}
			return out
		},
		Rejects: func(t *testing.T) []record.Reject {
			rows, err := pool.Query(ctx, "SELECT received_at, source, reason, payload FROM llm_rejects ORDER BY reason, payload")
			if err != nil {
				t.Fatal(err)
			}
			out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (record.Reject, error) {
				var j record.Reject
				err := row.Scan(&j.ReceivedAt, &j.Source, &j.Reason, &j.Payload)
				return j, err
			})
			if err != nil {
				t.Fatal(err)
			}
			return out
		},
		Stats: func(t *testing.T) (int64, int64) {
			var n, tok int64
			if err := pool.QueryRow(ctx, "SELECT count(*), coalesce(sum(total_tokens), 0) FROM llm_requests").Scan(&n, &tok); err != nil {
				t.Fatal(err)
			}
			return n, tok
		},
		Normalize: func(r record.Record) record.Record {
			r.TS = r.TS.Truncate(time.Microsecond).UTC()
			r.IngestedAt = r.IngestedAt.Truncate(time.Microsecond).UTC()
			return r
		},
	}
}

func TestStore(t *testing.T) {
	if testing.Short() {
		t.Skip("needs PostgreSQL")
	}
	s := setup(t)
	if err := s.Ping(context.Background()); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	for _, m := range []struct {
		name string
		mode postgres.Mode
	}{{"copy", postgres.ModeCopy}, {"stage", postgres.ModeStage}, {"insert", postgres.ModeInsert}} {
		t.Run(m.name, func(t *testing.T) {
			s.SetMode(m.mode)
			suite(t, s).Run(t)
		})
	}
}

func TestOpenDispatch(t *testing.T) {
	if testing.Short() {
		t.Skip("needs PostgreSQL")
	}
	setup(t)
	ctx := context.Background()
	st, err := store.Open(ctx, testDSN, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, ok := st.(*postgres.Store); !ok {
		t.Fatalf("Open gave %T", st)
	}
	if err := st.Ping(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestPingUnmigrated(t *testing.T) {
	if testing.Short() {
		t.Skip("needs PostgreSQL")
	}
	s, err := postgres.New(context.Background(), "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	storetest.Unmigrated(t, s)
}

func TestUnavailable(t *testing.T) {
	s, err := postgres.New(context.Background(), "postgres://postgres:secret@127.0.0.1:1/x?sslmode=disable&connect_timeout=2", nil)
	if err != nil {
		t.Fatalf("New must not connect: %v", err)
	}
	defer s.Close()
	storetest.Unreachable(t, s)
}

func TestConstraintErrorNotUnavailable(t *testing.T) {
	if testing.Short() {
		t.Skip("needs PostgreSQL")
	}
	s := setup(t)
	r := storetest.Sparse(time.Now())
	r.Prompt = "nul \x00 byte" // PostgreSQL text cannot hold NUL
	err := s.Write(context.Background(), []record.Record{r}, nil)
	if err == nil || errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("Write of a NUL string = %v, want a permanent error", err)
	}
}

// TestRestart takes the server away (through a forwarder: connections
// reset, new ones refused), checks that writes fail with ErrUnavailable,
// brings it back and checks that the same store writes again and a replay
// of the batch stores nothing twice.
func TestRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("needs PostgreSQL")
	}
	setup(t)
	fw := storetest.NewForwarder(t, "127.0.0.1:5432")
	ctx := context.Background()
	s, err := postgres.New(ctx, "postgres://postgres@"+fw.Addr+"/llmtap_test_store?sslmode=disable&connect_timeout=2", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	recs := storetest.Realistic(20, 10, time.Now())
	if err := s.Write(ctx, recs[:10], nil); err != nil {
		t.Fatal(err)
	}
	fw.Down()
	for i := 0; i < 2; i++ { // a pooled (reset) connection, then a refused dial
		if err := s.Write(ctx, recs, nil); !errors.Is(err, store.ErrUnavailable) {
			t.Errorf("Write while down = %v, want ErrUnavailable", err)
		}
	}
	if err := s.Ping(ctx); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("Ping while down = %v, want ErrUnavailable", err)
	}
	fw.Up()
	if err := s.Write(ctx, recs, nil); err != nil {
		t.Fatalf("Write after restart: %v", err)
	}
	var n int64
	if err := s.Pool().QueryRow(ctx, "SELECT count(*) FROM llm_requests").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 20 {
		t.Errorf("count %d after restart and replay, want 20", n)
	}
}
