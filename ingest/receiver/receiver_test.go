package receiver_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/llmtap/llmtap/ingest/event"
	"github.com/llmtap/llmtap/ingest/pipeline"
	"github.com/llmtap/llmtap/ingest/pipeline/pipelinetest"
	"github.com/llmtap/llmtap/ingest/receiver"
	"github.com/llmtap/llmtap/ingest/store"
)

var backends = pipelinetest.Backends("llmtap_test_receiver")

func TestMain(m *testing.M) {
	flag.Parse()
	if !testing.Short() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		err := pipelinetest.Setup(ctx, backends)
		cancel()
		if err != nil {
			fmt.Fprintln(os.Stderr, "receiver tests need PostgreSQL and ClickHouse (make services):", err)
			os.Exit(1)
		}
	}
	os.Exit(m.Run())
}

func needStores(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("needs PostgreSQL and ClickHouse")
	}
}

type env struct {
	srv   *httptest.Server
	p     *pipeline.Pipeline
	store *pipelinetest.CountingStore
	b     pipelinetest.Backend
}

type setup struct {
	rcfg receiver.Config
	pcfg pipeline.Config
	dsn  string // default: the backend's DSN
	wrap func(store.Store) store.Store
}

func defaults() setup {
	pc := pipeline.DefaultConfig()
	pc.BatchAge = 5 * time.Millisecond
	pc.WriteTimeout = 5 * time.Second
	rc := receiver.DefaultConfig()
	rc.RetryAfter = 2 * time.Second
	return setup{rcfg: rc, pcfg: pc}
}

// start runs the real pipeline on the real store behind a loopback server.
func start(t testing.TB, b pipelinetest.Backend, s setup) *env {
	t.Helper()
	dsn := s.dsn
	if dsn == "" {
		dsn = b.DSN
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := store.Open(ctx, dsn, pipelinetest.Logger(true))
	if err != nil {
		t.Fatalf("open %s: %v", b.Name, err)
	}
	var inner store.Store = st
	if s.wrap != nil {
		inner = s.wrap(st)
	}
	cs := &pipelinetest.CountingStore{Store: inner}
	p := pipeline.New(s.pcfg, cs, pipelinetest.Logger(true))
	if err := p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.rcfg.Validate(); err != nil {
		t.Fatal(err)
	}
	r := receiver.New(s.rcfg, p, pipelinetest.Logger(true))
	srv := httptest.NewServer(r.Handler())
	t.Cleanup(func() {
		srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := p.Close(ctx); err != nil {
			t.Errorf("pipeline close: %v", err)
		}
		_ = st.Close()
	})
	return &env{srv: srv, p: p, store: cs, b: b}
}

type reply struct {
	Accepted int      `json:"accepted"`
	Rejected int      `json:"rejected"`
	Errors   []string `json:"errors"`
	Error    string   `json:"error"`
	Status   string   `json:"status"`
}

type resp struct {
	code   int
	header http.Header
	body   reply
	raw    string
}

func (e *env) do(t testing.TB, method, path string, body []byte, hdr map[string]string) resp {
	t.Helper()
	req, err := http.NewRequest(method, e.srv.URL+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	res, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	var r reply
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &r); err != nil {
			t.Fatalf("%s %s: reply %q is not JSON: %v", method, path, raw, err)
		}
	}
	if ct := res.Header.Get("Content-Type"); len(raw) > 0 && ct != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	return resp{code: res.StatusCode, header: res.Header, body: r, raw: string(raw)}
}

func (e *env) post(t testing.TB, path string, body []byte, hdr map[string]string) resp {
	t.Helper()
	return e.do(t, http.MethodPost, path, body, hdr)
}

func ndjson(evs []event.Event) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	for _, ev := range evs {
		_ = enc.Encode(ev)
	}
	return buf.Bytes()
}

func gz(b []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	_, _ = zw.Write(b)
	_ = zw.Close()
	return buf.Bytes()
}

var gzipHdr = map[string]string{"Content-Encoding": "gzip"}

