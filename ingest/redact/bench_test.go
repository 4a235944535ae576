package redact

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/llmtap/llmtap/ingest/decode"
	"github.com/llmtap/llmtap/ingest/event"
	"github.com/llmtap/llmtap/ingest/record"
)

// chatRecord returns a decoded chat record of about 4 KB of text (bodies,
// prompt, response, headers); with secrets, the user's message carries a
// key, an email and a card number, and the answer an email.
func chatRecord(secrets bool) record.Record {
	words := strings.Fields(`The quarterly report shows revenue of 4,210 units across 12 regions, with
		growth in 7 of them. Please summarise the main drivers, compare them to last year's figures
		(2023: 3,870 units), and list three risks for the next quarter in plain language.`)
	var b strings.Builder
	for i := 0; b.Len() < 2400; i++ {
		b.WriteString(words[i%len(words)])
		b.WriteByte(' ')
	}
	history := b.String()
	user := "Can you help me draft the summary? Thanks!"
	answer := "Here is a draft summary: revenue grew by 8.8% year over year, driven mainly by the northern regions. " +
		"Risks: supply delays, pricing pressure and currency effects. Let me know if you want more detail."
	if secrets {
		user = "Use my key " + llmtapKey + " and bill card 4111 1111 1111 1111, send it to jane.doe@example.com."
		answer += " I will send it to jane.doe@example.com."
	}
	req, _ := json.Marshal(map[string]any{
		"model": "llama-3-8b-instruct", "temperature": 0.2, "max_tokens": 512,
		"messages": []map[string]string{
			{"role": "system", "content": "You are a careful financial analyst."},
			{"role": "user", "content": history},
			{"role": "assistant", "content": answer},
			{"role": "user", "content": user},
		},
	})
	resp, _ := json.Marshal(map[string]any{
		"id": "chatcmpl-8f14e45fceea167a5a36dedd4bea2543", "object": "chat.completion", "created": 1718000003,
		"model": "llama-3-8b-instruct",
		"choices": []map[string]any{{"index": 0, "finish_reason": "stop",
			"message": map[string]string{"role": "assistant", "content": answer}}},
		"usage": map[string]int{"prompt_tokens": 412, "completion_tokens": 61, "total_tokens": 473},
	})
	return record.Record{
		EventID: "01937b6e-0000-7000-8000-000000000001", Consumer: "bob", Path: "/v1/chat/completions",
		Prompt: user, Response: answer, FinishReason: "stop",
		RequestHeaders:  `{"authorization":"REDACTED","content-type":"application/json","user-agent":"openai-python/1.40.0","x-request-id":"5f2b9c1e"}`,
		ResponseHeaders: `{"content-type":"application/json","date":"Mon, 10 Jun 2024 06:13:23 GMT","x-request-id":"5f2b9c1e"}`,
		RequestBody:     string(req),
		ResponseBody:    string(resp),
	}
}

func recordBytes(r record.Record) int64 {
	return int64(len(r.Prompt) + len(r.Response) + len(r.Reasoning) + len(r.ToolCalls) + len(r.Error) + len(r.Path) +
		len(r.RequestHeaders) + len(r.ResponseHeaders) + len(r.RequestBody) + len(r.ResponseBody))
}

// BenchmarkApply measures Apply on a 4 KB chat record, without and with
// secrets, and on 1 MiB bodies: an embeddings response (floats) and a
// request carrying a base64 image.
func BenchmarkApply(b *testing.B) {
	r := mustNew(b, DefaultConfig())
	rng := rand.New(rand.NewPCG(1, 2))
	var emb strings.Builder
	emb.WriteString(`{"object":"list","data":[{"object":"embedding","index":0,"embedding":[`)
	for emb.Len() < 1<<20 {
		fmt.Fprintf(&emb, "%.17f,", rng.Float64()-0.5)
	}
	emb.WriteString(`0]}],"model":"e5","usage":{"prompt_tokens":8,"total_tokens":8}}`)
	img := make([]byte, 3<<18)
	for i := range img {
		img[i] = byte(rng.Uint32())
	}
	image := `{"model":"llava","messages":[{"role":"user","content":[{"type":"text","text":"What is this?"},` +
		`{"type":"image_url","image_url":{"url":"data:image/png;base64,` + base64.StdEncoding.EncodeToString(img) + `"}}]}]}`

	cases := []struct {
		name string
		rec  record.Record
	}{
		{"chat4KB/clean", chatRecord(false)},
		{"chat4KB/secrets", chatRecord(true)},
		{"embeddings1MB", record.Record{Prompt: "hello", RequestBody: `{"input":"hello","model":"e5"}`, ResponseBody: emb.String()}},
		{"image1MB", record.Record{Prompt: "What is this?", RequestBody: image, ResponseBody: `{"choices":[{"message":{"content":"A cat."}}]}`}},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(recordBytes(c.rec))
			b.ReportAllocs()
			for b.Loop() {
				rec := c.rec
				r.Apply(&rec)
			}
		})
	}
}

