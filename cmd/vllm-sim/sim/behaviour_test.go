package sim

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestAPIKeyGuardsV1Only(t *testing.T) {
	_, ts := newSim(t, Config{APIKey: "sk-secret"})
	cases := []struct {
		method, path, auth string
		body               string
		want               int
	}{
		{"POST", "/v1/chat/completions", "", chatBody("x", ""), 401},
		{"POST", "/v1/chat/completions", "Bearer wrong", chatBody("x", ""), 401},
		{"POST", "/v1/chat/completions", "sk-secret", chatBody("x", ""), 401},
		{"POST", "/v1/chat/completions", "Basic sk-secret", chatBody("x", ""), 401},
		{"POST", "/v1/chat/completions", "Bearer sk-secret", chatBody("x", ""), 200},
		{"POST", "/v1/chat/completions", "bearer sk-secret", chatBody("x", ""), 200},
		{"GET", "/v1/models", "", "", 401},
		{"GET", "/v1/models", "Bearer sk-secret", "", 200},
		{"GET", "/v1/unknown", "", "", 401},
		{"GET", "/v1/unknown", "Bearer sk-secret", "", 404},
		{"OPTIONS", "/v1/chat/completions", "", "", 405},
		{"GET", "/health", "", "", 200},
		{"GET", "/metrics", "", "", 200},
		{"GET", "/version", "", "", 200},
		{"POST", "/tokenize", "", `{"prompt":"a"}`, 200},
	}
	for _, tc := range cases {
		t.Run(tc.method+tc.path+"/"+tc.auth, func(t *testing.T) {
			hdr := map[string]string{}
			if tc.auth != "" {
				hdr["Authorization"] = tc.auth
			}
			resp := do(t, nil, tc.method, ts.URL+tc.path, tc.body, hdr)
			body := readAll(t, resp)
			if resp.StatusCode != tc.want {
				t.Fatalf("status %d, want %d (%s)", resp.StatusCode, tc.want, body)
			}
			if tc.want == 401 && string(body) != strings.TrimSpace(sample(t, "vllm-unauthorized.json")) {
				t.Errorf("401 body %q", body)
			}
		})
	}
}

func TestRequestErrors(t *testing.T) {
	_, ts := newSim(t, Config{MaxModelLen: 40, MaxBodyBytes: 1 << 10})
	cases := []struct {
		name, method, path, body string
		hdr                      map[string]string
		status                   int
		msgPart                  string
	}{
		{"bad json", "POST", "/v1/chat/completions", `{"messages":`, nil, 400, "JSON decode error"},
		{"unknown model", "POST", "/v1/chat/completions", `{"model":"x","messages":[{"role":"user","content":"a"}]}`, nil, 404, "The model `x` does not exist."},
		{"no messages", "POST", "/v1/chat/completions", `{"messages":[]}`, nil, 400, "messages"},
		{"stream_options without stream", "POST", "/v1/chat/completions", chatBody("a", `"stream_options":{"include_usage":true}`), nil, 400, "stream=True"},
		{"max_tokens 0", "POST", "/v1/chat/completions", chatBody("a", `"max_tokens":0`), nil, 400, "max_tokens must be at least 1"},
		{"bad content", "POST", "/v1/chat/completions", `{"messages":[{"role":"user","content":5}]}`, nil, 400, "content"},
		{"context length", "POST", "/v1/chat/completions", chatBody("a", `"max_tokens":30`), nil, 400, "maximum context length is 40 tokens"},
		{"body too large", "POST", "/v1/chat/completions", chatBody(strings.Repeat("a ", 1000), ""), nil, 413, "exceeds"},
		{"bad X-Sim-Tokens", "POST", "/v1/chat/completions", chatBody("a", ""), map[string]string{"X-Sim-Tokens": "many"}, 400, "X-Sim-Tokens"},
		{"bad X-Sim-TTFT", "POST", "/v1/chat/completions", chatBody("a", ""), map[string]string{"X-Sim-TTFT": "-1s"}, 400, "X-Sim-TTFT"},
		{"bad X-Sim-Fault", "POST", "/v1/chat/completions", chatBody("a", ""), map[string]string{"X-Sim-Fault": "boom"}, 400, "X-Sim-Fault"},
		{"bad X-Sim-Status", "POST", "/v1/chat/completions", chatBody("a", ""), map[string]string{"X-Sim-Fault": "error", "X-Sim-Status": "200"}, 400, "X-Sim-Status"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp := do(t, nil, tc.method, ts.URL+tc.path, tc.body, tc.hdr)
			body := readAll(t, resp)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.status, body)
			}
			assertShape(t, "error body", string(body), sample(t, "vllm-error.json"))
			var e ErrorBody
			if err := json.Unmarshal(body, &e); err != nil {
				t.Fatal(err)
			}
			if e.Error.Code != tc.status || e.Error.Type != errorType(tc.status) || !strings.Contains(e.Error.Message, tc.msgPart) {
				t.Errorf("error %+v", e.Error)
			}
		})
	}
	for _, tc := range []struct{ method, path, want string }{
		{"GET", "/nope", `{"detail":"Not Found"}`},
		{"GET", "/v1/chat/completions", `{"detail":"Method Not Allowed"}`},
		{"POST", "/health", `{"detail":"Method Not Allowed"}`},
	} {
		if body := readAll(t, do(t, nil, tc.method, ts.URL+tc.path, "", nil)); string(body) != tc.want {
			t.Errorf("%s %s: %s", tc.method, tc.path, body)
		}
	}
	if e := errorType(404); e != "NotFoundError" {
		t.Errorf("errorType(404) = %q", e)
	}
}

