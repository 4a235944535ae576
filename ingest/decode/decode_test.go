package decode

import (
	"bytes"
	"compress/gzip"
	"compress/zlib"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/zstd"

	"github.com/llmtap/llmtap/ingest/event"
	"github.com/llmtap/llmtap/ingest/record"
)

func i64(v int64) *int64 { return &v }

func mustDecode(t *testing.T, ev event.Event) record.Record {
	t.Helper()
	rec, err := Decode(ev)
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	return rec
}

func ptrEq(a, b *int64) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

func fmtPtr(p *int64) string {
	if p == nil {
		return "nil"
	}
	return fmt.Sprint(*p)
}

func TestEndpointOf(t *testing.T) {
	tests := map[string]string{
		"/v1/chat/completions":         EndpointChat,
		"/openai/v1/chat/completions":  EndpointChat,
		"/v1/chat/completions/":        EndpointChat,
		"/v1/chat/completions?x=1":     EndpointChat,
		"/V1/Chat/Completions":         EndpointChat,
		"/v1/completions":              EndpointCompletions,
		"/v1/embeddings":               EndpointEmbeddings,
		"/v1/responses":                EndpointResponses,
		"/v1/models":                   EndpointModels,
		"/v1/models/granite":           EndpointModels,
		"/health":                      EndpointOther,
		"/metrics":                     EndpointOther,
		"":                             EndpointOther,
		"/v1/chat/completionsX":        EndpointOther,
		"/tokenize":                    EndpointOther,
		"/v1/responses/resp_1/cancel":  EndpointOther,
		"/kong/ai/v1/embeddings?key=1": EndpointEmbeddings,
	}
	for in, want := range tests {
		if got := EndpointOf(in); got != want {
			t.Errorf("EndpointOf(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestDecodeIdentity(t *testing.T) {
	ts := time.Date(2026, 1, 2, 3, 4, 5, 0, time.FixedZone("X", 3600))
	tests := []struct {
		name    string
		ev      event.Event
		wantErr error
		wantID  string
		wantTS  time.Time
	}{
		{"no id no ts", event.Event{Path: "/v1/models"}, ErrNoIdentity, "", time.Time{}},
		{"invalid id", event.Event{ID: "not-a-uuid", Time: ts}, ErrInvalidID, "", time.Time{}},
		{"upper-case uuid canonicalised", event.Event{ID: "0190F5A0-0000-7000-8000-0000000000AA", Time: ts}, nil, "0190f5a0-0000-7000-8000-0000000000aa", ts.UTC()},
		{"ts only: derived id", event.Event{Time: ts, Path: "/v1/models"}, nil, "", ts.UTC()},
		{"v7 id only: ts from id", event.Event{ID: "0190f5a0-0000-7000-8000-000000000001"}, nil, "0190f5a0-0000-7000-8000-000000000001",
			time.UnixMilli(0x0190f5a00000).UTC()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec, err := Decode(tt.ev)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tt.wantID != "" && rec.EventID != tt.wantID {
				t.Errorf("EventID = %s, want %s", rec.EventID, tt.wantID)
			}
			if !isUUID(rec.EventID) {
				t.Errorf("EventID %q is not a UUID", rec.EventID)
			}
			if !rec.TS.Equal(tt.wantTS) || rec.TS.Location() != time.UTC {
				t.Errorf("TS = %v, want %v UTC", rec.TS, tt.wantTS)
			}
			if rec.Source != event.SourceProxy {
				t.Errorf("default Source = %q", rec.Source)
			}
		})
	}
}

func TestEventIDDeterministic(t *testing.T) {
	ev := event.Event{Time: t0, Path: "/v1/chat/completions", RequestBody: []byte(`{"a":1}`),
		RequestHeaders: map[string]string{"a": "1", "b": "2", "c": "3"}}
	id1 := EventID(ev)
	for i := 0; i < 20; i++ { // map order must not matter
		ev2 := ev
		ev2.RequestHeaders = map[string]string{"c": "3", "b": "2", "a": "1"}
		if id := EventID(ev2); id != id1 {
			t.Fatalf("EventID not deterministic: %s vs %s", id, id1)
		}
	}
	ev3 := ev
	ev3.RequestBody = []byte(`{"a":2}`)
	if EventID(ev3) == id1 {
		t.Fatal("different content, same id")
	}
	if !isUUID(id1) {
		t.Fatalf("%q not a UUID", id1)
	}
	if got := EventID(event.Event{ID: "x-123"}); got != EventID(event.Event{ID: "x-123", Path: "/other"}) {
		t.Fatal("non-UUID id must hash the id alone")
	}
}

// Streamed and non-streamed answers with the same content give the same
// prompt, response, usage and finish reason.
func TestStreamMatchesNonStream(t *testing.T) {
	chatResp := readFile(t, filepath.Join(samplesDir, "vllm-chat-nonstream.json"))
	chatReq := []byte(`{"model":"qwen-vl","messages":[{"role":"user","content":"Describe."}]}`)
	chatStream := chatToStream(t, chatResp, 7)

	toolResp := []byte(`{"id":"c","object":"chat.completion","model":"m","choices":[{"index":0,"message":{"role":"assistant","content":null,"reasoning_content":"Need the weather.","tool_calls":[{"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}}]},"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":20,"completion_tokens":9,"total_tokens":29}}`)
	toolReq := []byte(`{"model":"m","messages":[{"role":"user","content":"Weather in Paris?"}]}`)
	toolStream := []byte(
		`data: {"model":"m","choices":[{"index":0,"delta":{"role":"assistant","reasoning_content":"Need the "}}]}` + "\n\n" +
			`data: {"model":"m","choices":[{"index":0,"delta":{"reasoning_content":"weather."}}]}` + "\n\n" +
			`data: {"model":"m","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"get_weather"}}]}}]}` + "\n\n" +
			`data: {"model":"m","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"ci"}}]}}]}` + "\n\n" +
			`data: {"model":"m","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"ty\":\"Paris\"}"}}]}}]}` + "\n\n" +
			`data: {"model":"m","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}` + "\n\n" +
			`data: {"model":"m","choices":[],"usage":{"prompt_tokens":20,"completion_tokens":9,"total_tokens":29}}` + "\n\n" +
			"data: [DONE]\n\n")

	complReq := []byte(`{"model":"granite","prompt":"San Francisco is a"}`)
	respReq := readFile(t, filepath.Join(sseDir, "responses-nonstream.json"))
	_ = respReq
	rReq := []byte(`{"model":"openai/gpt-oss-20b","input":"Hello!"}`)

	pairs := []struct {
		name          string
		path          string
		req           []byte
		plain, stream []byte
		wantResponse  string
		wantFinish    string
		wantToolCalls bool
		wantReasoning string
	}{
		{"chat", "/v1/chat/completions", chatReq, chatResp, chatStream, "The image shows a dog", "stop", false, ""},
		{"chat tool calls", "/v1/chat/completions", toolReq, toolResp, toolStream, "", "tool_calls", true, "Need the weather."},
		{"completions", "/v1/completions", complReq, readFile(t, filepath.Join(samplesDir, "vllm-completions-nonstream.json")),
			readFile(t, filepath.Join(sseDir, "completions-usage.sse")), " city known for", "length", false, ""},
		{"responses", "/v1/responses", rReq, readFile(t, filepath.Join(sseDir, "responses-nonstream.json")),
			readFile(t, filepath.Join(sseDir, "responses-stream.sse")), "Hi there! How can I help?", "completed", false, "Simple greeting."},
	}
	for _, p := range pairs {
		t.Run(p.name, func(t *testing.T) {
			a := mustDecode(t, proxyEvent("0190f5a0-0000-7000-8000-0000000000a1", p.path, 200, false, p.req, p.plain))
			// The stream is not flagged: detection from the body must work too.
			evs := proxyEvent("0190f5a0-0000-7000-8000-0000000000a2", p.path, 200, false, p.req, p.stream)
			evs.ResponseHeaders = nil
			b := mustDecode(t, evs)
			if !b.Stream {
				t.Error("stream not detected from body")
			}
			if a.Prompt != b.Prompt || a.Response != b.Response || a.FinishReason != b.FinishReason ||
				a.ToolCalls != b.ToolCalls || a.Reasoning != b.Reasoning || a.Model != b.Model || a.UsageSource != b.UsageSource ||
				!ptrEq(a.PromptTokens, b.PromptTokens) || !ptrEq(a.CompletionTokens, b.CompletionTokens) || !ptrEq(a.TotalTokens, b.TotalTokens) {
				t.Errorf("records differ:\nplain  %+v\nstream %+v", summary(a), summary(b))
			}
			if !strings.HasPrefix(a.Response, p.wantResponse) || a.FinishReason != p.wantFinish || (a.ToolCalls != "") != p.wantToolCalls ||
				a.Reasoning != p.wantReasoning || a.UsageSource != record.UsageResponse || a.PromptTokens == nil {
				t.Errorf("unexpected record %+v", summary(a))
			}
		})
	}
}

func summary(r record.Record) string {
	return fmt.Sprintf("prompt=%q response=%q finish=%q tools=%s reasoning=%q model=%q usage=%s/%s/%s(%s)",
		r.Prompt, r.Response, r.FinishReason, r.ToolCalls, r.Reasoning, r.Model,
		fmtPtr(r.PromptTokens), fmtPtr(r.CompletionTokens), fmtPtr(r.TotalTokens), r.UsageSource)
}

// chatToStream renders a chat.completion body as the stream vLLM would send,
// content cut into pieces of n bytes.
func chatToStream(t *testing.T, body []byte, n int) []byte {
	var c struct {
		Model   string `json:"model"`
		Choices []struct {
			Message struct {
				Content string `json:"content"`
			} `json:"message"`
			FinishReason string `json:"finish_reason"`
		} `json:"choices"`
		Usage json.RawMessage `json:"usage"`
	}
	if err := json.Unmarshal(body, &c); err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	chunk := func(v any) {
		j, _ := json.Marshal(v)
		b.WriteString("data: ")
		b.Write(j)
		b.WriteString("\n\n")
	}
	type m = map[string]any
	chunk(m{"model": c.Model, "choices": []m{{"index": 0, "delta": m{"role": "assistant", "content": ""}}}})
	text := c.Choices[0].Message.Content
	for len(text) > 0 {
		k := min(n, len(text))
		chunk(m{"model": c.Model, "choices": []m{{"index": 0, "delta": m{"content": text[:k]}, "finish_reason": nil}}})
		text = text[k:]
	}
	chunk(m{"model": c.Model, "choices": []m{{"index": 0, "delta": m{"content": ""}, "finish_reason": c.Choices[0].FinishReason}}})
	chunk(m{"model": c.Model, "choices": []m{}, "usage": c.Usage})
	b.WriteString("data: [DONE]\n\n")
	return b.Bytes()
}

// Line endings and re-chunking of a real capture do not change the record.
func TestStreamLineEndings(t *testing.T) {
	body := readFile(t, filepath.Join(samplesDir, "vllm-chat-stream-usage.sse"))
	req := []byte(`{"model":"x","messages":[{"role":"user","content":"Say okay."}]}`)
	base := mustDecode(t, proxyEvent("0190f5a0-0000-7000-8000-0000000000b1", "/v1/chat/completions", 200, true, req, body))
	if base.Response != "Okay." || base.FinishReason != "stop" || !ptrEq(base.TotalTokens, i64(16)) {
		t.Fatalf("base record wrong: %s", summary(base))
	}
	variants := map[string][]byte{
		"crlf":     bytes.ReplaceAll(body, []byte("\n"), []byte("\r\n")),
		"cr":       bytes.ReplaceAll(body, []byte("\n"), []byte("\r")),
		"comments": bytes.ReplaceAll(body, []byte("\n\ndata:"), []byte("\n\n: keep-alive\n\ndata:")),
		"no space": bytes.ReplaceAll(body, []byte("data: "), []byte("data:")),
		"bom":      append([]byte("\xEF\xBB\xBF"), body...),
	}
	for name, v := range variants {
		rec := mustDecode(t, proxyEvent("0190f5a0-0000-7000-8000-0000000000b1", "/v1/chat/completions", 200, true, req, v))
		if summary(rec) != summary(base) {
			t.Errorf("%s: %s\nwant %s", name, summary(rec), summary(base))
		}
	}
}

func TestMultiLineDataChunk(t *testing.T) {
	// A pretty-printed chunk spread over several data: lines (joined by "\n").
	body := "data: {\"model\":\"m\",\ndata:  \"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}]}\n\ndata: [DONE]\n\n"
	rec := mustDecode(t, proxyEvent("0190f5a0-0000-7000-8000-0000000000b2", "/v1/chat/completions", 200, true, nil, []byte(body)))
	if rec.Response != "hi" || rec.Model != "m" {
		t.Fatalf("got %s", summary(rec))
	}
}

func TestMissingDoneKeepsPartial(t *testing.T) {
	body := "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Once\"}}]}\n\ndata: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\" upon\"}}]}\n\ndata: {\"choi"
	ev := proxyEvent("0190f5a0-0000-7000-8000-0000000000b3", "/v1/chat/completions", 499, true, []byte(`{"model":"m","messages":[]}`), []byte(body))
	rec := mustDecode(t, ev)
	if rec.Response != "Once upon" || rec.Status != 499 || rec.UsageSource != record.UsageNone || rec.PromptTokens != nil || rec.FinishReason != "" {
		t.Fatalf("got %s status=%d", summary(rec), rec.Status)
	}
}

func TestUsageRules(t *testing.T) {
	withUsage := []byte(`{"model":"m","choices":[{"index":0,"message":{"content":"x"},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":0}}`)
	noUsage := []byte(`{"model":"m","choices":[{"index":0,"message":{"content":"x"},"finish_reason":"stop"}]}`)
	hint := &event.Usage{PromptTokens: i64(7), CompletionTokens: i64(3)}
	tests := []struct {
		name       string
		source     string
		body       []byte
		hint       *event.Usage
		wantSource string
		p, c, tot  *int64
	}{
		{"response wins, zero kept, total derived", event.SourceProxy, withUsage, hint, record.UsageResponse, i64(5), i64(0), i64(5)},
		{"event hint", event.SourceProxy, noUsage, hint, record.UsageEvent, i64(7), i64(3), i64(10)},
		{"kong hint", event.SourceKong, noUsage, hint, record.UsageKong, i64(7), i64(3), i64(10)},
		{"only total", event.SourceProxy, noUsage, &event.Usage{TotalTokens: i64(9)}, record.UsageEvent, nil, nil, i64(9)},
		{"empty hint is none", event.SourceProxy, noUsage, &event.Usage{}, record.UsageNone, nil, nil, nil},
		{"none", event.SourceProxy, noUsage, nil, record.UsageNone, nil, nil, nil},
		{"null usage is none", event.SourceProxy, []byte(`{"usage":null,"choices":[]}`), nil, record.UsageNone, nil, nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev := proxyEvent("0190f5a0-0000-7000-8000-0000000000c1", "/v1/chat/completions", 200, false, nil, tt.body)
			ev.Source = tt.source
			ev.Usage = tt.hint
			rec := mustDecode(t, ev)
			if rec.UsageSource != tt.wantSource || !ptrEq(rec.PromptTokens, tt.p) || !ptrEq(rec.CompletionTokens, tt.c) || !ptrEq(rec.TotalTokens, tt.tot) {
				t.Errorf("got %s", summary(rec))
			}
		})
	}
}

func TestErrors(t *testing.T) {
	tests := []struct {
		name   string
		status int
		evErr  string
		body   string
		stream bool
		want   string
	}{
		{"producer error wins", 502, "upstream unreachable", `{"error":{"message":"x"}}`, false, "upstream unreachable"},
		{"nested", 400, "", `{"error":{"message":"bad model","type":"NotFoundError","code":404}}`, false, "bad model"},
		{"string code", 400, "", `{"error":{"message":"too long","code":"context_length_exceeded"}}`, false, "too long"},
		{"flat legacy", 400, "", `{"object":"error","message":"flat","code":400}`, false, "flat"},
		{"string error", 401, "", `{"error":"Unauthorized"}`, false, "Unauthorized"},
		{"kong message", 401, "", `{"message":"No API key found in request"}`, false, "No API key found in request"},
		{"fastapi detail", 422, "", `{"detail":[{"loc":["body"],"msg":"field required"}]}`, false, `[{"loc":["body"],"msg":"field required"}]`},
		{"error object without message", 500, "", `{"error":{"code":500}}`, false, `{"code":500}`},
		{"plain text", 502, "", "Bad Gateway\n", false, "Bad Gateway"},
		{"empty body", 503, "", "", false, ""},
		{"2xx no error", 200, "", `{"choices":[]}`, false, ""},
		{"mid-stream after 200", 200, "", "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}\n\ndata: {\"error\": {\"message\": \"boom\", \"code\": 500}}\n\ndata: [DONE]\n\n", true, "boom"},
		{"mid-stream string error", 200, "", "data: {\"error\": \"overloaded\"}\n\n", true, "overloaded"},
		{"streamed non-2xx error body", 500, "", "data: {\"error\": {\"message\": \"x\"}}\n\n", true, "x"},
		{"stream-flagged JSON error", 400, "", `{"error":{"message":"bad stream_options"}}`, true, "bad stream_options"},
		{"responses error event", 200, "", "event: error\ndata: {\"type\":\"error\",\"message\":\"rate limited\"}\n\n", true, "rate limited"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev := proxyEvent("0190f5a0-0000-7000-8000-0000000000d1", "/v1/chat/completions", tt.status, tt.stream, nil, []byte(tt.body))
			ev.Error = tt.evErr
			rec := mustDecode(t, ev)
			if rec.Error != tt.want {
				t.Errorf("Error = %q, want %q", rec.Error, tt.want)
			}
		})
	}
}

