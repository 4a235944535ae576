package decode

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"

	"github.com/llmtap/llmtap/ingest/event"
)

// extraction is what the bodies say.
type extraction struct {
	endpoint               string // the path's endpoint, or the one inferred from the body
	stream                 bool
	reqModel               json.RawMessage // undecoded: most responses name the model
	respModel              string
	prompt, response       string
	reasoning, toolCalls   string
	finishReason           string
	usage                  usage
	httpError, streamError string
}

// obj is a JSON object read one level deep: its members in document order,
// values undecoded. nil means "not an object" (absent, invalid, another
// type); {} is a non-nil empty obj. Keys and values may alias the parsed
// bytes: an obj must not outlive them, and nothing taken from it may be kept
// without a copy (strings are copies by construction).
//
// It replaced a map[string]json.RawMessage: the objects of a request or
// response have a handful of keys, of which extraction reads a few, so a
// slice searched linearly costs one allocation where the map cost a table
// and one string per key, and hashing (BenchmarkDecodeProxy).
type obj []field

// field is one member of an obj.
type field struct {
	key []byte
	val json.RawMessage
}

func parseObj(b []byte) obj {
	b = bytes.TrimSpace(b)
	if len(b) == 0 || b[0] != '{' {
		return nil
	}
	if o, ok := scanFields(b); ok {
		return o
	}
	var m map[string]json.RawMessage
	if json.Unmarshal(b, &m) != nil {
		return nil
	}
	o := make(obj, 0, len(m))
	for k, v := range m {
		o = append(o, field{key: []byte(k), val: v})
	}
	return o
}

// get returns the value of key; of duplicate keys the last one wins, as in
// encoding/json.
func (o obj) get(key string) (json.RawMessage, bool) {
	for i := len(o) - 1; i >= 0; i-- {
		if string(o[i].key) == key {
			return o[i].val, true
		}
	}
	return nil, false
}

// raw is the value of key, nil when absent.
func (o obj) raw(key string) json.RawMessage {
	v, _ := o.get(key)
	return v
}

func (o obj) has(key string) bool {
	_, ok := o.get(key)
	return ok
}

// str is the string value of key; "" when absent, null or not a string.
func (o obj) str(key string) string {
	s, _ := asString(o.raw(key))
	return s
}

// strIs reports whether key's value is the string want, without allocating.
func (o obj) strIs(key, want string) bool {
	v, ok := strView(o.raw(key))
	return ok && string(v) == want
}

func (o obj) obj(key string) obj {
	raw, ok := o.get(key)
	if !ok {
		return nil
	}
	return parseObj(raw)
}

func (o obj) arr(key string) []json.RawMessage {
	raw, ok := o.get(key)
	if !ok {
		return nil
	}
	return asArr(raw)
}

func asArr(raw json.RawMessage) []json.RawMessage {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] != '[' {
		return nil
	}
	if a, ok := scanArray(raw); ok {
		return a
	}
	var a []json.RawMessage
	if json.Unmarshal(raw, &a) != nil {
		return nil
	}
	return a
}

// asString decodes a JSON string value, as encoding/json would.
func asString(raw json.RawMessage) (string, bool) {
	v, ok := strView(raw)
	return string(v), ok
}

// strView is asString without a copy when the string has no escapes (the
// result then aliases raw): for comparisons and for text appended at once.
func strView(raw json.RawMessage) ([]byte, bool) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] != '"' {
		return nil, false
	}
	sc := scanner{b: raw}
	if v, ok := sc.strBytes(); ok && sc.i == len(raw) {
		return v, true
	}
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return nil, false
	}
	return []byte(s), true
}

// intVal reads a JSON number (integer or float form) as int64.
func intVal(raw json.RawMessage) *int64 {
	if n, ok := intOf(raw); ok {
		return &n
	}
	return nil
}

// intOf is intVal without the allocation.
func intOf(raw json.RawMessage) (int64, bool) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] == 'n' {
		return 0, false
	}
	s := string(raw)
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return n, true
	}
	if f, err := strconv.ParseFloat(s, 64); err == nil && f >= -9e18 && f <= 9e18 {
		return int64(f), true
	}
	return 0, false
}

