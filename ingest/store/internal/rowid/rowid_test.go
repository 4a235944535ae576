package rowid

import (
	"testing"
	"time"

	"github.com/llmtap/llmtap/ingest/record"
)

func TestReject(t *testing.T) {
	a := record.Reject{ReceivedAt: time.Unix(1, 0), Source: "kong", Reason: "bad", Payload: []byte("x")}
	b := a
	b.ReceivedAt = time.Unix(2, 0) // a retry, received later
	if Reject(a) != Reject(b) {
		t.Error("id depends on ReceivedAt")
	}
	for _, c := range []record.Reject{
		{Source: "proxy", Reason: "bad", Payload: []byte("x")},
		{Source: "kong", Reason: "bad2", Payload: []byte("x")},
		{Source: "kong", Reason: "bad", Payload: []byte("y")},
		{Source: "kong", Reason: "ba", Payload: []byte("dx")}, // no ambiguity across field boundaries
	} {
		if Reject(c) == Reject(a) {
			t.Errorf("%+v has the same id as %+v", c, a)
		}
	}
	if v := Reject(a).Version(); v != 8 {
		t.Errorf("version %d, want 8", v)
	}
}

func TestEvent(t *testing.T) {
	r := record.Record{EventID: "0192f0c1-7a4b-7cde-8f00-0123456789ab"}
	if _, err := Event(&r); err != nil {
		t.Fatal(err)
	}
	r.EventID = "nope"
	if _, err := Event(&r); err == nil {
		t.Fatal("accepted a non-UUID")
	}
}