func TestPromptExtraction(t *testing.T) {
	tests := []struct {
		name, path, req, want string
	}{
		{"chat string", "/v1/chat/completions", `{"messages":[{"role":"system","content":"sys"},{"role":"user","content":"first"},{"role":"assistant","content":"a"},{"role":"user","content":"last"}]}`, "last"},
		{"chat parts", "/v1/chat/completions", `{"messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"image_url","image_url":{"url":"x"}},{"type":"text","text":"b"}]}]}`, "a\nb"},
		{"chat trailing tool message", "/v1/chat/completions", `{"messages":[{"role":"user","content":"q"},{"role":"assistant","tool_calls":[]},{"role":"tool","content":"42"}]}`, "q"},
		{"chat no user", "/v1/chat/completions", `{"messages":[{"role":"system","content":"s"}]}`, ""},
		{"chat null content", "/v1/chat/completions", `{"messages":[{"role":"user","content":null}]}`, ""},
		{"chat messages wrong type", "/v1/chat/completions", `{"messages":"hello"}`, ""},
		{"completions string", "/v1/completions", `{"prompt":"p"}`, "p"},
		{"completions array", "/v1/completions", `{"prompt":["a","b"]}`, "a\nb"},
		{"completions tokens", "/v1/completions", `{"prompt":[1,2,3]}`, ""},
		{"completions token arrays", "/v1/completions", `{"prompt":[[1,2],[3]]}`, ""},
		{"embeddings string", "/v1/embeddings", `{"input":"e"}`, "e"},
		{"embeddings array", "/v1/embeddings", `{"input":["e1","e2"]}`, "e1\ne2"},
		{"responses string", "/v1/responses", `{"input":"hi","instructions":"be nice"}`, "hi"},
		{"responses items", "/v1/responses", `{"input":[{"role":"user","content":"one"},{"role":"assistant","content":"x"},{"type":"message","role":"user","content":[{"type":"input_text","text":"two"}]}]}`, "two"},
		{"responses instructions only", "/v1/responses", `{"instructions":"be nice"}`, "be nice"},
		{"other path", "/tokenize", `{"prompt":"secret"}`, ""},
		{"not json", "/v1/chat/completions", `not json`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := mustDecode(t, proxyEvent("0190f5a0-0000-7000-8000-0000000000e1", tt.path, 200, false, []byte(tt.req), nil))
			if rec.Prompt != tt.want {
				t.Errorf("Prompt = %q, want %q", rec.Prompt, tt.want)
			}
			if rec.RequestBody != tt.req {
				t.Errorf("RequestBody changed")
			}
		})
	}
}

