package decode

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/llmtap/llmtap/ingest/event"
	"github.com/llmtap/llmtap/ingest/record"
)

// checkRecord asserts the invariants every decoded record keeps.
func checkRecord(t *testing.T, rec record.Record) {
	t.Helper()
	for name, s := range map[string]string{
		"Source": rec.Source, "Consumer": rec.Consumer, "Path": rec.Path, "Model": rec.Model, "Prompt": rec.Prompt,
		"Response": rec.Response, "Reasoning": rec.Reasoning, "ToolCalls": rec.ToolCalls, "FinishReason": rec.FinishReason,
		"Error": rec.Error, "RequestHeaders": rec.RequestHeaders, "ResponseHeaders": rec.ResponseHeaders,
		"RequestBody": rec.RequestBody, "ResponseBody": rec.ResponseBody, "ClientIP": rec.ClientIP, "RequestID": rec.RequestID,
	} {
		if !utf8.ValidString(s) || strings.IndexByte(s, 0) >= 0 {
			t.Fatalf("%s not clean UTF-8: %q", name, s)
		}
	}
	if !isUUID(rec.EventID) {
		t.Fatalf("EventID %q", rec.EventID)
	}
	if rec.UsageSource == "" {
		t.Fatal("empty UsageSource")
	}
}

func addFiles(f *testing.F, dir, glob string, add func([]byte)) {
	paths, _ := filepath.Glob(filepath.Join(dir, glob))
	for _, p := range paths {
		if b, err := os.ReadFile(p); err == nil {
			add(b)
		}
	}
}

func FuzzDecode(f *testing.F) {
	req := []byte(`{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}],"prompt":["a"],"input":"x"}`)
	for _, dir := range []string{samplesDir, sseDir} {
		addFiles(f, dir, "*.sse", func(b []byte) { f.Add("/v1/chat/completions", 200, true, "", req, b) })
		addFiles(f, dir, "*.json", func(b []byte) { f.Add("/v1/chat/completions", 400, false, "", req, b) })
	}
	f.Add("/v1/responses", 200, true, "", req, []byte("event: response.completed\ndata: {\"response\":{\"output\":[{\"type\":\"message\",\"content\":[{\"type\":\"output_text\",\"text\":\"x\"}]}]}}\n\n"))
	f.Add("/v1/completions", 200, false, "gzip", []byte{0x1f, 0x8b, 8, 0}, []byte{0x1f, 0x8b, 8, 0, 1, 2})
	f.Add("/v1/embeddings", 0, false, "br", []byte(`{"input":[1,2]}`), []byte{0xce, 0xb2, 0xcf, 0x81})
	f.Add("/v1/chat/completions", 200, false, "zstd", req, []byte{0x28, 0xb5, 0x2f, 0xfd, 0, 0})
	f.Fuzz(func(t *testing.T, path string, status int, stream bool, enc string, reqBody, respBody []byte) {
		ev := event.Event{ID: "0190f5a0-0000-7000-8000-000000000201", Path: path, Status: status, Stream: stream,
			ResponseEncoding: enc, RequestBody: reqBody, ResponseBody: respBody,
			RequestHeaders: map[string]string{"Authorization": string(reqBody[:min(len(reqBody), 8)])}}
		rec, err := Decode(ev)
		if err != nil {
			t.Fatalf("Decode: %v", err)
		}
		checkRecord(t, rec)
		if len(reqBody) > 0 && rec.RequestHeaders != `{"Authorization":"REDACTED"}` {
			t.Fatalf("authorization not redacted: %s", rec.RequestHeaders)
		}
	})
}

