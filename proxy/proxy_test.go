package proxy

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/llmtap/llmtap/cmd/vllm-sim/sim"
	"github.com/llmtap/llmtap/ingest/event"
	"github.com/llmtap/llmtap/proxy/keys"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// recorder is a test Emitter keeping events in memory.
type recorder struct {
	ch     chan event.Event
	refuse atomic.Bool
}

func newRecorder() *recorder { return &recorder{ch: make(chan event.Event, 10000)} }

func (r *recorder) Emit(ev event.Event) { r.ch <- ev }
func (r *recorder) Accepting() bool     { return !r.refuse.Load() }

// next waits for the next event.
func (r *recorder) next(t *testing.T) event.Event {
	t.Helper()
	select {
	case ev := <-r.ch:
		return ev
	case <-time.After(5 * time.Second):
		t.Fatal("no event emitted")
		return event.Event{}
	}
}

// spy wraps the simulator and records what upstream saw.
type spy struct {
	h       http.Handler
	mu      sync.Mutex
	headers []http.Header
	bodies  [][]byte
	writes  atomic.Int64 // response body writes of the current request
	extra   http.Header  // added to every response
}

func (s *spy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	r.Body = io.NopCloser(bytes.NewReader(b))
	s.mu.Lock()
	s.headers = append(s.headers, r.Header.Clone())
	s.bodies = append(s.bodies, b)
	s.mu.Unlock()
	for k, v := range s.extra {
		w.Header()[k] = v
	}
	s.h.ServeHTTP(&countingWriter{ResponseWriter: w, n: &s.writes}, r)
}

func (s *spy) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.headers)
}

func (s *spy) last(t *testing.T) (http.Header, []byte) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.headers) == 0 {
		t.Fatal("upstream was not contacted")
	}
	return s.headers[len(s.headers)-1], s.bodies[len(s.bodies)-1]
}

type countingWriter struct {
	http.ResponseWriter
	n *atomic.Int64
}

