// Package event defines ingest's input format: the tee event that the proxy
// produces (and that any other gateway or script may send to POST /v1/events),
// and the Consumer interface through which events travel from a producer to
// ingest, in-process or over HTTP.
//
// An Event is what was seen on the wire, not what it means: bodies are raw
// captured bytes (possibly compressed, possibly truncated), and nothing in this
// package parses them. Understanding bodies is the job of ingest/decode.
//
// # Wire format
//
// POST /v1/events takes NDJSON: one JSON-encoded Event per line, optionally
// with Content-Encoding: gzip. []byte fields are base64 strings (standard
// encoding, as encoding/json writes them), so any bytes survive. The JSON
// names below are a public contract; see the README's "Event format".
package event

import (
	"context"
	"time"
)

// Sources of events.
const (
	SourceProxy = "proxy"
	SourceKong  = "kong"
)

// Event is one HTTP exchange as a producer observed it.
//
// Zero values mean "unknown" except where noted. Producers fill what they
// know; ingest/decode derives the rest from the bodies.
type Event struct {
	// ID is the event's idempotency key end to end: a UUID (the proxy uses
	// UUIDv7). When empty, ingest derives one from the event's content, so
	// that re-sending the same event never stores it twice.
	ID string `json:"event_id"`
	// Time is when the request started (UTC).
	Time time.Time `json:"ts"`
	// Source is SourceProxy, SourceKong, or another producer's name.
	Source string `json:"source"`

	Consumer  string `json:"consumer,omitempty"`   // authenticated consumer; empty for rejected attempts
	KeyID     string `json:"key_id,omitempty"`     // id of the key used, if it was known
	KeyPrefix string `json:"key_prefix,omitempty"` // display prefix of the presented key, if any

	ClientIP  string `json:"client_ip,omitempty"`
	Method    string `json:"method,omitempty"`
	Path      string `json:"path,omitempty"`       // URL path without the query string
	RequestID string `json:"request_id,omitempty"` // upstream (X-Request-Id) or gateway request id

	// Status is the HTTP status the client got; 499 when the client left
	// before the response was complete.
	Status int `json:"status"`
	// Stream is true when the response was an event stream (SSE).
	Stream bool `json:"stream,omitempty"`

	// Timings in milliseconds from Time. LatencyMs is the whole exchange;
	// TTFBMs the first response byte; TTFTMs the first streamed event
	// (streams only). Nil means not measured.
	LatencyMs float64  `json:"latency_ms"`
	TTFBMs    *float64 `json:"ttfb_ms,omitempty"`
	TTFTMs    *float64 `json:"ttft_ms,omitempty"`

	// Captured headers, secrets already redacted by the producer.
	RequestHeaders  map[string]string `json:"request_headers,omitempty"`
	ResponseHeaders map[string]string `json:"response_headers,omitempty"`

	// Captured bodies as they crossed the wire, each capped by the producer.
	// ResponseEncoding is the upstream Content-Encoding of ResponseBody
	// (gzip, deflate, br, zstd), empty for identity.
	RequestBody       []byte `json:"request_body,omitempty"`
	ResponseBody      []byte `json:"response_body,omitempty"`
	RequestTruncated  bool   `json:"request_truncated,omitempty"`
	ResponseTruncated bool   `json:"response_truncated,omitempty"`
	ResponseEncoding  string `json:"response_encoding,omitempty"`

	// UsageInjected is set by the proxy when it added
	// stream_options.include_usage to the request (and stripped the extra
	// usage chunk from what the client received; the captured body keeps it).
	UsageInjected bool `json:"usage_injected,omitempty"`

	// Error is a failure the producer saw itself (upstream unreachable,
	// client disconnected, body too large), not one inside the body.
	Error string `json:"error,omitempty"`

	// Model and Usage are hints from producers that know them without the
	// bodies (Kong AI Proxy's ai.* block). Bodies win when they carry usage.
	Model string `json:"model,omitempty"`
	Usage *Usage `json:"usage,omitempty"`
}

// Usage is token usage. Nil pointers mean "not reported", which is not 0.
type Usage struct {
	PromptTokens     *int64 `json:"prompt_tokens,omitempty"`
	CompletionTokens *int64 `json:"completion_tokens,omitempty"`
	TotalTokens      *int64 `json:"total_tokens,omitempty"`
}

// Consumer receives events.
//
// Consume returns nil only after the events are durable: committed to the
// store, or (for consumers that spool) written to disk. On error the caller
// still owns the events and may retry them; consumers are idempotent on
// Event.ID, so retries never duplicate. The slice and the events must not be
// modified by the caller until Consume returns. Implementations are safe for
// concurrent use.
type Consumer interface {
	Consume(ctx context.Context, events []Event) error
}

// ConsumerFunc adapts a function to Consumer.
type ConsumerFunc func(ctx context.Context, events []Event) error

// Consume calls f(ctx, events).
func (f ConsumerFunc) Consume(ctx context.Context, events []Event) error { return f(ctx, events) }