func extract(ev *event.Event, endpoint string, reqBody, respBody []byte) extraction {
	return extractWith(ev, endpoint, reqBody, respBody, true)
}

// extractWith is extract, with the one-pass chat functions (chat.go) or
// with the generic path only.
func extractWith(ev *event.Event, endpoint string, reqBody, respBody []byte, onePass bool) (x extraction) {
	x.endpoint = endpoint
	if !onePass || endpoint != EndpointChat || !chatRequest(reqBody, &x) {
		endpoint = requestFields(ev, endpoint, reqBody, &x)
	}

	x.stream = isStream(ev, respBody)
	if x.stream && !startsJSON(respBody) {
		if endpoint == EndpointResponses || (endpoint != EndpointChat && endpoint != EndpointCompletions && looksLikeResponsesStream(respBody)) {
			reassembleResponses(respBody, &x)
		} else {
			reassembleChat(respBody, &x)
		}
		if ev.Status >= 300 && x.httpError == "" {
			x.httpError = x.streamError
			x.streamError = ""
		}
		return x
	}

	if onePass && (endpoint == EndpointChat || endpoint == EndpointCompletions) && ev.Status > 0 && ev.Status < 300 &&
		chatResponse(respBody, &x) {
		return x
	}
	responseFields(ev, endpoint, respBody, &x)
	return x
}

// requestFields reads the request's model and prompt into x; it returns
// the endpoint, inferred from the body for Kong routes.
func requestFields(ev *event.Event, endpoint string, reqBody []byte, x *extraction) string {
	req := parseObj(reqBody)
	x.reqModel = req.raw("model")
	if endpoint == EndpointOther && ev.Source == event.SourceKong && req != nil {
		// Kong AI Proxy routes have arbitrary paths: infer from the body.
		switch {
		case req.has("messages"):
			endpoint = EndpointChat
		case req.has("prompt"):
			endpoint = EndpointCompletions
		}
		x.endpoint = endpoint
	}
	switch endpoint {
	case EndpointChat:
		x.prompt = lastUserText(req.arr("messages"))
	case EndpointCompletions:
		x.prompt = joinedStrings(req.raw("prompt"))
	case EndpointEmbeddings:
		x.prompt = joinedStrings(req.raw("input"))
	case EndpointResponses:
		x.prompt = responsesPrompt(req)
	}
	return endpoint
}

// responseFields reads a response that is not a stream into x.
func responseFields(ev *event.Event, endpoint string, respBody []byte, x *extraction) {
	resp := parseObj(respBody)
	if ev.Status >= 300 || (ev.Status == 0 && resp != nil && (resp.has("error") || resp.strIs("object", "error"))) {
		x.httpError = errorMessage(resp)
		if x.httpError == "" && resp == nil {
			x.httpError = textSnippet(respBody)
		}
	}
	if resp == nil {
		return
	}
	x.respModel = resp.str("model")
	switch endpoint {
	case EndpointChat, EndpointCompletions:
		x.usage = parseUsage(resp.obj("usage"))
		choices := resp.arr("choices")
		c := choiceZero(choices)
		if c == nil {
			break
		}
		x.finishReason = c.str("finish_reason")
		if t, ok := asString(c.raw("text")); ok {
			x.response = t
		}
		if m := c.obj("message"); m != nil {
			x.response = contentText(m.raw("content"))
			x.reasoning = firstNonEmpty(m.str("reasoning_content"), m.str("reasoning"))
			x.toolCalls = toolCallsJSON(normalizeToolCalls(m.arr("tool_calls")))
		}
	case EndpointEmbeddings:
		x.usage = parseUsage(resp.obj("usage"))
	case EndpointResponses:
		applyResponseObject(resp, x)
	}
}