func TestModelPrecedence(t *testing.T) {
	ev := proxyEvent("0190f5a0-0000-7000-8000-0000000000e2", "/v1/chat/completions", 200, false,
		[]byte(`{"model":"req-model","messages":[]}`), []byte(`{"model":"resp-model","choices":[]}`))
	ev.Model = "hint"
	if m := mustDecode(t, ev).Model; m != "resp-model" {
		t.Errorf("model = %q", m)
	}
	ev.ResponseBody = []byte(`{"choices":[]}`)
	if m := mustDecode(t, ev).Model; m != "req-model" {
		t.Errorf("model = %q", m)
	}
	ev.RequestBody = nil
	if m := mustDecode(t, ev).Model; m != "hint" {
		t.Errorf("model = %q", m)
	}
}

func TestEncodings(t *testing.T) {
	plain := readFile(t, filepath.Join(samplesDir, "vllm-chat-stream-usage.sse"))
	var gz, zl, br bytes.Buffer
	gw := gzip.NewWriter(&gz)
	gw.Write(plain)
	gw.Close()
	zw := zlib.NewWriter(&zl)
	zw.Write(plain)
	zw.Close()
	bw := brotli.NewWriter(&br)
	bw.Write(plain)
	bw.Close()
	ze, _ := zstd.NewWriter(nil)
	zs := ze.EncodeAll(plain, nil)
	ze.Close()
	gzBr := func() []byte { // Content-Encoding: gzip, br (gzip applied first)
		var b bytes.Buffer
		w := brotli.NewWriter(&b)
		w.Write(gz.Bytes())
		w.Close()
		return b.Bytes()
	}()
	tests := []struct {
		name, enc string
		body      []byte
		wantPlain bool
	}{
		{"identity", "", plain, true},
		{"gzip", "gzip", gz.Bytes(), true},
		{"gzip sniffed", "", gz.Bytes(), true},
		{"deflate", "deflate", zl.Bytes(), true},
		{"br", "br", br.Bytes(), true},
		{"zstd", "zstd", zs, true},
		{"Upper case", "GZIP", gz.Bytes(), true},
		{"two codings", "gzip, br", gzBr, true},
		{"unknown coding kept raw", "snappy", plain, true},
		{"wrong coding kept raw", "gzip", plain, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev := proxyEvent("0190f5a0-0000-7000-8000-0000000000f1", "/v1/chat/completions", 200, true, nil, tt.body)
			ev.ResponseEncoding = tt.enc
			rec := mustDecode(t, ev)
			if tt.wantPlain && rec.ResponseBody != string(plain) {
				t.Errorf("body not decoded: %.60q", rec.ResponseBody)
			}
			if rec.Response != "Okay." || rec.Truncated {
				t.Errorf("got %s truncated=%v", summary(rec), rec.Truncated)
			}
		})
	}
	t.Run("truncated gzip capture", func(t *testing.T) {
		ev := proxyEvent("0190f5a0-0000-7000-8000-0000000000f2", "/v1/chat/completions", 200, true, nil, gz.Bytes()[:gz.Len()/2])
		ev.ResponseEncoding = "gzip"
		ev.ResponseTruncated = true
		rec := mustDecode(t, ev)
		if !rec.Truncated || !strings.HasPrefix(string(plain), rec.ResponseBody) || rec.ResponseBody == "" {
			t.Errorf("truncated=%v body=%.80q", rec.Truncated, rec.ResponseBody)
		}
	})
	t.Run("request body gzip by header", func(t *testing.T) {
		var rb bytes.Buffer
		w := gzip.NewWriter(&rb)
		w.Write([]byte(`{"messages":[{"role":"user","content":"zipped"}]}`))
		w.Close()
		ev := proxyEvent("0190f5a0-0000-7000-8000-0000000000f3", "/v1/chat/completions", 200, false, rb.Bytes(), nil)
		ev.RequestHeaders["Content-Encoding"] = "gzip"
		if rec := mustDecode(t, ev); rec.Prompt != "zipped" {
			t.Errorf("prompt = %q", rec.Prompt)
		}
	})
}

