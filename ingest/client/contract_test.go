package client_test

import (
	"bytes"
	"context"
	"errors"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/llmtap/llmtap/ingest/client"
	"github.com/llmtap/llmtap/ingest/event"
	"github.com/llmtap/llmtap/ingest/pipeline"
	"github.com/llmtap/llmtap/ingest/receiver"
	"github.com/llmtap/llmtap/ingest/record"
	"github.com/llmtap/llmtap/ingest/store"
)

// ingester stands in for the pipeline behind the real receiver: it keeps
// what it is given, or fails like an unavailable store.
type ingester struct {
	mu      sync.Mutex
	events  []event.Event
	rejects []record.Reject
	down    atomic.Bool
}

func (g *ingester) Ingest(_ context.Context, evs []event.Event, rejects []record.Reject) (pipeline.Result, error) {
	if g.down.Load() {
		return pipeline.Result{}, store.ErrUnavailable
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.events = append(g.events, evs...)
	g.rejects = append(g.rejects, rejects...)
	return pipeline.Result{Accepted: len(evs), Rejected: len(rejects)}, nil
}

func (g *ingester) Ready(context.Context) error { return nil }

// TestContractWithReceiver runs the client against ingest's real receiver
// (ingest/receiver) over loopback HTTP.
func TestContractWithReceiver(t *testing.T) {
	g := &ingester{}
	rcfg := receiver.DefaultConfig()
	rcfg.Token = "contract-token"
	rcfg.RetryAfter = 3 * time.Second
	srv := httptest.NewServer(receiver.New(rcfg, g, nil).Handler())
	defer srv.Close()

	c := newClient(t, srv.URL, "contract-token", 64<<10)
	evs := randomEvents(60, 11)
	res, err := c.Send(context.Background(), evs)
	if err != nil {
		t.Fatal(err)
	}
	if res.Accepted != 60 || res.Rejected != 0 {
		t.Fatalf("result %+v", res)
	}
	g.mu.Lock()
	if len(g.events) != 60 {
		t.Fatalf("receiver passed on %d events (rejects %d)", len(g.events), len(g.rejects))
	}
	for i := range evs {
		if g.events[i].ID != evs[i].ID || !bytes.Equal(g.events[i].RequestBody, evs[i].RequestBody) ||
			!bytes.Equal(g.events[i].ResponseBody, evs[i].ResponseBody) {
			t.Fatalf("event %d changed on the way", i)
		}
	}
	g.mu.Unlock()

	// Store down: 503 with the receiver's Retry-After, retryable.
	g.down.Store(true)
	err = c.Consume(context.Background(), evs[:3])
	if ra, ok := client.RetryAfter(err); err == nil || client.IsPermanent(err) || !ok || ra != 3*time.Second {
		t.Fatalf("store down: err %v, retry-after %v", err, ra)
	}
	g.down.Store(false)

	// Wrong token: 401, permanent, clearly reported.
	err = newClient(t, srv.URL, "wrong", 1<<20).Consume(context.Background(), evs[:1])
	if !errors.Is(err, client.ErrUnauthorized) {
		t.Fatalf("wrong token: %v", err)
	}
}
