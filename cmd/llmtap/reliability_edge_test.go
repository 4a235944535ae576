package main

// Edge and abuse scenarios of issue 7 (proxy side): client disconnect
// mid-stream, upstream dying mid-stream, slowloris headers, a slow request
// body, a client that stops reading, a 100 MB request body and a 100 MB
// streamed response.

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/llmtap/llmtap/cmd/vllm-sim/sim"
)

// countingUpstream wraps h and counts requests that reached upstream.
type countingUpstream struct {
	h    http.Handler
	n    atomic.Int64
	slow atomic.Int64 // requests marked X-Test-Slow
}

func (c *countingUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c.n.Add(1)
	if r.Header.Get("X-Test-Slow") != "" {
		c.slow.Add(1)
	}
	c.h.ServeHTTP(w, r)
}

// pgRow reads selected columns of one event.
type pgEvent struct {
	status                  int
	errText, response, body string
	truncated               bool
	totalTokens             *int64
	requestBodyLen          int
}

func (r *rig) pgEvent(t *testing.T, id string, wait time.Duration) (pgEvent, bool) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, r.direct)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	deadline := time.Now().Add(wait)
	for {
		var e pgEvent
		err := conn.QueryRow(ctx, `SELECT status, error, response, response_body, truncated, total_tokens, length(request_body)
			FROM llm_requests WHERE event_id = $1`, id).Scan(&e.status, &e.errText, &e.response, &e.body, &e.truncated, &e.totalTokens, &e.requestBodyLen)
		if err == nil {
			return e, true
		}
		if time.Now().After(deadline) {
			return e, false
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func chatBody(prompt string, stream bool) string {
	s := ""
	if stream {
		s = `,"stream":true,"stream_options":{"include_usage":true}`
	}
	return fmt.Sprintf(`{"model":"meta-llama/Llama-3.1-8B-Instruct","messages":[{"role":"user","content":%q}],"max_tokens":100000%s}`, prompt, s)
}

func (r *rig) post(t *testing.T, body string, hdr map[string]string) *http.Request {
	t.Helper()
	req, err := http.NewRequest("POST", r.proxyURL()+"/v1/chat/completions", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+r.keys[0].plain)
	req.Header.Set("Content-Type", "application/json")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	return req
}

func waitFor(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}

// Scenario 12 and 13: client disconnect mid-stream; upstream dies mid-stream.
func TestReliabilityMidStream(t *testing.T) {
	relSkipShort(t)
	t.Parallel()
	s, up := newSim(t)
	r := newRig(t, up.URL, rigOpts{db: "midstream"})

	t.Run("client disconnect", func(t *testing.T) {
		n := pick(5, 50)
		cancelled0 := s.Cancelled()
		var worst time.Duration
		for i := 0; i < n; i++ {
			ctx, cancel := context.WithCancel(context.Background())
			req := r.post(t, chatBody(fmt.Sprintf("disconnect %d", i), true), map[string]string{"X-Sim-Tokens": "100000", "X-Sim-Token-Interval": "5ms"})
			resp, err := http.DefaultClient.Do(req.WithContext(ctx))
			if err != nil {
				t.Fatal(err)
			}
			id := resp.Header.Get("X-Llmtap-Event-Id")
			br := bufio.NewReader(resp.Body)
			for k := 0; k < 5; k++ { // a few events
				if _, err := br.ReadString('\n'); err != nil {
					t.Fatal(err)
				}
			}
			cancel()
			resp.Body.Close()
			at := time.Now()
			if !waitFor(5*time.Second, func() bool { return s.InFlight() == 0 }) {
				t.Fatalf("upstream generation still running 5 s after the client left (InFlight %d)", s.InFlight())
			}
			worst = max(worst, time.Since(at))
			e, ok := r.pgEvent(t, id, 15*time.Second)
			if !ok {
				t.Fatalf("event %s of the disconnected client not stored", id)
			}
			if e.status != 499 || e.body == "" {
				t.Errorf("disconnected stream stored status %d, %d body bytes; want 499 with the partial response", e.status, len(e.body))
			}
		}
		if got := s.Cancelled() - cancelled0; got != int64(n) {
			t.Errorf("sim cancelled %d generations, want %d", got, n)
		}
		report(t, verdict{Scenario: "client disconnect mid-stream", Store: "postgres", Sent: n, Acked: n,
			Note: fmt.Sprintf("upstream generation stopped within %s of the disconnect (worst of %d); 499 + partial body stored", worst.Round(time.Millisecond), n)})
	})

	t.Run("upstream dies", func(t *testing.T) {
		n := pick(5, 50)
		for i := 0; i < n; i++ {
			req := r.post(t, chatBody(fmt.Sprintf("upstream dies %d", i), true), map[string]string{"X-Sim-Tokens": "50", "X-Sim-Fault": "close"})
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			id := resp.Header.Get("X-Llmtap-Event-Id")
			b, rerr := io.ReadAll(resp.Body)
			resp.Body.Close()
			if rerr == nil && strings.Contains(string(b), "[DONE]") {
				t.Errorf("client saw a complete stream although upstream died")
			}
			e, ok := r.pgEvent(t, id, 15*time.Second)
			if !ok {
				t.Fatalf("event %s of the cut stream not stored", id)
			}
			if e.errText == "" || e.body == "" {
				t.Errorf("cut stream stored status %d error %q body %d bytes; want an upstream error and the partial body", e.status, e.errText, len(e.body))
			}
			if i == 0 {
				t.Logf("client read err %v (%d bytes); stored status %d error %q", rerr, len(b), e.status, e.errText)
			}
		}
		report(t, verdict{Scenario: "upstream dies mid-stream", Store: "postgres", Sent: n, Acked: n, Note: "client stream ends without [DONE]; event stored with error + partial body"})
	})
}

// rssGrowthMB samples the proxy's RSS while f runs and returns the peak
// growth over the RSS before f, in MiB.
func rssGrowthMB(p *proc, f func()) float64 {
	pid := p.pid()
	base := procStatusKB(pid, "VmRSS:")
	var peak atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			if v := procStatusKB(pid, "VmRSS:"); v > peak.Load() {
				peak.Store(v)
			}
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	}()
	f()
	close(stop)
	wg.Wait()
	return float64(peak.Load()-base) / 1024
}

// zeroReader yields n bytes of a JSON-ish body without holding them.
type patternReader struct{ n, off int64 }

func (p *patternReader) Read(b []byte) (int, error) {
	if p.off >= p.n {
		return 0, io.EOF
	}
	k := min(int64(len(b)), p.n-p.off)
	for i := range b[:k] {
		b[i] = 'a'
	}
	p.off += k
	return int(k), nil
}

// Scenario 17 and 18: a 100 MB request body (413 before upstream, memory
// bounded) and a 100 MB streamed response (streamed through, capture
// truncated at its cap, usage still recorded).
func TestReliabilityHugeBodies(t *testing.T) {
	relSkipShort(t)
	t.Parallel()
	const huge = 100 << 20
	// Upstream: the simulator, plus /v1/chat/completions answering a 100 MB
	// stream when X-Test-Huge is set.
	s := sim.New(sim.Config{})
	cu := &countingUpstream{h: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Test-Huge") == "" {
			s.ServeHTTP(w, r)
			return
		}
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/event-stream")
		fl := w.(http.Flusher)
		chunk := `data: {"id":"chatcmpl-huge","object":"chat.completion.chunk","created":1,"model":"meta-llama/Llama-3.1-8B-Instruct","choices":[{"index":0,"delta":{"content":"` + strings.Repeat("x", 4000) + `"},"finish_reason":null}]}` + "\n\n"
		tokens := 0
		for sent := 0; sent < huge; sent += len(chunk) {
			if _, err := io.WriteString(w, chunk); err != nil {
				return
			}
			tokens++
			if tokens%64 == 0 {
				fl.Flush()
			}
		}
		fmt.Fprintf(w, `data: {"id":"chatcmpl-huge","object":"chat.completion.chunk","created":1,"model":"meta-llama/Llama-3.1-8B-Instruct","choices":[{"index":0,"delta":{},"finish_reason":"length"}]}`+"\n\n")
		fmt.Fprintf(w, `data: {"id":"chatcmpl-huge","object":"chat.completion.chunk","created":1,"model":"meta-llama/Llama-3.1-8B-Instruct","choices":[],"usage":{"prompt_tokens":10,"completion_tokens":%d,"total_tokens":%d}}`+"\n\n", tokens, tokens+10)
		io.WriteString(w, "data: [DONE]\n\n")
	})}
	up := httptest.NewServer(cu)
	t.Cleanup(up.Close)
	const capLimit = 1 << 20
	r := newRig(t, up.URL, rigOpts{db: "huge", captureLimit: capLimit})

	t.Run("100 MB request body", func(t *testing.T) {
		for _, chunked := range []bool{false, true} {
			before := cu.n.Load()
			var status int
			var id string
			growth := rssGrowthMB(r.proxy, func() {
				req, _ := http.NewRequest("POST", r.proxyURL()+"/v1/chat/completions", &patternReader{n: huge})
				if !chunked {
					req.ContentLength = huge
				}
				req.Header.Set("Authorization", "Bearer "+r.keys[0].plain)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					// The proxy may close the connection after answering 413
					// while the client is still sending; that is fine.
					t.Logf("chunked=%v: client error %v", chunked, err)
					return
				}
				status, id = resp.StatusCode, resp.Header.Get("X-Llmtap-Event-Id")
				resp.Body.Close()
			})
			if status != 0 && status != 413 {
				t.Errorf("chunked=%v: status %d, want 413", chunked, status)
			}
			if cu.n.Load() != before {
				t.Errorf("chunked=%v: the oversized request reached upstream", chunked)
			}
			// Bound: the request limit (32 MiB) plus 16 MiB of slack; a
			// rejected body must not cost more than the limit it exceeds.
			if growth > 48 {
				t.Errorf("chunked=%v: proxy RSS grew %.1f MiB for one oversized request (bound: max_request_body 32 MiB + 16 MiB)", chunked, growth)
			}
			if id != "" {
				e, ok := r.pgEvent(t, id, 15*time.Second)
				if !ok || e.status != 413 {
					t.Errorf("chunked=%v: 413 attempt not audited (found %v, status %d)", chunked, ok, e.status)
				} else if e.requestBodyLen > 0 {
					t.Errorf("chunked=%v: the rejected body was stored (%d bytes)", chunked, e.requestBodyLen)
				}
			}
			report(t, verdict{Scenario: fmt.Sprintf("100 MB request body (chunked=%v)", chunked), Store: "postgres", Sent: 1, PeakRSSMB: growth,
				Note: fmt.Sprintf("status %d; upstream requests %d; RSS growth %.1f MiB", status, cu.n.Load()-before, growth)})
		}
	})

	t.Run("100 MB streamed response", func(t *testing.T) {
		var got int64
		var id string
		var status int
		growth := rssGrowthMB(r.proxy, func() {
			req := r.post(t, chatBody("huge answer", true), map[string]string{"X-Test-Huge": "1"})
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			status, id = resp.StatusCode, resp.Header.Get("X-Llmtap-Event-Id")
			h := sha256.New()
			got, err = io.Copy(h, resp.Body)
			if err != nil {
				t.Errorf("client read: %v", err)
			}
			_ = hex.EncodeToString(h.Sum(nil))
		})
		if status != 200 || got < huge {
			t.Fatalf("client got status %d and %d bytes, want 200 and >= %d", status, got, huge)
		}
		e, ok := r.pgEvent(t, id, 30*time.Second)
		if !ok {
			t.Fatalf("event %s not stored", id)
		}
		if !e.truncated || len(e.body) > capLimit || len(e.body) < capLimit/2 {
			t.Errorf("stored body %d bytes truncated=%v; want truncated at the %d-byte cap", len(e.body), e.truncated, capLimit)
		}
		if e.totalTokens == nil {
			t.Errorf("usage not recorded for the truncated stream")
		}
		if growth > 64 {
			t.Errorf("proxy RSS grew %.1f MiB while streaming 100 MB (bound 64 MiB)", growth)
		}
		tt := int64(-1)
		if e.totalTokens != nil {
			tt = *e.totalTokens
		}
		report(t, verdict{Scenario: "100 MB streamed response", Store: "postgres", Sent: 1, Acked: 1, PeakRSSMB: growth,
			Note: fmt.Sprintf("client got %d bytes; stored body %d bytes truncated=%v; total_tokens %d; RSS growth %.1f MiB", got, len(e.body), e.truncated, tt, growth)})
	})
}

