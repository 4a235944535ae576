// Package pipelinetest holds helpers for tests of the ingest pipeline and
// receiver against the real stores: per-package test databases on the local
// PostgreSQL and ClickHouse, row counts, a counting wrapper around a real
// store, a TCP forwarder that takes a real server "down" and "up", and
// realistic events. It is for tests only.
package pipelinetest

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/llmtap/llmtap/ingest/event"
	"github.com/llmtap/llmtap/ingest/record"
	"github.com/llmtap/llmtap/ingest/store"
	"github.com/llmtap/llmtap/schema"
)

// Addresses of the local services (scripts/services.sh).
const (
	PGAddr = "127.0.0.1:5432"
	CHAddr = "127.0.0.1:9000"
)

// PostgresDSN returns the DSN of database db on the PostgreSQL at addr.
func PostgresDSN(addr, db string) string {
	return fmt.Sprintf("postgres://postgres@%s/%s?sslmode=disable&connect_timeout=3", addr, db)
}

// ClickHouseDSN returns the DSN of database db on the ClickHouse at addr.
func ClickHouseDSN(addr, db string) string {
	return fmt.Sprintf("clickhouse://%s/%s?dial_timeout=3s", addr, db)
}

// Backend is one store kind under test.
type Backend struct {
	Name string // "postgres" or "clickhouse"
	DSN  string // on the real server
	// At returns the DSN of the same database through another address
	// (a Forwarder in front of the real server).
	At func(addr string) string
}

// Backends returns PostgreSQL and ClickHouse databases named db.
func Backends(db string) []Backend {
	return []Backend{
		{Name: "postgres", DSN: PostgresDSN(PGAddr, db), At: func(a string) string { return PostgresDSN(a, db) }},
		{Name: "clickhouse", DSN: ClickHouseDSN(CHAddr, db), At: func(a string) string { return ClickHouseDSN(a, db) }},
	}
}

// Setup creates (if needed), migrates and empties the database of each
// backend.
func Setup(ctx context.Context, backends []Backend) error {
	for _, b := range backends {
		if err := schema.Migrate(ctx, b.DSN, nil); err != nil {
			return fmt.Errorf("migrate %s: %w", b.Name, err)
		}
		for _, t := range []string{"llm_requests", "llm_rejects"} {
			if err := Exec(ctx, b.DSN, "TRUNCATE TABLE "+t); err != nil {
				return fmt.Errorf("%s: %w", b.Name, err)
			}
		}
	}
	return nil
}

// Exec runs one statement on dsn.
func Exec(ctx context.Context, dsn, sql string) error {
	d, err := schema.Dialect(dsn)
	if err != nil {
		return err
	}
	if d == schema.Postgres {
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			return err
		}
		defer conn.Close(context.Background())
		_, err = conn.Exec(ctx, sql)
		return err
	}
	opts, err := schema.CHOptions(dsn)
	if err != nil {
		return err
	}
	conn, err := clickhouse.Open(opts)
	if err != nil {
		return err
	}
	defer conn.Close()
	return conn.Exec(ctx, sql)
}

// Count returns SELECT count(*) FROM table [WHERE where] on dsn. args use
// the dialect's placeholders ($1 for PostgreSQL, ? for ClickHouse).
func Count(ctx context.Context, dsn, table, where string, args ...any) (int64, error) {
	q := "SELECT count(*) FROM " + table
	if where != "" {
		q += " WHERE " + where
	}
	d, err := schema.Dialect(dsn)
	if err != nil {
		return 0, err
	}
	if d == schema.Postgres {
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			return 0, err
		}
		defer conn.Close(context.Background())
		var n int64
		err = conn.QueryRow(ctx, q, args...).Scan(&n)
		return n, err
	}
	opts, err := schema.CHOptions(dsn)
	if err != nil {
		return 0, err
	}
	conn, err := clickhouse.Open(opts)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	var n uint64
	err = conn.QueryRow(ctx, q, args...).Scan(&n)
	return int64(n), err
}

// Placeholder returns the dialect's n-th (1-based) query placeholder.
func Placeholder(dsn string, n int) string {
	if d, _ := schema.Dialect(dsn); d == schema.Postgres {
		return fmt.Sprintf("$%d", n)
	}
	return "?"
}

// RejectRow is one llm_rejects row.
type RejectRow struct {
	Source, Reason string
	Payload        []byte
}