func (w *countingWriter) Write(b []byte) (int, error) {
	w.n.Add(1)
	return w.ResponseWriter.Write(b)
}
func (w *countingWriter) Flush()                      { w.ResponseWriter.(http.Flusher).Flush() }
func (w *countingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

type harness struct {
	sim      *sim.Server
	spy      *spy
	up       *httptest.Server
	px       *Proxy
	srv      *httptest.Server
	rec      *recorder
	keysPath string
	watcher  *keys.Watcher
	alice    string // valid key of consumer alice
	bob      string // revoked
	carol    string // expired
}

func newHarness(t testing.TB, simCfg sim.Config, mod func(*Config)) *harness {
	t.Helper()
	h := &harness{rec: newRecorder()}
	h.sim = sim.New(simCfg)
	h.spy = &spy{h: h.sim}
	h.up = httptest.NewServer(h.spy)
	t.Cleanup(h.up.Close)

	dir := t.TempDir()
	h.keysPath = filepath.Join(dir, "keys.yaml")
	var err error
	var kb keys.Key
	if _, h.alice, err = keys.Create(h.keysPath, keys.CreateOptions{Consumer: "alice"}); err != nil {
		t.Fatal(err)
	}
	if kb, h.bob, err = keys.Create(h.keysPath, keys.CreateOptions{Consumer: "bob"}); err != nil {
		t.Fatal(err)
	}
	if err := keys.Revoke(h.keysPath, kb.ID); err != nil {
		t.Fatal(err)
	}
	// An expired key, written by hand (Create cannot make one in the past).
	h.carol = "sk-carolcarolcarolcarolcarolcarolcarolcarolcarolcaro"
	f, err := os.OpenFile(h.keysPath, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f, "- id: key_carol\n  consumer: carol\n  sha256: %s\n  prefix: %s\n  created_at: 2020-01-01T00:00:00Z\n  expires_at: 2020-02-01T00:00:00Z\n  revoked: false\n",
		keys.Hash(h.carol), h.carol[:10])
	f.Close()
	h.watcher, err = keys.NewWatcher(h.keysPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { h.watcher.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })

	cfg := DefaultConfig()
	cfg.Upstream = h.up.URL
	if mod != nil {
		mod(&cfg)
	}
	h.px, err = New(cfg, h.watcher, h.rec, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	h.srv = httptest.NewServer(h.px)
	t.Cleanup(h.srv.Close)
	t.Cleanup(h.px.Close)
	return h
}

func (h *harness) req(t testing.TB, method, path, body string, hdr map[string]string) *http.Request {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	r, err := http.NewRequest(method, h.srv.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		r.Header.Set("Content-Type", "application/json")
	}
	for k, v := range hdr {
		r.Header.Set(k, v)
	}
	return r
}

// do sends r and returns the response and its full body, checking the
// event id header against the emitted event.
func (h *harness) do(t *testing.T, r *http.Request) (*http.Response, []byte, event.Event) {
	t.Helper()
	res, err := http.DefaultClient.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	ev := h.rec.next(t)
	checkEventID(t, res, ev)
	return res, b, ev
}

func checkEventID(t *testing.T, res *http.Response, ev event.Event) {
	t.Helper()
	id := res.Header.Get(HeaderEventID)
	if id == "" || id != ev.ID {
		t.Fatalf("X-Llmtap-Event-Id %q, event id %q", id, ev.ID)
	}
	u, err := uuid.Parse(id)
	if err != nil || u.Version() != 7 {
		t.Fatalf("event id %q is not a UUIDv7", id)
	}
	if len(res.Header.Values(HeaderEventID)) != 1 {
		t.Fatalf("event id header repeated: %v", res.Header.Values(HeaderEventID))
	}
}

func checkOpenAIError(t *testing.T, body []byte, typ, code string) {
	t.Helper()
	var e struct {
		Error map[string]any `json:"error"`
	}
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("error body %q: %v", body, err)
	}
	if e.Error["type"] != typ || e.Error["code"] != code || e.Error["message"] == "" {
		t.Fatalf("error body %s: want type %q code %q", body, typ, code)
	}
	if p, ok := e.Error["param"]; !ok || p != nil {
		t.Fatalf("error body %s: param must be null", body)
	}
}

const chatBody = `{"model":"meta-llama/Llama-3.1-8B-Instruct","messages":[{"role":"user","content":"hello there"}]}`
const streamBody = `{"model":"meta-llama/Llama-3.1-8B-Instruct","stream":true,"messages":[{"role":"user","content":"hello there"}]}`

func TestAuth(t *testing.T) {
	h := newHarness(t, sim.Config{Tokens: 3}, nil)
	cases := []struct {
		name     string
		path     string
		hdr      map[string]string
		status   int
		consumer string
		prefix   string
		keyID    bool
	}{
		{"no key", "/v1/chat/completions", nil, 401, "", "", false},
		{"wrong key", "/v1/chat/completions", map[string]string{"Authorization": "Bearer sk-wrongwrongwrongwrongwrong"}, 401, "", "sk-wrongwr", false},
		{"short wrong key", "/v1/chat/completions", map[string]string{"Authorization": "Bearer hunter2"}, 401, "", "", false},
		{"revoked", "/v1/chat/completions", map[string]string{"Authorization": "Bearer " + h.bob}, 401, "", h.bob[:10], true},
		{"expired", "/v1/chat/completions", map[string]string{"Authorization": "Bearer " + h.carol}, 401, "", h.carol[:10], true},
		{"key in Api-Key header", "/v1/chat/completions", map[string]string{"Api-Key": h.alice}, 401, "", "", false},
		{"key as Basic", "/v1/chat/completions", map[string]string{"Authorization": "Basic " + h.alice}, 401, "", "", false},
		{"bearer", "/v1/chat/completions", map[string]string{"Authorization": "Bearer " + h.alice}, 200, "alice", h.alice[:10], true},
		{"bearer lower-case scheme", "/v1/chat/completions", map[string]string{"Authorization": "bearer " + h.alice}, 200, "alice", h.alice[:10], true},
		{"x-api-key", "/v1/chat/completions", map[string]string{"X-API-Key": h.alice}, 200, "alice", h.alice[:10], true},
		{"health guarded", "/health", nil, 401, "", "", false},
		{"metrics guarded", "/metrics", nil, 401, "", "", false},
		{"health with key", "/health", map[string]string{"Authorization": "Bearer " + h.alice}, 200, "alice", h.alice[:10], true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := h.spy.count()
			method, body := http.MethodPost, chatBody
			if !strings.HasPrefix(tc.path, "/v1/") {
				method, body = http.MethodGet, ""
			}
			res, b, ev := h.do(t, h.req(t, method, tc.path, body, tc.hdr))
			if res.StatusCode != tc.status || ev.Status != tc.status {
				t.Fatalf("status %d (event %d), want %d: %s", res.StatusCode, ev.Status, tc.status, b)
			}
			if ev.Consumer != tc.consumer || ev.KeyPrefix != tc.prefix || (ev.KeyID != "") != tc.keyID {
				t.Fatalf("event consumer %q prefix %q key id %q", ev.Consumer, ev.KeyPrefix, ev.KeyID)
			}
			contacted := h.spy.count() > before
			if tc.status == 401 {
				checkOpenAIError(t, b, "invalid_request_error", "invalid_api_key")
				if contacted {
					t.Fatal("upstream contacted for a rejected request")
				}
				if ev.RequestBody != nil {
					t.Fatal("rejected attempt stored the request body")
				}
				if string(ev.ResponseBody) != string(b) || ev.ResponseHeaders["Content-Type"] != "application/json" {
					t.Fatalf("event keeps response %q (headers %v), the client got %q", ev.ResponseBody, ev.ResponseHeaders, b)
				}
			} else if !contacted {
				t.Fatal("upstream not contacted")
			}
			if ev.Source != event.SourceProxy || ev.Path != tc.path || ev.Method != method || ev.ClientIP != "127.0.0.1" || ev.Time.IsZero() {
				t.Fatalf("event facts %+v", ev)
			}
			evJSON, _ := json.Marshal(ev)
			for _, k := range []string{h.alice, h.bob, h.carol} {
				if bytes.Contains(evJSON, []byte(k)) || bytes.Contains(evJSON, []byte(k[10:])) {
					t.Fatal("plain key in the event")
				}
			}
		})
	}
}

