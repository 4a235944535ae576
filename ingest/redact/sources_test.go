package redact

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/llmtap/llmtap/ingest/decode"
	"github.com/llmtap/llmtap/ingest/event"
	"github.com/llmtap/llmtap/ingest/record"
)

// Canary secrets planted in every source; none may reach a stored field.
const (
	canaryKey    = "sk-CanaryCanaryCanaryCanaryCanaryCanaryCanary0123" // sk- + 48
	canaryEmail  = "canary.person@example.org"
	canaryCard   = "4111 1111 1111 1111"
	canaryBearer = "canaryBearerToken0123456789"
	canaryAWS    = "AKIACANARY0123456789"
)

var canaries = []string{canaryKey, canaryEmail, canaryCard, canaryBearer, canaryAWS,
	"4111111111111111", "canary.person", "CanaryCanary"}

func chatRequest(stream bool) string {
	b, _ := json.Marshal(map[string]any{
		"model":  "llama-3-8b",
		"stream": stream,
		"messages": []map[string]string{
			{"role": "system", "content": "You are helpful. Internal AWS id " + canaryAWS},
			{"role": "user", "content": "My key is " + canaryKey + " and my card " + canaryCard + ", call with Bearer " + canaryBearer},
		},
	})
	return string(b)
}

func chatResponse() string {
	b, _ := json.Marshal(map[string]any{
		"id": "chatcmpl-1", "object": "chat.completion", "model": "llama-3-8b",
		"choices": []map[string]any{{
			"index": 0, "finish_reason": "stop",
			"message": map[string]any{
				"role": "assistant", "content": "Sure, mail me at " + canaryEmail + ".",
				"reasoning_content": "The user shared " + canaryEmail,
			},
		}},
		"usage": map[string]int{"prompt_tokens": 30, "completion_tokens": 9, "total_tokens": 39},
	})
	return string(b)
}

// streamResponse splits the email across two chunks, as tokenizers do.
func streamResponse() string {
	at := strings.Index(canaryEmail, "@")
	chunk := func(s string) string {
		b, _ := json.Marshal(map[string]any{"choices": []map[string]any{{"index": 0, "delta": map[string]string{"content": s}}}})
		return "data: " + string(b) + "\n\n"
	}
	return chunk("Sure, mail me at "+canaryEmail[:at+3]) + chunk(canaryEmail[at+3:]+".") +
		`data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":{"prompt_tokens":30,"completion_tokens":9,"total_tokens":39}}` + "\n\n" +
		"data: [DONE]\n\n"
}

