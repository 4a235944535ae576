package proxy

import (
	"bytes"
	"encoding/json"

	"github.com/llmtap/llmtap/internal/jsonscan"
)

// injectPath reports the endpoints whose streams take include_usage.
func injectPath(path string) bool {
	return path == "/v1/chat/completions" || path == "/v1/completions"
}

var streamKey = []byte(`"stream"`)

// injectUsage returns body with stream_options.include_usage set to true
// when body is a JSON object with "stream": true whose client would not get
// usage on its own. Following vLLM (and the simulator), include_usage
// defaults to true once stream_options is present, so an object without
// include_usage is left alone; include_usage false or null is switched on.
// Requests with continuous_usage_stats are left alone (injection would add
// usage to every chunk). ok is false when nothing was changed; body is
// never modified.
//
// The surgery is minimal: a missing stream_options is inserted after the
// opening brace; an existing one is replaced in place. Only the top level
// of the body is scanned (no full decode), so the cost stays small for
// long conversations; bodies the scanner does not understand fall back to
// a full decode.
func injectUsage(body []byte) (out []byte, ok bool) {
	if !bytes.Contains(body, streamKey) && bytes.IndexByte(body, '\\') < 0 {
		return nil, false // cannot name "stream", even escaped
	}
	top, ok := scanTopLevel(body)
	return injectUsageScanned(body, top, ok)
}

// injectUsageScanned is injectUsage with the body already scanned by
// scanTopLevel (top, scanned), so that ServeHTTP scans once for the
// injection and the model.
func injectUsageScanned(body []byte, top topLevel, scanned bool) (out []byte, ok bool) {
	if !scanned {
		if !bytes.Contains(body, streamKey) && bytes.IndexByte(body, '\\') < 0 {
			return nil, false
		}
		return injectUsageSlow(body)
	}
	if !top.hasStream || string(body[top.stream[0]:top.stream[1]]) != "true" {
		return nil, false
	}
	if !top.hasOpts {
		return insertAfterBrace(body), true
	}
	so := body[top.opts[0]:top.opts[1]]
	nso, ok := newStreamOptions(so)
	if !ok {
		return nil, false
	}
	out = make([]byte, 0, len(body)-len(so)+len(nso))
	out = append(out, body[:top.opts[0]]...)
	out = append(out, nso...)
	out = append(out, body[top.opts[1]:]...)
	return out, true
}

// requestModel returns the top-level "model" string of a scanned request
// body, or "" when there is none (or it is not a string).
func requestModel(body []byte, top topLevel, scanned bool) string {
	if !scanned || !top.hasModel {
		return ""
	}
	v := body[top.model[0]:top.model[1]]
	if len(v) < 2 || v[0] != '"' {
		return ""
	}
	if bytes.IndexByte(v, '\\') < 0 {
		return string(v[1 : len(v)-1])
	}
	var m string
	if json.Unmarshal(v, &m) != nil {
		return ""
	}
	return m
}

const streamOptionsField = `"stream_options":{"include_usage":true},`

func insertAfterBrace(body []byte) []byte {
	i := bytes.IndexByte(body, '{')
	out := make([]byte, 0, len(body)+len(streamOptionsField))
	out = append(out, body[:i+1]...)
	out = append(out, streamOptionsField...)
	return append(out, body[i+1:]...)
}

// newStreamOptions decides on the client's stream_options value so: the
// value to send instead, or ok false to leave the request alone.
func newStreamOptions(so []byte) ([]byte, bool) {
	var opts map[string]json.RawMessage
	if t := bytes.TrimSpace(so); !bytes.Equal(t, []byte("null")) {
		if err := json.Unmarshal(so, &opts); err != nil || opts == nil {
			return nil, false
		}
		iu, has := opts["include_usage"]
		if !has {
			return nil, false // vLLM default: usage already on
		}
		switch string(bytes.TrimSpace(iu)) {
		case "false", "null":
		default:
			return nil, false // true (or something upstream will reject)
		}
		if c, has := opts["continuous_usage_stats"]; has {
			if c := string(bytes.TrimSpace(c)); c != "false" && c != "null" {
				return nil, false
			}
		}
	} else {
		opts = map[string]json.RawMessage{}
	}
	opts["include_usage"] = json.RawMessage("true")
	nb, err := json.Marshal(opts)
	return nb, err == nil
}

// injectUsageSlow is injectUsage by a full decode of the top level; the
// reference for the scanner, and its fallback.
func injectUsageSlow(body []byte) ([]byte, bool) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(body, &m); err != nil || m == nil {
		return nil, false
	}
	if s, found := m["stream"]; !found || !bytes.Equal(s, []byte("true")) {
		return nil, false
	}
	so, found := m["stream_options"]
	if !found {
		return insertAfterBrace(body), true
	}
	nso, ok := newStreamOptions(so)
	if !ok {
		return nil, false
	}
	m["stream_options"] = nso
	out, err := json.Marshal(m)
	return out, err == nil
}

type topLevel struct {
	stream, opts, model          [2]int // value spans in the body
	hasStream, hasOpts, hasModel bool
}

// scanTopLevel walks the top-level object of body without decoding the
// values, noting the spans of "stream", "stream_options" and "model" (the last
// occurrence wins, as in encoding/json and Python). ok is false for
// anything it does not understand: not an object, malformed structure,
// escaped keys. It does not validate nested values beyond their nesting.
func scanTopLevel(b []byte) (t topLevel, ok bool) {
	i := jsonscan.SkipWS(b, 0)
	if i >= len(b) || b[i] != '{' {
		return t, false
	}
	i = jsonscan.SkipWS(b, i+1)
	if i < len(b) && b[i] == '}' {
		return t, jsonscan.SkipWS(b, i+1) == len(b)
	}
	for {
		if i >= len(b) || b[i] != '"' {
			return t, false
		}
		ke := bytes.IndexByte(b[i+1:], '"')
		if ke < 0 {
			return t, false
		}
		key := b[i+1 : i+1+ke]
		if bytes.IndexByte(key, '\\') >= 0 {
			return t, false
		}
		i = jsonscan.SkipWS(b, i+ke+2)
		if i >= len(b) || b[i] != ':' {
			return t, false
		}
		vs := jsonscan.SkipWS(b, i+1)
		ve, ok := jsonscan.SkipValue(b, vs)
		if !ok {
			return t, false
		}
		switch string(key) {
		case "stream":
			t.stream, t.hasStream = [2]int{vs, ve}, true
		case "stream_options":
			t.opts, t.hasOpts = [2]int{vs, ve}, true
		case "model":
			t.model, t.hasModel = [2]int{vs, ve}, true
		}
		i = jsonscan.SkipWS(b, ve)
		if i >= len(b) {
			return t, false
		}
		if b[i] == '}' {
			return t, jsonscan.SkipWS(b, i+1) == len(b)
		}
		if b[i] != ',' {
			return t, false
		}
		i = jsonscan.SkipWS(b, i+1)
	}
}