func TestDecompressionBomb(t *testing.T) {
	if testing.Short() {
		t.Skip("decompresses 64 MiB")
	}
	var gz bytes.Buffer
	w, _ := gzip.NewWriterLevel(&gz, gzip.BestSpeed)
	zero := make([]byte, 1<<20)
	for i := 0; i < MaxDecodedBody>>20+1; i++ {
		w.Write(zero)
	}
	w.Close()
	ev := proxyEvent("0190f5a0-0000-7000-8000-0000000000f4", "/v1/chat/completions", 200, false, nil, gz.Bytes())
	ev.ResponseEncoding = "gzip"
	rec := mustDecode(t, ev)
	if !rec.Truncated {
		t.Error("bomb not marked truncated")
	}
	if len(rec.ResponseBody) > MaxDecodedBody {
		t.Errorf("body %d bytes over the cap", len(rec.ResponseBody))
	}
}

func TestInvalidUTF8AndNUL(t *testing.T) {
	req := []byte("{\"messages\":[{\"role\":\"user\",\"content\":\"caf\\u00e9 \\u0000nul\xff\"}]}")
	resp := []byte("data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"ok\\u0000\xfe\"}}]}\n\n\x00raw nul\n")
	ev := proxyEvent("0190f5a0-0000-7000-8000-0000000000f5", "/v1/chat/completions", 200, true, req, resp)
	ev.Consumer = "bad\xffname\x00"
	ev.ClientIP = "10.0.0.1\x00\xff"
	ev.RequestHeaders["X-Bin"] = "a\x00b\xff"
	rec := mustDecode(t, ev)
	for name, s := range map[string]string{"RequestBody": rec.RequestBody, "ResponseBody": rec.ResponseBody, "Prompt": rec.Prompt,
		"Response": rec.Response, "Consumer": rec.Consumer, "ClientIP": rec.ClientIP, "RequestHeaders": rec.RequestHeaders} {
		if !utf8.ValidString(s) || strings.IndexByte(s, 0) >= 0 {
			t.Errorf("%s not clean: %q", name, s)
		}
	}
	if rec.Prompt != "café nul\uFFFD" {
		t.Errorf("prompt = %q", rec.Prompt)
	}
	if !json.Valid([]byte(rec.RequestHeaders)) {
		t.Errorf("headers not JSON: %s", rec.RequestHeaders)
	}
}

