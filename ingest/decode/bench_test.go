package decode

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/llmtap/llmtap/ingest/event"
)

// streamedChatEvent is a ~4 KB streamed chat event as the proxy ships it.
func streamedChatEvent(b *testing.B) event.Event {
	var body bytes.Buffer
	words := strings.Fields("The quick brown fox jumps over the lazy dog while the model keeps streaming tokens to the client")
	for i := 0; body.Len() < 3600; i++ {
		fmt.Fprintf(&body, `data: {"id":"chatcmpl-ba1b4314210adc3b","object":"chat.completion.chunk","created":1764763435,"model":"Qwen/Qwen3-8B","choices":[{"index":0,"delta":{"content":" %s"},"logprobs":null,"finish_reason":null}]}`+"\n\n", words[i%len(words)])
	}
	body.WriteString(`data: {"id":"chatcmpl-ba1b4314210adc3b","object":"chat.completion.chunk","created":1764763435,"model":"Qwen/Qwen3-8B","choices":[{"index":0,"delta":{"content":""},"logprobs":null,"finish_reason":"stop","stop_reason":null}]}` + "\n\n")
	body.WriteString(`data: {"id":"chatcmpl-ba1b4314210adc3b","object":"chat.completion.chunk","created":1764763435,"model":"Qwen/Qwen3-8B","choices":[],"usage":{"prompt_tokens":13,"total_tokens":40,"completion_tokens":27}}` + "\n\ndata: [DONE]\n\n")
	req := []byte(`{"model":"Qwen/Qwen3-8B","messages":[{"role":"system","content":"You are helpful."},{"role":"user","content":"Tell me about foxes."}],"stream":true,"stream_options":{"include_usage":true}}`)
	return proxyEvent("0190f5a0-0000-7000-8000-000000000401", "/v1/chat/completions", 200, true, req, body.Bytes())
}

func BenchmarkDecodeStreamedChat4KB(b *testing.B) {
	ev := streamedChatEvent(b)
	b.SetBytes(int64(len(ev.RequestBody) + len(ev.ResponseBody)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Decode(ev); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkKongBatch100(b *testing.B) {
	entry := readFile(b, kongDir+"/ai-3.9-proxy.json")
	var m map[string]any
	if err := json.Unmarshal(entry, &m); err != nil {
		b.Fatal(err)
	}
	entries := make([]any, 100)
	for i := range entries {
		m["request"].(map[string]any)["id"] = fmt.Sprintf("req-%d", i)
		c, _ := json.Marshal(m)
		entries[i] = json.RawMessage(c)
	}
	body, _ := json.Marshal(entries)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		evs, rejs := Kong(body)
		if len(evs) != 100 || len(rejs) != 0 {
			b.Fatalf("%d events %d rejects", len(evs), len(rejs))
		}
	}
}

// BenchmarkKongBatch100Decode is Kong plus Decode of every entry: the whole
// decode cost of one batch.
func BenchmarkKongBatch100Decode(b *testing.B) {
	entry := readFile(b, kongDir+"/ai-3.9-proxy.json")
	body := append(append([]byte("["), bytes.Repeat(append(bytes.TrimSpace(entry), ','), 99)...), bytes.TrimSpace(entry)...)
	body = append(body, ']')
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		evs, _ := Kong(body)
		for _, ev := range evs {
			if _, err := Decode(ev); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// benchDir holds bodies captured from bin/vllm-sim (the server the load
// profiles of llmtap serve run against): a loadgen request with its 16-token
// answer, a ~2 KB multi-turn pair, and a 64-token stream with the usage
// chunk that stream_usage: inject asks for.
const benchDir = "testdata/bench"

// benchProxyEvents are the proxy events of the ingest hot path, by name.
func benchProxyEvents(t testing.TB) []struct {
	Name string
	Ev   event.Event
} {
	f := func(name string) []byte { return readFile(t, benchDir+"/"+name) }
	return []struct {
		Name string
		Ev   event.Event
	}{
		{"chat", proxyEvent("0190f5a0-0000-7000-8000-000000000501", "/v1/chat/completions", 200, false,
			f("chat-request.json"), f("chat-response.json"))},
		{"chat2KB", proxyEvent("0190f5a0-0000-7000-8000-000000000502", "/v1/chat/completions", 200, false,
			f("chat-multiturn-request.json"), f("chat-multiturn-response.json"))},
		{"stream64", func() event.Event {
			ev := proxyEvent("0190f5a0-0000-7000-8000-000000000503", "/v1/chat/completions", 200, true,
				f("chat-stream-request.json"), f("chat-stream-response.sse"))
			ev.UsageInjected = true
			return ev
		}()},
	}
}

// BenchmarkDecodeProxy is Decode of the proxy events llmtap serve handles
// most: non-stream chat completions and a 64-token stream.
func BenchmarkDecodeProxy(b *testing.B) {
	for _, c := range benchProxyEvents(b) {
		b.Run(c.Name, func(b *testing.B) {
			b.SetBytes(int64(len(c.Ev.RequestBody) + len(c.Ev.ResponseBody)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Decode(c.Ev); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestBenchProxyEvents checks that the benchmark events decode to what a
// load run stores (so the benchmarks measure the full extraction).
func TestBenchProxyEvents(t *testing.T) {
	for _, c := range benchProxyEvents(t) {
		rec := mustDecode(t, c.Ev)
		if rec.Endpoint != EndpointChat || rec.Model == "" || rec.Prompt == "" || rec.Response == "" ||
			rec.FinishReason != "length" || rec.UsageSource != "response" || rec.CompletionTokens == nil {
			t.Errorf("%s: incomplete record %s", c.Name, summary(rec))
		}
	}
}