func TestFaults(t *testing.T) {
	s, ts := newSim(t, Config{Tokens: 8})
	chatURL := ts.URL + "/v1/chat/completions"
	t.Run("error", func(t *testing.T) {
		for _, tc := range []struct {
			status string
			want   int
			typ    string
		}{{"", 500, "InternalServerError"}, {"503", 503, "ServiceUnavailableError"}, {"400", 400, "BadRequestError"}} {
			hdr := map[string]string{"X-Sim-Fault": "error"}
			if tc.status != "" {
				hdr["X-Sim-Status"] = tc.status
			}
			for _, body := range []string{chatBody("a", `"stream":true`), chatBody("a", "")} {
				resp := post(t, chatURL, body, hdr)
				b := readAll(t, resp)
				if resp.StatusCode != tc.want {
					t.Fatalf("status %d, want %d", resp.StatusCode, tc.want)
				}
				assertShape(t, "injected error", string(b), sample(t, "vllm-error.json"))
				if e := decode(t, b)["error"].(map[string]any); e["type"] != tc.typ || e["code"] != float64(tc.want) {
					t.Errorf("error %v", e)
				}
			}
		}
	})
	t.Run("midstream-error", func(t *testing.T) {
		before := s.Faulted()
		resp := post(t, chatURL, chatBody("a", `"stream":true,"stream_options":{"include_usage":true}`), map[string]string{"X-Sim-Fault": "midstream-error"})
		evs := parseSSE(t, readAll(t, resp))
		// role, 3 tokens, error, [DONE]
		if len(evs) != 6 || evs[5].Raw != "data: [DONE]\n\n" {
			t.Fatalf("events %v", evs)
		}
		if !strings.HasPrefix(evs[4].Data, `{"error": {"message": `) {
			t.Errorf("error event not json.dumps style: %q", evs[4].Data)
		}
		var e ErrorBody
		if err := json.Unmarshal([]byte(evs[4].Data), &e); err != nil || e.Error.Code != 500 || e.Error.Type != "InternalServerError" {
			t.Errorf("error event %q: %v", evs[4].Data, err)
		}
		for _, ev := range evs[:4] {
			if strings.Contains(ev.Data, "finish_reason\":\"") {
				t.Errorf("finish before error: %s", ev.Data)
			}
		}
		settle(t, s)
		if s.Faulted() != before+1 {
			t.Errorf("Faulted %d, want %d", s.Faulted(), before+1)
		}
		// A short answer faults after its last token.
		evs = parseSSE(t, readAll(t, post(t, chatURL, chatBody("a", `"stream":true`), map[string]string{"X-Sim-Fault": "midstream-error", "X-Sim-Tokens": "1"})))
		if len(evs) != 4 || !strings.Contains(evs[2].Data, `"error"`) {
			t.Errorf("short answer events %v", evs)
		}
		// Non-stream: an error response after generating.
		resp = post(t, chatURL, chatBody("a", ""), map[string]string{"X-Sim-Fault": "midstream-error", "X-Sim-Status": "502"})
		if resp.StatusCode != 502 {
			t.Errorf("non-stream midstream status %d", resp.StatusCode)
		}
		readAll(t, resp)
	})
	t.Run("close", func(t *testing.T) {
		before := s.Faulted()
		for _, path := range []string{"/v1/chat/completions", "/v1/completions"} {
			body := chatBody("a", `"stream":true`)
			if path == "/v1/completions" {
				body = `{"prompt":"a","stream":true}`
			}
			resp := post(t, ts.URL+path, body, map[string]string{"X-Sim-Fault": "close"})
			got, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err == nil || !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Errorf("%s: read err = %v, want unexpected EOF", path, err)
			}
			if strings.Contains(string(got), "[DONE]") || strings.Count(string(got), "data: ") < 3 {
				t.Errorf("%s: got %q", path, got)
			}
		}
		_, err := post2(ts.URL+"/v1/chat/completions", chatBody("a", ""), map[string]string{"X-Sim-Fault": "close"})
		if err == nil {
			t.Error("non-stream close: got a response")
		}
		settle(t, s)
		if s.Faulted() != before+3 {
			t.Errorf("Faulted %d, want %d", s.Faulted(), before+3)
		}
	})
	t.Run("responses midstream", func(t *testing.T) {
		evs := parseSSE(t, readAll(t, post(t, ts.URL+"/v1/responses", `{"input":"a","stream":true}`, map[string]string{"X-Sim-Fault": "midstream-error"})))
		last := evs[len(evs)-1]
		if last.Event != "error" || decode(t, []byte(last.Data))["type"] != "error" {
			t.Errorf("last event %v", last)
		}
	})
	t.Run("none disables rates", func(t *testing.T) {
		_, ts := newSim(t, Config{ErrorRate: 1})
		resp := post(t, ts.URL+"/v1/chat/completions", chatBody("a", ""), map[string]string{"X-Sim-Fault": "none"})
		if resp.StatusCode != 200 {
			t.Errorf("status %d", resp.StatusCode)
		}
		readAll(t, resp)
	})
}

