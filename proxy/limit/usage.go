package limit

import (
	"bytes"
	"encoding/json"

	"github.com/llmtap/llmtap/internal/jsonscan"
)

var usageKey = []byte(`"usage"`)

// maxUsageTries bounds the candidates examined, so that a hostile body full
// of unparsable "usage" keys costs O(len(body)), not O(len(body)²).
const maxUsageTries = 16

// UsageTokens returns the total tokens (prompt + completion) reported by an
// upstream response body, or 0 when it reports none. body is the raw
// (unencoded: not gzip) response as the proxy captured it: a JSON body, or
// an SSE stream (stream true) whose usage is in the last chunk that carries
// a non-null "usage" (chat/completions with include_usage, vLLM's
// continuous usage stats, the Responses API's response.completed event).
//
// It searches backwards for the last `"usage":{…}` object, so the cost is
// proportional to the distance of the usage from the end of the body, not to
// the body's size; a literal `"usage"` inside generated text is escaped in
// JSON (\"usage\") and cannot match. Fields: total_tokens when > 0, else
// prompt_tokens + completion_tokens, else input_tokens + output_tokens.
// Negative values count as 0. The last usage object that parses decides,
// even when its counts are 0. body is only read.
func UsageTokens(body []byte, stream bool) int64 {
	_, _, total, _ := UsageCounts(body, stream)
	return total
}

// Usage returns the prompt and completion tokens reported by an upstream
// response body, found as UsageTokens finds them (the last `"usage":{…}`
// object that parses). prompt is prompt_tokens, else input_tokens (the
// Responses API); completion is completion_tokens, else output_tokens.
// Negative values count as 0. ok is false when body reports no usage.
// body is only read.
func Usage(body []byte, stream bool) (prompt, completion int64, ok bool) {
	prompt, completion, _, ok = UsageCounts(body, stream)
	return prompt, completion, ok
}

// UsageCounts is Usage and UsageTokens in one search of body: prompt and
// completion as Usage returns them, total as UsageTokens does (0 when ok
// is false). body is only read.
func UsageCounts(body []byte, stream bool) (prompt, completion, total int64, ok bool) {
	u, ok := findUsage(body)
	if !ok {
		return 0, 0, 0, false
	}
	prompt, completion = max(u.Prompt, 0), max(u.Completion, 0)
	if prompt == 0 && completion == 0 {
		prompt, completion = max(u.Input, 0), max(u.Output, 0)
	}
	total = u.Total
	if total <= 0 {
		total = max(u.Prompt, 0) + max(u.Completion, 0)
	}
	if total <= 0 {
		total = max(u.Input, 0) + max(u.Output, 0)
	}
	return prompt, completion, max(total, 0), true
}

// findUsage returns the last usage object of body that parses.
func findUsage(body []byte) (usageFields, bool) {
	end := len(body)
	for try := 0; end > 0 && try < maxUsageTries; try++ {
		i := bytes.LastIndex(body[:end], usageKey)
		if i < 0 {
			return usageFields{}, false
		}
		end = i
		if u, ok := usageAt(body[i+len(usageKey):]); ok {
			return u, true
		}
	}
	return usageFields{}, false
}

type usageFields struct {
	Total      int64 `json:"total_tokens"`
	Prompt     int64 `json:"prompt_tokens"`
	Completion int64 `json:"completion_tokens"`
	Input      int64 `json:"input_tokens"`
	Output     int64 `json:"output_tokens"`
}

// usageAt parses `: {…}` at the start of b.
func usageAt(b []byte) (usageFields, bool) {
	var u usageFields
	b = bytes.TrimLeft(b, " \t\r\n")
	if len(b) == 0 || b[0] != ':' {
		return u, false
	}
	b = bytes.TrimLeft(b[1:], " \t\r\n")
	if len(b) == 0 || b[0] != '{' {
		return u, false // null, or not an object
	}
	// Unmarshal of the object's own bytes: a json.Decoder would buffer
	// everything after it.
	end, ok := jsonscan.SkipValue(b, 0)
	if !ok || json.Unmarshal(b[:end], &u) != nil {
		return u, false
	}
	return u, true
}