func TestIdentityHeadersAndUpstreamKey(t *testing.T) {
	h := newHarness(t, sim.Config{Tokens: 2}, nil)
	// Raw HTTP so that the headers (Connection in particular) are sent exactly.
	conn, err := net.Dial("tcp", strings.TrimPrefix(h.srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"+
		"Authorization: Bearer %s\r\n"+
		"X-Api-Key: %s\r\n"+
		"Connection: keep-alive, X-Consumer-Username\r\n"+
		"Connection: X-Consumer-ID\r\n"+
		"X-Consumer-Username: admin\r\n"+
		"X-Consumer-ID: 1\r\n"+
		"x-consumer-custom-id: root\r\n"+
		"X_Consumer_Groups: admins\r\n"+
		"X-Credential-Identifier: forged\r\n"+
		"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
		h.alice, h.bob, len(chatBody), chatBody)
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("status %d", res.StatusCode)
	}
	ev := h.rec.next(t)
	checkEventID(t, res, ev)
	up, _ := h.spy.last(t)
	if got := up.Values(HeaderConsumer); len(got) != 1 || got[0] != "alice" {
		t.Fatalf("upstream X-Consumer-Username = %q, want [alice]", got)
	}
	for name := range up {
		if isIdentityHeader(name) && name != HeaderConsumer {
			t.Errorf("forged identity header reached upstream: %s: %v", name, up[name])
		}
	}
	if up.Get("Authorization") != "" || up.Get("X-Api-Key") != "" {
		t.Fatalf("client key reached upstream: %q %q", up.Get("Authorization"), up.Get("X-Api-Key"))
	}
	if ev.RequestHeaders["Authorization"] != Redacted || ev.RequestHeaders["X-Api-Key"] != Redacted {
		t.Fatalf("captured headers not redacted: %v", ev.RequestHeaders)
	}

	// With upstream_api_key: vLLM (the simulator) requires it and gets it.
	h2 := newHarness(t, sim.Config{Tokens: 2, APIKey: "upstream-secret"}, func(c *Config) { c.UpstreamAPIKey = "upstream-secret" })
	res, b, ev := h2.do(t, h2.req(t, "POST", "/v1/chat/completions", chatBody, map[string]string{"X-API-Key": h2.alice}))
	if res.StatusCode != 200 {
		t.Fatalf("status %d: %s", res.StatusCode, b)
	}
	up, _ = h2.spy.last(t)
	if up.Get("Authorization") != "Bearer upstream-secret" || up.Get("X-Api-Key") != "" {
		t.Fatalf("upstream auth %q / x-api-key %q", up.Get("Authorization"), up.Get("X-Api-Key"))
	}
	if ev.Consumer != "alice" {
		t.Fatalf("consumer %q", ev.Consumer)
	}
	// Without it, the simulator's own guard refuses (the client's key is never passed on).
	h3 := newHarness(t, sim.Config{Tokens: 2, APIKey: "upstream-secret"}, nil)
	res, _, ev = h3.do(t, h3.req(t, "POST", "/v1/chat/completions", chatBody, map[string]string{"Authorization": "Bearer " + h3.alice}))
	if res.StatusCode != 401 || ev.Status != 401 || ev.Consumer != "alice" {
		t.Fatalf("status %d, event %d %q", res.StatusCode, ev.Status, ev.Consumer)
	}
}

func TestCaptureAndRedaction(t *testing.T) {
	h := newHarness(t, sim.Config{Tokens: 40}, func(c *Config) {
		c.CaptureLimit = 100
		c.RedactHeaders = []string{"x-internal-secret"}
	})
	h.spy.extra = http.Header{"Set-Cookie": {"session=abc"}, "X-Request-Id": {"req-123"}}
	capBody := strings.Replace(chatBody, "hello there", "hello there, tell me a long story please", 1)
	r := h.req(t, "POST", "/v1/chat/completions?api_key=querysecret", capBody, map[string]string{
		"Authorization": "Bearer " + h.alice, "Cookie": "c=1", "X-Internal-Secret": "s3cret",
		"Proxy-Authorization": "Basic x", "X-Other": "visible",
	})
	res, body, ev := h.do(t, r)
	if res.StatusCode != 200 || ev.Status != 200 {
		t.Fatalf("status %d", res.StatusCode)
	}
	var resp map[string]any
	if err := json.Unmarshal(body, &resp); err != nil {
		t.Fatalf("client did not get the whole body: %v", err)
	}
	if len(ev.RequestBody) != 100 || !ev.RequestTruncated || string(ev.RequestBody) != capBody[:100] {
		t.Fatalf("request capture %d bytes truncated=%v", len(ev.RequestBody), ev.RequestTruncated)
	}
	if len(ev.ResponseBody) != 100 || !ev.ResponseTruncated || !bytes.Equal(ev.ResponseBody, body[:100]) {
		t.Fatalf("response capture %d bytes truncated=%v", len(ev.ResponseBody), ev.ResponseTruncated)
	}
	for _, name := range []string{"Authorization", "Cookie", "X-Internal-Secret", "Proxy-Authorization"} {
		if ev.RequestHeaders[name] != Redacted {
			t.Errorf("request header %s = %q, want redacted", name, ev.RequestHeaders[name])
		}
	}
	if ev.RequestHeaders["X-Other"] != "visible" || ev.ResponseHeaders["Set-Cookie"] != Redacted {
		t.Errorf("headers: %v / %v", ev.RequestHeaders, ev.ResponseHeaders)
	}
	if ev.Path != "/v1/chat/completions" || ev.RequestID != "req-123" || ev.Stream {
		t.Errorf("path %q request id %q stream %v", ev.Path, ev.RequestID, ev.Stream)
	}
	evJSON, _ := json.Marshal(ev)
	for _, secret := range []string{"querysecret", "s3cret", "session=abc", h.alice} {
		if bytes.Contains(evJSON, []byte(secret)) {
			t.Errorf("secret %q in the event", secret)
		}
	}
	if ev.TTFBMs == nil || *ev.TTFBMs <= 0 || ev.LatencyMs < *ev.TTFBMs || ev.TTFTMs != nil {
		t.Errorf("timings ttfb %v latency %v ttft %v", ev.TTFBMs, ev.LatencyMs, ev.TTFTMs)
	}

	// Under the cap nothing is truncated; the capture is byte-exact.
	h2 := newHarness(t, sim.Config{Tokens: 5}, nil)
	_, body, ev = h2.do(t, h2.req(t, "POST", "/v1/chat/completions", chatBody, map[string]string{"Authorization": "Bearer " + h2.alice}))
	if ev.RequestTruncated || ev.ResponseTruncated || string(ev.RequestBody) != chatBody || !bytes.Equal(ev.ResponseBody, body) {
		t.Fatalf("capture not exact: %q / %q", ev.RequestBody, ev.ResponseBody)
	}
}

