// Package decode turns what producers captured into what llmtap stores: it
// decodes proxy events (NDJSON, base64 bodies, Content-Encoding of captured
// responses) and Kong http-log payloads into event.Events, and each event
// into one record.Record (one llm_requests row), extracting the prompt,
// response text, reasoning, tool calls, finish reason, usage and error from
// the bodies of OpenAI-compatible endpoints (chat completions, completions,
// embeddings, Responses API), streamed (SSE) or not.
//
// # Guarantees
//
// Decode never panics and never fails because of a body: bad JSON, a
// truncated stream or an unknown endpoint still give a record with the
// metadata, the raw bodies and whatever could be extracted. Only an event
// without identity (no valid id and no timestamp) is an error.
//
// Every string of a Record is valid UTF-8 without NUL bytes: invalid
// sequences become U+FFFD and NUL bytes are removed (both stores reject
// them otherwise). Decompressed bodies are capped at MaxDecodedBody; a body
// cut there sets Record.Truncated. Headers are stored as a JSON object with
// sorted keys ("{}" when none); secret headers (authorization, x-api-key,
// apikey, cookie, …) are redacted again whatever the producer did.
//
// Identity: EventID is the event's UUID (canonical form) or, without one, a
// UUIDv5 of its content (EventID). TS is the event's time in UTC, else the
// time inside a UUIDv7 id, else now. Source defaults to "proxy". IngestedAt
// is set to now. Kong entries get a UUIDv5 of Kong's request id and
// started_at (or of the entry's content), so Kong's retries are idempotent.
//
// # Extraction rules (documented choices)
//
//   - Endpoint from the path suffix, so gateway prefixes such as
//     /openai/v1/chat/completions work. For Kong entries on other paths (AI
//     Proxy routes are arbitrary) it is inferred from the request body:
//     "messages" → chat, "prompt" → completions.
//   - A response flagged as a stream whose body is a JSON document (Kong's
//     composite of a streamed answer, an error body) is read as JSON.
//   - Prompt: chat = text of the last user message (string content, or the
//     text parts joined by "\n"); completions = prompt string, or an array of
//     strings joined by "\n" (token-id prompts give ""); embeddings = input
//     likewise; responses = text of the last user item of input (or the input
//     string), falling back to instructions when there is no user input.
//   - Response: choice 0 only when n > 1; streams concatenate all deltas of
//     choice 0, including text carried by the finish chunk.
//   - Model: response's model, else request's, else the producer's hint.
//   - Usage: the response's usage (stream usage chunk or JSON body) wins
//     (UsageSource "response"); else the event's hint ("kong" for Kong,
//     "event" otherwise); else "none" with nil tokens. A missing count stays
//     nil; total = prompt + completion when only those two are given.
//   - Error: the producer's error, else the error body of a non-2xx
//     response, else an error event sent inside a stream after a 200.
//   - Responses API finish_reason: incomplete_details.reason when present,
//     else the response status (completed, failed, …).
//
// Functions of this package are safe for concurrent use.
package decode

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/llmtap/llmtap/ingest/event"
	"github.com/llmtap/llmtap/ingest/record"
	"github.com/llmtap/llmtap/internal/jsonstr"
)

// MaxDecodedBody caps a decompressed body (decompression bomb guard). A body
// cut at this size marks the record truncated.
const MaxDecodedBody = 64 << 20

// Endpoint names (Record.Endpoint).
const (
	EndpointChat        = "chat"
	EndpointCompletions = "completions"
	EndpointEmbeddings  = "embeddings"
	EndpointResponses   = "responses"
	EndpointModels      = "models"
	EndpointOther       = "other"
)

// Errors returned by Decode.
var (
	ErrNoIdentity = errors.New("event has neither event_id nor ts")
	ErrInvalidID  = errors.New("event_id is not a UUID")
)

