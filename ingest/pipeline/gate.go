package pipeline

import (
	"context"
	"sync"
)

// gate is a two-dimensional counting semaphore (events and bytes) that
// bounds the work admitted but not yet finished. A request larger than a
// bound is admitted when the gate is empty, so it cannot wait forever.
// Waiters are woken together and race for room (no FIFO order); a waiter
// that keeps losing gives up when its context ends.
type gate struct {
	maxN, maxB int64

	mu   sync.Mutex
	n, b int64
	wake chan struct{} // closed and replaced on every release
}

func newGate(maxN, maxB int64) *gate {
	return &gate{maxN: maxN, maxB: maxB, wake: make(chan struct{})}
}

// acquire waits until n events and b bytes fit, or ctx ends.
func (g *gate) acquire(ctx context.Context, n, b int64) error {
	for {
		g.mu.Lock()
		if (g.n == 0 && g.b == 0) || (g.n+n <= g.maxN && g.b+b <= g.maxB) {
			g.n += n
			g.b += b
			g.mu.Unlock()
			pendingEvents.Add(float64(n))
			return nil
		}
		w := g.wake
		g.mu.Unlock()
		select {
		case <-w:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// release returns what acquire took.
func (g *gate) release(n, b int64) {
	g.mu.Lock()
	g.n -= n
	g.b -= b
	close(g.wake)
	g.wake = make(chan struct{})
	g.mu.Unlock()
	pendingEvents.Sub(float64(n))
}
