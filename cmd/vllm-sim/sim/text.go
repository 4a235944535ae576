package sim

import (
	"encoding/json"
	"hash/fnv"
	"slices"
	"strconv"
	"strings"
	"unicode"
)

// vocabulary is the word list answers are drawn from. Plain ASCII words, so
// answers need no JSON escaping and count as one whitespace word per token.
var vocabulary = [...]string{
	"the", "model", "answer", "is", "a", "simple", "token", "stream", "of",
	"words", "that", "tests", "can", "compare", "with", "care", "and", "it",
	"never", "changes", "for", "same", "prompt", "so", "every", "run", "looks",
	"alike", "while", "latency", "comes", "from", "timers", "not", "GPUs",
	"audit", "records", "keep", "who", "asked", "what", "when", "how", "long",
	"fast", "slow", "cache", "batch", "queue", "server", "client", "request",
	"response", "usage", "proxy", "event", "store", "table", "row", "column",
	"metric", "panel", "query", "export",
}

// splitmix64 is a tiny deterministic generator used to pick answer words.
type splitmix64 uint64

func (s *splitmix64) next() uint64 {
	*s += 0x9e3779b97f4a7c15
	z := uint64(*s)
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

func hashString(s string) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(s))
	return h.Sum64()
}

// AnswerTokens returns the n tokens the simulator generates for seed text
// (chat: the content of the last user message, completions: the prompt,
// responses: the last user input text). The first token is a capitalised
// word, every later token is " " + word. The result depends only on seed and
// n, never on Config.Seed, so other packages' tests can predict answers:
// strings.Join(AnswerTokens(seed, n), "") is the full answer text, and a
// shorter answer is always a prefix of a longer one.
func AnswerTokens(seed string, n int) []string {
	if n <= 0 {
		return nil
	}
	out := make([]string, n)
	st := splitmix64(hashString(seed))
	for i := range out {
		w := vocabulary[st.next()%uint64(len(vocabulary))]
		if i == 0 {
			out[i] = strings.ToUpper(w[:1]) + w[1:]
		} else {
			out[i] = " " + w
		}
	}
	return out
}

// Answer is strings.Join(AnswerTokens(seed, n), "").
func Answer(seed string, n int) string {
	return strings.Join(AnswerTokens(seed, n), "")
}

// CountWords counts whitespace-separated words; it is the simulator's
// deterministic stand-in for a tokenizer.
func CountWords(s string) int {
	n := 0
	in := false
	for _, r := range s {
		if unicode.IsSpace(r) {
			in = false
			continue
		}
		if !in {
			n++
			in = true
		}
	}
	return n
}

// Prompt token accounting (deterministic, documented in the package doc).
const (
	chatTemplateBase   = 3 // assistant generation prompt
	chatTemplatePerMsg = 4 // role header and end-of-turn per message
	completionBOS      = 1 // beginning-of-sequence token
)

// tokenIDs maps words to fake token ids, for /tokenize.
func tokenIDs(s string) []int {
	ids := []int{}
	for _, w := range strings.Fields(s) {
		ids = append(ids, int(hashString(w)%128000))
	}
	return ids
}

// toolArguments builds deterministic JSON arguments for a function tool from
// its JSON-schema "parameters" in Python json.dumps style
// ({"key": "value", "n": 3}), like vLLM tool parsers emit. Unknown schemas
// give "{}".
func toolArguments(params json.RawMessage, seed string) string {
	var schema struct {
		Properties map[string]struct {
			Type any   `json:"type"`
			Enum []any `json:"enum"`
		} `json:"properties"`
		Required []string `json:"required"`
	}
	if len(params) == 0 || json.Unmarshal(params, &schema) != nil || len(schema.Properties) == 0 {
		return "{}"
	}
	keys := make([]string, 0, len(schema.Properties))
	for k := range schema.Properties {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	words := AnswerTokens(seed, len(keys))
	var b strings.Builder
	b.WriteByte('{')
	for i, k := range keys {
		if i > 0 {
			b.WriteString(", ")
		}
		b.Write(appendJSONString(nil, k))
		b.WriteString(": ")
		p := schema.Properties[k]
		if len(p.Enum) > 0 {
			v, _ := json.Marshal(p.Enum[0])
			b.Write(v)
			continue
		}
		typ, _ := p.Type.(string)
		if l, ok := p.Type.([]any); ok && len(l) > 0 {
			typ, _ = l[0].(string)
		}
		switch typ {
		case "integer", "number":
			b.WriteString(strconv.Itoa(i + 1))
		case "boolean":
			b.WriteString("true")
		case "array":
			b.WriteString("[]")
		case "object":
			b.WriteString("{}")
		case "null":
			b.WriteString("null")
		default:
			b.Write(appendJSONString(nil, strings.TrimSpace(words[i])))
		}
	}
	b.WriteByte('}')
	return b.String()
}

// splitPieces cuts s into pieces of at most size bytes without splitting a
// UTF-8 sequence; pieces deliberately cut through keys and strings, like real
// tool-call deltas do.
func splitPieces(s string, size int) []string {
	var out []string
	for len(s) > 0 {
		n := min(size, len(s))
		for n < len(s) && n > 0 && s[n]&0xC0 == 0x80 {
			n--
		}
		if n == 0 {
			n = min(size, len(s))
		}
		out = append(out, s[:n])
		s = s[n:]
	}
	return out
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a JSON string literal. Like pydantic and
// Python's json module with ensure_ascii=False it leaves non-ASCII and
// <, >, & alone and escapes only quotes, backslashes and control characters.
// It is not internal/jsonstr on purpose: the simulator reproduces vLLM's
// bytes (\b and \f as Python writes them, U+2028 left raw), llmtap's own
// encoder does not.
func appendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' {
			continue
		}
		dst = append(dst, s[start:i]...)
		switch c {
		case '"':
			dst = append(dst, '\\', '"')
		case '\\':
			dst = append(dst, '\\', '\\')
		case '\n':
			dst = append(dst, '\\', 'n')
		case '\r':
			dst = append(dst, '\\', 'r')
		case '\t':
			dst = append(dst, '\\', 't')
		case '\b':
			dst = append(dst, '\\', 'b')
		case '\f':
			dst = append(dst, '\\', 'f')
		default:
			dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
		}
		start = i + 1
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
