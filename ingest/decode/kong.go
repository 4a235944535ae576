package decode

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/llmtap/llmtap/ingest/event"
	"github.com/llmtap/llmtap/ingest/record"
)

// Kong decodes a Kong http-log POST body: one entry object, or an array of
// them (Kong batches when queue.max_batch_size > 1). Every entry becomes
// either an event (Source "kong") or a reject carrying the raw entry bytes
// and the reason, so len(events)+len(rejects) is the number of entries that
// could be told apart. A body that is not JSON at all is a single reject; in
// a batch that breaks off (invalid JSON mid-array) the entries before the
// break are kept and the rest of the body is one reject.
//
// Entry fields used (Kong's serializer, kong/pdk/log.lua): request.id (the
// event id is the UUIDv5 of it and started_at, else of a hash of the entry,
// so Kong's retries never duplicate), started_at (epoch ms; s, µs and ns are
// recognised by magnitude), consumer.username → custom_id → id,
// authenticated_entity.id (key id), client_ip, request.method, request.uri
// (path without the query) or request.url, request.headers and
// response.headers (values string, array or bool; secrets redacted),
// response.status (number or numeric string; else the last status of
// upstream_status), latencies.request (LatencyMs) and latencies.kong +
// latencies.proxy (TTFBMs). Bodies by convention from
// request.body / response.body (absent, a JSON string, a JSON object or
// array, or base64 of either) and from the AI plugins' payload.request /
// payload.response. Model, usage and time to first token from the ai block
// in each shape Kong has used (3.6 ai.usage, 3.7 ai.<plugin>.usage with
// singular prompt_token/completion_token, 3.8 plural, 3.9+ ai.proxy.usage).
// Numbers are read as json.Number, so exponent forms like 1.7e+12 work.
func Kong(body []byte) (events []event.Event, rejects []record.Reject) {
	now := time.Now().UTC()
	reject := func(reason string, payload []byte) {
		rejects = append(rejects, record.Reject{ReceivedAt: now, Source: event.SourceKong, Reason: reason,
			Payload: append([]byte(nil), payload...)})
	}
	t := bytes.TrimSpace(bytes.TrimPrefix(body, []byte("\xEF\xBB\xBF")))
	if len(t) == 0 {
		reject("kong: empty body", body)
		return nil, rejects
	}
	switch t[0] {
	case '{':
		if !json.Valid(t) {
			reject("kong: body is not valid JSON", body)
			return nil, rejects
		}
		ev, err := KongEntry(t)
		if err != nil {
			reject("kong: "+err.Error(), t)
			return nil, rejects
		}
		return []event.Event{ev}, nil
	case '[':
		if entries, ok := scanArray(t); ok {
			for i, raw := range entries {
				ev, err := KongEntry(raw)
				if err != nil {
					reject(fmt.Sprintf("kong: entry %d: %v", i, err), raw)
					continue
				}
				events = append(events, ev)
			}
			return events, rejects
		}
		// Not plain valid JSON: find out entry by entry where it breaks.
		dec := json.NewDecoder(bytes.NewReader(t))
		dec.UseNumber()
		if _, err := dec.Token(); err != nil {
			reject("kong: body is not valid JSON", body)
			return nil, rejects
		}
		for i := 0; dec.More(); i++ {
			start := dec.InputOffset()
			var raw json.RawMessage
			if err := dec.Decode(&raw); err != nil {
				rest := bytes.TrimLeft(t[start:], " \t\r\n,")
				reject(fmt.Sprintf("kong: entry %d: invalid JSON: %v", i, err), rest)
				return events, rejects
			}
			ev, err := KongEntry(raw)
			if err != nil {
				reject(fmt.Sprintf("kong: entry %d: %v", i, err), raw)
				continue
			}
			events = append(events, ev)
		}
		if _, err := dec.Token(); err != nil { // the closing ']'
			rest := t[dec.InputOffset():]
			if len(bytes.TrimSpace(rest)) == 0 {
				rest = t
			}
			reject(fmt.Sprintf("kong: unterminated array: %v", err), rest)
		} else if rest := t[dec.InputOffset():]; len(rest) > 0 {
			reject("kong: trailing data after the array", rest)
		}
		return events, rejects
	default:
		reject("kong: body is not a JSON object or array", body)
		return nil, rejects
	}
}