// readEvent reads one SSE event (through its blank line).
func readEvent(t *testing.T, br *bufio.Reader) string {
	t.Helper()
	var sb strings.Builder
	for {
		line, err := br.ReadString('\n')
		sb.WriteString(line)
		if err != nil {
			t.Fatalf("reading stream: %v (got %q)", err, sb.String())
		}
		if line == "\n" || line == "\r\n" {
			return sb.String()
		}
	}
}

func TestStreamNotBuffered(t *testing.T) {
	h := newHarness(t, sim.Config{}, nil)
	r := h.req(t, "POST", "/v1/chat/completions", streamBody, map[string]string{
		"Authorization": "Bearer " + h.alice, "X-Sim-Tokens": "4", "X-Sim-Token-Interval": "300ms",
	})
	res, err := http.DefaultClient.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	br := bufio.NewReader(res.Body)
	first := readEvent(t, br)
	writesAtFirst := h.spy.writes.Load()
	if !strings.HasPrefix(first, "data: {") {
		t.Fatalf("first event %q", first)
	}
	// Each following event reaches the client while the simulator is still
	// waiting to produce the next one.
	n := 1
	for {
		ev := readEvent(t, br)
		n++
		// (Only the paced token events: the finish, usage and [DONE]
		// events are written back to back.)
		if w := h.spy.writes.Load(); n <= 4 && w > int64(n)+1 {
			t.Fatalf("client has %d events but upstream already wrote %d: buffered", n, w)
		}
		if ev == "data: [DONE]\n\n" {
			break
		}
	}
	if writesAtFirst > 2 || n < 6 {
		t.Fatalf("first event came after %d upstream writes (stream of %d events)", writesAtFirst, n)
	}
	pev := h.rec.next(t)
	checkEventID(t, res, pev)
	if !pev.Stream || pev.TTFTMs == nil || pev.TTFBMs == nil || *pev.TTFTMs < *pev.TTFBMs || pev.LatencyMs < 900 {
		t.Fatalf("stream event: stream %v ttfb %v ttft %v latency %v", pev.Stream, pev.TTFBMs, pev.TTFTMs, pev.LatencyMs)
	}
}