// choiceZero returns the choice with index 0 (or the first one).
func choiceZero(choices []json.RawMessage) obj {
	var first obj
	for i, raw := range choices {
		c := parseObj(raw)
		if c == nil {
			continue
		}
		idx, ok := intOf(c.raw("index"))
		if (ok && idx == 0) || (!ok && i == 0) {
			return c
		}
		if first == nil {
			first = c
		}
	}
	return first
}

func isStream(ev *event.Event, body []byte) bool {
	if ev.Stream {
		return true
	}
	if strings.Contains(strings.ToLower(headerValue(ev.ResponseHeaders, "content-type")), "text/event-stream") {
		return true
	}
	b := bytes.TrimLeft(bytes.TrimPrefix(body, []byte("\xEF\xBB\xBF")), " \t\r\n")
	return bytes.HasPrefix(b, []byte("data:")) || bytes.HasPrefix(b, []byte("event:")) || bytes.HasPrefix(b, []byte(": "))
}

// startsJSON: a body flagged as a stream that is really a JSON document
// (Kong's composite of a streamed answer, or an error body).
func startsJSON(b []byte) bool {
	b = bytes.TrimLeft(b, " \t\r\n")
	return len(b) > 0 && (b[0] == '{' || b[0] == '[')
}

func looksLikeResponsesStream(b []byte) bool {
	n := len(b)
	if n > 4096 {
		n = 4096
	}
	head := b[:n]
	return bytes.Contains(head, []byte("event: response.")) || bytes.Contains(head, []byte(`"type":"response.`))
}

// lastUserText is the text of the last message with role "user".
func lastUserText(msgs []json.RawMessage) string {
	for i := len(msgs) - 1; i >= 0; i-- {
		m := parseObj(msgs[i])
		if m == nil || !m.strIs("role", "user") {
			continue
		}
		return contentText(m.raw("content"))
	}
	return ""
}

// contentText is a string content, or the text parts of a content array
// joined by "\n".
func contentText(raw json.RawMessage) string {
	if s, ok := asString(raw); ok {
		return s
	}
	var parts []string
	for _, p := range asArr(raw) {
		if s, ok := asString(p); ok {
			parts = append(parts, s)
			continue
		}
		po := parseObj(p)
		if po == nil {
			continue
		}
		switch t, _ := strView(po.raw("type")); string(t) {
		case "text", "input_text", "output_text", "":
			if t, ok := asString(po.raw("text")); ok {
				parts = append(parts, t)
			}
		}
	}
	return strings.Join(parts, "\n")
}