// post2 is post without failing the test on transport errors.
func post2(url, body string, hdr map[string]string) (int, error) {
	req, _ := newReq(url, body, hdr)
	resp, err := httpClient().Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, err = io.ReadAll(resp.Body)
	return resp.StatusCode, err
}

func TestFaultRates(t *testing.T) {
	cases := []struct {
		name   string
		cfg    Config
		stream bool
		check  func(t *testing.T, status int, body string, err error)
	}{
		{"error rate", Config{ErrorRate: 1, ErrorStatus: 429}, true, func(t *testing.T, status int, body string, err error) {
			if status != 429 || !strings.Contains(body, "RateLimitError") {
				t.Errorf("status %d body %s", status, body)
			}
		}},
		{"midstream rate", Config{MidStreamErrorRate: 1}, true, func(t *testing.T, status int, body string, err error) {
			if status != 200 || !strings.Contains(body, `data: {"error": `) || !strings.HasSuffix(body, "data: [DONE]\n\n") {
				t.Errorf("status %d body %s", status, body)
			}
		}},
		{"midstream rate spares non-stream", Config{MidStreamErrorRate: 1}, false, func(t *testing.T, status int, body string, err error) {
			if status != 200 {
				t.Errorf("status %d", status)
			}
		}},
		{"abrupt close rate", Config{AbruptCloseRate: 1}, true, func(t *testing.T, status int, body string, err error) {
			if !errors.Is(err, io.ErrUnexpectedEOF) || strings.Contains(body, "[DONE]") {
				t.Errorf("err %v body %s", err, body)
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, ts := newSim(t, tc.cfg)
			extra := ""
			if tc.stream {
				extra = `"stream":true`
			}
			resp := post(t, ts.URL+"/v1/chat/completions", chatBody("a", extra), nil)
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			tc.check(t, resp.StatusCode, string(b), err)
			settle(t, s)
		})
	}
	// A rate between 0 and 1 with a fixed seed is reproducible.
	count := func() int {
		s := New(Config{ErrorRate: 0.5, Seed: 42})
		n := 0
		for i := 0; i < 200; i++ {
			p, _ := s.plan(newReqMust(t), true)
			if p.fault == faultError {
				n++
			}
		}
		return n
	}
	a, b := count(), count()
	if a != b || a < 60 || a > 140 {
		t.Errorf("faults with seed: %d then %d of 200", a, b)
	}
}

var firstTokenRe = regexp.MustCompile(`"(content|text|delta)":"[^"]`)

func TestCancellationStopsGeneration(t *testing.T) {
	cases := []struct {
		name, path, body string
		hdr              map[string]string
		readFirst        bool
		wantTokens       float64 // generated before the cancel: the first token only
	}{
		{"chat stream mid-answer", "/v1/chat/completions", chatBody("a", `"stream":true`), map[string]string{"X-Sim-Token-Interval": "1h"}, true, 1},
		{"chat stream during ttft", "/v1/chat/completions", chatBody("a", `"stream":true`), map[string]string{"X-Sim-TTFT": "1h"}, false, 0},
		{"chat non-stream", "/v1/chat/completions", chatBody("a", ""), map[string]string{"X-Sim-Token-Interval": "1h"}, false, 1},
		{"completions stream", "/v1/completions", `{"prompt":"a","stream":true}`, map[string]string{"X-Sim-Token-Interval": "1h"}, true, 1},
		{"responses stream", "/v1/responses", `{"input":"a","stream":true}`, map[string]string{"X-Sim-Token-Interval": "1h"}, true, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, ts := newSim(t, Config{})
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if tc.readFirst {
				resp := do(t, ctx, "POST", ts.URL+tc.path, tc.body, tc.hdr)
				br := bufio.NewReader(resp.Body)
				// Read up to the first token.
				for ev := readEvent(t, br); !firstTokenRe.MatchString(ev); ev = readEvent(t, br) {
				}
				defer resp.Body.Close()
			} else {
				go func() {
					req, _ := newReq(ts.URL+tc.path, tc.body, tc.hdr)
					resp, err := httpClient().Do(req.WithContext(ctx))
					if err == nil {
						_, _ = io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
					}
				}()
			}
			waitFor(t, "generation to start", func() bool { return s.InFlight() == 1 })
			cancel()
			start := time.Now()
			settle(t, s)
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("generation took %v to stop", d)
			}
			if s.Cancelled() != 1 || s.Completed() != 0 || s.Started() != 1 {
				t.Errorf("Started %d Cancelled %d Completed %d", s.Started(), s.Cancelled(), s.Completed())
			}
			m := metricValues(t, ts.URL)
			if m["vllm:generation_tokens_total"] != tc.wantTokens {
				t.Errorf("generated %v tokens, want %v", m["vllm:generation_tokens_total"], tc.wantTokens)
			}
			if m[`vllm:num_requests_running`] != 0 || m[`vllm:request_success_total{finished_reason="abort"}`] != 1 {
				t.Errorf("metrics %v", m)
			}
		})
	}
}