func TestDisconnectCancelsUpstream(t *testing.T) {
	h := newHarness(t, sim.Config{}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r := h.req(t, "POST", "/v1/chat/completions", streamBody, map[string]string{
		"Authorization": "Bearer " + h.alice, "X-Sim-Tokens": "1000", "X-Sim-Token-Interval": "20ms",
	}).WithContext(ctx)
	res, err := http.DefaultClient.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(res.Body)
	first := readEvent(t, br)
	readEvent(t, br)
	if h.sim.InFlight() != 1 {
		t.Fatalf("sim in flight %d, want 1", h.sim.InFlight())
	}
	cancel()
	res.Body.Close()
	deadline := time.Now().Add(2 * time.Second)
	for h.sim.InFlight() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("upstream generation still running 2s after the client left")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if h.sim.Cancelled() != 1 {
		t.Fatalf("sim cancelled %d, want 1", h.sim.Cancelled())
	}
	ev := h.rec.next(t)
	if ev.Status != 499 || ev.Error != "client disconnected" || !ev.Stream {
		t.Fatalf("event status %d error %q stream %v", ev.Status, ev.Error, ev.Stream)
	}
	if !bytes.HasPrefix(ev.ResponseBody, []byte(first)) || bytes.Contains(ev.ResponseBody, []byte("[DONE]")) {
		t.Fatalf("partial response not kept: %q", ev.ResponseBody)
	}
	if ev.ID != res.Header.Get(HeaderEventID) {
		t.Fatal("event id mismatch")
	}
}

var createdRE = regexp.MustCompile(`"created":\d+`)

// direct fetches the same request from the simulator without the proxy.
func direct(t *testing.T, h *harness, path, body string, hdr map[string]string) []byte {
	t.Helper()
	r, _ := http.NewRequest("POST", h.up.URL+path, strings.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	for k, v := range hdr {
		r.Header.Set(k, v)
	}
	res, err := http.DefaultClient.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return createdRE.ReplaceAll(b, []byte(`"created":0`))
}

func TestStreamUsage(t *testing.T) {
	const model = `"model":"meta-llama/Llama-3.1-8B-Instruct"`
	chat := func(opts string) string {
		return `{` + model + `,"stream":true` + opts + `,"messages":[{"role":"user","content":"hi"}]}`
	}
	cases := []struct {
		name, mode, path, body string
		injected               bool // proxy added include_usage
		clientUsage            bool // the client's stream carries usage
	}{
		{"chat inject", "inject", "/v1/chat/completions", chat(""), true, false},
		{"completions inject", "inject", "/v1/completions", `{` + model + `,"prompt":"hi","stream":true}`, true, false},
		{"chat include_usage false", "inject", "/v1/chat/completions", chat(`,"stream_options":{"include_usage":false}`), true, false},
		{"chat asked for usage", "inject", "/v1/chat/completions", chat(`,"stream_options":{"include_usage":true}`), false, true},
		{"chat stream_options default", "inject", "/v1/chat/completions", chat(`,"stream_options":{}`), false, true},
		{"chat continuous usage", "inject", "/v1/chat/completions", chat(`,"stream_options":{"include_usage":false,"continuous_usage_stats":true}`), false, false},
		{"off", "off", "/v1/chat/completions", chat(""), false, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, sim.Config{Tokens: 5}, func(c *Config) { c.StreamUsage = tc.mode })
			hdr := map[string]string{"X-Request-Id": "fixed-id"}
			want := direct(t, h, tc.path, tc.body, hdr)
			hdr["Authorization"] = "Bearer " + h.alice
			res, got, ev := h.do(t, h.req(t, "POST", tc.path, tc.body, hdr))
			if res.StatusCode != 200 {
				t.Fatalf("status %d: %s", res.StatusCode, got)
			}
			got = createdRE.ReplaceAll(got, []byte(`"created":0`))
			if !bytes.Equal(got, want) {
				t.Fatalf("client stream differs from direct:\n got %s\nwant %s", got, want)
			}
			if has := bytes.Contains(got, []byte(`"choices":[],"usage"`)); has != tc.clientUsage {
				t.Fatalf("client usage chunk present=%v, want %v", has, tc.clientUsage)
			}
			if ev.UsageInjected != tc.injected {
				t.Fatalf("UsageInjected %v, want %v", ev.UsageInjected, tc.injected)
			}
			_, upBody := h.spy.last(t)
			var sent struct {
				StreamOptions map[string]any `json:"stream_options"`
			}
			if err := json.Unmarshal(upBody, &sent); err != nil {
				t.Fatalf("upstream body %q: %v", upBody, err)
			}
			if tc.injected && sent.StreamOptions["include_usage"] != true {
				t.Fatalf("upstream body %s lacks include_usage", upBody)
			}
			if !tc.injected && !bytes.Equal(upBody, []byte(tc.body)) {
				t.Fatalf("upstream body changed: %s", upBody)
			}
			if string(ev.RequestBody) != tc.body {
				t.Fatalf("captured request %q is not the client's", ev.RequestBody)
			}
			capUsage := bytes.Contains(ev.ResponseBody, []byte(`"choices":[],"usage"`))
			if capUsage != (tc.injected || tc.clientUsage) {
				t.Fatalf("captured usage chunk present=%v", capUsage)
			}
			if !ev.Stream || ev.TTFTMs == nil {
				t.Fatalf("stream %v ttft %v", ev.Stream, ev.TTFTMs)
			}
		})
	}
}