// Decode turns one event into one llm_requests row. It never panics. An
// error means the event is undecodable as a whole (missing ts and id, or an
// id that is not a UUID); the caller then stores it as a reject. Body
// problems are not errors: the row keeps the metadata, the raw bodies and
// what could be extracted. Decode does not modify ev.
func Decode(ev event.Event) (rec record.Record, err error) {
	defer func() {
		if r := recover(); r != nil {
			rec = record.Record{}
			err = fmt.Errorf("decode: internal error: %v", r)
		}
	}()
	if ev.ID == "" && ev.Time.IsZero() {
		return record.Record{}, ErrNoIdentity
	}
	if ev.ID != "" && !isUUID(ev.ID) {
		return record.Record{}, fmt.Errorf("decode: %w: %.64q", ErrInvalidID, ev.ID)
	}
	rec.EventID = EventID(ev)
	rec.TS = eventTime(ev, rec.EventID)
	rec.Source = clean(ev.Source)
	if rec.Source == "" {
		rec.Source = event.SourceProxy
	}
	rec.Consumer = clean(ev.Consumer)
	rec.KeyID = clean(ev.KeyID)
	rec.KeyPrefix = clean(ev.KeyPrefix)
	rec.ClientIP = clean(ev.ClientIP)
	rec.Method = clean(ev.Method)
	rec.Path = clean(ev.Path)
	rec.RequestID = clean(ev.RequestID)
	rec.Endpoint = EndpointOf(ev.Path)
	rec.Status = ev.Status
	rec.Stream = ev.Stream
	rec.LatencyMs = ev.LatencyMs
	rec.TTFBMs = copyF(ev.TTFBMs)
	rec.TTFTMs = copyF(ev.TTFTMs)
	rec.RequestHeaders = headersJSON(ev.RequestHeaders)
	rec.ResponseHeaders = headersJSON(ev.ResponseHeaders)
	rec.IngestedAt = time.Now().UTC()

	reqBody, reqCut := decodeBody(ev.RequestBody, headerValue(ev.RequestHeaders, "content-encoding"))
	respBody, respCut := decodeBody(ev.ResponseBody, ev.ResponseEncoding)
	rec.Truncated = ev.RequestTruncated || ev.ResponseTruncated || reqCut || respCut
	rec.RequestBody = cleanBytes(reqBody)
	rec.ResponseBody = cleanBytes(respBody)

	x := extract(&ev, rec.Endpoint, reqBody, respBody)
	rec.Endpoint = x.endpoint
	if x.stream {
		rec.Stream = true
	}
	model := x.respModel
	if model == "" {
		model, _ = asString(x.reqModel)
	}
	rec.Model = clean(firstNonEmpty(model, ev.Model))
	rec.Prompt = clean(x.prompt)
	rec.Response = clean(x.response)
	rec.Reasoning = clean(x.reasoning)
	rec.ToolCalls = clean(x.toolCalls)
	rec.FinishReason = clean(x.finishReason)

	switch {
	case x.usage.any():
		rec.PromptTokens, rec.CompletionTokens, rec.TotalTokens = x.usage.values()
		rec.UsageSource = record.UsageResponse
	case ev.Usage != nil && (ev.Usage.PromptTokens != nil || ev.Usage.CompletionTokens != nil || ev.Usage.TotalTokens != nil):
		u := usage{prompt: copyI(ev.Usage.PromptTokens), completion: copyI(ev.Usage.CompletionTokens), total: copyI(ev.Usage.TotalTokens)}
		rec.PromptTokens, rec.CompletionTokens, rec.TotalTokens = u.values()
		rec.UsageSource = record.UsageEvent
		if ev.Source == event.SourceKong {
			rec.UsageSource = record.UsageKong
		}
	default:
		rec.UsageSource = record.UsageNone
	}

	switch {
	case ev.Error != "":
		rec.Error = clean(ev.Error)
	case x.httpError != "":
		rec.Error = clean(x.httpError)
	default:
		rec.Error = clean(x.streamError)
	}
	return rec, nil
}

// EndpointOf classifies a request path (query string ignored) by its suffix.
func EndpointOf(path string) string {
	if i := strings.IndexAny(path, "?#"); i >= 0 {
		path = path[:i]
	}
	p := strings.ToLower(strings.TrimRight(path, "/"))
	switch {
	case strings.HasSuffix(p, "/chat/completions"):
		return EndpointChat
	case strings.HasSuffix(p, "/completions"):
		return EndpointCompletions
	case strings.HasSuffix(p, "/embeddings"):
		return EndpointEmbeddings
	case strings.HasSuffix(p, "/responses"):
		return EndpointResponses
	case strings.HasSuffix(p, "/models") || strings.Contains(p, "/models/"):
		return EndpointModels
	}
	return EndpointOther
}