// Scenarios 14–16: slowloris headers, a slow request body and a client that
// stops reading. Deadlines must fire, goroutines and memory stay bounded,
// and normal traffic is unaffected. The product's deadlines: read header
// 10 s, request body proxy.request_body_timeout (30 s by default, 5 s here),
// each client write proxy.client_write_timeout (20 s by default, 5 s here).
// slowBound is the longest the test waits for one to fire.
const slowBound = 20 * time.Second

func TestReliabilitySlowClients(t *testing.T) {
	relSkipShort(t)
	t.Parallel()
	s := sim.New(sim.Config{})
	cu := &countingUpstream{h: s}
	up := httptest.NewServer(cu)
	t.Cleanup(up.Close)
	r := newRig(t, up.URL, rigOpts{db: "slow", clientWriteTimeout: 5 * time.Second, requestBodyTimeout: 5 * time.Second})
	addr := r.proxy.cfg.Proxy.Listen
	goroutines := func() float64 { return sumMetric(r.proxy.metrics(), "go_goroutines") }

	// normal runs light traffic and fails the test on any failed request.
	normal := func(t *testing.T, tag string) {
		res := runLoad(t, r.proxyURL(), r.keys, loadOpts{n: 20, conc: 4, noFaults: true, tag: tag})
		for _, s := range res {
			if !s.acked() || s.Status != 200 {
				t.Errorf("%s: normal request failed during the attack: status %d err %s", tag, s.Status, s.Err)
				return
			}
		}
	}

	t.Run("slowloris headers", func(t *testing.T) {
		t.Parallel()
		conns := pick(200, 1000)
		g0 := goroutines()
		var open atomic.Int64
		var closedAt sync.Map
		start := time.Now()
		var wg sync.WaitGroup
		for i := 0; i < conns; i++ {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			open.Add(1)
			wg.Add(1)
			go func(i int, c net.Conn) {
				defer wg.Done()
				defer open.Add(-1)
				if _, err := io.WriteString(c, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"); err != nil {
					return
				}
				for time.Since(start) < slowBound+5*time.Second {
					if _, err := c.Write([]byte("X")); err != nil {
						closedAt.Store(i, time.Since(start))
						return
					}
					c.SetReadDeadline(time.Now().Add(time.Second))
					var b [1]byte
					if _, err := c.Read(b[:]); err != nil && !isTimeout(err) {
						closedAt.Store(i, time.Since(start))
						return
					}
				}
			}(i, c)
		}
		time.Sleep(time.Second)
		peakG := goroutines()
		normal(t, "during slowloris")
		if !waitFor(slowBound, func() bool { return open.Load() == 0 }) {
			t.Errorf("%d of %d slowloris connections still open after %s", open.Load(), conns, slowBound)
		}
		var worst time.Duration
		closedAt.Range(func(_, v any) bool { worst = max(worst, v.(time.Duration)); return true })
		if peakG-g0 > float64(conns)*3+50 {
			t.Errorf("goroutines grew from %v to %v for %d connections", g0, peakG, conns)
		}
		report(t, verdict{Scenario: "slowloris headers", Store: "postgres", Sent: conns,
			Note: fmt.Sprintf("%d connections closed by the server after <= %s; goroutines %v -> %v; normal traffic unaffected", conns, worst.Round(100*time.Millisecond), g0, peakG)})
	})

	// Not parallel: its RSS bound must not count the stalled readers'
	// captures (the parallel cases run after it, sharing one process).
	t.Run("slow request body", func(t *testing.T) {
		conns := pick(20, 200)
		var open atomic.Int64
		start := time.Now()
		growth := rssGrowthMB(r.proxy, func() {
			for i := 0; i < conns; i++ {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { c.Close() })
				// Declares 30 MB (under max_request_body) and trickles.
				fmt.Fprintf(c, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Test-Slow: 1\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n{", r.keys[0].plain, 30<<20)
				open.Add(1)
				go func(c net.Conn) {
					defer open.Add(-1)
					for time.Since(start) < slowBound+5*time.Second {
						if _, err := c.Write([]byte(" ")); err != nil {
							return
						}
						c.SetReadDeadline(time.Now().Add(time.Second))
						var b [1]byte
						if _, err := c.Read(b[:]); err != nil && !isTimeout(err) {
							return
						}
					}
				}(c)
			}
			time.Sleep(2 * time.Second)
			normal(t, "during slow bodies")
		})
		closed := waitFor(slowBound, func() bool { return open.Load() == 0 })
		closeTook := time.Since(start)
		if !closed {
			t.Errorf("%d of %d slow-body connections still open after %s: no request-body read deadline", open.Load(), conns, slowBound)
		}
		if n := cu.slow.Load(); n != 0 {
			t.Errorf("%d slow bodies reached upstream", n)
		}
		if growth > 64 {
			t.Errorf("proxy RSS grew %.1f MiB for %d slow bodies declaring 30 MB each", growth, conns)
		}
		report(t, verdict{Scenario: "slow request body", Store: "postgres", Sent: conns, PeakRSSMB: growth,
			Note: fmt.Sprintf("closed by the body deadline: %v, after %s (request_body_timeout 5 s); RSS growth %.1f MiB", closed, closeTook.Round(100*time.Millisecond), growth)})
	})

	t.Run("client stops reading", func(t *testing.T) {
		t.Parallel()
		conns := pick(4, 20)
		cancelled0 := s.Cancelled()
		var cs []net.Conn
		stallStart := time.Now() // the clients stop reading from the start
		growth := rssGrowthMB(r.proxy, func() {
			for i := 0; i < conns; i++ {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { c.Close() })
				cs = append(cs, c)
				body := strings.Replace(chatBody(fmt.Sprintf("stall %d %s", i, strings.Repeat("word ", 50)), true), `"max_tokens":100000`, `"max_tokens":2000000`, 1)
				fmt.Fprintf(c, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nX-Sim-Tokens: 1000000\r\nContent-Length: %d\r\n\r\n%s", r.keys[0].plain, len(body), body)
				// Never read.
			}
			// Every stalled request must have reached upstream (on a busy
			// machine some take a while; early ones may already have been
			// cut by the write deadline).
			started := func() int64 { return s.InFlight() + s.Cancelled() - cancelled0 }
			if !waitFor(slowBound, func() bool { return started() >= int64(conns) }) {
				t.Errorf("only %d generations started for %d stalled readers: the stall was not exercised", started(), conns)
			}
			normal(t, "during stalled readers")
		})
		stopped := waitFor(slowBound, func() bool { return s.Cancelled()-cancelled0 >= int64(conns) })
		stallTook := time.Since(stallStart)
		if !stopped {
			t.Errorf("%d of %d generations for clients that stopped reading still run after %s (InFlight %d): no per-request write deadline", int64(conns)-(s.Cancelled()-cancelled0), conns, slowBound, s.InFlight())
		}
		// Each stalled stream may hold its capture (capture_limit, 8 MiB by
		// default) plus socket buffers; nothing else may grow.
		if bound := float64(conns) * (8 + 4); growth > bound {
			t.Errorf("proxy RSS grew %.1f MiB for %d stalled readers (bound %.0f MiB: capture_limit + 4 MiB each)", growth, conns, bound)
		}
		report(t, verdict{Scenario: "client stops reading", Store: "postgres", Sent: conns, PeakRSSMB: growth,
			Note: fmt.Sprintf("upstream cancelled: %v, %s after the client stopped reading (client_write_timeout 5 s); RSS growth %.1f MiB", stopped, stallTook.Round(100*time.Millisecond), growth)})
	})
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}
