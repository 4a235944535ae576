package decode

import (
	"bytes"
	"encoding/base64"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/llmtap/llmtap/ingest/event"
	"github.com/llmtap/llmtap/ingest/record"
)

func kongOne(t *testing.T, body string) event.Event {
	t.Helper()
	evs, rejs := Kong([]byte(body))
	if len(rejs) != 0 || len(evs) != 1 {
		t.Fatalf("events=%d rejects=%v", len(evs), rejs)
	}
	return evs[0]
}

func TestKongSingleAndArray(t *testing.T) {
	single := readFile(t, filepath.Join(samplesDir, "kong-http-log-consumer.json"))
	ev := kongOne(t, string(single))
	if ev.Source != event.SourceKong || ev.Consumer != "foo" || ev.Status != 200 || ev.Method != "GET" || ev.Path != "/log" ||
		ev.ClientIP != "192.168.144.1" || ev.LatencyMs != 515 || !ev.Time.Equal(time.UnixMilli(1614232668342)) {
		t.Errorf("event = %+v", ev)
	}
	if ev.TTFBMs == nil || *ev.TTFBMs != 58+457 {
		t.Errorf("TTFBMs = %v, want kong+proxy latency", ev.TTFBMs)
	}
	// The same entry as a batch of one gives the same event.
	evs, rejs := Kong([]byte("[" + string(single) + "]"))
	if len(evs) != 1 || len(rejs) != 0 || evs[0].ID != ev.ID {
		t.Fatalf("batch of one: %d events, %d rejects", len(evs), len(rejs))
	}
	// Re-sent (Kong retry) and re-indented: same id.
	var compact bytes.Buffer
	compact.Write(bytes.Join(bytes.Fields(single), []byte(" ")))
	if ev2 := kongOne(t, compact.String()); ev2.ID != ev.ID {
		t.Errorf("id changed with whitespace: %s vs %s", ev2.ID, ev.ID)
	}
}

func TestKongBatchCounts(t *testing.T) {
	tests := []struct {
		file             string
		entries, rejects int
	}{
		{"batch.json", 3, 1},
		{"broken-batch.json", 3, 1},
	}
	for _, tt := range tests {
		evs, rejs := Kong(readFile(t, filepath.Join(kongDir, tt.file)))
		if len(evs)+len(rejs) != tt.entries || len(rejs) != tt.rejects {
			t.Errorf("%s: %d events + %d rejects, want %d entries with %d rejects", tt.file, len(evs), len(rejs), tt.entries, tt.rejects)
		}
		for _, r := range rejs {
			if r.Source != event.SourceKong || r.Reason == "" || len(r.Payload) == 0 || r.ReceivedAt.IsZero() {
				t.Errorf("%s: bad reject %+v", tt.file, r)
			}
		}
		for _, ev := range evs {
			if _, err := Decode(ev); err != nil {
				t.Errorf("%s: Decode: %v", tt.file, err)
			}
		}
	}
}

func TestKongRejects(t *testing.T) {
	tests := []struct {
		name, body, reason string
		events, rejects    int
	}{
		{"empty", "  ", "empty body", 0, 1},
		{"not json", "hello", "not a JSON object or array", 0, 1},
		{"broken object", `{"request":`, "not valid JSON", 0, 1},
		{"number", `42`, "not a JSON object or array", 0, 1},
		{"missing started_at", `{"request":{"method":"GET"},"response":{"status":200}}`, "started_at missing", 0, 1},
		{"started_at string", `{"request":{},"response":{"status":200},"started_at":"yesterday"}`, "started_at", 0, 1},
		{"status not a number", `{"request":{},"response":{"status":"OK"},"started_at":1}`, "response.status", 0, 1},
		{"status object", `{"request":{},"response":{"status":{}},"started_at":1700000000000}`, "response.status", 0, 1},
		{"absurd started_at", `{"request":{},"started_at":1e300}`, "plausible epoch", 0, 1},
		{"negative started_at", `{"request":{},"started_at":-5}`, "plausible epoch", 0, 1},
		{"no request/response", `{"started_at":1700000000000}`, "neither request nor response", 0, 1},
		{"array with non-object", `[1, {"request":{},"started_at":1700000000000}]`, "entry 0", 1, 1},
		{"empty array", `[]`, "", 0, 0},
		{"unterminated array", `[`, "unterminated array", 0, 1},
		{"unterminated after entry", `[{"request":{},"started_at":1700000000000}`, "unterminated array", 1, 1},
		{"trailing data", `[{"request":{},"started_at":1700000000000}] x`, "trailing data", 1, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			evs, rejs := Kong([]byte(tt.body))
			if len(evs) != tt.events || len(rejs) != tt.rejects {
				t.Fatalf("events=%d rejects=%d (%v)", len(evs), len(rejs), rejs)
			}
			if tt.rejects > 0 && !strings.Contains(rejs[0].Reason, tt.reason) {
				t.Errorf("reason %q lacks %q", rejs[0].Reason, tt.reason)
			}
		})
	}
}