// metricValues fetches /metrics and returns "name{extra labels}" -> value,
// with the common engine/model_name labels removed.
func metricValues(t testing.TB, base string) map[string]float64 {
	t.Helper()
	resp := do(t, nil, "GET", base+"/metrics", "", nil)
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain; version=0.0.4") {
		t.Errorf("metrics content type %q", ct)
	}
	out := map[string]float64{}
	for _, line := range strings.Split(string(readAll(t, resp)), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			t.Fatalf("metric line %q", line)
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", line, err)
		}
		name := line[:i]
		if j := strings.IndexByte(name, '{'); j >= 0 {
			labels := strings.TrimSuffix(name[j+1:], "}")
			var keep []string
			for _, l := range strings.Split(labels, ",") {
				if !strings.HasPrefix(l, "engine=") && !strings.HasPrefix(l, "model_name=") {
					keep = append(keep, l)
				}
			}
			name = name[:j]
			if len(keep) > 0 {
				name += "{" + strings.Join(keep, ",") + "}"
			}
		}
		out[name] = v
	}
	return out
}

func TestMetrics(t *testing.T) {
	_, ts := newSim(t, Config{Tokens: 4})
	readAll(t, post(t, ts.URL+"/v1/chat/completions", chatBody("a b", ""), nil))               // prompt 3+6+6=15, gen 5, stop
	readAll(t, post(t, ts.URL+"/v1/completions", `{"prompt":"x y","max_tokens":2}`, nil))      // prompt 3, gen 2, length
	readAll(t, post(t, ts.URL+"/v1/chat/completions", chatBody("a", `"max_tokens":"x"`), nil)) // invalid: not counted
	m := metricValues(t, ts.URL)
	want := map[string]float64{
		"vllm:num_requests_running":                            0,
		"vllm:prompt_tokens_total":                             18,
		"vllm:generation_tokens_total":                         7,
		`vllm:request_success_total{finished_reason="stop"}`:   1,
		`vllm:request_success_total{finished_reason="length"}`: 1,
		`vllm:time_to_first_token_seconds_count`:               2,
		`vllm:e2e_request_latency_seconds_bucket{le="+Inf"}`:   2,
		`vllm:e2e_request_latency_seconds_count`:               2,
		`vllm:request_success_total{finished_reason="abort"}`:  0,
		`vllm:time_to_first_token_seconds_bucket{le="+Inf"}`:   2,
		`vllm:num_requests_waiting`:                            0,
		`vllm:kv_cache_usage_perc`:                             0,
		`vllm:request_success_total{finished_reason="error"}`:  0,
		`vllm:time_to_first_token_seconds_bucket{le="0.001"}`:  m[`vllm:time_to_first_token_seconds_bucket{le="0.001"}`],
		`vllm:e2e_request_latency_seconds_bucket{le="80.0"}`:   2,
		`vllm:time_to_first_token_seconds_bucket{le="80.0"}`:   2,
	}
	for k, v := range want {
		got, ok := m[k]
		if !ok || got != v {
			t.Errorf("%s = %v (present %v), want %v", k, got, ok, v)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	cases := []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"zero value", Config{}, true},
		{"defaults", DefaultConfig(), true},
		{"negative ttft", Config{TTFT: -1}, false},
		{"negative interval", Config{TokenInterval: -1}, false},
		{"negative tokens", Config{Tokens: -1}, false},
		{"rate above 1", Config{ErrorRate: 1.5}, false},
		{"negative rate", Config{AbruptCloseRate: -0.1}, false},
		{"status 200", Config{ErrorStatus: 200}, false},
		{"embedding dim too big", Config{EmbeddingDim: 1 << 20}, false},
	}
	for _, tc := range cases {
		if err := tc.cfg.Validate(); (err == nil) != tc.ok {
			t.Errorf("%s: Validate() = %v", tc.name, err)
		}
	}
	defer func() {
		if recover() == nil {
			t.Error("New with invalid config did not panic")
		}
	}()
	New(Config{ErrorRate: 2})
}

