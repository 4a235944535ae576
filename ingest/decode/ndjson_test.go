package decode

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/llmtap/llmtap/ingest/event"
)

func eventLine(t *testing.T, ev event.Event) string {
	b, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestNDJSON(t *testing.T) {
	ev1 := proxyEvent("0190f5a0-0000-7000-8000-000000000101", "/v1/chat/completions", 200, true, []byte(`{"a":1}`), []byte("data: x\n\n\x00\xff"))
	ev2 := event.Event{ID: "0190f5a0-0000-7000-8000-000000000102", Time: t0, Source: "gateway-x", Path: "/v1/models"}
	l1, l2 := eventLine(t, ev1), eventLine(t, ev2)
	body := l1 + "\n\n   \n" + `{"event_id":"x","source":"kong","ts":"not a time"}` + "\r\n" + "garbage\n" + l2 + "\r\n" + `{"ts":1}`
	evs, rejs, err := NDJSON(strings.NewReader(body), 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 2 || len(rejs) != 3 {
		t.Fatalf("events=%d rejects=%d", len(evs), len(rejs))
	}
	if !bytes.Equal(evs[0].ResponseBody, ev1.ResponseBody) || evs[0].ID != ev1.ID || !evs[0].Time.Equal(t0) || evs[1].Source != "gateway-x" {
		t.Errorf("events not round-tripped: %+v", evs[0])
	}
	wants := []struct{ line, source, payload string }{
		{"line 4:", "kong", `{"event_id":"x","source":"kong","ts":"not a time"}`},
		{"line 5:", "proxy", "garbage"},
		{"line 7:", "proxy", `{"ts":1}`},
	}
	for i, w := range wants {
		r := rejs[i]
		if !strings.HasPrefix(r.Reason, w.line) || r.Source != w.source || string(r.Payload) != w.payload || r.ReceivedAt.IsZero() {
			t.Errorf("reject %d = %q %q %q", i, r.Reason, r.Source, r.Payload)
		}
	}
}

func TestNDJSONLongLine(t *testing.T) {
	ok := eventLine(t, event.Event{ID: "0190f5a0-0000-7000-8000-000000000103", Time: t0})
	long := `{"source":"proxy","x":"` + strings.Repeat("a", 300000) + `"}`
	body := ok + "\n" + long + "\n" + ok + "\n"
	evs, rejs, err := NDJSON(strings.NewReader(body), 1000)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 2 || len(rejs) != 1 {
		t.Fatalf("events=%d rejects=%d", len(evs), len(rejs))
	}
	if !strings.Contains(rejs[0].Reason, "line 2") || len(rejs[0].Payload) != 1000 || !strings.HasPrefix(long, string(rejs[0].Payload)) {
		t.Errorf("reject = %q, %d bytes", rejs[0].Reason, len(rejs[0].Payload))
	}
	// A line of exactly maxLine bytes is fine.
	evs, rejs, _ = NDJSON(strings.NewReader(ok+"\n"), len(ok))
	if len(evs) != 1 || len(rejs) != 0 {
		t.Errorf("exact-size line: events=%d rejects=%d", len(evs), len(rejs))
	}
}

type failingReader struct{ r io.Reader }

func (f failingReader) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if err == io.EOF {
		return n, errors.New("connection reset")
	}
	return n, err
}

func TestNDJSONReadError(t *testing.T) {
	ok := eventLine(t, event.Event{ID: "0190f5a0-0000-7000-8000-000000000104", Time: t0})
	evs, _, err := NDJSON(failingReader{strings.NewReader(ok + "\n" + ok)}, 0)
	if err == nil || !strings.Contains(err.Error(), "connection reset") {
		t.Fatalf("err = %v", err)
	}
	if len(evs) != 1 {
		t.Errorf("events before the error: %d", len(evs))
	}
}
