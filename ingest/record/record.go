// Package record defines the rows that ingest stores: Record, one row of
// llm_requests per request, and Reject, one row of llm_rejects per entry that
// could not be decoded. Both stores (PostgreSQL and ClickHouse) hold the same
// columns with the same meaning; schema/ has the DDL.
package record

import "time"

// Usage sources (Record.UsageSource).
const (
	UsageResponse = "response" // the response body (final chunk of a stream, or the JSON body)
	UsageKong     = "kong"     // Kong AI Proxy's ai.* log block
	UsageEvent    = "event"    // the producer's usage hint
	UsageNone     = "none"     // nobody reported usage
)

// Record is one row of llm_requests. Strings are valid UTF-8 without NUL
// bytes (the decoder guarantees it, so both stores accept them).
type Record struct {
	EventID   string    // UUID, unique
	TS        time.Time // request start, UTC
	Source    string    // proxy | kong | …
	Consumer  string
	KeyID     string
	KeyPrefix string
	ClientIP  string
	Method    string
	Path      string
	RequestID string
	Endpoint  string // chat | completions | embeddings | responses | models | other
	Model     string
	Status    int
	Stream    bool

	LatencyMs float64
	TTFBMs    *float64
	TTFTMs    *float64

	// Token usage; nil means not reported (distinct from 0).
	PromptTokens     *int64
	CompletionTokens *int64
	TotalTokens      *int64
	UsageSource      string

	Prompt       string // last user turn (chat), prompt (completions), input (embeddings, responses)
	Response     string // assistant text; streams reassembled
	Reasoning    string // reasoning_content / reasoning, reassembled
	ToolCalls    string // JSON array of assembled tool calls, empty if none
	FinishReason string
	Error        string

	RequestHeaders  string // JSON object, secrets redacted
	ResponseHeaders string // JSON object
	RequestBody     string // decoded (decompressed) body, possibly truncated
	ResponseBody    string
	Truncated       bool // a capture hit its size cap

	IngestedAt time.Time
}

// Reject is one entry that could not be decoded, kept as it arrived.
type Reject struct {
	ReceivedAt time.Time
	Source     string // proxy | kong | …
	Reason     string
	Payload    []byte // the raw entry
}
