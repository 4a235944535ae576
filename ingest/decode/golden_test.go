package decode

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/llmtap/llmtap/ingest/event"
	"github.com/llmtap/llmtap/ingest/record"
)

var update = flag.Bool("update", false, "rewrite testdata/golden/*.json from the current output")

const (
	samplesDir = "../../testdata/samples"
	kongDir    = "../../testdata/kong"
	sseDir     = "../../testdata/sse"
	goldenDir  = "../../testdata/golden"
)

func readFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func f64(v float64) *float64 { return &v }

// proxyEvent is what the proxy would ship for a request/response pair.
func proxyEvent(id, path string, status int, stream bool, req, resp []byte) event.Event {
	ev := event.Event{
		ID: id, Time: t0, Source: event.SourceProxy, Consumer: "alice", KeyID: "k_01", KeyPrefix: "sk-llt-ab",
		ClientIP: "127.0.0.1", Method: "POST", Path: path, RequestID: "req-" + id[:8], Status: status, Stream: stream,
		LatencyMs: 1234.5, TTFBMs: f64(210),
		RequestHeaders:  map[string]string{"Content-Type": "application/json", "Authorization": "Bearer sk-llt-secret", "User-Agent": "OpenAI/Python 1.99.0"},
		ResponseHeaders: map[string]string{"Content-Type": "application/json", "Server": "uvicorn"},
		RequestBody:     req, ResponseBody: resp,
	}
	if stream {
		ev.TTFTMs = f64(250)
		ev.ResponseHeaders["Content-Type"] = "text/event-stream; charset=utf-8"
	}
	return ev
}

type goldenCase struct {
	name   string
	events func(t testing.TB) ([]event.Event, []record.Reject)
}

func one(ev event.Event) func(testing.TB) ([]event.Event, []record.Reject) {
	return func(testing.TB) ([]event.Event, []record.Reject) { return []event.Event{ev}, nil }
}

func kongFile(path string) func(testing.TB) ([]event.Event, []record.Reject) {
	return func(t testing.TB) ([]event.Event, []record.Reject) { return Kong(readFile(t, path)) }
}

