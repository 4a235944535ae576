package decode

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/llmtap/llmtap/ingest/event"
	"github.com/llmtap/llmtap/ingest/record"
)

// DefaultMaxLine is a sensible maxLine for NDJSON: bodies are capped by the
// proxy, base64 grows them by a third.
const DefaultMaxLine = 32 << 20

// NDJSON splits a /v1/events body (already gunzipped) into events. Blank
// lines are skipped; a line that is not a JSON event object, or longer than
// maxLine bytes (<= 0: DefaultMaxLine), becomes a reject whose Reason names
// the line number and whose Payload is the raw line (cut at maxLine). Source
// is the line's "source" when it can be read, else "proxy". err is only an
// I/O error of r; events and rejects read before it are still returned.
func NDJSON(r io.Reader, maxLine int) (events []event.Event, rejects []record.Reject, err error) {
	if maxLine <= 0 {
		maxLine = DefaultMaxLine
	}
	br := bufio.NewReaderSize(r, 64<<10)
	now := time.Now().UTC()
	for n := 1; ; n++ {
		line, tooLong, rerr := readLine(br, maxLine)
		if rerr != nil && !errors.Is(rerr, io.EOF) {
			return events, rejects, fmt.Errorf("ndjson: read line %d: %w", n, rerr)
		}
		switch t := bytes.TrimSpace(line); {
		case tooLong:
			rejects = append(rejects, record.Reject{ReceivedAt: now, Source: lineSource(line),
				Reason: fmt.Sprintf("line %d: longer than %d bytes", n, maxLine), Payload: line})
		case len(t) == 0:
		default:
			var ev event.Event
			if uerr := json.Unmarshal(t, &ev); uerr != nil {
				rejects = append(rejects, record.Reject{ReceivedAt: now, Source: lineSource(t),
					Reason: fmt.Sprintf("line %d: invalid event: %v", n, uerr), Payload: append([]byte(nil), t...)})
			} else {
				events = append(events, ev)
			}
		}
		if rerr != nil {
			return events, rejects, nil
		}
	}
}

// readLine reads one '\n'-terminated line without the terminator. A line
// over max bytes is consumed completely and returned cut at max with tooLong
// set; memory stays bounded by max.
func readLine(br *bufio.Reader, max int) (line []byte, tooLong bool, err error) {
	n := 0 // bytes of the line seen, terminator excluded
	for {
		frag, ferr := br.ReadSlice('\n')
		if ferr == nil {
			frag = frag[:len(frag)-1]
		}
		n += len(frag)
		if room := max - len(line); room > 0 {
			line = append(line, frag[:min(room, len(frag))]...)
		}
		if ferr == bufio.ErrBufferFull {
			continue
		}
		return line, n > max, ferr
	}
}

// lineSource reads "source" from a line that may not be a valid event.
func lineSource(line []byte) string {
	var s struct {
		Source json.RawMessage `json:"source"`
	}
	if json.Unmarshal(line, &s) == nil {
		if src, ok := asString(s.Source); ok && src != "" && len(src) <= 64 {
			return clean(src)
		}
	}
	return event.SourceProxy
}