func TestKeysHotReload(t *testing.T) {
	h := newHarness(t, sim.Config{Tokens: 1}, nil)
	call := func(key string) int {
		res, _, _ := h.do(t, h.req(t, "GET", "/v1/models", "", map[string]string{"Authorization": "Bearer " + key}))
		return res.StatusCode
	}
	waitStatus := func(key string, want int, what string) {
		t.Helper()
		deadline := time.Now().Add(2500 * time.Millisecond)
		for call(key) != want {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not %d within 2s", what, want)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	k, plain, err := keys.Create(h.keysPath, keys.CreateOptions{Consumer: "dave"})
	if err != nil {
		t.Fatal(err)
	}
	waitStatus(plain, 200, "new key")
	if err := keys.Revoke(h.keysPath, k.ID); err != nil {
		t.Fatal(err)
	}
	waitStatus(plain, 401, "revoked key")
	if err := os.WriteFile(h.keysPath, []byte("- id: [broken"), 0o600); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1200 * time.Millisecond) // at least two polls
	if s := call(h.alice); s != 200 {
		t.Fatalf("broken keys file: last good set not kept (status %d)", s)
	}
	if s := call(plain); s != 401 {
		t.Fatalf("broken keys file: revoked key status %d", s)
	}
}

func TestOversizeBody(t *testing.T) {
	h := newHarness(t, sim.Config{Tokens: 1}, func(c *Config) { c.MaxRequestBody = 1000 })
	big := `{"model":"x","prompt":"` + strings.Repeat("a", 2000) + `"}`
	auth := map[string]string{"Authorization": "Bearer " + h.alice}

	res, b, ev := h.do(t, h.req(t, "POST", "/v1/completions", big, auth))
	if res.StatusCode != 413 || ev.Status != 413 || ev.RequestBody != nil || ev.Consumer != "alice" {
		t.Fatalf("content-length: status %d event %d body %d bytes", res.StatusCode, ev.Status, len(ev.RequestBody))
	}
	checkOpenAIError(t, b, "invalid_request_error", "request_too_large")

	// Chunked: no Content-Length, the counting reader stops it.
	r := h.req(t, "POST", "/v1/completions", "", auth)
	r.Body = io.NopCloser(strings.NewReader(big))
	r.ContentLength = -1
	res, b, ev = h.do(t, r)
	if res.StatusCode != 413 || ev.Status != 413 || ev.RequestBody != nil {
		t.Fatalf("chunked: status %d event %d: %s", res.StatusCode, ev.Status, b)
	}
	if n := h.spy.count(); n != 0 {
		t.Fatalf("upstream contacted %d times", n)
	}
	// At the limit is fine, chunked or not.
	ok := `{"model":"meta-llama/Llama-3.1-8B-Instruct","prompt":"` + strings.Repeat("a", 1000-56) + `"}`
	if len(ok) != 1000 {
		t.Fatalf("len %d", len(ok))
	}
	r = h.req(t, "POST", "/v1/completions", "", auth)
	r.Body = io.NopCloser(strings.NewReader(ok))
	r.ContentLength = -1
	res, b, ev = h.do(t, r)
	if res.StatusCode != 200 || string(ev.RequestBody) != ok {
		t.Fatalf("at limit: status %d: %s", res.StatusCode, b)
	}
}

func TestUpstreamFailures(t *testing.T) {
	// Unreachable: a port nobody listens on.
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	deadURL := "http://" + l.Addr().String()
	l.Close()
	h := newHarness(t, sim.Config{Tokens: 1}, func(c *Config) { c.Upstream = deadURL })
	res, b, ev := h.do(t, h.req(t, "POST", "/v1/chat/completions", chatBody, map[string]string{"Authorization": "Bearer " + h.alice}))
	if res.StatusCode != 502 || ev.Status != 502 || !strings.HasPrefix(ev.Error, "upstream unavailable") || ev.Consumer != "alice" {
		t.Fatalf("status %d event %d %q", res.StatusCode, ev.Status, ev.Error)
	}
	checkOpenAIError(t, b, "upstream_error", "upstream_unavailable")
	if string(ev.RequestBody) != chatBody {
		t.Fatal("request body not captured on 502")
	}

	// Slow headers: 504.
	h = newHarness(t, sim.Config{Tokens: 1}, func(c *Config) { c.ResponseHeaderTimeout = 100 * time.Millisecond })
	res, b, ev = h.do(t, h.req(t, "POST", "/v1/chat/completions", chatBody, map[string]string{"Authorization": "Bearer " + h.alice, "X-Sim-TTFT": "2s"}))
	if res.StatusCode != 504 || ev.Status != 504 {
		t.Fatalf("status %d event %d %q", res.StatusCode, ev.Status, ev.Error)
	}
	checkOpenAIError(t, b, "upstream_error", "upstream_timeout")

	// Abrupt close mid-stream: the client got 200 and a cut stream; the
	// event says so.
	h = newHarness(t, sim.Config{Tokens: 10}, nil)
	r := h.req(t, "POST", "/v1/chat/completions", streamBody, map[string]string{"Authorization": "Bearer " + h.alice, "X-Sim-Fault": "close"})
	res, err := http.DefaultClient.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(res.Body)
	res.Body.Close()
	ev = h.rec.next(t)
	checkEventID(t, res, ev)
	if ev.Status != 200 || !strings.HasPrefix(ev.Error, "upstream response interrupted") || bytes.Contains(got, []byte("[DONE]")) {
		t.Fatalf("abrupt close: status %d error %q", ev.Status, ev.Error)
	}
	if !bytes.HasPrefix(ev.ResponseBody, got) {
		t.Fatal("captured body does not start with what the client got")
	}
}

func TestAuditUnavailable(t *testing.T) {
	h := newHarness(t, sim.Config{Tokens: 1}, nil)
	h.rec.refuse.Store(true)
	res, b, ev := h.do(t, h.req(t, "POST", "/v1/chat/completions", chatBody, map[string]string{"Authorization": "Bearer " + h.alice}))
	if res.StatusCode != 503 || ev.Status != 503 || res.Header.Get("Retry-After") == "" || h.spy.count() != 0 {
		t.Fatalf("status %d event %d contacted %d", res.StatusCode, ev.Status, h.spy.count())
	}
	checkOpenAIError(t, b, "service_unavailable", "audit_unavailable")
	// Bad keys still get 401, not 503.
	res, _, _ = h.do(t, h.req(t, "GET", "/v1/models", "", nil))
	if res.StatusCode != 401 {
		t.Fatalf("no key while refusing: %d", res.StatusCode)
	}
}

func TestClientIP(t *testing.T) {
	p := &Proxy{trusted: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("127.0.0.1/32")}}
	cases := []struct{ remote, xff, want string }{
		{"192.0.2.1:5555", "", "192.0.2.1"},
		{"192.0.2.1:5555", "203.0.113.9", "192.0.2.1"}, // untrusted peer: XFF ignored
		{"127.0.0.1:5555", "203.0.113.9", "203.0.113.9"},
		{"127.0.0.1:5555", "1.1.1.1, 203.0.113.9, 10.1.2.3", "203.0.113.9"},
		{"127.0.0.1:5555", "10.1.2.3", "10.1.2.3"},
		{"127.0.0.1:5555", "garbage", "127.0.0.1"},
		{"[::ffff:127.0.0.1]:5555", "203.0.113.9", "203.0.113.9"},
	}
	for _, tc := range cases {
		r := httptest.NewRequest("GET", "/", nil)
		r.RemoteAddr = tc.remote
		if tc.xff != "" {
			r.Header.Set("X-Forwarded-For", tc.xff)
		}
		if got := p.clientIP(r); got != tc.want {
			t.Errorf("clientIP(%s, %q) = %q, want %q", tc.remote, tc.xff, got, tc.want)
		}
	}
	p.trusted = nil
	r := httptest.NewRequest("GET", "/", nil)
	r.RemoteAddr = "127.0.0.1:1"
	r.Header.Set("X-Forwarded-For", "203.0.113.9")
	if got := p.clientIP(r); got != "127.0.0.1" {
		t.Errorf("no trusted proxies: %q", got)
	}
}