func goldenCases(t testing.TB) []goldenCase {
	s := func(name string) []byte { return readFile(t, filepath.Join(samplesDir, name)) }
	x := func(name string) []byte { return readFile(t, filepath.Join(sseDir, name)) }
	chatReq := []byte(`{"model":"qwen-vl","messages":[{"role":"system","content":"You are a vision assistant."},{"role":"user","content":[{"type":"image_url","image_url":{"url":"https://example.com/dog.jpg"}},{"type":"text","text":"What is in this image?"}]}],"max_tokens":64}`)
	dsReq := []byte(`{"model":"deepseek-ai/DeepSeek-V3.1","messages":[{"role":"user","content":"Say okay."}],"stream":true,"stream_options":{"include_usage":true}}`)
	toolReq := []byte(`{"model":"qwen2.5-coder","messages":[{"role":"system","content":"You run shell commands."},{"role":"user","content":"list files"}],"tools":[{"type":"function","function":{"name":"run_command","parameters":{"type":"object","properties":{"command":{"type":"string"}}}}}],"stream":true}`)
	qwenReq := []byte(`{"model":"Qwen/Qwen3-8B","messages":[{"role":"user","content":"Tell me a story."}],"stream":true}`)
	respReq := []byte(`{"model":"openai/gpt-oss-20b","instructions":"Be friendly.","input":[{"role":"user","content":[{"type":"input_text","text":"Hello!"}]}],"stream":true}`)
	cases := []goldenCase{
		{"sample-vllm-chat-nonstream", one(proxyEvent("0190f5a0-0000-7000-8000-000000000001", "/v1/chat/completions", 200, false, chatReq, s("vllm-chat-nonstream.json")))},
		{"sample-vllm-chat-stream-usage", one(func() event.Event {
			ev := proxyEvent("0190f5a0-0000-7000-8000-000000000002", "/v1/chat/completions", 200, true, dsReq, s("vllm-chat-stream-usage.sse"))
			ev.UsageInjected = true
			return ev
		}())},
		{"sample-vllm-chat-stream-toolcalls", one(proxyEvent("0190f5a0-0000-7000-8000-000000000003", "/v1/chat/completions", 200, true, toolReq, s("vllm-chat-stream-toolcalls.sse")))},
		{"sample-vllm-completions-nonstream", one(proxyEvent("0190f5a0-0000-7000-8000-000000000004", "/v1/completions", 200, false,
			[]byte(`{"model":"granite","prompt":"San Francisco is a","max_tokens":7,"temperature":0}`), s("vllm-completions-nonstream.json")))},
		{"sample-vllm-error", one(proxyEvent("0190f5a0-0000-7000-8000-000000000005", "/v1/chat/completions", 400, false,
			[]byte(`{"model":"qwen","messages":[{"role":"user","content":"very long"}]}`), s("vllm-error.json")))},
		{"sample-vllm-error-legacy", one(proxyEvent("0190f5a0-0000-7000-8000-000000000006", "/v1/chat/completions", 400, false,
			[]byte(`{"model":"qwen","messages":[{"role":"user","content":"very long"}]}`), s("vllm-error-legacy.json")))},
		{"sample-vllm-unauthorized", one(proxyEvent("0190f5a0-0000-7000-8000-000000000007", "/v1/chat/completions", 401, false,
			[]byte(`{"model":"qwen","messages":[{"role":"user","content":"hi"}]}`), s("vllm-unauthorized.json")))},
		{"sample-vllm-models", one(func() event.Event {
			ev := proxyEvent("0190f5a0-0000-7000-8000-000000000008", "/v1/models", 200, false, nil, s("vllm-models.json"))
			ev.Method = "GET"
			return ev
		}())},
		{"sample-kong-http-log-basic", kongFile(filepath.Join(samplesDir, "kong-http-log-basic.json"))},
		{"sample-kong-http-log-consumer", kongFile(filepath.Join(samplesDir, "kong-http-log-consumer.json"))},
		{"sample-kong-http-log-with-body", kongFile(filepath.Join(samplesDir, "kong-http-log-with-body.json"))},
		{"kong-ai-3.6", kongFile(filepath.Join(kongDir, "ai-3.6.json"))},
		{"kong-ai-3.7-singular", kongFile(filepath.Join(kongDir, "ai-3.7-singular.json"))},
		{"kong-ai-3.8-plural", kongFile(filepath.Join(kongDir, "ai-3.8-plural.json"))},
		{"kong-ai-3.9-proxy", kongFile(filepath.Join(kongDir, "ai-3.9-proxy.json"))},
		{"kong-base64-bodies", kongFile(filepath.Join(kongDir, "base64-bodies.json"))},
		{"kong-batch", kongFile(filepath.Join(kongDir, "batch.json"))},
		{"kong-broken-batch", kongFile(filepath.Join(kongDir, "broken-batch.json"))},
		{"sse-chat-midstream-error", one(proxyEvent("0190f5a0-0000-7000-8000-000000000011", "/v1/chat/completions", 200, true, qwenReq, x("chat-midstream-error.sse")))},
		{"sse-chat-midstream-error-legacy", one(proxyEvent("0190f5a0-0000-7000-8000-000000000012", "/v1/chat/completions", 200, true, qwenReq, x("chat-midstream-error-legacy.sse")))},
		{"sse-chat-disconnect", one(func() event.Event {
			ev := proxyEvent("0190f5a0-0000-7000-8000-000000000013", "/v1/chat/completions", 499, true, qwenReq, x("chat-disconnect.sse"))
			ev.Error = "client disconnected"
			return ev
		}())},
		{"sse-chat-reasoning-n2", one(proxyEvent("0190f5a0-0000-7000-8000-000000000014", "/v1/chat/completions", 200, true,
			[]byte(`{"model":"Qwen/Qwen3-8B","n":2,"messages":[{"role":"user","content":"Greet me."}],"stream":true,"stream_options":{"include_usage":true,"continuous_usage_stats":true}}`), x("chat-reasoning-n2.sse")))},
		{"sse-chat-parallel-toolcalls", one(proxyEvent("0190f5a0-0000-7000-8000-000000000015", "/v1/chat/completions", 200, true,
			[]byte(`{"model":"gpt-4o","messages":[{"role":"user","content":"Weather and time in Edinburgh?"}],"stream":true}`), x("chat-parallel-toolcalls.sse")))},
		{"sse-completions-usage", one(proxyEvent("0190f5a0-0000-7000-8000-000000000016", "/v1/completions", 200, true,
			[]byte(`{"model":"granite","prompt":["San Francisco is a"],"max_tokens":7,"stream":true,"stream_options":{"include_usage":true}}`), x("completions-usage.sse")))},
		{"sse-responses-stream", one(proxyEvent("0190f5a0-0000-7000-8000-000000000017", "/v1/responses", 200, true, respReq, x("responses-stream.sse")))},
		{"sse-responses-nonstream", one(proxyEvent("0190f5a0-0000-7000-8000-000000000018", "/v1/responses", 200, false, respReq, x("responses-nonstream.json")))},
		{"sse-responses-disconnect", one(proxyEvent("0190f5a0-0000-7000-8000-000000000019", "/v1/responses", 499, true, respReq, x("responses-disconnect.sse")))},
	}
	return cases
}

