package limit

import (
	"context"
	"sync"
	"testing"
	"time"
)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newClocked(t *testing.T) (*memory, *fakeClock) {
	t.Helper()
	clk := &fakeClock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	return newMemory(DefaultConfig(), clk.now), clk
}

func madmit(t *testing.T, m *memory, lim Limits) (Decision, Release) {
	t.Helper()
	d, rel, err := m.Admit(context.Background(), "k", lim)
	if err != nil {
		t.Fatal(err)
	}
	return d, rel
}

// TestMemoryWindowSlides: the window is (now-1m, now]; each request leaves
// it exactly one minute after it was admitted, and reset/retry say when.
func TestMemoryWindowSlides(t *testing.T) {
	m, clk := newClocked(t)
	lim := Limits{RPM: 3}
	// t=0, t=10s, t=20s: three requests.
	for i := 0; i < 3; i++ {
		d, rel := madmit(t, m, lim)
		if !d.Allowed {
			t.Fatalf("request %d refused: %+v", i, d)
		}
		if d.ResetRequests != time.Minute-time.Duration(i)*10*time.Second {
			t.Fatalf("request %d: reset %v", i, d.ResetRequests)
		}
		rel(0)
		clk.add(10 * time.Second)
	}
	// t=30s: full; the first request leaves at t=60s.
	d, _ := madmit(t, m, lim)
	if d.Allowed || d.RetryAfter != 30*time.Second || d.ResetRequests != 30*time.Second {
		t.Fatalf("t=30s: %+v", d)
	}
	clk.add(30*time.Second - time.Nanosecond) // t = 60s - 1ns: still inside
	if d, _ := madmit(t, m, lim); d.Allowed || d.RetryAfter != time.Nanosecond {
		t.Fatalf("t=60s-1ns: %+v", d)
	}
	clk.add(time.Nanosecond) // t = 60s: the first request left
	d, _ = madmit(t, m, lim)
	if !d.Allowed || d.RemainingRequests != 0 {
		t.Fatalf("t=60s: %+v", d)
	}
	if d, _ := madmit(t, m, lim); d.Allowed || d.RetryAfter != 10*time.Second {
		t.Fatalf("t=60s second: %+v", d)
	}
	clk.add(2 * time.Minute) // everything left
	for i := 0; i < 3; i++ {
		if d, _ := madmit(t, m, lim); !d.Allowed {
			t.Fatalf("after the window, request %d: %+v", i, d)
		}
	}
}

// TestMemoryTokensWindow: tokens count from their release time; the budget
// frees as entries leave the window, and retry names the moment.
func TestMemoryTokensWindow(t *testing.T) {
	m, clk := newClocked(t)
	lim := Limits{TPM: 100}
	_, r1 := madmit(t, m, lim)
	r1(70) // t=0
	clk.add(20 * time.Second)
	_, r2 := madmit(t, m, lim)
	r2(50) // t=20s, 120 used
	clk.add(5 * time.Second)
	d, _ := madmit(t, m, lim)
	// Dropping the t=0 entry leaves 50 < 100: free at t=60s.
	if d.Allowed || d.Reason != ReasonTokens || d.RetryAfter != 35*time.Second || d.RemainingTokens != 0 {
		t.Fatalf("t=25s: %+v", d)
	}
	clk.add(35 * time.Second) // t=60s
	d, r3 := madmit(t, m, lim)
	if !d.Allowed || d.RemainingTokens != 50 || d.ResetTokens != 20*time.Second {
		t.Fatalf("t=60s: %+v", d)
	}
	r3(0) // unknown usage: nothing recorded
	clk.add(20 * time.Second)
	if d, _ := madmit(t, m, lim); !d.Allowed || d.RemainingTokens != 100 || d.ResetTokens != 0 {
		t.Fatalf("t=80s: %+v", d)
	}
}

// TestMemoryRefusalOrder: requests are checked before tokens before
// concurrency, and a refusal for one reason takes nothing from the others.
func TestMemoryRefusalOrder(t *testing.T) {
	m, _ := newClocked(t)
	lim := Limits{RPM: 2, TPM: 10, Concurrent: 1}
	d, rel := madmit(t, m, lim)
	if !d.Allowed {
		t.Fatal(d)
	}
	if d, _ := madmit(t, m, lim); d.Reason != ReasonConcurrency {
		t.Fatalf("want concurrency: %+v", d)
	}
	rel(10)
	if d, _ := madmit(t, m, lim); d.Reason != ReasonTokens || d.RemainingRequests != 1 {
		t.Fatalf("want tokens with one request left: %+v", d)
	}
	s := m.state("k")
	if s.inflight != 0 || s.req.len() != 1 {
		t.Fatalf("refusals changed state: inflight %d, requests %d", s.inflight, s.req.len())
	}
}

// TestQueueCompacts: the log's backing slice does not grow without bound.
func TestQueueCompacts(t *testing.T) {
	var q queue
	for i := 0; i < 100000; i++ {
		q.push(int64(i))
		if q.len() > 100 {
			q.pop()
		}
	}
	if q.len() != 100 || q.at(0) != 99900 {
		t.Fatalf("len %d head %d", q.len(), q.at(0))
	}
	if cap(q.v) > 1024 {
		t.Fatalf("backing slice grew to %d", cap(q.v))
	}
}