// joinedStrings is a string, or an array of strings joined by "\n"; token id
// arrays give "".
func joinedStrings(raw json.RawMessage) string {
	if s, ok := asString(raw); ok {
		return s
	}
	var parts []string
	for _, p := range asArr(raw) {
		s, ok := asString(p)
		if !ok {
			return ""
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, "\n")
}

func responsesPrompt(req obj) string {
	if s, ok := asString(req.raw("input")); ok {
		return s
	}
	items := req.arr("input")
	for i := len(items) - 1; i >= 0; i-- {
		it := parseObj(items[i])
		if it == nil || !it.strIs("role", "user") {
			continue
		}
		return contentText(it.raw("content"))
	}
	return req.str("instructions")
}

// parseUsage reads OpenAI chat/completions usage and Responses API usage.
func parseUsage(u obj) usage {
	if u == nil {
		return usage{}
	}
	pick := func(keys ...string) *int64 {
		for _, k := range keys {
			if v := intVal(u.raw(k)); v != nil {
				return v
			}
		}
		return nil
	}
	return usage{
		prompt:     pick("prompt_tokens", "input_tokens"),
		completion: pick("completion_tokens", "output_tokens"),
		total:      pick("total_tokens"),
	}
}

// errorMessage reads the error of a body: {"error":{"message":…}},
// {"error":"…"}, {"object":"error","message":…}, {"message":…},
// {"detail":…}.
func errorMessage(o obj) string {
	if o == nil {
		return ""
	}
	if raw, ok := o.get("error"); ok {
		if s, ok := asString(raw); ok {
			return s
		}
		if e := parseObj(raw); e != nil {
			if m := e.str("message"); m != "" {
				return m
			}
			return compactJSON(raw)
		}
	}
	if m := o.str("message"); m != "" {
		return m
	}
	if raw, ok := o.get("detail"); ok {
		if s, ok := asString(raw); ok {
			return s
		}
		return compactJSON(raw)
	}
	return ""
}

func compactJSON(raw json.RawMessage) string {
	var b bytes.Buffer
	if json.Compact(&b, raw) != nil {
		return string(raw)
	}
	return b.String()
}

// textSnippet is a short, trimmed piece of a non-JSON error body.
func textSnippet(b []byte) string {
	const max = 1024
	s := strings.TrimSpace(cleanBytes(b))
	if len(s) > max {
		s = strings.ToValidUTF8(s[:max], "")
	}
	return s
}

// toolCall is the stored shape of one assembled tool call.
type toolCall struct {
	ID       string       `json:"id"`
	Type     string       `json:"type"`
	Function toolFunction `json:"function"`
}

type toolFunction struct {
	Name      string `json:"name"`
	Arguments string `json:"arguments"`
}

func normalizeToolCalls(raws []json.RawMessage) []toolCall {
	var out []toolCall
	for _, r := range raws {
		o := parseObj(r)
		if o == nil {
			continue
		}
		tc := toolCall{ID: o.str("id"), Type: o.str("type")}
		if f := o.obj("function"); f != nil {
			tc.Function.Name = f.str("name")
			if s, ok := asString(f.raw("arguments")); ok {
				tc.Function.Arguments = s
			} else if a, ok := f.get("arguments"); ok && string(bytes.TrimSpace(a)) != "null" {
				tc.Function.Arguments = compactJSON(a)
			}
		}
		out = append(out, tc)
	}
	return out
}

func toolCallsJSON(calls []toolCall) string {
	if len(calls) == 0 {
		return ""
	}
	for i := range calls {
		if calls[i].Type == "" {
			calls[i].Type = "function"
		}
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if enc.Encode(calls) != nil {
		return ""
	}
	return strings.TrimSuffix(b.String(), "\n")
}

// applyResponseObject reads a Responses API response object (the JSON body,
// or the response of a terminal stream event).
func applyResponseObject(r obj, x *extraction) {
	if m := r.str("model"); m != "" {
		x.respModel = m
	}
	if u := parseUsage(r.obj("usage")); u.any() {
		x.usage = u
	}
	if e := r.obj("error"); e != nil {
		if m := e.str("message"); m != "" {
			x.streamError = m
		}
	}
	status := r.str("status")
	if d := r.obj("incomplete_details"); d != nil && d.str("reason") != "" {
		x.finishReason = d.str("reason")
	} else if status != "" {
		x.finishReason = status
	}
	var text, reasoning []string
	var calls []toolCall
	for _, raw := range r.arr("output") {
		it := parseObj(raw)
		if it == nil {
			continue
		}
		switch t, _ := strView(it.raw("type")); string(t) {
		case "message":
			for _, p := range it.arr("content") {
				po := parseObj(p)
				if po != nil && po.strIs("type", "output_text") {
					text = append(text, po.str("text"))
				}
			}
		case "reasoning":
			for _, key := range []string{"content", "summary"} {
				for _, p := range it.arr(key) {
					if po := parseObj(p); po != nil && po.str("text") != "" {
						reasoning = append(reasoning, po.str("text"))
					}
				}
				if len(reasoning) > 0 {
					break
				}
			}
		case "function_call":
			calls = append(calls, toolCall{ID: firstNonEmpty(it.str("call_id"), it.str("id")), Type: "function",
				Function: toolFunction{Name: it.str("name"), Arguments: it.str("arguments")}})
		}
	}
	if len(text) > 0 {
		x.response = strings.Join(text, "")
	}
	if len(reasoning) > 0 {
		x.reasoning = strings.Join(reasoning, "")
	}
	if len(calls) > 0 {
		x.toolCalls = toolCallsJSON(calls)
	}
}