func TestInjectUsage(t *testing.T) {
	cases := []struct {
		in   string
		ok   bool
		want string // expected stream_options after injection (JSON), when ok
	}{
		{`{"stream":true,"model":"m"}`, true, `{"include_usage":true}`},
		{` { "model":"m", "stream" : true }`, true, `{"include_usage":true}`},
		{`{"stream":false}`, false, ""},
		{`{"model":"m"}`, false, ""},
		{`{"stream":"true"}`, false, ""},
		{`{"stream":true,"stream_options":{"include_usage":true}}`, false, ""},
		{`{"stream":true,"stream_options":{}}`, false, ""},
		{`{"stream":true,"stream_options":{"include_usage":false,"x":1}}`, true, `{"include_usage":true,"x":1}`},
		{`{"stream":true,"stream_options":null}`, true, `{"include_usage":true}`},
		{`{"stream":true,"stream_options":{"include_usage":null}}`, true, `{"include_usage":true}`},
		{`{"stream":true,"stream_options":{"include_usage":false,"continuous_usage_stats":true}}`, false, ""},
		{`{"stream":true,"stream_options":"bad"}`, false, ""},
		{`{"stream":true`, false, ""},
		{`[{"stream":true}]`, false, ""},
		{`not json "stream"`, false, ""},
	}
	for _, tc := range cases {
		out, ok := injectUsage([]byte(tc.in))
		if ok != tc.ok {
			t.Errorf("injectUsage(%s) ok=%v, want %v", tc.in, ok, tc.ok)
			continue
		}
		if !ok {
			continue
		}
		var orig, got map[string]json.RawMessage
		json.Unmarshal([]byte(tc.in), &orig)
		if err := json.Unmarshal(out, &got); err != nil {
			t.Errorf("injectUsage(%s) = invalid JSON %s", tc.in, out)
			continue
		}
		var so, wantSO any
		json.Unmarshal(got["stream_options"], &so)
		json.Unmarshal([]byte(tc.want), &wantSO)
		if fmt.Sprint(so) != fmt.Sprint(wantSO) {
			t.Errorf("injectUsage(%s) stream_options %s, want %s", tc.in, got["stream_options"], tc.want)
		}
		for k, v := range orig {
			if k != "stream_options" && !bytes.Equal(got[k], v) {
				t.Errorf("injectUsage(%s) changed %s", tc.in, k)
			}
		}
	}
}

func TestConfigValidate(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatal(err)
	}
	bad := []func(*Config){
		func(c *Config) { c.Upstream = "" },
		func(c *Config) { c.Upstream = "ftp://x" },
		func(c *Config) { c.Upstream = "http://x/?a=1" },
		func(c *Config) { c.StreamUsage = "always" },
		func(c *Config) { c.MaxRequestBody = 0 },
		func(c *Config) { c.CaptureLimit = -1 },
		func(c *Config) { c.ResponseHeaderTimeout = -1 },
		func(c *Config) { c.MaxIdleConnsPerHost = -1 },
	}
	for i, mod := range bad {
		c := DefaultConfig()
		mod(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("case %d: want error", i)
		}
	}
	if _, err := New(DefaultConfig(), nil, newRecorder(), nil); err == nil {
		t.Error("New without key source: want error")
	}
}

func TestCompressedResponsePassesThrough(t *testing.T) {
	h := newHarness(t, sim.Config{Tokens: 1}, nil)
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write([]byte(`{"object":"list","data":[]}`))
	zw.Close()
	var sawAE string
	h.spy.h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sawAE = r.Header.Get("Accept-Encoding")
		w.Header().Set("Content-Encoding", "gzip")
		w.Header().Set("Content-Type", "application/json")
		w.Write(gz.Bytes())
	})
	r := h.req(t, "GET", "/v1/models", "", map[string]string{"Authorization": "Bearer " + h.alice, "Accept-Encoding": "gzip"})
	res, err := (&http.Client{Transport: &http.Transport{DisableCompression: true}}).Do(r)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(res.Body)
	res.Body.Close()
	ev := h.rec.next(t)
	checkEventID(t, res, ev)
	if sawAE != "gzip" || !bytes.Equal(got, gz.Bytes()) || !bytes.Equal(ev.ResponseBody, gz.Bytes()) || ev.ResponseEncoding != "gzip" {
		t.Fatalf("accept-encoding %q, client %d bytes, captured %d bytes, encoding %q", sawAE, len(got), len(ev.ResponseBody), ev.ResponseEncoding)
	}
}