// Rejects returns the rows of llm_rejects whose source is source.
func Rejects(ctx context.Context, dsn, source string) ([]RejectRow, error) {
	d, err := schema.Dialect(dsn)
	if err != nil {
		return nil, err
	}
	var out []RejectRow
	if d == schema.Postgres {
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			return nil, err
		}
		defer conn.Close(context.Background())
		rows, err := conn.Query(ctx, "SELECT source, reason, payload::bytea FROM llm_rejects WHERE source = $1", source)
		if err != nil {
			return nil, err
		}
		defer rows.Close()
		for rows.Next() {
			var r RejectRow
			if err := rows.Scan(&r.Source, &r.Reason, &r.Payload); err != nil {
				return nil, err
			}
			out = append(out, r)
		}
		return out, rows.Err()
	}
	opts, err := schema.CHOptions(dsn)
	if err != nil {
		return nil, err
	}
	conn, err := clickhouse.Open(opts)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	rows, err := conn.Query(ctx, "SELECT source, reason, payload FROM llm_rejects WHERE source = ?", source)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var r RejectRow
		var p string
		if err := rows.Scan(&r.Source, &r.Reason, &p); err != nil {
			return nil, err
		}
		r.Payload = []byte(p)
		out = append(out, r)
	}
	return out, rows.Err()
}

// CountingStore wraps a real store and counts Write calls and rows.
type CountingStore struct {
	store.Store
	Writes atomic.Int64 // Write calls
	Rows   atomic.Int64 // records + rejects passed to Write
	Failed atomic.Int64 // Write calls that returned an error
}

// Write counts, then calls the wrapped store.
func (c *CountingStore) Write(ctx context.Context, recs []record.Record, rejects []record.Reject) error {
	c.Writes.Add(1)
	c.Rows.Add(int64(len(recs) + len(rejects)))
	err := c.Store.Write(ctx, recs, rejects)
	if err != nil {
		c.Failed.Add(1)
	}
	return err
}

// Forwarder is a TCP forwarder in front of a real server. Down closes its
// listener and every connection (clients see connection refused / reset, as
// when the server dies); Up listens again on the same address.
type Forwarder struct {
	target string
	addr   string

	mu    sync.Mutex
	ln    net.Listener
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

// NewForwarder listens on a free loopback port and forwards to target.
func NewForwarder(target string) (*Forwarder, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	f := &Forwarder{target: target, addr: ln.Addr().String(), conns: map[net.Conn]struct{}{}}
	f.serve(ln)
	return f, nil
}

// Addr is the forwarder's address, stable across Down and Up.
func (f *Forwarder) Addr() string { return f.addr }

func (f *Forwarder) serve(ln net.Listener) {
	f.mu.Lock()
	f.ln = ln
	f.mu.Unlock()
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.DialTimeout("tcp", f.target, 3*time.Second)
			if err != nil {
				c.Close()
				continue
			}
			f.mu.Lock()
			if f.ln != ln { // went down meanwhile
				f.mu.Unlock()
				c.Close()
				u.Close()
				return
			}
			f.conns[c] = struct{}{}
			f.conns[u] = struct{}{}
			f.mu.Unlock()
			pipe := func(dst, src net.Conn) {
				_, _ = io.Copy(dst, src)
				dst.Close()
				src.Close()
			}
			go pipe(u, c)
			go pipe(c, u)
		}
	}()
}

// Down stops accepting and cuts every open connection.
func (f *Forwarder) Down() {
	f.mu.Lock()
	if f.ln != nil {
		f.ln.Close()
		f.ln = nil
	}
	for c := range f.conns {
		c.Close()
	}
	clear(f.conns)
	f.mu.Unlock()
	f.wg.Wait()
}

