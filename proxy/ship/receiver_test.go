package ship

import (
	"context"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/llmtap/llmtap/ingest/event"
	"github.com/llmtap/llmtap/ingest/pipeline"
	"github.com/llmtap/llmtap/ingest/receiver"
	"github.com/llmtap/llmtap/ingest/record"
	"github.com/llmtap/llmtap/ingest/store"
)

// storeStandIn is the pipeline behind the real receiver: it keeps event
// ids, or fails like an unavailable store.
type storeStandIn struct {
	mu     sync.Mutex
	counts map[string]int
	down   atomic.Bool
}

func (g *storeStandIn) Ingest(_ context.Context, evs []event.Event, rejects []record.Reject) (pipeline.Result, error) {
	if g.down.Load() {
		return pipeline.Result{}, store.ErrUnavailable
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, e := range evs {
		g.counts[e.ID]++
	}
	return pipeline.Result{Accepted: len(evs), Rejected: len(rejects)}, nil
}

func (g *storeStandIn) Ready(context.Context) error { return nil }

// TestThroughRealReceiver ships through ingest's real HTTP receiver while
// its store is down (503 + Retry-After), then up.
func TestThroughRealReceiver(t *testing.T) {
	g := &storeStandIn{counts: map[string]int{}}
	g.down.Store(true)
	rcfg := receiver.DefaultConfig()
	rcfg.Token = "t0ken"
	rcfg.RetryAfter = time.Second
	srv := httptest.NewServer(receiver.New(rcfg, g, nil).Handler())
	defer srv.Close()

	s := startShipper(t, testConfig(t.TempDir()), newClient(t, srv.URL, "t0ken"))
	want := map[string]bool{}
	for range 500 {
		ev := mkEvent(300)
		want[ev.ID] = true
		s.Emit(ev)
	}
	waitFor(t, "spooling", 5*time.Second, func() bool { return s.Stats().Spooled == 500 })
	g.down.Store(false)
	waitFor(t, "delivery", 15*time.Second, func() bool {
		g.mu.Lock()
		defer g.mu.Unlock()
		return len(g.counts) == len(want)
	})
	g.mu.Lock()
	defer g.mu.Unlock()
	for id := range g.counts {
		if !want[id] {
			t.Fatalf("unexpected id %s", id)
		}
	}
	if st := s.Stats(); st.DroppedTotal() != 0 {
		t.Fatalf("stats %+v", st)
	}
}