// golden is the stored form: records without IngestedAt, rejects without
// ReceivedAt (both are "now").
type golden struct {
	Records []json.RawMessage `json:"records"`
	Errors  []string          `json:"decode_errors,omitempty"`
	Rejects []goldenReject    `json:"rejects,omitempty"`
}

type goldenReject struct {
	Source  string `json:"source"`
	Reason  string `json:"reason"`
	Payload string `json:"payload"`
}

func buildGolden(t testing.TB, c goldenCase) []byte {
	evs, rejs := c.events(t)
	g := golden{Records: []json.RawMessage{}}
	for _, ev := range evs {
		rec, err := Decode(ev)
		if err != nil {
			g.Errors = append(g.Errors, err.Error())
			continue
		}
		if rec.IngestedAt.IsZero() {
			t.Errorf("%s: IngestedAt not set", c.name)
		}
		rec.IngestedAt = time.Time{}
		b, err := json.Marshal(rec)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		delete(m, "IngestedAt")
		b, _ = json.Marshal(m)
		g.Records = append(g.Records, b)
	}
	for _, r := range rejs {
		g.Rejects = append(g.Rejects, goldenReject{Source: r.Source, Reason: r.Reason, Payload: string(r.Payload)})
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(g); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestGolden(t *testing.T) {
	for _, c := range goldenCases(t) {
		t.Run(c.name, func(t *testing.T) {
			got := buildGolden(t, c)
			path := filepath.Join(goldenDir, c.name+".json")
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test ./ingest/decode -run TestGolden -update)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s differs from golden; got:\n%s", path, got)
			}
		})
	}
}

// Every sample in testdata/samples has a golden case.
func TestEverySampleHasGolden(t *testing.T) {
	names := map[string]bool{}
	for _, c := range goldenCases(t) {
		names[c.name] = true
	}
	entries, err := os.ReadDir(samplesDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		ext := filepath.Ext(e.Name())
		if ext != ".json" && ext != ".sse" {
			continue
		}
		name := "sample-" + e.Name()[:len(e.Name())-len(ext)]
		if !names[name] {
			t.Errorf("sample %s has no golden case %s", e.Name(), name)
		}
	}
}
