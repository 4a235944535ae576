package proxy

import (
	"bytes"
	"encoding/json"
	"io"
)

// maxPendingEvent bounds the bytes a usageStripper holds for one event. An
// event larger than this cannot be a usage chunk worth stripping; it is
// passed through as it arrives.
const maxPendingEvent = 256 << 10

// usageStripper is an io.Reader over an SSE stream that removes the usage
// chunk (a data event whose JSON has "choices":[] and a non-null "usage")
// that the proxy caused by injecting stream_options.include_usage.
//
// It frames incrementally: complete events are returned by the Read that
// completes them; only the current partial event is held back (at most
// maxPendingEvent bytes). Event boundaries are a blank line ("\n\n" or
// "\r\n\r\n" and mixes of them). Bytes after the last boundary at EOF pass
// through unchanged.
//
// In the common case it works in the caller's buffer: the held-back partial
// event is copied to the front of p, the source reads after it, and kept
// events are compacted in place, so a stream costs no allocation beyond
// the partial event. Not safe for concurrent use.
type usageStripper struct {
	src io.Reader
	// pend holds the current partial event; pend[:scan] holds no boundary.
	pend []byte
	scan int
	// passing is set while an oversize event is being passed through.
	passing bool
	// out holds output of the slow path (partial event too large for the
	// caller's buffer) not yet returned.
	out    []byte
	outOff int
	err    error
	limit  int
	// stripped counts removed events.
	stripped int
}

func newUsageStripper(src io.Reader) *usageStripper {
	return &usageStripper{src: src, limit: maxPendingEvent}
}

func (s *usageStripper) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for {
		if s.outOff < len(s.out) {
			n := copy(p, s.out[s.outOff:])
			s.outOff += n
			if s.outOff == len(s.out) {
				s.out, s.outOff = s.out[:0], 0
			}
			return n, nil
		}
		if s.err != nil {
			if len(s.pend) > 0 { // incomplete last event: pass it through
				s.out = append(s.out, s.pend...)
				s.pend, s.scan = s.pend[:0], 0
				continue
			}
			return 0, s.err
		}
		if len(s.pend) < len(p)/2 {
			// Fast path: partial event + new bytes in p, compacted in place.
			k := copy(p, s.pend)
			n, err := s.src.Read(p[k:])
			if err != nil {
				s.err = err
			}
			if n == 0 {
				continue
			}
			buf := p[:k+n]
			w, tail := s.compact(buf)
			s.pend = append(s.pend[:0], buf[tail:]...)
			if w > 0 {
				return w, nil
			}
			continue
		}
		// Slow path: a partial event of half the caller's buffer or more.
		n, err := s.src.Read(p)
		if err != nil {
			s.err = err
		}
		if n == 0 {
			continue
		}
		s.pend = append(s.pend, p[:n]...)
		w, tail := s.compact(s.pend)
		s.out = append(s.out, s.pend[:w]...)
		m := copy(s.pend, s.pend[tail:])
		s.pend = s.pend[:m]
	}
}

// compact frames buf, whose first s.scan bytes hold no boundary: kept
// events are moved to buf[:w], usage events dropped; buf[tail:] is the
// partial event left. It updates s.scan (relative to tail) and s.passing.
func (s *usageStripper) compact(buf []byte) (w, tail int) {
	i := s.scan
	for {
		j := bytes.IndexByte(buf[i:], '\n')
		if j < 0 {
			i = len(buf)
			break
		}
		k := i + j // buf[k] == '\n'
		end := 0
		switch {
		case k+1 < len(buf) && buf[k+1] == '\n':
			end = k + 2
		case k+2 < len(buf) && buf[k+1] == '\r' && buf[k+2] == '\n':
			end = k + 3
		case k+1 == len(buf) || (k+2 == len(buf) && buf[k+1] == '\r'):
			// The boundary may complete with the next read.
			i = k
		default:
			i = k + 1
			continue
		}
		if end == 0 {
			break
		}
		if ev := buf[tail:end]; s.passing || !isUsageEvent(ev) {
			if w != tail {
				copy(buf[w:], ev)
			}
			w += len(ev)
		} else {
			s.stripped++
		}
		s.passing = false
		tail, i = end, end
	}
	rest := len(buf) - tail
	if !s.passing && rest > s.limit {
		s.passing = true
	}
	if s.passing && rest > 2 {
		// Oversize event: pass it through, keeping the last 2 bytes so that
		// a boundary split across reads is still seen.
		n := copy(buf[w:], buf[tail:len(buf)-2])
		w += n
		tail = len(buf) - 2
		i = max(i, tail)
	}
	s.scan = i - tail
	return w, tail
}