// KongEntry converts one http-log entry (a JSON object) into an event.
func KongEntry(raw []byte) (event.Event, error) {
	o := parseObj(raw)
	if o == nil {
		return event.Event{}, errors.New("entry is not a JSON object")
	}
	req, resp := o.obj("request"), o.obj("response")
	if req == nil && resp == nil {
		return event.Event{}, errors.New("entry has neither request nor response")
	}
	sa, ok := o.get("started_at")
	if !ok {
		return event.Event{}, errors.New("started_at missing")
	}
	startedMs, err := number(sa)
	if err != nil {
		return event.Event{}, fmt.Errorf("started_at: %w", err)
	}
	ts, err := epochToTime(startedMs)
	if err != nil {
		return event.Event{}, fmt.Errorf("started_at: %w", err)
	}
	ev := event.Event{Time: ts, Source: event.SourceKong}

	if rs, ok := resp.get("status"); ok && string(bytes.TrimSpace(rs)) != "null" {
		st, err := number(rs)
		if err != nil || st < 0 || st > 999 || st != math.Trunc(st) {
			return event.Event{}, fmt.Errorf("response.status is not an HTTP status: %.40s", string(rs))
		}
		ev.Status = int(st)
	} else {
		ev.Status = lastStatus(o.str("upstream_status"))
	}

	ev.RequestHeaders = kongHeaders(req.obj("headers"))
	ev.ResponseHeaders = kongHeaders(resp.obj("headers"))
	ev.RequestID = firstNonEmpty(req.str("id"), headerValue(ev.RequestHeaders, "x-kong-request-id"),
		headerValue(ev.ResponseHeaders, "x-kong-request-id"))
	if ev.RequestID != "" {
		ev.ID = DeriveID("kong:" + ev.RequestID + ":" + strconv.FormatInt(ts.UnixMilli(), 10))
	} else {
		var c bytes.Buffer
		if json.Compact(&c, raw) != nil {
			c.Reset()
			c.Write(raw)
		}
		sum := sha256.Sum256(c.Bytes())
		ev.ID = DeriveID("kong-entry:" + hex.EncodeToString(sum[:]))
	}

	if c := o.obj("consumer"); c != nil {
		ev.Consumer = firstNonEmpty(c.str("username"), c.str("custom_id"), c.str("id"))
	}
	if ae := o.obj("authenticated_entity"); ae != nil {
		ev.KeyID = ae.str("id")
	}
	ev.ClientIP = o.str("client_ip")
	ev.Method = req.str("method")
	ev.Path = kongPath(req.str("uri"), req.str("url"))
	if lat := o.obj("latencies"); lat != nil {
		if v, err := number(lat.raw("request")); err == nil && v >= 0 {
			ev.LatencyMs = v
		}
		// latencies.proxy is Kong's waiting time for the upstream's first
		// byte (-1 when not proxied); with Kong's own time before it, the
		// time to first byte.
		if p, err := number(lat.raw("proxy")); err == nil && p >= 0 {
			k, _ := number(lat.raw("kong"))
			if k < 0 {
				k = 0
			}
			ttfb := k + p
			ev.TTFBMs = &ttfb
		}
	}

	ai := o.obj("ai")
	k := kongAI(ai)
	ev.Model = k.model
	ev.Usage = k.usage
	ev.TTFTMs = k.ttft

	if b, ok := kongBody(req.raw("body")); ok {
		ev.RequestBody = b
	} else if b, ok := kongBody(k.reqPayload); ok {
		ev.RequestBody = b
	}
	if b, ok := kongBody(resp.raw("body")); ok {
		ev.ResponseBody = b
		if enc := headerValue(ev.ResponseHeaders, "content-encoding"); enc != "" && !utf8.Valid(b) {
			ev.ResponseEncoding = enc
		}
	} else if b, ok := kongBody(k.respPayload); ok {
		ev.ResponseBody = b
	}
	ct := strings.ToLower(headerValue(ev.ResponseHeaders, "content-type"))
	ev.Stream = strings.Contains(ct, "text/event-stream") || k.stream
	return ev, nil
}