func gz(t testing.TB, s string) []byte {
	var b bytes.Buffer
	w := gzip.NewWriter(&b)
	if _, err := w.Write([]byte(s)); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// proxyEvents returns proxy events as they travel: NDJSON with base64
// bodies, decoded by decode.NDJSON.
func proxyEvents(t testing.TB) []event.Event {
	t.Helper()
	now := time.Now().UTC().Truncate(time.Millisecond)
	evs := []event.Event{
		{
			ID: "01937b6e-0000-7000-8000-0000000000a1", Time: now, Source: event.SourceProxy,
			Consumer: "bob", KeyID: "k1", KeyPrefix: "sk-Canary", Method: "POST", Path: "/v1/chat/completions",
			Status: 200, LatencyMs: 12,
			RequestHeaders:   map[string]string{"authorization": "Bearer " + canaryKey, "x-trace": "Bearer " + canaryBearer},
			ResponseHeaders:  map[string]string{"content-type": "application/json", "content-encoding": "gzip"},
			RequestBody:      []byte(chatRequest(false)),
			ResponseBody:     gz(t, chatResponse()),
			ResponseEncoding: "gzip",
		},
		{
			ID: "01937b6e-0000-7000-8000-0000000000a2", Time: now, Source: event.SourceProxy,
			Consumer: "bob", Method: "POST", Path: "/v1/chat/completions", Status: 200, Stream: true, LatencyMs: 30,
			RequestBody:  []byte(chatRequest(true)),
			ResponseBody: []byte(streamResponse()),
		},
		{
			ID: "01937b6e-0000-7000-8000-0000000000a3", Time: now, Source: event.SourceProxy,
			Consumer: "alice", Method: "POST", Path: "/v1/chat/completions", Status: 200, LatencyMs: 12,
			RequestBody:  []byte(chatRequest(false)),
			ResponseBody: []byte(chatResponse()),
		},
		{
			ID: "01937b6e-0000-7000-8000-0000000000a4", Time: now, Source: event.SourceProxy,
			Consumer: "bob", Method: "POST", Path: "/v1/chat/completions", Status: 502, LatencyMs: 3,
			RequestBody: []byte(chatRequest(false)),
			Error:       "upstream https://llm.internal/v1?key=" + canaryKey + " refused for " + canaryEmail,
		},
	}
	var nd bytes.Buffer
	for _, ev := range evs {
		b, err := json.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(b, []byte(`"request_body":"ey`)) { // base64 of `{"`
			t.Fatalf("request body not base64 on the wire: %s", b)
		}
		nd.Write(b)
		nd.WriteByte('\n')
	}
	out, rejects, err := decode.NDJSON(&nd, 0)
	if err != nil || len(rejects) != 0 || len(out) != len(evs) {
		t.Fatalf("NDJSON: %d events, rejects %v, err %v", len(out), rejects, err)
	}
	return out
}

// kongBody returns a Kong http-log batch with the same secrets: bodies as
// JSON objects, as a JSON string, and the AI plugin's payload.
func kongBody(t testing.TB) []byte {
	t.Helper()
	var req, resp any
	if err := json.Unmarshal([]byte(chatRequest(false)), &req); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(chatResponse()), &resp); err != nil {
		t.Fatal(err)
	}
	entry := func(id, consumer string, reqBody, respBody any) map[string]any {
		return map[string]any{
			"request": map[string]any{
				"id": id, "method": "POST", "uri": "/openai/v1/chat/completions",
				"url":     "https://kong:8443/openai/v1/chat/completions",
				"headers": map[string]any{"content-type": "application/json", "apikey": canaryKey, "x-forwarded-auth": "Bearer " + canaryBearer},
				"body":    reqBody,
			},
			"response": map[string]any{
				"status":  200,
				"headers": map[string]any{"content-type": "application/json"},
				"body":    respBody,
			},
			"latencies":  map[string]any{"kong": 2, "proxy": 40, "request": 42},
			"consumer":   map[string]any{"username": consumer},
			"client_ip":  "10.0.0.7",
			"started_at": 1718000003000,
		}
	}
	entries := []any{
		entry("c0ffee00000000000000000000000001", "bob", req, resp),
		entry("c0ffee00000000000000000000000002", "bob", chatRequest(false), chatResponse()),
		entry("c0ffee00000000000000000000000003", "alice", req, resp),
	}
	b, err := json.Marshal(entries)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func kongEvents(t testing.TB) []event.Event {
	t.Helper()
	evs, rejects := decode.Kong(kongBody(t))
	if len(rejects) != 0 || len(evs) != 3 {
		t.Fatalf("Kong: %d events, rejects %v", len(evs), rejects)
	}
	return evs
}

// TestKongAndProxyAlike runs proxy events and Kong entries carrying the same
// secrets through r.Decoder(decode.Decode): no canary survives in any field,
// the extracted text is still there (redacted), and store_bodies: false
// drops alice's bodies from both sources.
func TestKongAndProxyAlike(t *testing.T) {
	r := mustNew(t, Config{NoBodies: []string{"alice"}})
	dec := r.Decoder(decode.Decode)
	for _, src := range []struct {
		name string
		evs  []event.Event
	}{{"proxy", proxyEvents(t)}, {"kong", kongEvents(t)}} {
		t.Run(src.name, func(t *testing.T) {
			for _, ev := range src.evs {
				// Without redaction the canaries are there: the test can fail.
				raw, err := decode.Decode(ev)
				if err != nil {
					t.Fatal(err)
				}
				if !strings.Contains(raw.Prompt, canaryKey) || !strings.Contains(raw.RequestBody, canaryKey) {
					t.Fatalf("%s: decode did not extract the prompt: %q", ev.ID, raw.Prompt)
				}

				rec, err := dec(ev)
				if err != nil {
					t.Fatal(err)
				}
				assertNoCanary(t, rec)
				if !strings.Contains(rec.Prompt, "My key is [REDACTED:api_key] and my card [REDACTED:card_number], call with Bearer [REDACTED:bearer_token]") {
					t.Errorf("%s prompt: %q", rec.EventID, rec.Prompt)
				}
				if rec.Status == 200 && rec.Response != "Sure, mail me at [REDACTED:email]." {
					t.Errorf("%s response: %q", rec.EventID, rec.Response)
				}
				switch {
				case rec.Consumer == "alice":
					if rec.RequestBody != "" || rec.ResponseBody != "" {
						t.Errorf("%s: alice's bodies stored", rec.EventID)
					}
				case rec.Stream:
					// The email is split across chunks: the response body is withheld.
					if rec.ResponseBody != "" || rec.RequestBody == "" {
						t.Errorf("%s: stream bodies req=%d resp=%d bytes", rec.EventID, len(rec.RequestBody), len(rec.ResponseBody))
					}
				default:
					if rec.RequestBody == "" || (rec.Status == 200 && rec.ResponseBody == "") {
						t.Errorf("%s: bob's bodies dropped", rec.EventID)
					}
				}
				for name, f := range map[string]string{"request_body": rec.RequestBody, "response_body": rec.ResponseBody,
					"request_headers": rec.RequestHeaders, "response_headers": rec.ResponseHeaders, "tool_calls": rec.ToolCalls} {
					if f != "" && !json.Valid([]byte(f)) {
						t.Errorf("%s %s: invalid JSON after redaction: %s", rec.EventID, name, f)
					}
				}
			}
		})
	}
}

func assertNoCanary(t *testing.T, rec record.Record) {
	t.Helper()
	b, err := json.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range canaries {
		if bytes.Contains(b, []byte(c)) {
			t.Errorf("%s: canary %q survived: %s", rec.EventID, c, b)
		}
	}
}