func TestHeadersRedacted(t *testing.T) {
	ev := proxyEvent("0190f5a0-0000-7000-8000-0000000000f6", "/v1/models", 200, false, nil, nil)
	ev.RequestHeaders = map[string]string{"Authorization": "Bearer sk-plain", "X-Api-Key": "sk-2", "Cookie": "s=1", "Accept": "*/*"}
	ev.ResponseHeaders = nil
	rec := mustDecode(t, ev)
	if strings.Contains(rec.RequestHeaders, "sk-") || strings.Contains(rec.RequestHeaders, "s=1") || !strings.Contains(rec.RequestHeaders, `"Accept":"*/*"`) {
		t.Errorf("headers = %s", rec.RequestHeaders)
	}
	if rec.ResponseHeaders != "{}" {
		t.Errorf("empty headers = %q", rec.ResponseHeaders)
	}
}

func TestDeepNestingDoesNotCrash(t *testing.T) {
	deep := strings.Repeat("[", 200000) + strings.Repeat("]", 200000)
	bodies := []string{
		deep,
		`{"messages":` + deep + `}`,
		`{"messages":[{"role":"user","content":` + deep + `}]}`,
		"data: " + `{"choices":` + deep + "}\n\n",
	}
	for i, b := range bodies {
		rec, err := Decode(proxyEvent("0190f5a0-0000-7000-8000-0000000000f7", "/v1/chat/completions", 200, false, []byte(b), []byte(b)))
		if err != nil {
			t.Errorf("body %d: %v", i, err)
		}
		if len(rec.RequestBody) != len(b) {
			t.Errorf("body %d not kept", i)
		}
	}
}