func FuzzKong(f *testing.F) {
	addFiles(f, samplesDir, "kong-*.json", func(b []byte) { f.Add(b) })
	addFiles(f, kongDir, "*.json", func(b []byte) { f.Add(b) })
	f.Add([]byte(`[{"request":{},"started_at":1e300},{"response":{"status":1e999},"started_at":-1}]`))
	f.Add([]byte(`{"request":{"body":"e30="},"response":{"body":{"a":[]}},"ai":{"x":{"usage":{"prompt_token":"3"},"meta":{}}},"started_at":"1700000000000"}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		evs, rejs := Kong(body)
		if len(evs) == 0 && len(rejs) == 0 && len(bytes.TrimSpace(body)) > 0 && !isEmptyArray(body) {
			t.Fatalf("body neither accepted nor rejected: %q", body)
		}
		for _, r := range rejs {
			if r.Reason == "" || r.Source != event.SourceKong {
				t.Fatalf("bad reject %+v", r)
			}
		}
		for _, ev := range evs {
			if ev.Source != event.SourceKong || !isUUID(ev.ID) || ev.Time.IsZero() {
				t.Fatalf("bad event %+v", ev)
			}
			rec, err := Decode(ev)
			if err != nil {
				t.Fatalf("Decode of a Kong event: %v", err)
			}
			checkRecord(t, rec)
		}
	})
}

func isEmptyArray(b []byte) bool {
	t := bytes.TrimSpace(bytes.TrimPrefix(b, []byte("\xEF\xBB\xBF")))
	if len(t) < 2 || t[0] != '[' {
		return false
	}
	return len(bytes.TrimSpace(t[1:len(t)-1])) == 0 && t[len(t)-1] == ']'
}

func FuzzNDJSON(f *testing.F) {
	f.Add([]byte(`{"event_id":"0190f5a0-0000-7000-8000-000000000301","ts":"2026-01-01T00:00:00Z","source":"proxy","request_body":"e30=","response_body":"ZGF0YTogW0RPTkVdCgo="}`+"\n"), 0)
	f.Add([]byte("garbage\n\n{}\r\n{\"ts\":\"x\"}"), 16)
	f.Add([]byte(`{"source":"kong","status":"x"}`), 5)
	f.Fuzz(func(t *testing.T, body []byte, maxLine int) {
		if maxLine < 0 || maxLine > 1<<20 {
			maxLine = 0
		}
		evs, rejs, err := NDJSON(bytes.NewReader(body), maxLine)
		if err != nil {
			t.Fatalf("NDJSON: %v", err)
		}
		limit := maxLine
		if limit == 0 {
			limit = DefaultMaxLine
		}
		nonEmpty := 0
		for _, l := range bytes.Split(body, []byte("\n")) {
			if len(bytes.TrimSpace(l)) > 0 || len(l) > limit {
				nonEmpty++
			}
		}
		if len(evs)+len(rejs) != nonEmpty {
			t.Fatalf("%d events + %d rejects for %d non-empty lines", len(evs), len(rejs), nonEmpty)
		}
		for _, ev := range evs {
			if rec, err := Decode(ev); err == nil {
				checkRecord(t, rec)
			}
		}
	})
}

// FuzzScanChunk checks the hot-path scanner against encoding/json: whenever
// the scanner accepts a chunk, the input is valid JSON and encoding/json
// reads the same values.
func FuzzScanChunk(f *testing.F) {
	for _, dir := range []string{samplesDir, sseDir} {
		for _, glob := range []string{"*.sse"} {
			addFiles(f, dir, glob, func(b []byte) {
				for _, line := range bytes.Split(b, []byte("\n")) {
					if d, ok := bytes.CutPrefix(line, []byte("data: ")); ok {
						f.Add(d)
					}
				}
			})
		}
	}
	f.Add([]byte(`{"choices":[{"delta":{"content":"\u00e9\ud83d\ude00\\\/\n"}}],"usage":{"prompt_tokens":1}}`))
	f.Add([]byte(`{"Model":"x","choices":null,"usage":null,"error":null}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		v, ok := scanChunk(data)
		if !ok {
			return
		}
		if !json.Valid(data) {
			t.Fatalf("scanner accepted invalid JSON %q", data)
		}
		w, ok := viewChunkJSON(data)
		if !ok {
			t.Fatalf("encoding/json rejects what the scanner read: %q", data)
		}
		if !reflect.DeepEqual(normView(v), normView(w)) {
			t.Fatalf("views differ for %q:\nscan %+v\njson %+v", data, normView(v), normView(w))
		}
	})
}

// normView makes views comparable (pointer identity and nil vs empty).
func normView(v chunkView) string {
	var b strings.Builder
	p := func(s *string) string {
		if s == nil {
			return "<nil>"
		}
		return strconv.Quote(*s)
	}
	fmt.Fprintf(&b, "model=%q err=%q usage=%s/%s/%s empty=%v\n", v.model, v.errMsg, fmtPtr(v.usage.prompt), fmtPtr(v.usage.completion), fmtPtr(v.usage.total), v.emptyChoices)
	for _, c := range v.choices {
		fmt.Fprintf(&b, "choice %d text=%s content=%s rc=%s r=%s finish=%q\n", c.index, p(c.text), p(c.content), p(c.reasoningContent), p(c.reasonin), c.finish)
		for _, td := range c.toolCalls {
			fmt.Fprintf(&b, "  tool %d %q %q %q %q\n", td.index, td.id, td.typ, td.name, td.arguments)
		}
	}
	return b.String()
}

// FuzzScanObj checks scanObj against encoding/json's map decoding.
func FuzzScanObj(f *testing.F) {
	addFiles(f, samplesDir, "*.json", func(b []byte) { f.Add(b) })
	addFiles(f, kongDir, "*.json", func(b []byte) { f.Add(b) })
	f.Add([]byte(`{"a":"\u00e9\ud83d\ude00","b":[1,2.5e3,-0,{"c":null}],"a":true}`))
	f.Add([]byte(`[]`))
	f.Add([]byte(`[{"a":1}, "x\u0041", [null]]`))
	f.Add([]byte(`"a\"b\u00e9"`))
	f.Fuzz(func(t *testing.T, data []byte) {
		if a, ok := scanArray(data); ok {
			var w []json.RawMessage
			if err := json.Unmarshal(data, &w); err != nil {
				t.Fatalf("encoding/json rejects the array the scanner read: %q: %v", data, err)
			}
			if a == nil || len(a) != len(w) {
				t.Fatalf("array: %d vs %d elements (nil=%v)", len(a), len(w), a == nil)
			}
			for i := range w {
				if !bytes.Equal(a[i], w[i]) {
					t.Fatalf("element %d: %q vs %q", i, a[i], w[i])
				}
			}
		}
		sc := scanner{b: data}
		if v, ok := sc.str(); ok && sc.i == len(data) {
			var w string
			if err := json.Unmarshal(data, &w); err != nil || w != v {
				t.Fatalf("string %q: scanner %q, encoding/json %q (%v)", data, v, w, err)
			}
		}
		o, ok := scanObj(data)
		if !ok {
			return
		}
		var w map[string]json.RawMessage
		if err := json.Unmarshal(data, &w); err != nil {
			t.Fatalf("encoding/json rejects what the scanner read: %q: %v", data, err)
		}
		if len(o) != len(w) {
			t.Fatalf("keys differ: %d vs %d for %q", len(o), len(w), data)
		}
		for k, v := range w {
			if !bytes.Equal(o[k], v) {
				t.Fatalf("key %q: %q vs %q", k, o[k], v)
			}
		}
	})
}
