// Package sse is an incremental parser for Server-Sent Events streams as
// specified by the WHATWG HTML standard ("Parsing an event stream").
//
// It accepts CRLF, LF and lone CR line endings (mixed, and split across
// Feed calls), strips one leading UTF-8 BOM, ignores comment lines (":" …),
// joins multi-line data fields with "\n", removes exactly one space after a
// field's colon, treats a line without a colon as a field with an empty
// value, and dispatches an event on each empty line when its data buffer is
// not empty. Unlike a browser, Close flushes an incomplete last event (a
// stream cut off without its final blank line) instead of discarding it, and
// reports that the stream ended mid-event; this is what a capture of a
// disconnected stream needs.
//
// The result does not depend on how the input is split across Feed calls.
// A Parser is not safe for concurrent use.
package sse

import "bytes"

// Event is one dispatched event.
type Event struct {
	// Type is the value of the last "event:" field, empty when there was
	// none (a browser would report "message").
	Type string
	// Data is the event's data: the values of its data fields joined by "\n".
	Data string
	// ID is the value of the last "id:" field seen in the stream so far
	// (the "last event ID"), empty if none.
	ID string
}

// Parser parses an event stream incrementally. The zero value is ready to use.
type Parser struct {
	line    []byte // bytes of the current, not yet terminated line
	skipLF  bool   // the previous byte was a CR: a following LF belongs to it
	started bool   // the first byte has been seen (BOM check done)

	data    []byte
	hasData bool
	typ     string
	lastID  string
	pending bool // the current event has seen at least one field line
}

// Feed parses b and calls emit for every event completed by it. Feed does not
// retain b. emit must not call back into the Parser.
func (p *Parser) Feed(b []byte, emit func(Event)) {
	p.FeedRaw(b, p.wrap(emit))
}

// RawEvent is an Event whose Data is only valid during the emit call (no
// copy is made); for hot paths that parse the data at once.
type RawEvent struct {
	Type string
	Data []byte
	ID   string
}

func (p *Parser) wrap(emit func(Event)) func(RawEvent) {
	if emit == nil {
		return nil
	}
	return func(e RawEvent) { emit(Event{Type: e.Type, Data: string(e.Data), ID: e.ID}) }
}

// FeedRaw is Feed with RawEvents: emit must not keep e.Data.
func (p *Parser) FeedRaw(b []byte, emit func(RawEvent)) {
	if !p.started && len(b) > 0 {
		// Collect enough bytes to decide on a BOM.
		if len(p.line)+len(b) < 3 && bytes.HasPrefix([]byte("\xEF\xBB\xBF"), append(append([]byte(nil), p.line...), b...)) {
			p.line = append(p.line, b...)
			return
		}
		p.started = true
		if len(p.line) > 0 {
			buf := append(p.line, b...)
			p.line = nil
			b = buf
		}
		b = bytes.TrimPrefix(b, []byte("\xEF\xBB\xBF"))
	}
	for len(b) > 0 {
		if p.skipLF {
			p.skipLF = false
			if b[0] == '\n' {
				b = b[1:]
				continue
			}
		}
		i := lineEnd(b)
		if i < 0 {
			p.line = append(p.line, b...)
			return
		}
		var line []byte
		if len(p.line) > 0 {
			p.line = append(p.line, b[:i]...)
			line = p.line
		} else {
			line = b[:i]
		}
		if b[i] == '\r' {
			p.skipLF = true
		}
		b = b[i+1:]
		p.processLine(line, emit)
		p.line = p.line[:0]
	}
}

// Close ends the stream: an unterminated last line is processed as if it had
// been terminated, and an event that was not followed by a blank line is
// dispatched if it has data. incomplete reports that the stream ended in the
// middle of an event (a partial line or fields without the final blank line).
// The Parser is reset and may be reused for a new stream.
func (p *Parser) Close(emit func(Event)) (incomplete bool) {
	return p.CloseRaw(p.wrap(emit))
}

// CloseRaw is Close with RawEvents.
func (p *Parser) CloseRaw(emit func(RawEvent)) (incomplete bool) {
	if !p.started && len(p.line) > 0 {
		// Fewer than 3 bytes, all a BOM prefix: nothing to parse.
		p.line = bytes.TrimPrefix(p.line, []byte("\xEF\xBB\xBF"))
	}
	if len(p.line) > 0 {
		incomplete = true
		p.processLine(p.line, emit)
	}
	if p.pending {
		incomplete = true
		p.dispatch(emit)
	}
	*p = Parser{}
	return incomplete
}

// Parse parses a complete captured stream.
func Parse(b []byte) (events []Event, incomplete bool) {
	var p Parser
	add := func(e Event) { events = append(events, e) }
	p.Feed(b, add)
	incomplete = p.Close(add)
	return events, incomplete
}

// lineEnd is bytes.IndexAny(b, "\r\n"). IndexAny tests byte by byte, and
// was a fifth of the cost of decoding a captured stream; two vectorised
// IndexByte searches over windows that double in size find the first line
// end in time linear in the line's length, whichever line endings the
// stream uses.
func lineEnd(b []byte) int {
	for off, w := 0, 256; off < len(b); off, w = off+w, 2*w {
		seg := b[off:min(len(b), off+w)]
		lf := bytes.IndexByte(seg, '\n')
		if lf >= 0 {
			seg = seg[:lf]
		}
		if cr := bytes.IndexByte(seg, '\r'); cr >= 0 {
			return off + cr
		}
		if lf >= 0 {
			return off + lf
		}
	}
	return -1
}

func (p *Parser) processLine(line []byte, emit func(RawEvent)) {
	if len(line) == 0 {
		p.dispatch(emit)
		return
	}
	if line[0] == ':' {
		return // comment
	}
	var field, value []byte
	if i := bytes.IndexByte(line, ':'); i >= 0 {
		field, value = line[:i], line[i+1:]
		if len(value) > 0 && value[0] == ' ' {
			value = value[1:]
		}
	} else {
		field = line
	}
	p.pending = true
	switch string(field) {
	case "data":
		p.data = append(p.data, value...)
		p.data = append(p.data, '\n')
		p.hasData = true
	case "event":
		p.typ = string(value)
	case "id":
		if bytes.IndexByte(value, 0) < 0 {
			p.lastID = string(value)
		}
	}
}

func (p *Parser) dispatch(emit func(RawEvent)) {
	p.pending = false
	if !p.hasData {
		p.typ = ""
		p.data = p.data[:0]
		return
	}
	ev := RawEvent{Type: p.typ, Data: p.data[:len(p.data)-1], ID: p.lastID}
	p.typ = ""
	p.hasData = false
	if emit != nil {
		emit(ev)
	}
	p.data = p.data[:0]
}