func TestResponsesToolCallsStream(t *testing.T) {
	body := "event: response.output_item.added\ndata: {\"type\":\"response.output_item.added\",\"output_index\":0,\"item\":{\"type\":\"function_call\",\"id\":\"fc_1\",\"call_id\":\"call_9\",\"name\":\"lookup\",\"arguments\":\"\"}}\n\n" +
		"event: response.function_call_arguments.delta\ndata: {\"type\":\"response.function_call_arguments.delta\",\"output_index\":0,\"delta\":\"{\\\"q\\\":\"}\n\n" +
		"event: response.function_call_arguments.delta\ndata: {\"type\":\"response.function_call_arguments.delta\",\"output_index\":0,\"delta\":\"1}\"}\n\n"
	rec := mustDecode(t, proxyEvent("0190f5a0-0000-7000-8000-0000000000f8", "/v1/responses", 499, true, []byte(`{"input":"find"}`), []byte(body)))
	want := `[{"id":"call_9","type":"function","function":{"name":"lookup","arguments":"{\"q\":1}"}}]`
	if rec.ToolCalls != want {
		t.Errorf("ToolCalls = %s\nwant %s", rec.ToolCalls, want)
	}
}

func TestNonStreamToolCallsShape(t *testing.T) {
	body := `{"choices":[{"index":1,"message":{"content":"other"}},{"index":0,"message":{"content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":{"a":"<b>"}}}]},"finish_reason":"tool_calls"}]}`
	rec := mustDecode(t, proxyEvent("0190f5a0-0000-7000-8000-0000000000f9", "/v1/chat/completions", 200, false, nil, []byte(body)))
	want := `[{"id":"c1","type":"function","function":{"name":"f","arguments":"{\"a\":\"<b>\"}"}}]`
	if rec.ToolCalls != want || rec.FinishReason != "tool_calls" || rec.Response != "" {
		t.Errorf("got %s", summary(rec))
	}
}