var (
	usageKey   = []byte(`usage"`)
	choicesKey = []byte(`choices"`)
	dataField  = []byte("data:")
)

// isUsageEvent reports whether one complete SSE event (including its
// terminating blank line) is an OpenAI usage chunk: its data is a JSON
// object with an empty "choices" array and a non-null "usage".
func isUsageEvent(ev []byte) bool {
	if !bytes.Contains(ev, usageKey) || !bytes.Contains(ev, choicesKey) {
		return false
	}
	// Fast rejection without decoding, for servers that send "usage":null
	// in every chunk: a usage chunk needs a "choices" key whose value is []
	// and a "usage" key whose value is not null (text inside strings cannot
	// match: its quotes are escaped). An event of several data lines may
	// split a value from its key: it takes the full check.
	if bytes.Count(ev, dataField) <= 1 &&
		(!hasKeyValue(ev, usageKey, notNull) || !hasKeyValue(ev, choicesKey, isEmptyArray)) {
		return false
	}
	var parts [][]byte
	for len(ev) > 0 {
		line := ev
		if i := bytes.IndexByte(ev, '\n'); i >= 0 {
			line, ev = ev[:i], ev[i+1:]
		} else {
			ev = nil
		}
		line = bytes.TrimSuffix(line, []byte{'\r'})
		if !bytes.HasPrefix(line, dataField) {
			continue
		}
		v := line[len(dataField):]
		if len(v) > 0 && v[0] == ' ' {
			v = v[1:]
		}
		parts = append(parts, v)
	}
	var data []byte
	switch len(parts) {
	case 0:
		return false
	case 1:
		data = parts[0]
	default:
		data = bytes.Join(parts, []byte{'\n'})
	}
	var chunk struct {
		Choices *[]json.RawMessage `json:"choices"`
		Usage   json.RawMessage    `json:"usage"`
	}
	if err := json.Unmarshal(data, &chunk); err != nil {
		return false
	}
	return chunk.Choices != nil && len(*chunk.Choices) == 0 &&
		len(chunk.Usage) > 0 && !bytes.Equal(chunk.Usage, []byte("null"))
}

// hasKeyValue reports whether some occurrence of key (a name followed by
// its closing quote) in b is followed by a colon and a value for which ok
// holds. ok gets the bytes after the colon and any blanks.
func hasKeyValue(b, key []byte, ok func([]byte) bool) bool {
	for {
		i := bytes.Index(b, key)
		if i < 0 {
			return false
		}
		b = b[i+len(key):]
		v := skipBlanks(b)
		if len(v) > 0 && v[0] == ':' && ok(skipBlanks(v[1:])) {
			return true
		}
	}
}

func skipBlanks(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t' || b[0] == '\r' || b[0] == '\n') {
		b = b[1:]
	}
	return b
}

func isEmptyArray(v []byte) bool {
	if len(v) == 0 || v[0] != '[' {
		return false
	}
	v = skipBlanks(v[1:])
	return len(v) > 0 && v[0] == ']'
}

func notNull(v []byte) bool { return !bytes.HasPrefix(v, []byte("null")) }