// number reads a JSON number (any form, or a numeric string) as float64.
func number(raw json.RawMessage) (float64, error) {
	if len(bytes.TrimSpace(raw)) == 0 {
		return 0, errors.New("missing")
	}
	var n json.Number
	if err := json.Unmarshal(raw, &n); err != nil || n == "" {
		return 0, fmt.Errorf("not a number: %.40s", string(raw))
	}
	f, err := n.Float64()
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, fmt.Errorf("not a number: %.40s", string(raw))
	}
	return f, nil
}

// epochToTime reads an epoch timestamp; the unit is told by magnitude
// (Kong writes milliseconds; seconds, microseconds and nanoseconds are
// recognised so that custom serializers work too).
func epochToTime(v float64) (time.Time, error) {
	switch {
	case v <= 0 || v >= 9e18:
		return time.Time{}, fmt.Errorf("not a plausible epoch: %v", v)
	case v >= 1e17: // ns
		return time.Unix(0, int64(v)).UTC(), nil
	case v >= 1e14: // µs
		return time.UnixMicro(int64(v)).UTC(), nil
	case v >= 1e11: // ms
		sec := math.Floor(v / 1000)
		return time.Unix(int64(sec), int64((v-sec*1000)*1e6)).UTC(), nil
	default: // s
		sec := math.Floor(v)
		return time.Unix(int64(sec), int64((v-sec)*1e9)).UTC(), nil
	}
}

var statusRe = regexp.MustCompile(`\d{3}`)

// lastStatus reads the final status of nginx's $upstream_status
// ("500, 200 : 200"), 0 if none.
func lastStatus(s string) int {
	all := statusRe.FindAllString(s, -1)
	if len(all) == 0 {
		return 0
	}
	n, _ := strconv.Atoi(all[len(all)-1])
	return n
}

func kongPath(uri, rawURL string) string {
	if uri != "" {
		if i := strings.IndexAny(uri, "?#"); i >= 0 {
			uri = uri[:i]
		}
		return uri
	}
	if u, err := url.Parse(rawURL); err == nil {
		return u.Path
	}
	return ""
}

// kongHeaders flattens Kong's header table (values string, array, bool).
func kongHeaders(h obj) map[string]string {
	if len(h) == 0 {
		return nil
	}
	m := make(map[string]string, len(h))
	for _, f := range h { // in order: the last of duplicate keys wins
		k, raw := string(f.key), f.val
		var v string
		if s, ok := asString(raw); ok {
			v = s
		} else if a := asArr(raw); a != nil {
			parts := make([]string, 0, len(a))
			for _, e := range a {
				if s, ok := asString(e); ok {
					parts = append(parts, s)
				} else {
					parts = append(parts, compactJSON(e))
				}
			}
			v = strings.Join(parts, ", ")
		} else {
			v = compactJSON(raw)
		}
		if secretHeaders[strings.ToLower(k)] && v != "" {
			v = Redacted
		}
		m[k] = v
	}
	return m
}

// kongBody reads a body field: absent/null/"" → not present; a JSON object or
// array → its compact text; a string → its text, or what it decodes to when
// it is base64 of valid UTF-8 (or of gzip data).
func kongBody(raw json.RawMessage) ([]byte, bool) {
	t := bytes.TrimSpace(raw)
	if len(t) == 0 || string(t) == "null" {
		return nil, false
	}
	switch t[0] {
	case '{', '[':
		var b bytes.Buffer
		if json.Compact(&b, t) != nil {
			return append([]byte(nil), t...), true
		}
		return b.Bytes(), true
	case '"':
		s, ok := asString(t)
		if !ok || s == "" {
			return nil, false
		}
		if b, ok := maybeBase64(s); ok {
			return b, true
		}
		return []byte(s), true
	default:
		return append([]byte(nil), t...), true
	}
}