func TestBenchRecords(t *testing.T) {
	r := mustNew(t, DefaultConfig())
	clean, secret := chatRecord(false), chatRecord(true)
	if n := recordBytes(clean); n < 3500 || n > 5000 {
		t.Errorf("clean record is %d bytes, want about 4 KB", n)
	}
	c := clean
	r.Apply(&c)
	if c != clean {
		t.Errorf("clean record changed: %+v", c)
	}
	s := secret
	r.Apply(&s)
	assertNoSecrets(t, s, []string{llmtapKey, "4111 1111 1111 1111", "jane.doe@example.com"})
	if s.RequestBody == "" || s.ResponseBody == "" {
		t.Error("bodies dropped")
	}
}

// BenchmarkAdversarial measures 1 MiB bodies dense with anchors, which a
// client controls: each must stay linear (one regexp pass at worst).
func BenchmarkAdversarial(b *testing.B) {
	r := mustNew(b, DefaultConfig())
	for _, unit := range []string{"ask-", "@", "a@", "key", "?key=", "Bearer ", "eyJ", "1 ", `\`} {
		s := strings.Repeat(unit, (1<<20)/len(unit))
		b.Run(fmt.Sprintf("%q", unit), func(b *testing.B) {
			b.SetBytes(int64(len(s)))
			for b.Loop() {
				r.redact(s, true, new([nKinds]int))
			}
		})
	}
}

// proxyBenchEvents are the proxy events of BenchmarkDecodeProxy in
// ingest/decode (bodies captured from bin/vllm-sim): a loadgen chat request
// with its 16-token answer, a ~2 KB multi-turn pair and a 64-token stream
// with its usage chunk.
func proxyBenchEvents(t testing.TB) []struct {
	name string
	ev   event.Event
} {
	const dir = "../decode/testdata/bench/"
	f := func(name string) []byte {
		b, err := os.ReadFile(dir + name)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	ev := func(n int, stream bool, req, resp string) event.Event {
		ct := "application/json"
		if stream {
			ct = "text/event-stream; charset=utf-8"
		}
		return event.Event{
			ID: fmt.Sprintf("0190f5a0-0000-7000-8000-%012d", 600+n), Time: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC),
			Source: event.SourceProxy, Consumer: "alice", KeyID: "k_01", KeyPrefix: "sk-llt-ab", ClientIP: "127.0.0.1",
			Method: "POST", Path: "/v1/chat/completions", RequestID: "req-0190f5a0", Status: 200, Stream: stream,
			LatencyMs: 1234.5,
			RequestHeaders: map[string]string{"Content-Type": "application/json", "Authorization": "Bearer sk-llt-secret",
				"User-Agent": "OpenAI/Python 1.99.0"},
			ResponseHeaders: map[string]string{"Content-Type": ct, "Server": "uvicorn"},
			RequestBody:     f(req), ResponseBody: f(resp), UsageInjected: stream,
		}
	}
	return []struct {
		name string
		ev   event.Event
	}{
		{"chat", ev(1, false, "chat-request.json", "chat-response.json")},
		{"chat2KB", ev(2, false, "chat-multiturn-request.json", "chat-multiturn-response.json")},
		{"stream64", ev(3, true, "chat-stream-request.json", "chat-stream-response.sse")},
	}
}

// BenchmarkApplyProxy is Apply with the default builtins on the records
// decode.Decode makes of the proxy events llmtap serve handles most.
func BenchmarkApplyProxy(b *testing.B) {
	r := mustNew(b, DefaultConfig())
	for _, c := range proxyBenchEvents(b) {
		rec, err := decode.Decode(c.ev)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(recordBytes(rec))
			b.ReportAllocs()
			for b.Loop() {
				x := rec
				r.Apply(&x)
			}
		})
	}
}

// BenchmarkDecodeApplyProxy is the whole per-event decode cost of ingest:
// decode.Decode followed by Apply (Redactor.Decoder).
func BenchmarkDecodeApplyProxy(b *testing.B) {
	dec := mustNew(b, DefaultConfig()).Decoder(decode.Decode)
	for _, c := range proxyBenchEvents(b) {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(int64(len(c.ev.RequestBody) + len(c.ev.ResponseBody)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := dec(c.ev); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// The benchmark records are clean: Apply must leave them as they are.
func TestProxyBenchRecordsClean(t *testing.T) {
	r := mustNew(t, DefaultConfig())
	for _, c := range proxyBenchEvents(t) {
		rec, err := decode.Decode(c.ev)
		if err != nil {
			t.Fatal(err)
		}
		x := rec
		r.Apply(&x)
		if x != rec {
			t.Errorf("%s: record changed by Apply", c.name)
		}
	}
}
