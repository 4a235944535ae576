package limit

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// memory keeps exact sliding-window logs per key in this process. Memory
// per key is one int64 per request admitted in the window (RPM > 0) and two
// per finished request with tokens (TPM > 0). Keys are only ever those of the
// keys file (Admit runs after authentication), so the map is bounded.
type memory struct {
	window int64 // ns
	now    func() time.Time

	mu   sync.Mutex
	keys map[string]*keyState
}

type keyState struct {
	mu       sync.Mutex
	req      queue // admission times
	tokT     queue // release times of token entries
	tokN     queue // tokens of those entries
	tokSum   int64
	inflight int64
}

// queue is a FIFO of int64 backed by a slice that is compacted as the head
// advances.
type queue struct {
	v    []int64
	head int
}

func (q *queue) len() int       { return len(q.v) - q.head }
func (q *queue) at(i int) int64 { return q.v[q.head+i] }
func (q *queue) push(x int64)   { q.v = append(q.v, x) }
func (q *queue) pop() (x int64) { x = q.v[q.head]; q.head++; q.compact(); return x }
func (q *queue) compact() {
	if q.head == len(q.v) {
		q.v, q.head = q.v[:0], 0
	} else if q.head > 64 && q.head*2 > len(q.v) {
		n := copy(q.v, q.v[q.head:])
		q.v, q.head = q.v[:n], 0
	}
}

func newMemory(cfg Config, now func() time.Time) *memory {
	return &memory{window: int64(cfg.Window), now: now, keys: make(map[string]*keyState)}
}

func (m *memory) state(keyID string) *keyState {
	m.mu.Lock()
	s := m.keys[keyID]
	if s == nil {
		s = &keyState{}
		m.keys[keyID] = s
	}
	m.mu.Unlock()
	return s
}

// prune drops entries at or before cutoff (the window is (now-W, now]).
func (s *keyState) prune(cutoff int64) {
	for s.req.len() > 0 && s.req.at(0) <= cutoff {
		s.req.pop()
	}
	for s.tokT.len() > 0 && s.tokT.at(0) <= cutoff {
		s.tokT.pop()
		s.tokSum -= s.tokN.pop()
	}
}

// Admit implements Limiter.
func (m *memory) Admit(_ context.Context, keyID string, l Limits) (Decision, Release, error) {
	if l.unlimited() {
		return Decision{Allowed: true}, noRelease, nil
	}
	s := m.state(keyID)
	s.mu.Lock()
	now := m.now().UnixNano()
	s.prune(now - m.window)
	d := Decision{LimitRequests: max(l.RPM, 0), LimitTokens: max(l.TPM, 0), LimitConcurrent: max(l.Concurrent, 0)}
	nreq := int64(s.req.len())
	switch {
	case l.RPM > 0 && nreq >= l.RPM:
		d.Reason = ReasonRequests
		d.RetryAfter = time.Duration(s.req.at(int(nreq-l.RPM)) + m.window - now)
	case l.TPM > 0 && s.tokSum >= l.TPM:
		d.Reason = ReasonTokens
		d.RetryAfter = s.tokensFreeIn(l.TPM, m.window, now)
	case l.Concurrent > 0 && s.inflight >= l.Concurrent:
		d.Reason = ReasonConcurrency
		d.RetryAfter = time.Second
	default:
		d.Allowed = true
		if l.RPM > 0 {
			s.req.push(now)
			nreq++
		}
		if l.Concurrent > 0 {
			s.inflight++
		}
	}
	if l.RPM > 0 {
		d.RemainingRequests = max(l.RPM-nreq, 0)
		if nreq > 0 {
			d.ResetRequests = time.Duration(s.req.at(0) + m.window - now)
		}
	}
	if l.TPM > 0 {
		d.RemainingTokens = max(l.TPM-s.tokSum, 0)
		if s.tokSum >= l.TPM {
			d.ResetTokens = s.tokensFreeIn(l.TPM, m.window, now)
		} else if s.tokT.len() > 0 {
			d.ResetTokens = time.Duration(s.tokT.at(0) + m.window - now)
		}
	}
	s.mu.Unlock()
	if !d.Allowed {
		return refused(d), noRelease, nil
	}
	var done atomic.Bool
	return d, func(tokens int64) {
		if !done.CompareAndSwap(false, true) {
			return
		}
		s.mu.Lock()
		if l.Concurrent > 0 {
			s.inflight--
		}
		if l.TPM > 0 && tokens > 0 {
			s.tokT.push(m.now().UnixNano())
			s.tokN.push(tokens)
			s.tokSum += tokens
		}
		s.mu.Unlock()
	}, nil
}

// tokensFreeIn returns the time until the tokens in the window drop below
// tpm. Called with s.mu held and s.tokSum >= tpm.
func (s *keyState) tokensFreeIn(tpm, window, now int64) time.Duration {
	sum := s.tokSum
	for i := 0; i < s.tokT.len(); i++ {
		sum -= s.tokN.at(i)
		if sum < tpm {
			return time.Duration(s.tokT.at(i) + window - now)
		}
	}
	return time.Duration(window) // unreachable: an empty window sums to 0
}

// Close implements Limiter.
func (m *memory) Close() error { return nil }