func newGzip(w *bytes.Buffer) *gzip.Writer { return gzip.NewWriter(w) }

func TestHeadersJSONRoundTrip(t *testing.T) {
	h := map[string]string{"a\"b": "c\\d", "ctl": "x\x01\ty\n", "html": "<a&b>", "uni": "é☃\u2028", "Authorization": "Bearer x", "empty": ""}
	var got map[string]string
	if err := json.Unmarshal([]byte(headersJSON(h)), &got); err != nil {
		t.Fatalf("not JSON: %v: %s", err, headersJSON(h))
	}
	for k, v := range h {
		if k == "Authorization" {
			v = Redacted
		}
		if got[k] != v {
			t.Errorf("%q: got %q want %q", k, got[k], v)
		}
	}
	if len(got) != len(h) {
		t.Errorf("got %d keys", len(got))
	}
}

// Chunks of an unexpected shape take the generic path and still count.
func TestStreamGenericChunkPath(t *testing.T) {
	body := "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":[\"odd\"]}}],\"usage\":{\"prompt_tokens\":2,\"completion_tokens\":1}}\n\n" +
		"data: {\"choices\":[{\"index\":0.0,\"delta\":{\"content\":\"ok\"},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":2,\"completion_tokens\":2}}\n\n" +
		"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":2.0,\"completion_tokens\":3,\"total_tokens\":5}}\n\n" +
		"data: {\"choices\":[{\"index\":0,\"delta\":{}}],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":9}}\n\n"
	for _, c := range []string{`{"Choices":[]}`, `{"choices":[{"delta":{"content":"x"}}],"choices":[]}`} {
		if _, ok := scanChunk([]byte(c)); ok {
			t.Errorf("scanner should defer %s to encoding/json", c)
		}
	}
	rec := mustDecode(t, proxyEvent("0190f5a0-0000-7000-8000-0000000000fa", "/v1/chat/completions", 200, true, nil, []byte(body)))
	if rec.Response != "ok" || rec.FinishReason != "stop" || !ptrEq(rec.PromptTokens, i64(2)) || !ptrEq(rec.CompletionTokens, i64(3)) || !ptrEq(rec.TotalTokens, i64(5)) {
		t.Errorf("got %s", summary(rec))
	}
}

