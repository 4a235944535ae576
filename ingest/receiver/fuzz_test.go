package receiver

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/llmtap/llmtap/ingest/event"
	"github.com/llmtap/llmtap/ingest/pipeline"
	"github.com/llmtap/llmtap/ingest/record"
)

// countSink is an in-memory Ingester (like OTel's consumertest sink): it
// acknowledges everything and remembers how much it got. The fuzz target
// checks the HTTP layer, not the store.
type countSink struct{ events, rejects int }

func (s *countSink) Ingest(_ context.Context, evs []event.Event, rj []record.Reject) (pipeline.Result, error) {
	s.events, s.rejects = len(evs), len(rj)
	errs := []string{}
	for _, r := range rj {
		errs = append(errs, r.Reason)
	}
	return pipeline.Result{Accepted: len(evs), Rejected: len(rj), Errors: errs}, nil
}

func (s *countSink) Ready(context.Context) error { return nil }

func gzipped(b []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	_, _ = zw.Write(b)
	_ = zw.Close()
	return buf.Bytes()
}

// FuzzHandler posts arbitrary bodies to both routes, plain and gzip: the
// reply is always JSON with 200, 400 or 413, and a 200 accounts for every
// entry (NDJSON: one per non-blank line; Kong: at least one unless the
// body is a valid empty batch).
func FuzzHandler(f *testing.F) {
	samples, _ := filepath.Glob(filepath.Join("..", "..", "testdata", "samples", "kong-*.json"))
	for _, s := range samples {
		b, err := os.ReadFile(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, false, true)
		f.Add(append(append([]byte("["), b...), ']'), true, true)
	}
	ev, _ := json.Marshal(event.Event{ID: "0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", Source: "proxy", Status: 200,
		Path: "/v1/chat/completions", RequestBody: []byte(`{"messages":[{"role":"user","content":"hi"}]}`)})
	f.Add(append(append(ev, '\n'), ev...), false, false)
	f.Add(append(append(ev, "\n{bad\n\n"...), ev...), true, false)
	f.Add([]byte(""), false, false)
	f.Add([]byte("\x1f\x8b\x08\x00"), false, true)
	f.Add([]byte("[{},1,\"x\",null]"), false, true)

	r := New(Config{MaxBodyBytes: 1 << 20, MaxLineBytes: 64 << 10}, nil, nil)
	f.Fuzz(func(t *testing.T, body []byte, gz, kong bool) {
		sink := &countSink{}
		r.ing = sink
		path := "/v1/events"
		if kong {
			path = "/v1/kong"
		}
		sent := body
		if gz {
			sent = gzipped(body)
		}
		req := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(sent))
		if gz {
			req.Header.Set("Content-Encoding", "gzip")
		}
		rec := httptest.NewRecorder()
		r.Handler().ServeHTTP(rec, req)

		var reply struct {
			Accepted int      `json:"accepted"`
			Rejected int      `json:"rejected"`
			Errors   []string `json:"errors"`
			Error    string   `json:"error"`
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &reply); err != nil {
			t.Fatalf("reply %q is not JSON: %v", rec.Body.String(), err)
		}
		switch rec.Code {
		case http.StatusOK:
		case http.StatusBadRequest, http.StatusRequestEntityTooLarge:
			if reply.Error == "" {
				t.Fatalf("status %d without error message", rec.Code)
			}
			return
		default:
			t.Fatalf("status %d (%s)", rec.Code, rec.Body.String())
		}
		if reply.Accepted != sink.events || reply.Rejected != sink.rejects || reply.Errors == nil {
			t.Fatalf("reply %+v does not match what was ingested (%d, %d)", reply, sink.events, sink.rejects)
		}
		entries := reply.Accepted + reply.Rejected
		if kong {
			// Nothing may vanish: a body that is not valid JSON is at least
			// one reject ("[]" is a valid, empty batch).
			if entries == 0 && !json.Valid(bytes.TrimSpace(body)) {
				t.Fatalf("kong body %.100q produced neither events nor rejects", body)
			}
			return
		}
		lines := 0
		for _, l := range bytes.Split(body, []byte("\n")) {
			if len(bytes.TrimSpace(l)) > 0 {
				lines++
			}
		}
		if entries != lines {
			t.Fatalf("%d non-blank lines gave %d entries", lines, entries)
		}
	})
}
