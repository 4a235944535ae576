package limit

// Tail keeps the last n bytes written to it, so that UsageTokens can read a
// response's usage even when the capture buffer was truncated (the usage is
// in the final bytes of a stream or JSON body). Not safe for concurrent use.
type Tail struct {
	buf  []byte // ring of len n once full
	n    int
	next int // write position once full
	full bool
}

// NewTail returns a Tail that keeps the last n bytes (n >= 1).
func NewTail(n int) *Tail {
	return &Tail{buf: make([]byte, 0, max(n, 1)), n: max(n, 1)}
}

// Write records p; it never fails.
func (t *Tail) Write(p []byte) (int, error) {
	w := len(p)
	if len(p) >= t.n {
		t.buf = append(t.buf[:0], p[len(p)-t.n:]...)
		t.next, t.full = 0, true
		return w, nil
	}
	if !t.full {
		room := t.n - len(t.buf)
		if len(p) <= room {
			t.buf = append(t.buf, p...)
			return w, nil
		}
		t.buf = append(t.buf, p[:room]...)
		p = p[room:]
		t.full, t.next = true, 0
	}
	for len(p) > 0 {
		c := copy(t.buf[t.next:], p)
		p = p[c:]
		t.next = (t.next + c) % t.n
	}
	return w, nil
}

// Bytes returns the kept bytes in order, in a new slice.
func (t *Tail) Bytes() []byte {
	if !t.full {
		return append([]byte(nil), t.buf...)
	}
	out := make([]byte, 0, t.n)
	out = append(out, t.buf[t.next:]...)
	return append(out, t.buf[:t.next]...)
}