func TestKongLenient(t *testing.T) {
	tests := []struct {
		name   string
		body   string
		check  func(event.Event) bool
		expect string
	}{
		{"numeric string status", `{"request":{},"response":{"status":"404"},"started_at":1700000000000}`,
			func(e event.Event) bool { return e.Status == 404 }, "status 404"},
		{"upstream_status fallback", `{"request":{},"response":{},"upstream_status":"500, 502 : 200","started_at":1700000000000}`,
			func(e event.Event) bool { return e.Status == 200 }, "status 200"},
		{"exponent started_at ms", `{"request":{},"started_at":1.7e+12}`,
			func(e event.Event) bool { return e.Time.Equal(time.UnixMilli(1.7e12)) }, "time from 1.7e+12 ms"},
		{"ns started_at", `{"request":{},"started_at":1.7267838395395e+18}`,
			func(e event.Event) bool { return e.Time.Unix() == 1726783839 }, "time from ns"},
		{"seconds started_at", `{"request":{},"started_at":1700000000.5}`,
			func(e event.Event) bool { return e.Time.Equal(time.UnixMilli(1700000000500)) }, "time from s"},
		{"custom_id consumer", `{"request":{},"started_at":1700000000000,"consumer":{"id":"u1","custom_id":"c1"}}`,
			func(e event.Event) bool { return e.Consumer == "c1" }, "consumer c1"},
		{"id consumer", `{"request":{},"started_at":1700000000000,"consumer":{"id":"u1"}}`,
			func(e event.Event) bool { return e.Consumer == "u1" }, "consumer u1"},
		{"path from url without query", `{"request":{"url":"http://h:8000/openai/v1/chat/completions?apikey=sk-x"},"started_at":1700000000000}`,
			func(e event.Event) bool { return e.Path == "/openai/v1/chat/completions" }, "path without query"},
		{"path from uri without query", `{"request":{"uri":"/v1/embeddings?key=sk-secret"},"started_at":1700000000000}`,
			func(e event.Event) bool { return e.Path == "/v1/embeddings" }, "path without query"},
		{"headers redacted and flattened", `{"request":{"headers":{"apikey":"sk-1","x-api-key":["a","b"],"accept":["a","b"],"x-flag":true}},"started_at":1700000000000}`,
			func(e event.Event) bool {
				h := e.RequestHeaders
				return h["apikey"] == Redacted && h["x-api-key"] == Redacted && h["accept"] == "a, b" && h["x-flag"] == "true"
			}, "redacted headers"},
		{"request id from header", `{"request":{"headers":{"x-kong-request-id":"abc"}},"started_at":1700000000000}`,
			func(e event.Event) bool { return e.RequestID == "abc" && e.ID == DeriveID("kong:abc:1700000000000") }, "request id abc"},
		{"empty querystring object", `{"request":{"querystring":{}},"started_at":1700000000000,"tries":[{"balancer_start_ns":1.7267838395395e+18}]}`,
			func(e event.Event) bool { return true }, "accepted"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if ev := kongOne(t, tt.body); !tt.check(ev) {
				t.Errorf("want %s, got %+v", tt.expect, ev)
			}
		})
	}
}

func TestKongIDs(t *testing.T) {
	a := kongOne(t, `{"request":{"id":"r1"},"started_at":1700000000000}`)
	b := kongOne(t, `{"request":{"id":"r1"},"started_at":1700000000000,"extra":1}`)
	c := kongOne(t, `{"request":{"id":"r2"},"started_at":1700000000000}`)
	if a.ID != b.ID || a.ID == c.ID || !isUUID(a.ID) {
		t.Errorf("request-id ids: %s %s %s", a.ID, b.ID, c.ID)
	}
	// Without a request id, the content decides.
	d := kongOne(t, `{"request":{"method":"GET"},"started_at":1700000000000}`)
	e := kongOne(t, `{ "request": { "method": "GET" }, "started_at": 1700000000000 }`)
	f := kongOne(t, `{"request":{"method":"POST"},"started_at":1700000000000}`)
	if d.ID != e.ID || d.ID == f.ID {
		t.Errorf("content ids: %s %s %s", d.ID, e.ID, f.ID)
	}
}