func TestEachEndpoint(t *testing.T) {
	tests := []struct {
		path, req, resp             string
		endpoint, prompt, response  string
		model                       string
		prompts, completions, total *int64
	}{
		{"/v1/chat/completions", `{"model":"m","messages":[{"role":"user","content":"q"}]}`,
			`{"model":"m1","choices":[{"index":0,"message":{"role":"assistant","content":"a"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}`,
			EndpointChat, "q", "a", "m1", i64(1), i64(1), i64(2)},
		{"/v1/completions", `{"model":"m","prompt":"q"}`,
			`{"model":"m","choices":[{"index":0,"text":"a","finish_reason":"length"}],"usage":{"prompt_tokens":1,"completion_tokens":16,"total_tokens":17}}`,
			EndpointCompletions, "q", "a", "m", i64(1), i64(16), i64(17)},
		{"/v1/embeddings", `{"model":"bge","input":"q"}`,
			`{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.1,0.2]}],"model":"bge","usage":{"prompt_tokens":3,"total_tokens":3}}`,
			EndpointEmbeddings, "q", "", "bge", i64(3), nil, i64(3)},
		{"/v1/responses", `{"model":"g","input":"q"}`,
			`{"object":"response","status":"completed","model":"g","output":[{"type":"message","content":[{"type":"output_text","text":"a"}]}],"usage":{"input_tokens":4,"output_tokens":1,"total_tokens":5}}`,
			EndpointResponses, "q", "a", "g", i64(4), i64(1), i64(5)},
		{"/v1/models", ``, `{"object":"list","data":[{"id":"granite","object":"model"}]}`,
			EndpointModels, "", "", "", nil, nil, nil},
		{"/tokenize", `{"model":"m","prompt":"q"}`, `{"count":3,"tokens":[1,2,3]}`,
			EndpointOther, "", "", "m", nil, nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.endpoint, func(t *testing.T) {
			rec := mustDecode(t, proxyEvent("0190f5a0-0000-7000-8000-0000000000fb", tt.path, 200, false, []byte(tt.req), []byte(tt.resp)))
			if rec.Endpoint != tt.endpoint || rec.Prompt != tt.prompt || rec.Response != tt.response || rec.Model != tt.model ||
				!ptrEq(rec.PromptTokens, tt.prompts) || !ptrEq(rec.CompletionTokens, tt.completions) || !ptrEq(rec.TotalTokens, tt.total) {
				t.Errorf("endpoint %s: %s", rec.Endpoint, summary(rec))
			}
		})
	}
}