// maybeBase64 decodes s when it is base64 (standard or URL alphabet, padded
// or not) of valid UTF-8 text or of gzip data. Plain text that happens to be
// base64 and decodes to valid UTF-8 (e.g. "Test") is indistinguishable and is
// decoded; JSON and SSE bodies never are, as they contain '{', ':' or ' '.
func maybeBase64(s string) ([]byte, bool) {
	s = strings.TrimSpace(s)
	if len(s) < 4 || strings.ContainsAny(s, "{}\":, \t") {
		return nil, false
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		b, err := enc.DecodeString(s)
		if err != nil || len(b) == 0 {
			continue
		}
		if len(b) > 2 && b[0] == 0x1f && b[1] == 0x8b {
			return b, true
		}
		if utf8.Valid(b) && !bytes.ContainsAny(b, "\x00\x01\x02\x03\x04\x05\x06\x07\x08\x0b\x0e\x0f") {
			return b, true
		}
		return nil, false
	}
	return nil, false
}

// aiInfo is what Kong's AI plugins logged.
type aiInfo struct {
	model                   string
	usage                   *event.Usage
	ttft                    *float64
	stream                  bool
	reqPayload, respPayload json.RawMessage
}

// kongAI reads the ai block: ai.proxy (3.9+), ai["ai-proxy"] and other
// plugin-named children (3.7/3.8), and ai itself (3.6).
func kongAI(ai obj) aiInfo {
	var info aiInfo
	if ai == nil {
		return info
	}
	var cands []obj
	for _, name := range []string{"proxy", "ai-proxy", "ai-proxy-advanced"} {
		if c := ai.obj(name); c != nil {
			cands = append(cands, c)
		}
	}
	var others []string
	for _, f := range ai {
		switch k := string(f.key); k {
		case "proxy", "ai-proxy", "ai-proxy-advanced", "usage", "meta", "payload":
		default:
			others = append(others, k)
		}
	}
	sort.Strings(others)
	others = slices.Compact(others) // duplicate keys
	for _, k := range others {
		if c := ai.obj(k); c != nil && (c.has("usage") || c.has("meta") || c.has("payload")) {
			cands = append(cands, c)
		}
	}
	cands = append(cands, ai)

	for _, c := range cands {
		u := c.obj("usage")
		if u == nil {
			continue
		}
		pick := func(keys ...string) *int64 {
			for _, k := range keys {
				if v, err := number(u.raw(k)); err == nil && v >= 0 && v < 9e18 {
					n := int64(v)
					return &n
				}
			}
			return nil
		}
		us := event.Usage{
			PromptTokens:     pick("prompt_tokens", "prompt_token", "input_tokens"),
			CompletionTokens: pick("completion_tokens", "completion_token", "output_tokens"),
			TotalTokens:      pick("total_tokens", "total_token"),
		}
		if us.PromptTokens == nil && us.CompletionTokens == nil && us.TotalTokens == nil {
			continue
		}
		info.usage = &us
		if v, err := number(u.raw("time_to_first_token")); err == nil && v >= 0 {
			info.ttft = &v
		}
		break
	}
	for _, c := range cands {
		m := c.obj("meta")
		if m == nil {
			continue
		}
		if info.model == "" {
			info.model = firstNonEmpty(m.str("response_model"), m.str("request_model"))
		}
		if m.strIs("request_mode", "stream") {
			info.stream = true
		}
	}
	for _, c := range cands {
		p := c.obj("payload")
		if p == nil {
			continue
		}
		if info.reqPayload == nil && p.has("request") {
			info.reqPayload = p.raw("request")
		}
		if info.respPayload == nil && p.has("response") {
			info.respPayload = p.raw("response")
		}
	}
	return info
}