func TestAnswerDeterminism(t *testing.T) {
	a := AnswerTokens("same prompt", 20)
	b := AnswerTokens("same prompt", 20)
	if strings.Join(a, "|") != strings.Join(b, "|") {
		t.Fatal("answers differ for the same seed")
	}
	if strings.Join(AnswerTokens("same prompt", 5), "") != strings.Join(a[:5], "") {
		t.Error("shorter answer is not a prefix")
	}
	if Answer("other prompt", 20) == Answer("same prompt", 20) {
		t.Error("different prompts give the same answer")
	}
	for i, tok := range a {
		if (i == 0) == strings.HasPrefix(tok, " ") || CountWords(tok) != 1 {
			t.Errorf("token %d %q", i, tok)
		}
	}
	if AnswerTokens("x", 0) != nil || CountWords("  a\tb\nc  ") != 3 {
		t.Error("edge cases")
	}
}

// FuzzAppendJSONString: the hand-written encoder must produce valid JSON
// that decodes to what encoding/json's own encoding decodes to (invalid UTF-8
// becomes U+FFFD in both).
func FuzzAppendJSONString(f *testing.F) {
	for _, s := range []string{"", "plain", `quote " and \ backslash`, "ctl\x00\x1f\n\r\t\b\f\x7f", "<html>&", "ünïcode ✓", "\xff\xfe", "\u2028"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b := appendJSONString(nil, s)
		var got, want string
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatalf("%q encoded as %s: %v", s, b, err)
		}
		wb, _ := json.Marshal(s)
		if err := json.Unmarshal(wb, &want); err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Fatalf("%q round-tripped to %q, want %q", s, got, want)
		}
	})
}

func TestSplitPieces(t *testing.T) {
	s := `{"city": "Zürich ✓"}`
	p := splitPieces(s, 7)
	if strings.Join(p, "") != s || len(p) < 3 {
		t.Fatalf("pieces %q", p)
	}
	for _, x := range p {
		if x == "" || len(x) > 7 {
			t.Errorf("piece %q", x)
		}
		if strings.ToValidUTF8(x, "#") != x {
			t.Errorf("piece %q splits a UTF-8 sequence", x)
		}
	}
}