func TestKongAIShapes(t *testing.T) {
	tests := []struct {
		file        string
		model       string
		p, c, total int64
		usageSource string
		prompt      string
		response    string
		endpoint    string
	}{
		{"ai-3.6.json", "gpt-3.5-turbo-0613", 25, 12, 37, record.UsageKong, "What is 1 + 1?", "", EndpointChat},
		{"ai-3.7-singular.json", "llama3", 28, 20, 48, record.UsageKong, "Name a color.", "Blue.", EndpointChat},
		{"ai-3.8-plural.json", "granite", 4, 7, 11, record.UsageKong, "", "", EndpointCompletions},
		{"ai-3.9-proxy.json", "gpt-4o-2024-08-06", 25, 12, 37, record.UsageResponse, "What is the sum of 1 + 1?", "The sum of 1 + 1 is 2.", EndpointChat},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			ev := kongOne(t, string(readFile(t, filepath.Join(kongDir, tt.file))))
			if ev.Model != tt.model {
				t.Errorf("event model = %q, want %q", ev.Model, tt.model)
			}
			if ev.Usage == nil || !ptrEq(ev.Usage.PromptTokens, &tt.p) || !ptrEq(ev.Usage.CompletionTokens, &tt.c) || !ptrEq(ev.Usage.TotalTokens, &tt.total) {
				t.Fatalf("event usage = %+v", ev.Usage)
			}
			rec := mustDecode(t, ev)
			if rec.UsageSource != tt.usageSource || !ptrEq(rec.PromptTokens, &tt.p) || !ptrEq(rec.TotalTokens, &tt.total) ||
				rec.Prompt != tt.prompt || rec.Response != tt.response || rec.Endpoint != tt.endpoint || rec.Source != event.SourceKong {
				t.Errorf("record %s endpoint=%s", summary(rec), rec.Endpoint)
			}
			if strings.Contains(rec.RequestHeaders, "sk-") {
				t.Errorf("secret leaked: %s", rec.RequestHeaders)
			}
		})
	}
}

func TestKongBody(t *testing.T) {
	b64 := func(s string) string { return `"` + base64.StdEncoding.EncodeToString([]byte(s)) + `"` }
	tests := []struct {
		name, raw string
		want      string
		present   bool
	}{
		{"absent", ``, "", false},
		{"null", `null`, "", false},
		{"empty string", `""`, "", false},
		{"object", `{"a": 1, "b": [1, 2]}`, `{"a":1,"b":[1,2]}`, true},
		{"array", `[1, 2]`, `[1,2]`, true},
		{"json string", `"{\"model\":\"m\"}"`, `{"model":"m"}`, true},
		{"sse string", `"data: {\"a\":1}\n\n"`, "data: {\"a\":1}\n\n", true},
		{"base64 json", b64(`{"model":"m"}`), `{"model":"m"}`, true},
		{"base64 sse", b64("data: [DONE]\n\n"), "data: [DONE]\n\n", true},
		{"raw base64 no padding", `"` + base64.RawStdEncoding.EncodeToString([]byte(`{"a":1}`)) + `"`, `{"a":1}`, true},
		{"plain text", `"hello world"`, "hello world", true},
		{"base64 of binary stays", `"` + base64.StdEncoding.EncodeToString([]byte{0xff, 0xfe, 0x00, 0x01}) + `"`, base64.StdEncoding.EncodeToString([]byte{0xff, 0xfe, 0x00, 0x01}), true},
		{"number", `42`, "42", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := kongBody([]byte(tt.raw))
			if ok != tt.present || string(got) != tt.want {
				t.Errorf("kongBody(%s) = %q,%v want %q,%v", tt.raw, got, ok, tt.want, tt.present)
			}
		})
	}
}

func TestKongGzipResponseBody(t *testing.T) {
	var gz bytes.Buffer
	w := newGzip(&gz)
	w.Write([]byte(`{"model":"m","choices":[{"index":0,"message":{"content":"zipped answer"},"finish_reason":"stop"}]}`))
	w.Close()
	body := `{"request":{"uri":"/v1/chat/completions"},"response":{"status":200,"headers":{"content-encoding":"gzip"},"body":"` +
		base64.StdEncoding.EncodeToString(gz.Bytes()) + `"},"started_at":1700000000000}`
	rec := mustDecode(t, kongOne(t, body))
	if rec.Response != "zipped answer" {
		t.Errorf("response = %q", rec.Response)
	}
}