func chatEvents(consumer string, n int) []event.Event {
	evs := make([]event.Event, n)
	for i := range evs {
		evs[i] = pipelinetest.ChatEvent(consumer, 300)
	}
	return evs
}

func uniq(t testing.TB) string { return fmt.Sprintf("%s-%d", t.Name(), time.Now().UnixNano()) }

func (e *env) rows(t testing.TB, consumer string) int64 {
	t.Helper()
	n, err := pipelinetest.Count(context.Background(), e.b.DSN, "llm_requests",
		"consumer = "+pipelinetest.Placeholder(e.b.DSN, 1), consumer)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func wantOK(t testing.TB, r resp, accepted, rejected int) {
	t.Helper()
	if r.code != http.StatusOK {
		t.Fatalf("status = %d (%s), want 200", r.code, r.raw)
	}
	if r.body.Accepted != accepted || r.body.Rejected != rejected {
		t.Fatalf("reply = %s, want accepted %d rejected %d", r.raw, accepted, rejected)
	}
	if r.body.Errors == nil || len(r.body.Errors) != min(rejected, 21) {
		t.Fatalf("errors = %q, want %d reasons", r.body.Errors, rejected)
	}
}

func forEach(t *testing.T, f func(t *testing.T, b pipelinetest.Backend)) {
	needStores(t)
	for _, b := range backends {
		t.Run(b.Name, func(t *testing.T) { f(t, b) })
	}
}

func TestEvents(t *testing.T) {
	forEach(t, func(t *testing.T, b pipelinetest.Backend) {
		e := start(t, b, defaults())
		consumer := uniq(t)
		plain := ndjson(chatEvents(consumer, 7))
		wantOK(t, e.post(t, "/v1/events", plain, nil), 7, 0)
		wantOK(t, e.post(t, "/v1/events", gz(ndjson(chatEvents(consumer, 5))), gzipHdr), 5, 0)
		wantOK(t, e.post(t, "/v1/events", gz(ndjson(chatEvents(consumer, 3))), map[string]string{"Content-Encoding": "x-gzip"}), 3, 0)
		wantOK(t, e.post(t, "/v1/events", nil, nil), 0, 0)
		if n := e.rows(t, consumer); n != 15 {
			t.Errorf("rows = %d, want 15", n)
		}
		// A bad line is a reject; the good lines around it still commit.
		mixed := ndjson(chatEvents(consumer, 2))
		mixed = append(mixed, []byte("{\"event_id\": tru\n")...)
		mixed = append(mixed, ndjson(chatEvents(consumer, 2))...)
		r := e.post(t, "/v1/events", gz(mixed), gzipHdr)
		wantOK(t, r, 4, 1)
		if !strings.Contains(r.body.Errors[0], "line 3") {
			t.Errorf("errors = %q, want the line number", r.body.Errors)
		}
		if n := e.rows(t, consumer); n != 19 {
			t.Errorf("rows = %d, want 19", n)
		}
	})
}

func kongBody(t testing.TB, entries ...any) []byte {
	t.Helper()
	var v any = entries
	if len(entries) == 1 {
		v = entries[0]
	}
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestKong(t *testing.T) {
	forEach(t, func(t *testing.T, b pipelinetest.Backend) {
		e := start(t, b, defaults())
		consumer := uniq(t)
		wantOK(t, e.post(t, "/v1/kong", kongBody(t, pipelinetest.KongEntry(consumer)), nil), 1, 0)
		arr := kongBody(t, pipelinetest.KongEntry(consumer), pipelinetest.KongEntry(consumer), pipelinetest.KongEntry(consumer))
		wantOK(t, e.post(t, "/v1/kong", arr, nil), 3, 0)
		wantOK(t, e.post(t, "/v1/kong", gz(kongBody(t, pipelinetest.KongEntry(consumer), pipelinetest.KongEntry(consumer))), gzipHdr), 2, 0)
		if n := e.rows(t, consumer); n != 6 {
			t.Errorf("rows = %d, want 6", n)
		}
	})
}

// TestKongMalformedEntry: one bad entry in a good batch is a reject that
// keeps the raw entry and the reason; the rest commits and the reply is 200
// (Kong would drop the whole batch on a non-2xx).
func TestKongMalformedEntry(t *testing.T) {
	forEach(t, func(t *testing.T, b pipelinetest.Backend) {
		e := start(t, b, defaults())
		consumer := uniq(t)
		bad := pipelinetest.KongEntry(consumer)
		delete(bad, "started_at")
		bad["marker"] = consumer // find the reject row by its payload
		body := kongBody(t, pipelinetest.KongEntry(consumer), bad, pipelinetest.KongEntry(consumer))
		r := e.post(t, "/v1/kong", body, nil)
		wantOK(t, r, 2, 1)
		if r.body.Accepted+r.body.Rejected != 3 {
			t.Errorf("accepted+rejected = %d, want 3 sent", r.body.Accepted+r.body.Rejected)
		}
		if n := e.rows(t, consumer); n != 2 {
			t.Errorf("rows = %d, want 2", n)
		}
		rows, err := pipelinetest.Rejects(context.Background(), b.DSN, event.SourceKong)
		if err != nil {
			t.Fatal(err)
		}
		var found int
		for _, row := range rows {
			if !bytes.Contains(row.Payload, []byte(consumer)) {
				continue
			}
			found++
			if !strings.Contains(row.Reason, "started_at") {
				t.Errorf("reject reason = %q, want it to name started_at", row.Reason)
			}
			var got map[string]any
			if err := json.Unmarshal(row.Payload, &got); err != nil {
				t.Fatalf("reject payload is not the raw entry: %v: %.200s", err, row.Payload)
			}
			if got["marker"] != consumer || got["started_at"] != nil {
				t.Errorf("reject payload = %.300s, want the bad entry", row.Payload)
			}
		}
		if found != 1 {
			t.Errorf("reject rows with the entry = %d, want 1", found)
		}
		// Not JSON at all: still 200, one reject with the body.
		wantOK(t, e.post(t, "/v1/kong", []byte("<html>"+consumer), nil), 0, 1)
	})
}

func TestToken(t *testing.T) {
	forEach(t, func(t *testing.T, b pipelinetest.Backend) {
		s := defaults()
		s.rcfg.Token = "s3cret-token"
		e := start(t, b, s)
		consumer := uniq(t)
		body := ndjson(chatEvents(consumer, 2))
		kong := kongBody(t, pipelinetest.KongEntry(consumer))
		for _, hdr := range []map[string]string{
			nil,
			{"Authorization": "Bearer wrong"},
			{"Authorization": "Bearer s3cret-token-and-more"},
			{"Authorization": "Basic s3cret-token"},
			{"Authorization": "s3cret-token"},
		} {
			for _, path := range []string{"/v1/events", "/v1/kong"} {
				data := body
				if path == "/v1/kong" {
					data = kong
				}
				r := e.post(t, path, data, hdr)
				if r.code != http.StatusUnauthorized {
					t.Fatalf("%s with %v: status %d, want 401", path, hdr, r.code)
				}
				if r.body.Error == "" || strings.Contains(r.raw, "s3cret") {
					t.Errorf("401 body = %s", r.raw)
				}
				if r.header.Get("WWW-Authenticate") == "" {
					t.Error("401 without WWW-Authenticate")
				}
			}
		}
		if w := e.store.Writes.Load(); w != 0 {
			t.Errorf("store writes after 401s = %d, want 0", w)
		}
		if n := e.rows(t, consumer); n != 0 {
			t.Errorf("rows after 401s = %d, want 0", n)
		}
		auth := map[string]string{"Authorization": "bearer s3cret-token"}
		wantOK(t, e.post(t, "/v1/events", body, auth), 2, 0)
		wantOK(t, e.post(t, "/v1/kong", kong, auth), 1, 0)
		// Probes need no token.
		if r := e.do(t, http.MethodGet, "/healthz", nil, nil); r.code != http.StatusOK {
			t.Errorf("healthz = %d", r.code)
		}
	})
}

func TestTooLarge(t *testing.T) {
	forEach(t, func(t *testing.T, b pipelinetest.Backend) {
		s := defaults()
		s.rcfg.MaxBodyBytes = 64 << 10
		e := start(t, b, s)
		consumer := uniq(t)

		big := ndjson(chatEvents(consumer, 100)) // ~200 KB
		if len(big) <= 64<<10 {
			t.Fatalf("test body %d bytes is not over the limit", len(big))
		}
		bomb := gz(bytes.Repeat([]byte(" "), 10<<20)) // 10 MiB of spaces, ~10 KB gzipped
		if len(bomb) > 64<<10 {
			t.Fatalf("bomb is %d bytes compressed", len(bomb))
		}
		chunked := func() []byte { return big } // sent without Content-Length below
		for _, tc := range []struct {
			name string
			path string
			body []byte
			hdr  map[string]string
		}{
			{"plain", "/v1/events", big, nil},
			{"gzip bomb", "/v1/events", bomb, gzipHdr},
			{"gzip over limit compressed", "/v1/events", gz(append(big, bytes.Repeat([]byte("x"), 64<<10)...)), gzipHdr},
			{"kong plain", "/v1/kong", append([]byte("["), bytes.Repeat([]byte(" "), 70<<10)...), nil},
			{"kong gzip bomb", "/v1/kong", bomb, gzipHdr},
		} {
			t.Run(tc.name, func(t *testing.T) {
				r := e.post(t, tc.path, tc.body, tc.hdr)
				if r.code != http.StatusRequestEntityTooLarge {
					t.Fatalf("status = %d (%s), want 413", r.code, r.raw)
				}
			})
		}
		// Without Content-Length (chunked), the limit still holds.
		req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/v1/events", io.MultiReader(bytes.NewReader(chunked())))
		req.ContentLength = -1
		res, err := e.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusRequestEntityTooLarge {
			t.Errorf("chunked oversize: status %d, want 413", res.StatusCode)
		}
		if w := e.store.Writes.Load(); w != 0 {
			t.Errorf("store writes = %d, want 0", w)
		}
		if n := e.rows(t, consumer); n != 0 {
			t.Errorf("rows = %d, want 0", n)
		}
		// Just under the limit is fine.
		wantOK(t, e.post(t, "/v1/events", ndjson(chatEvents(consumer, 10)), nil), 10, 0)
	})
}

func TestBadRequests(t *testing.T) {
	needStores(t)
	e := start(t, backends[0], defaults())
	for _, tc := range []struct {
		name, method, path string
		body               []byte
		hdr                map[string]string
		want               int
	}{
		{"not gzip", http.MethodPost, "/v1/events", []byte("plain text"), gzipHdr, http.StatusBadRequest},
		{"truncated gzip", http.MethodPost, "/v1/events", gz(ndjson(chatEvents("x", 3)))[:200], gzipHdr, http.StatusBadRequest},
		{"brotli", http.MethodPost, "/v1/events", []byte("x"), map[string]string{"Content-Encoding": "br"}, http.StatusUnsupportedMediaType},
		{"get events", http.MethodGet, "/v1/events", nil, nil, http.StatusMethodNotAllowed},
		{"put kong", http.MethodPut, "/v1/kong", nil, nil, http.StatusMethodNotAllowed},
		{"post healthz", http.MethodPost, "/healthz", nil, nil, http.StatusMethodNotAllowed},
		{"unknown path", http.MethodPost, "/v1/other", nil, nil, http.StatusNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := e.do(t, tc.method, tc.path, tc.body, tc.hdr)
			if r.code != tc.want {
				t.Fatalf("status = %d (%s), want %d", r.code, r.raw, tc.want)
			}
			if r.body.Error == "" {
				t.Errorf("no error message: %s", r.raw)
			}
			if tc.want == http.StatusMethodNotAllowed && r.header.Get("Allow") == "" {
				t.Error("405 without Allow")
			}
		})
	}
	if w := e.store.Writes.Load(); w != 0 {
		t.Errorf("store writes = %d, want 0", w)
	}
}

// TestDuplicatePost: the same batch posted twice (a sender's retry) stores
// each row once, records and rejects.
func TestDuplicatePost(t *testing.T) {
	forEach(t, func(t *testing.T, b pipelinetest.Backend) {
		e := start(t, b, defaults())
		consumer := uniq(t)
		events := gz(ndjson(chatEvents(consumer, 10)))
		bad := pipelinetest.KongEntry(consumer)
		delete(bad, "started_at")
		bad["marker"] = consumer
		kong := kongBody(t, pipelinetest.KongEntry(consumer), pipelinetest.KongEntry(consumer), bad)
		for range 2 {
			wantOK(t, e.post(t, "/v1/events", events, gzipHdr), 10, 0)
			wantOK(t, e.post(t, "/v1/kong", kong, nil), 2, 1)
		}
		// And twice at once.
		again := ndjson(chatEvents(consumer, 5))
		var wg sync.WaitGroup
		for range 2 {
			wg.Go(func() { wantOK(t, e.post(t, "/v1/events", again, nil), 5, 0) })
		}
		wg.Wait()
		if n := e.rows(t, consumer); n != 17 {
			t.Errorf("rows = %d, want 17 (each once)", n)
		}
		rows, err := pipelinetest.Rejects(context.Background(), b.DSN, event.SourceKong)
		if err != nil {
			t.Fatal(err)
		}
		found := 0
		for _, r := range rows {
			if bytes.Contains(r.Payload, []byte(consumer)) {
				found++
			}
		}
		if found != 1 {
			t.Errorf("reject rows for the bad entry = %d, want 1", found)
		}
	})
}

// TestStoreDownThenUp puts a TCP forwarder in front of the real server and
// takes it down: posts get 503 with Retry-After and /readyz says not ready;
// after recovery the retried posts commit and nothing is lost.
func TestStoreDownThenUp(t *testing.T) {
	forEach(t, func(t *testing.T, b pipelinetest.Backend) {
		target := pipelinetest.PGAddr
		if b.Name == "clickhouse" {
			target = pipelinetest.CHAddr
		}
		fw, err := pipelinetest.NewForwarder(target)
		if err != nil {
			t.Fatal(err)
		}
		defer fw.Close()
		s := defaults()
		s.dsn = b.At(fw.Addr())
		e := start(t, b, s)
		consumer := uniq(t)

		if r := e.do(t, http.MethodGet, "/readyz", nil, nil); r.code != http.StatusOK || r.body.Status != "ready" {
			t.Fatalf("readyz before outage = %d %s", r.code, r.raw)
		}
		wantOK(t, e.post(t, "/v1/events", ndjson(chatEvents(consumer, 3)), nil), 3, 0)

		fw.Down()
		var pending [][]byte
		for i := range 4 {
			var body []byte
			path := "/v1/events"
			if i%2 == 0 {
				body = gz(ndjson(chatEvents(consumer, 5)))
			} else {
				path = "/v1/kong"
				body = gz(kongBody(t, pipelinetest.KongEntry(consumer), pipelinetest.KongEntry(consumer), pipelinetest.KongEntry(consumer), pipelinetest.KongEntry(consumer), pipelinetest.KongEntry(consumer)))
			}
			r := e.post(t, path, body, gzipHdr)
			if r.code != http.StatusServiceUnavailable {
				t.Fatalf("post while down: %d %s, want 503", r.code, r.raw)
			}
			if r.header.Get("Retry-After") != "2" {
				t.Errorf("Retry-After = %q, want 2", r.header.Get("Retry-After"))
			}
			pending = append(pending, append([]byte(path+"\n"), body...))
		}
		r := e.do(t, http.MethodGet, "/readyz", nil, nil)
		if r.code != http.StatusServiceUnavailable || r.body.Error == "" {
			t.Errorf("readyz while down = %d %s, want 503 with a reason", r.code, r.raw)
		}

		if err := fw.Up(); err != nil {
			t.Fatal(err)
		}
		// Retry as a sender would, honouring Retry-After loosely.
		for _, p := range pending {
			path, body, _ := bytes.Cut(p, []byte("\n"))
			var last resp
			for try := 0; try < 300; try++ {
				last = e.post(t, string(path), body, gzipHdr)
				if last.code != http.StatusServiceUnavailable {
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
			wantOK(t, last, 5, 0)
		}
		if r := e.do(t, http.MethodGet, "/readyz", nil, nil); r.code != http.StatusOK {
			t.Errorf("readyz after recovery = %d %s", r.code, r.raw)
		}
		if n := e.rows(t, consumer); n != 3+4*5 {
			t.Errorf("rows = %d, want %d (nothing lost, nothing doubled)", n, 3+4*5)
		}
	})
}

// TestOverload: past MaxConcurrent requests (or the pipeline's
// MaxPending) senders get 503 with Retry-After instead of growing memory,
// and their retries commit once the store catches up.
func TestOverload(t *testing.T) {
	needStores(t)
	b := backends[0]
	for _, tc := range []struct {
		name string
		mod  func(*setup)
	}{
		{"receiver slots", func(s *setup) { s.rcfg.MaxConcurrent = 1; s.rcfg.QueueWait = 100 * time.Millisecond }},
		{"pipeline pending", func(s *setup) { s.pcfg.MaxPending = 5; s.pcfg.MaxWait = 100 * time.Millisecond }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var hold *pipelinetest.HoldStore
			s := defaults()
			s.wrap = func(st store.Store) store.Store { hold = pipelinetest.NewHold(st); return hold }
			tc.mod(&s)
			e := start(t, b, s)
			defer hold.Release()
			consumer := uniq(t)
			first := make(chan resp, 1)
			go func() { first <- e.post(t, "/v1/events", ndjson(chatEvents(consumer, 5)), nil) }()
			<-hold.Entered
			second := ndjson(chatEvents(consumer, 3))
			r := e.post(t, "/v1/events", second, nil)
			if r.code != http.StatusServiceUnavailable || r.header.Get("Retry-After") == "" {
				t.Fatalf("post while full = %d %s (Retry-After %q), want 503 with Retry-After", r.code, r.raw, r.header.Get("Retry-After"))
			}
			if !strings.Contains(r.body.Error, "overloaded") {
				t.Errorf("error = %q, want it to say overloaded", r.body.Error)
			}
			hold.Release()
			wantOK(t, <-first, 5, 0)
			wantOK(t, e.post(t, "/v1/events", second, nil), 3, 0)
			if n := e.rows(t, consumer); n != 8 {
				t.Errorf("rows = %d, want 8", n)
			}
		})
	}
}

// TestReadyzUnmigrated: a reachable but empty database is not ready.
func TestReadyzUnmigrated(t *testing.T) {
	needStores(t)
	ctx := context.Background()
	const db = "llmtap_test_receiver_empty"
	admin := pipelinetest.PostgresDSN(pipelinetest.PGAddr, "postgres")
	_ = pipelinetest.Exec(ctx, admin, "DROP DATABASE IF EXISTS "+db)
	if err := pipelinetest.Exec(ctx, admin, "CREATE DATABASE "+db); err != nil {
		t.Fatal(err)
	}
	dsn := pipelinetest.PostgresDSN(pipelinetest.PGAddr, db)
	st, err := store.Open(ctx, dsn, pipelinetest.Logger(true))
	if err != nil {
		// Opening may itself refuse an unmigrated store; that is fine too.
		t.Skipf("store.Open refuses an unmigrated database: %v", err)
	}
	defer st.Close()
	p := pipeline.New(pipeline.DefaultConfig(), st, nil)
	if err := p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer p.Close(ctx)
	srv := httptest.NewServer(receiver.New(receiver.DefaultConfig(), p, nil).Handler())
	defer srv.Close()
	res, err := http.Get(srv.URL + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "migrat") {
		t.Errorf("readyz on unmigrated db = %d %s, want 503 naming the migration", res.StatusCode, body)
	}
}

// TestConcurrentPosters: 50 posters at once all commit, merged into fewer
// store writes than posts.
func TestConcurrentPosters(t *testing.T) {
	forEach(t, func(t *testing.T, b pipelinetest.Backend) {
		s := defaults()
		s.pcfg.BatchAge = 50 * time.Millisecond
		e := start(t, b, s)
		consumer := uniq(t)
		const posters, per = 50, 4
		bodies := make([][]byte, posters)
		for i := range bodies {
			bodies[i] = gz(ndjson(chatEvents(consumer, per)))
		}
		var wg sync.WaitGroup
		codes := make(chan resp, posters)
		for i := range posters {
			wg.Go(func() { codes <- e.post(t, "/v1/events", bodies[i], gzipHdr) })
		}
		wg.Wait()
		close(codes)
		for r := range codes {
			wantOK(t, r, per, 0)
		}
		if n := e.rows(t, consumer); n != posters*per {
			t.Errorf("rows = %d, want %d", n, posters*per)
		}
		if w := e.store.Writes.Load(); w >= posters {
			t.Errorf("store writes = %d for %d posts, want fewer (group commit)", w, posters)
		}
		t.Logf("%d posts, %d store writes", posters, e.store.Writes.Load())
	})
}

// BenchmarkReceiverEvents posts gzip NDJSON batches of 500 realistic
// events (70 % streamed chat, 2–8 KB of bodies each) over loopback HTTP into
// PostgreSQL and ClickHouse from 4×GOMAXPROCS concurrent senders, each
// event with a fresh id. The senders' own gzip runs on the same cores.
func BenchmarkReceiverEvents(b *testing.B) {
	needStores(b)
	for _, be := range backends {
		b.Run(be.Name, func(b *testing.B) {
			e := start(b, be, defaults())
			const batch = 500
			template := make([]event.Event, batch)
			for i := range template {
				template[i] = pipelinetest.RealisticEvent("bench", i)
			}
			var raw int64
			for _, ev := range template {
				raw += int64(len(ev.RequestBody) + len(ev.ResponseBody))
			}
			b.SetBytes(raw)
			tmpl := ndjson(template)
			idOffsets := make([]int, 0, batch)
			for _, ev := range template {
				off := bytes.Index(tmpl, []byte(`"event_id":"`+ev.ID+`"`))
				if off < 0 {
					b.Fatal("event id not found in NDJSON")
				}
				idOffsets = append(idOffsets, off+len(`"event_id":"`))
			}
			b.ReportAllocs()
			b.SetParallelism(4) // 4 × GOMAXPROCS senders
			b.ResetTimer()
			t0 := time.Now()
			var mu sync.Mutex
			var sent int64
			b.RunParallel(func(pb *testing.PB) {
				client := e.srv.Client()
				buf := make([]byte, len(tmpl))
				var zbuf bytes.Buffer
				zw, _ := gzip.NewWriterLevel(&zbuf, gzip.BestSpeed)
				for pb.Next() {
					copy(buf, tmpl)
					for _, off := range idOffsets { // fresh ids: every post stores new rows
						copy(buf[off:], uuid.Must(uuid.NewV7()).String())
					}
					zbuf.Reset()
					zw.Reset(&zbuf)
					_, _ = zw.Write(buf)
					_ = zw.Close()
					req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/v1/events", bytes.NewReader(zbuf.Bytes()))
					req.Header.Set("Content-Encoding", "gzip")
					res, err := client.Do(req)
					if err != nil {
						b.Error(err)
						return
					}
					_, _ = io.Copy(io.Discard, res.Body)
					res.Body.Close()
					if res.StatusCode != http.StatusOK {
						b.Errorf("status %d", res.StatusCode)
						return
					}
					mu.Lock()
					sent += batch
					mu.Unlock()
				}
			})
			b.ReportMetric(float64(sent)/time.Since(t0).Seconds(), "events/s")
			b.ReportMetric(float64(e.store.Writes.Load()), "writes")
		})
	}
}