// eventTime is ev.Time in UTC; without it, the time of a UUIDv7 id, else now.
func eventTime(ev event.Event, id string) time.Time {
	if !ev.Time.IsZero() {
		return ev.Time.UTC()
	}
	if t, ok := uuidV7Time(id); ok {
		return t
	}
	return time.Now().UTC()
}

// clean makes s valid UTF-8 without NUL bytes (invalid sequences become
// U+FFFD, NULs are removed).
func clean(s string) string {
	if utf8.ValidString(s) && strings.IndexByte(s, 0) < 0 {
		return s
	}
	s = strings.ToValidUTF8(s, "\uFFFD")
	return strings.ReplaceAll(s, "\x00", "")
}

func cleanBytes(b []byte) string {
	if utf8.Valid(b) && bytes.IndexByte(b, 0) < 0 {
		return string(b)
	}
	return clean(string(b))
}

// secretHeaders are redacted in stored headers, whatever the producer did.
var secretHeaders = map[string]bool{
	"authorization": true, "proxy-authorization": true, "x-api-key": true, "apikey": true,
	"api-key": true, "cookie": true, "set-cookie": true, "x-llmtap-key": true, "openai-api-key": true,
}

// Redacted replaces the values of secret headers.
const Redacted = "REDACTED"

func headersJSON(h map[string]string) string {
	if len(h) == 0 {
		return "{}"
	}
	type header struct{ k, v string }
	var hbuf [16]header // captured headers are few: no allocation but the result
	hs := hbuf[:0]
	for k, v := range h {
		hs = append(hs, header{k, v})
	}
	slices.SortFunc(hs, func(a, b header) int { return strings.Compare(a.k, b.k) }) // deterministic
	var bbuf [1024]byte
	b := bbuf[:0]
	b = append(b, '{')
	for i, h := range hs {
		v := h.v
		if v != "" && isSecretHeader(h.k) {
			v = Redacted
		}
		if i > 0 {
			b = append(b, ',')
		}
		b = jsonstr.Append(b, clean(h.k))
		b = append(b, ':')
		b = jsonstr.Append(b, clean(v))
	}
	return string(append(b, '}'))
}

// isSecretHeader reports whether secretHeaders has the lower case of name.
func isSecretHeader(name string) bool {
	var lower [32]byte
	if len(name) > len(lower) {
		return secretHeaders[strings.ToLower(name)]
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= utf8.RuneSelf: // Unicode folds to ASCII too (K, the Kelvin sign)
			return secretHeaders[strings.ToLower(name)]
		case 'A' <= c && c <= 'Z':
			c += 'a' - 'A'
		}
		lower[i] = c
	}
	return secretHeaders[string(lower[:len(name)])]
}

func headerValue(h map[string]string, name string) string {
	for k, v := range h {
		if strings.EqualFold(k, name) {
			return v
		}
	}
	return ""
}

func firstNonEmpty(ss ...string) string {
	for _, s := range ss {
		if s != "" {
			return s
		}
	}
	return ""
}

func copyF(p *float64) *float64 {
	if p == nil {
		return nil
	}
	v := *p
	return &v
}

func copyI(p *int64) *int64 {
	if p == nil {
		return nil
	}
	v := *p
	return &v
}

// usage is token usage with nil = not reported.
type usage struct{ prompt, completion, total *int64 }

func (u usage) any() bool { return u.prompt != nil || u.completion != nil || u.total != nil }

// values returns the counts, deriving total = prompt + completion when only
// those two are known. The pointers are u's own: every usage is read into
// fresh integers (or copied from the event), so the record may keep them.
func (u usage) values() (p, c, t *int64) {
	p, c, t = u.prompt, u.completion, u.total
	if t == nil && p != nil && c != nil {
		v := *p + *c
		t = &v
	}
	return p, c, t
}

func sortedKeys[V any](m map[int]V) []int {
	ks := make([]int, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Ints(ks)
	return ks
}