func TestMetrics(t *testing.T) {
	h := newHarness(t, sim.Config{Tokens: 1}, nil)
	before401 := testutil.ToFloat64(requestsTotal.WithLabelValues(LabelAnonymous, LabelUnknown, "401"))
	before200 := testutil.ToFloat64(requestsTotal.WithLabelValues("alice", LabelUnknown, "200"))
	h.do(t, h.req(t, "GET", "/v1/models", "", nil))
	h.do(t, h.req(t, "GET", "/v1/models", "", map[string]string{"Authorization": "Bearer " + h.alice}))
	if d := testutil.ToFloat64(requestsTotal.WithLabelValues(LabelAnonymous, LabelUnknown, "401")) - before401; d != 1 {
		t.Errorf("401 counter +%v", d)
	}
	if d := testutil.ToFloat64(requestsTotal.WithLabelValues("alice", LabelUnknown, "200")) - before200; d != 1 {
		t.Errorf("200 counter +%v", d)
	}
	// An open stream is in flight.
	r := h.req(t, "POST", "/v1/chat/completions", streamBody, map[string]string{"Authorization": "Bearer " + h.alice, "X-Sim-Tokens": "3", "X-Sim-Token-Interval": "200ms"})
	res, err := http.DefaultClient.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	readEvent(t, bufio.NewReader(res.Body))
	if v := testutil.ToFloat64(inflight); v < 1 {
		t.Errorf("inflight %v during a stream", v)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	h.rec.next(t)
	if v := testutil.ToFloat64(inflight); v != 0 {
		t.Errorf("inflight %v after the stream", v)
	}
}

func TestDisconnectBeforeHeaders(t *testing.T) {
	h := newHarness(t, sim.Config{Tokens: 1}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	r := h.req(t, "POST", "/v1/chat/completions", chatBody, map[string]string{"Authorization": "Bearer " + h.alice, "X-Sim-TTFT": "10s"}).WithContext(ctx)
	go func() {
		for h.sim.InFlight() == 0 {
			time.Sleep(5 * time.Millisecond)
		}
		cancel()
	}()
	if _, err := http.DefaultClient.Do(r); err == nil {
		t.Fatal("request not cancelled")
	}
	ev := h.rec.next(t)
	if ev.Status != 499 || ev.Error != "client disconnected" || string(ev.RequestBody) != chatBody {
		t.Fatalf("event %d %q", ev.Status, ev.Error)
	}
	deadline := time.Now().Add(2 * time.Second)
	for h.sim.InFlight() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("upstream still generating")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestExpectContinue(t *testing.T) {
	h := newHarness(t, sim.Config{Tokens: 1}, nil)
	r := h.req(t, "POST", "/v1/chat/completions", chatBody, map[string]string{"Authorization": "Bearer " + h.alice, "Expect": "100-continue"})
	res, b, _ := h.do(t, r)
	if res.StatusCode != 200 {
		t.Fatalf("status %d: %s", res.StatusCode, b)
	}
	if up, _ := h.spy.last(t); up.Get("Expect") != "" {
		t.Fatal("Expect forwarded upstream")
	}
}

func TestStalledClientIsCut(t *testing.T) {
	h := newHarness(t, sim.Config{}, func(c *Config) { c.ClientWriteTimeout = 300 * time.Millisecond })
	conn, err := net.Dial("tcp", strings.TrimPrefix(h.srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.(*net.TCPConn).SetReadBuffer(4096)
	fmt.Fprintf(conn, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"+
		"X-Sim-Tokens: 1000000\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
		h.alice, len(streamBody), streamBody)
	head := make([]byte, 512)
	if _, err := io.ReadFull(conn, head); err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(head, []byte("HTTP/1.1 200")) {
		t.Fatalf("response %q", head)
	}
	// The client now stops reading but keeps the connection open.
	deadline := time.Now().Add(20 * time.Second)
	for h.sim.InFlight() != 0 || h.sim.Started() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("upstream generation not stopped for a client that stopped reading")
		}
		time.Sleep(10 * time.Millisecond)
	}
	ev := h.rec.next(t)
	if ev.Status != 499 || !ev.Stream || len(ev.ResponseBody) == 0 {
		t.Fatalf("event status %d stream %v body %d", ev.Status, ev.Stream, len(ev.ResponseBody))
	}
	if h.sim.Cancelled() != 1 {
		t.Fatalf("sim cancelled %d", h.sim.Cancelled())
	}
}

func TestKeepAliveAfterStream(t *testing.T) {
	// The per-write deadline of one request must not leak into the next
	// request on the same connection.
	h := newHarness(t, sim.Config{Tokens: 2}, func(c *Config) { c.ClientWriteTimeout = 200 * time.Millisecond })
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
	r := h.req(t, "POST", "/v1/chat/completions", streamBody, map[string]string{"Authorization": "Bearer " + h.alice})
	res, err := client.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil || !bytes.HasSuffix(b, []byte("data: [DONE]\n\n")) {
		t.Fatalf("stream: %v %q", err, b)
	}
	h.rec.next(t)
	time.Sleep(400 * time.Millisecond) // idle past the last deadline
	// A 401 on the same connection (written without the deadline writer).
	r = h.req(t, "GET", "/v1/models", "", nil)
	r = r.WithContext(httptrace.WithClientTrace(r.Context(), &httptrace.ClientTrace{
		GotConn: func(ci httptrace.GotConnInfo) {
			if !ci.Reused {
				t.Error("connection not reused")
			}
		},
	}))
	res, err = client.Do(r)
	if err != nil {
		t.Fatalf("second request on the connection: %v", err)
	}
	res.Body.Close()
	if res.StatusCode != 401 {
		t.Fatalf("status %d", res.StatusCode)
	}
	h.rec.next(t)
}