// Up listens again on the same address.
func (f *Forwarder) Up() error {
	var ln net.Listener
	var err error
	for range 50 { // the port may linger briefly
		if ln, err = net.Listen("tcp", f.addr); err == nil {
			f.serve(ln)
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return err
}

// Close is Down for good.
func (f *Forwarder) Close() { f.Down() }

// Logger returns a logger that writes to stderr at warn level, or discards
// when quiet.
func Logger(quiet bool) *slog.Logger {
	if quiet {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// Samples returns the path of testdata/samples/name in the module.
func Samples(name string) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "..", "testdata", "samples", name)
}

var (
	sseOnce sync.Once
	sseBody []byte
)

func streamBody() []byte {
	sseOnce.Do(func() {
		b, err := os.ReadFile(Samples("vllm-chat-stream-usage.sse"))
		if err != nil {
			b = []byte("data: [DONE]\n\n")
		}
		sseBody = b
	})
	return sseBody
}

// ChatEvent returns a realistic streamed chat-completion event from the
// proxy for consumer, with a fresh UUIDv7 id and a request body of about
// padding extra bytes.
func ChatEvent(consumer string, padding int) event.Event {
	id := uuid.Must(uuid.NewV7()).String()
	req := map[string]any{
		"model":    "deepseek-ai/DeepSeek-V3.1",
		"stream":   true,
		"messages": []map[string]string{{"role": "system", "content": strings.Repeat("You are helpful. ", padding/17+1)}, {"role": "user", "content": "hello " + id}},
	}
	rb, _ := json.Marshal(req)
	ttft := 42.5
	return event.Event{
		ID:              id,
		Time:            time.Now().UTC(),
		Source:          event.SourceProxy,
		Consumer:        consumer,
		KeyID:           "k_test",
		KeyPrefix:       "sk-test",
		ClientIP:        "127.0.0.1",
		Method:          "POST",
		Path:            "/v1/chat/completions",
		Status:          200,
		Stream:          true,
		LatencyMs:       123.4,
		TTFTMs:          &ttft,
		RequestHeaders:  map[string]string{"content-type": "application/json"},
		ResponseHeaders: map[string]string{"content-type": "text/event-stream"},
		RequestBody:     rb,
		ResponseBody:    streamBody(),
		UsageInjected:   true,
	}
}

var (
	jsonOnce sync.Once
	jsonBody []byte
)

// RealisticEvent returns event i of a realistic mix for benchmarks: 70 %
// streamed chat (SSE response), 30 % non-streamed chat (JSON response),
// request bodies padded so that bodies total 2–8 KB.
func RealisticEvent(consumer string, i int) event.Event {
	pad := 1500 + (i*2654435761)%5500 // deterministic spread over 2–8 KB with the responses
	ev := ChatEvent(consumer, pad)
	if i%10 < 7 {
		return ev
	}
	jsonOnce.Do(func() {
		b, err := os.ReadFile(Samples("vllm-chat-nonstream.json"))
		if err != nil {
			b = []byte(`{"choices":[{"message":{"role":"assistant","content":"ok"}}]}`)
		}
		jsonBody = b
	})
	ev.Stream = false
	ev.TTFTMs = nil
	ev.UsageInjected = false
	ev.ResponseHeaders = map[string]string{"content-type": "application/json"}
	ev.ResponseBody = jsonBody
	ev.RequestBody = bytes.Replace(ev.RequestBody, []byte(`"stream":true`), []byte(`"stream":false`), 1)
	return ev
}

// KongEntry returns a Kong http-log entry (the 3.8 sample) for consumer
// with a fresh request id.
func KongEntry(consumer string) map[string]any {
	b, err := os.ReadFile(Samples("kong-http-log-basic.json"))
	if err != nil {
		panic(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		panic(err)
	}
	rid := uuid.New()
	m["request"].(map[string]any)["id"] = hex.EncodeToString(rid[:])
	m["consumer"] = map[string]any{"id": uuid.NewString(), "username": consumer}
	m["started_at"] = time.Now().UnixMilli()
	return m
}

// HoldStore wraps a real store and holds every Write until Release.
type HoldStore struct {
	store.Store
	Entered chan struct{} // receives once per Write that started (buffered 100)
	release chan struct{}
	once    sync.Once
}

// NewHold returns a HoldStore around st.
func NewHold(st store.Store) *HoldStore {
	return &HoldStore{Store: st, Entered: make(chan struct{}, 100), release: make(chan struct{})}
}

// Write waits for Release (or ctx), then writes.
func (h *HoldStore) Write(ctx context.Context, recs []record.Record, rejects []record.Reject) error {
	select {
	case h.Entered <- struct{}{}:
	default:
	}
	select {
	case <-h.release:
	case <-ctx.Done():
		return ctx.Err()
	}
	return h.Store.Write(ctx, recs, rejects)
}

// Release lets every held and future Write through.
func (h *HoldStore) Release() { h.once.Do(func() { close(h.release) }) }
