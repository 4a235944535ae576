package proxy

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/llmtap/llmtap/proxy/limit/limittest"

	"github.com/llmtap/llmtap/cmd/vllm-sim/sim"
	"github.com/llmtap/llmtap/proxy/keys"
	"github.com/llmtap/llmtap/proxy/limit"
	"github.com/prometheus/client_golang/prometheus"
)

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// limitBackends are the limiter backends every proxy limit test runs on.
var limitBackends = []struct {
	name string
	// cfg completes a limit configuration for the backend.
	cfg func(t *testing.T, c limit.Config) limit.Config
}{
	{"memory", func(t *testing.T, c limit.Config) limit.Config { return c }},
	{"redis", func(t *testing.T, c limit.Config) limit.Config {
		if testing.Short() {
			t.Skip("redis: skipped in -short")
		}
		c.RedisURL = limittest.RedisURL()
		c.KeyPrefix = limittest.Prefix(t, c.RedisURL)
		c.Timeout = 2 * time.Second
		return c
	}},
}

// newLimiter builds a limiter closed after the test.
func newLimiter(t *testing.T, c limit.Config) limit.Limiter {
	t.Helper()
	l, err := limit.New(c, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// withLimits makes newHarness's proxy use l with the limits c.
func withLimits(l limit.Limiter, c limit.Config) func(*Config) {
	return func(pc *Config) { pc.Limiter, pc.Limits = l, c }
}

// extraProxy serves a second Proxy (another replica) over h's keys and
// recorder.
func extraProxy(t *testing.T, h *harness, mod func(*Config)) *httptest.Server {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Upstream = h.up.URL
	mod(&cfg)
	px, err := New(cfg, h.watcher, h.rec, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(px)
	t.Cleanup(srv.Close)
	t.Cleanup(px.Close)
	return srv
}

// addKey creates a key for consumer in h's keys file and waits until the
// proxy knows it.
func addKey(t *testing.T, h *harness, opt keys.CreateOptions) string {
	t.Helper()
	_, plain, err := keys.Create(h.keysPath, opt)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(3 * time.Second)
	for {
		if _, res := h.watcher.Set().Lookup(plain); res == keys.OK {
			return plain
		}
		if time.Now().After(deadline) {
			t.Fatal("new key not loaded")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func bearer(key string) map[string]string { return map[string]string{"Authorization": "Bearer " + key} }

// metricValue reads one sample of the default registry: a counter or gauge
// value, or a histogram's sample count. Absent: 0.
func metricValue(t *testing.T, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			if len(m.GetLabel()) != len(labels) {
				continue
			}
			for _, lp := range m.GetLabel() {
				if v, ok := labels[lp.GetName()]; !ok || v != lp.GetValue() {
					continue next
				}
			}
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue()
			case m.Gauge != nil:
				return m.Gauge.GetValue()
			case m.Histogram != nil:
				return float64(m.Histogram.GetSampleCount())
			}
		}
	}
	return 0
}

// checkRefusal asserts a rate-limit refusal: status, OpenAI-style body,
// Retry-After, the audited event, upstream not contacted.
func checkRefusal(t *testing.T, h *harness, res *http.Response, b []byte, status int, reason string) {
	t.Helper()
	if res.StatusCode != status {
		t.Fatalf("status %d, want %d: %s", res.StatusCode, status, b)
	}
	code := "rate_limit_exceeded"
	if status == http.StatusServiceUnavailable {
		code = "rate_limit_unavailable"
	}
	checkOpenAIError(t, b, reason, code)
	ra, err := strconv.Atoi(res.Header.Get("Retry-After"))
	if err != nil || ra < 1 {
		t.Fatalf("Retry-After %q", res.Header.Get("Retry-After"))
	}
	if res.Header.Get("retry-after-ms") == "" {
		t.Fatal("no retry-after-ms")
	}
}

// TestRateLimitBoundary: with RPM N, exactly N requests pass (each with
// the remaining count), the N+1st is a 429 with OpenAI's body and headers,
// audited with status 429 and never sent upstream; a key's own RPM from
// the keys file overrides the default.
func TestRateLimitBoundary(t *testing.T) {
	for _, be := range limitBackends {
		t.Run(be.name, func(t *testing.T) {
			lc := limit.DefaultConfig()
			lc.DefaultRPM = 3
			lc = be.cfg(t, lc)
			l := newLimiter(t, lc)
			h := newHarness(t, sim.Config{Tokens: 2}, withLimits(l, lc))
			refusedBefore := metricValue(t, "llmtap_ratelimit_refusals_total", map[string]string{"reason": "requests"})
			req429Before := metricValue(t, "llmtap_requests_total", map[string]string{"consumer": "alice", "model": LabelUnknown, "status": "429"})
			for i := 0; i < 3; i++ {
				res, b, ev := h.do(t, h.req(t, "POST", "/v1/chat/completions", chatBody, bearer(h.alice)))
				if res.StatusCode != 200 || ev.Status != 200 {
					t.Fatalf("request %d: %d %s", i+1, res.StatusCode, b)
				}
				if got := res.Header.Get(limit.HeaderLimitRequests); got != "3" {
					t.Fatalf("request %d: limit header %q", i+1, got)
				}
				if got := res.Header.Get(limit.HeaderRemainingRequests); got != strconv.Itoa(2-i) {
					t.Fatalf("request %d: remaining %q, want %d", i+1, got, 2-i)
				}
				if res.Header.Get(limit.HeaderResetRequests) == "" || res.Header.Get("Retry-After") != "" {
					t.Fatalf("request %d: headers %v", i+1, res.Header)
				}
				if res.Header.Get(limit.HeaderLimitTokens) != "" {
					t.Fatal("token headers without a token limit")
				}
			}
			upstream := h.spy.count()
			res, b, ev := h.do(t, h.req(t, "POST", "/v1/chat/completions", chatBody, bearer(h.alice)))
			checkRefusal(t, h, res, b, 429, limit.ReasonRequests)
			if res.Header.Get(limit.HeaderRemainingRequests) != "0" || res.Header.Get(limit.HeaderLimitRequests) != "3" {
				t.Fatalf("refusal headers %v", res.Header)
			}
			if ev.Status != 429 || ev.Error != "rate limit: requests" || ev.Consumer != "alice" || ev.KeyID == "" {
				t.Fatalf("audited refusal: status %d error %q consumer %q", ev.Status, ev.Error, ev.Consumer)
			}
			if h.spy.count() != upstream {
				t.Fatal("refused request reached upstream")
			}
			if d := metricValue(t, "llmtap_ratelimit_refusals_total", map[string]string{"reason": "requests"}) - refusedBefore; d != 1 {
				t.Errorf("refusals metric +%v", d)
			}
			if d := metricValue(t, "llmtap_requests_total", map[string]string{"consumer": "alice", "model": LabelUnknown, "status": "429"}) - req429Before; d != 1 {
				t.Errorf("requests{status=429} +%v", d)
			}
			// Unauthenticated requests are not counted against anyone.
			if res, _, _ := h.do(t, h.req(t, "GET", "/v1/models", "", nil)); res.StatusCode != 401 {
				t.Fatalf("no key: %d", res.StatusCode)
			}
			// A key with its own RPM.
			one := addKey(t, h, keys.CreateOptions{Consumer: "alice", RPM: 1})
			if res, _, _ := h.do(t, h.req(t, "GET", "/v1/models", "", bearer(one))); res.StatusCode != 200 || res.Header.Get(limit.HeaderLimitRequests) != "1" {
				t.Fatalf("own rpm, first: %d %v", res.StatusCode, res.Header)
			}
			res, b, _ = h.do(t, h.req(t, "GET", "/v1/models", "", bearer(one)))
			checkRefusal(t, h, res, b, 429, limit.ReasonRequests)
		})
	}
}

// TestRateLimitWindowReset: once the window has moved past the counted
// requests, the budget is back.
func TestRateLimitWindowReset(t *testing.T) {
	for _, be := range limitBackends {
		t.Run(be.name, func(t *testing.T) {
			lc := limit.DefaultConfig()
			lc.DefaultRPM, lc.Window = 2, 400*time.Millisecond
			lc = be.cfg(t, lc)
			h := newHarness(t, sim.Config{Tokens: 1}, withLimits(newLimiter(t, lc), lc))
			call := func() (*http.Response, []byte) {
				res, b, _ := h.do(t, h.req(t, "GET", "/v1/models", "", bearer(h.alice)))
				return res, b
			}
			for i := 0; i < 2; i++ {
				if res, b := call(); res.StatusCode != 200 {
					t.Fatalf("request %d: %d %s", i+1, res.StatusCode, b)
				}
			}
			res, b := call()
			checkRefusal(t, h, res, b, 429, limit.ReasonRequests)
			ms, err := strconv.Atoi(res.Header.Get("retry-after-ms"))
			if err != nil || ms <= 0 || ms > 400 {
				t.Fatalf("retry-after-ms %q", res.Header.Get("retry-after-ms"))
			}
			time.Sleep(time.Duration(ms)*time.Millisecond + 50*time.Millisecond)
			if res, b := call(); res.StatusCode != 200 {
				t.Fatalf("after the window moved: %d %s", res.StatusCode, b)
			}
		})
	}
}

// simUsage returns the prompt and completion tokens vllm-sim (cfg) reports
// for body on path, asked directly with include_usage.
func simUsage(t *testing.T, cfg sim.Config, path, body string) (int64, int64) {
	t.Helper()
	srv := httptest.NewServer(sim.New(cfg))
	defer srv.Close()
	res, err := http.Post(srv.URL+path, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	p, c, ok := limit.Usage(b, true)
	if !ok || p <= 0 || c <= 0 {
		t.Fatalf("sim usage: %s", b)
	}
	return p, c
}

const streamUsageBody = `{"model":"meta-llama/Llama-3.1-8B-Instruct","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hello there"}]}`

// TestRateLimitTPM: the tokens of vllm-sim's real usage (injected into
// streams whose client did not ask for it, and read from the tail when the
// capture was truncated) spend the TPM budget: two requests pass, the
// third is refused for tokens; the token headers count down.
func TestRateLimitTPM(t *testing.T) {
	simCfg := sim.Config{Tokens: 6}
	p, c := simUsage(t, simCfg, "/v1/chat/completions", streamUsageBody)
	per := p + c
	for _, be := range limitBackends {
		for _, capture := range []int64{DefaultCaptureLimit, 40} {
			t.Run(fmt.Sprintf("%s/capture%d", be.name, capture), func(t *testing.T) {
				lc := limit.DefaultConfig()
				lc.DefaultTPM = 2 * per
				lc = be.cfg(t, lc)
				h := newHarness(t, simCfg, func(pc *Config) {
					withLimits(newLimiter(t, lc), lc)(pc)
					pc.CaptureLimit = capture
				})
				for i := int64(0); i < 2; i++ {
					res, b, ev := h.do(t, h.req(t, "POST", "/v1/chat/completions", streamBody, bearer(h.alice)))
					if res.StatusCode != 200 || !ev.UsageInjected {
						t.Fatalf("request %d: %d injected %v %s", i+1, res.StatusCode, ev.UsageInjected, b)
					}
					if ev.ResponseTruncated != (capture < DefaultCaptureLimit) {
						t.Fatalf("truncated %v", ev.ResponseTruncated)
					}
					// A truncated capture passes the usage on as a hint.
					if u := ev.Usage; ev.ResponseTruncated != (u != nil) ||
						(u != nil && (*u.PromptTokens != p || *u.CompletionTokens != c || *u.TotalTokens != per)) {
						t.Fatalf("usage hint %+v (truncated %v), want %d+%d", u, ev.ResponseTruncated, p, c)
					}
					if got := res.Header.Get(limit.HeaderRemainingTokens); got != strconv.FormatInt(2*per-i*per, 10) {
						t.Fatalf("request %d: remaining tokens %q, want %d", i+1, got, 2*per-i*per)
					}
					if res.Header.Get(limit.HeaderLimitTokens) != strconv.FormatInt(2*per, 10) {
						t.Fatalf("token limit header %q", res.Header.Get(limit.HeaderLimitTokens))
					}
				}
				res, b, ev := h.do(t, h.req(t, "POST", "/v1/chat/completions", streamBody, bearer(h.alice)))
				checkRefusal(t, h, res, b, 429, limit.ReasonTokens)
				if ev.Error != "rate limit: tokens" || res.Header.Get(limit.HeaderRemainingTokens) != "0" {
					t.Fatalf("event error %q, remaining tokens %q", ev.Error, res.Header.Get(limit.HeaderRemainingTokens))
				}
			})
		}
	}
}

// TestRateLimitConcurrency: with one slot per key, a second request while
// a stream is open is refused; the slot comes back when the stream ends,
// also when the client went away mid-stream.
func TestRateLimitConcurrency(t *testing.T) {
	for _, be := range limitBackends {
		t.Run(be.name, func(t *testing.T) {
			lc := limit.DefaultConfig()
			lc.DefaultConcurrent = 1
			lc = be.cfg(t, lc)
			h := newHarness(t, sim.Config{Tokens: 3}, withLimits(newLimiter(t, lc), lc))
			slow := map[string]string{"Authorization": "Bearer " + h.alice, "X-Sim-Tokens": "4", "X-Sim-Token-Interval": "100ms"}
			open := func(ctx context.Context, hdr map[string]string) *http.Response {
				res, err := http.DefaultClient.Do(h.req(t, "POST", "/v1/chat/completions", streamBody, hdr).WithContext(ctx))
				if err != nil {
					t.Fatal(err)
				}
				if res.StatusCode != 200 {
					t.Fatalf("stream: %d", res.StatusCode)
				}
				readEvent(t, bufio.NewReader(res.Body))
				return res
			}
			res := open(context.Background(), slow)
			if v := metricValue(t, "llmtap_inflight_streams", nil); v < 1 {
				t.Errorf("inflight streams %v during a stream", v)
			}
			r2, b, ev := h.do(t, h.req(t, "GET", "/v1/models", "", bearer(h.alice)))
			checkRefusal(t, h, r2, b, 429, limit.ReasonConcurrency)
			if ev.Error != "rate limit: concurrency" {
				t.Fatalf("event error %q", ev.Error)
			}
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
			h.rec.next(t)
			if r, b, _ := h.do(t, h.req(t, "GET", "/v1/models", "", bearer(h.alice))); r.StatusCode != 200 {
				t.Fatalf("after the stream: %d %s", r.StatusCode, b)
			}

			// A client that leaves mid-stream frees its slot.
			ctx, cancel := context.WithCancel(context.Background())
			long := map[string]string{"Authorization": "Bearer " + h.alice, "X-Sim-Tokens": "1000", "X-Sim-Token-Interval": "50ms"}
			res = open(ctx, long)
			cancel()
			res.Body.Close()
			if ev := h.rec.next(t); ev.Status != 499 {
				t.Fatalf("disconnect: status %d", ev.Status)
			}
			if r, b, _ := h.do(t, h.req(t, "GET", "/v1/models", "", bearer(h.alice))); r.StatusCode != 200 {
				t.Fatalf("after a disconnect: %d %s", r.StatusCode, b)
			}
		})
	}
}

// TestRateLimitTwoProxiesShareRedis: two proxy replicas (two handlers, two
// limiters on one Redis prefix) under concurrent load admit exactly the
// limit in total.
func TestRateLimitTwoProxiesShareRedis(t *testing.T) {
	if testing.Short() {
		t.Skip("redis: skipped in -short")
	}
	const rpm, perProxy = 10, 20
	lc := limit.DefaultConfig()
	lc.DefaultRPM = rpm
	lc.RedisURL = limittest.RedisURL()
	lc.KeyPrefix = limittest.Prefix(t, lc.RedisURL)
	lc.Timeout = 2 * time.Second
	h := newHarness(t, sim.Config{Tokens: 1}, withLimits(newLimiter(t, lc), lc))
	srv2 := extraProxy(t, h, withLimits(newLimiter(t, lc), lc))

	var mu sync.Mutex
	statuses := map[int]int{}
	var wg sync.WaitGroup
	for _, base := range []string{h.srv.URL, srv2.URL} {
		for w := 0; w < 4; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < perProxy/4; i++ {
					r, _ := http.NewRequest("GET", base+"/v1/models", nil)
					r.Header.Set("Authorization", "Bearer "+h.alice)
					res, err := http.DefaultClient.Do(r)
					if err != nil {
						t.Error(err)
						return
					}
					io.Copy(io.Discard, res.Body)
					res.Body.Close()
					mu.Lock()
					statuses[res.StatusCode]++
					mu.Unlock()
				}
			}()
		}
	}
	wg.Wait()
	audited := map[int]int{}
	for i := 0; i < 2*perProxy; i++ {
		audited[h.rec.next(t).Status]++
	}
	if statuses[200] != rpm || statuses[429] != 2*perProxy-rpm || len(statuses) != 2 {
		t.Fatalf("statuses %v, want %d × 200 and %d × 429", statuses, rpm, 2*perProxy-rpm)
	}
	if audited[200] != rpm || audited[429] != 2*perProxy-rpm {
		t.Fatalf("audited statuses %v", audited)
	}
}

// TestRateLimitRedisRestart: while Redis is down a fail-open proxy serves
// (without rate-limit headers) and a fail-closed one answers 503, audited;
// after Redis is back both enforce the limit again.
func TestRateLimitRedisRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("redis: skipped in -short")
	}
	rs := limittest.StartRedis(t)
	mk := func(policy string) limit.Config {
		lc := limit.DefaultConfig()
		lc.DefaultRPM = 2
		lc.RedisURL = rs.URL()
		lc.KeyPrefix = "llmtap:test:" + policy + ":"
		lc.FailurePolicy = policy
		lc.Timeout = time.Second
		return lc
	}
	openCfg, closedCfg := mk(limit.FailOpen), mk(limit.FailClosed)
	h := newHarness(t, sim.Config{Tokens: 1}, withLimits(newLimiter(t, openCfg), openCfg))
	closedSrv := extraProxy(t, h, withLimits(newLimiter(t, closedCfg), closedCfg))
	proxies := []struct {
		policy string
		url    string
	}{{limit.FailOpen, h.srv.URL}, {limit.FailClosed, closedSrv.URL}}
	call := func(base string) (*http.Response, []byte) {
		t.Helper()
		r, _ := http.NewRequest("GET", base+"/v1/models", nil)
		r.Header.Set("Authorization", "Bearer "+h.alice)
		res, err := http.DefaultClient.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		return res, b
	}
	// enforced checks that exactly 2 of 5 calls pass (a first call on a
	// stale connection may fail after the restart).
	enforced := func(what string) {
		t.Helper()
		for _, px := range proxies {
			got := map[int]int{}
			for i := 0; i < 5; i++ {
				res, _ := call(px.url)
				got[res.StatusCode]++
				h.rec.next(t)
			}
			if got[200] != 2 || got[429] < 2 {
				t.Fatalf("%s %s: statuses %v, want 2 × 200 then 429", px.policy, what, got)
			}
		}
	}
	enforced("before the restart")

	rs.Stop()
	for i := 0; i < 3; i++ {
		res, b := call(h.srv.URL)
		if ev := h.rec.next(t); res.StatusCode != 200 || ev.Status != 200 || res.Header.Get(limit.HeaderLimitRequests) != "" {
			t.Fatalf("fail open while Redis is down: %d %s %v", res.StatusCode, b, res.Header)
		}
		res, b = call(closedSrv.URL)
		ev := h.rec.next(t)
		checkRefusal(t, h, res, b, 503, limit.ReasonUnavailable)
		if ev.Status != 503 || ev.Error != "rate limit: unavailable" {
			t.Fatalf("fail closed audited as %d %q", ev.Status, ev.Error)
		}
	}

	rs.Start() // empty: the counters start afresh
	enforced("after the restart")
}
