package decode

import (
	"bytes"
	"encoding/json"
)

// One-pass extraction for chat completions, the bulk of the traffic.
//
// The generic path reads a body level by level: parseObj of the response,
// then of "choices", of choice 0, of its "message", of "usage", each
// scanning its bytes again and allocating its members. For a 16-token
// answer that was 6 objects, 2 arrays and about 2.3 times the body's bytes
// scanned, most of Decode's cost (BenchmarkDecodeProxy/chat). The functions
// here read the same fields in one pass over each body, without building
// anything, and give up (ok == false) on whatever they do not follow the way
// the generic path does: escaped, non-ASCII or duplicate keys at the levels
// they read, and invalid JSON. extract then takes the generic path, which
// handles every body. FuzzChatFast checks that both agree whenever the
// one-pass functions succeed.

// chatRequest reads the model (undecoded) and the prompt (the content of
// the last message with role "user") of a chat request into x.
func chatRequest(b []byte, x *extraction) (ok bool) {
	b = bytes.TrimSpace(b)
	if len(b) == 0 || b[0] != '{' {
		return false
	}
	s := &scanner{b: b}
	var model, content json.RawMessage
	var seen uint8
	ok = s.object(func(key []byte) bool {
		if !plainKey(key) || dup(&seen, key, "model", "messages") {
			return false
		}
		switch string(key) {
		case "model":
			var ok bool
			model, ok = s.value()
			return ok
		case "messages":
			if s.peek() != '[' {
				return s.skip() // not an array: no messages
			}
			return s.array(func(int) bool {
				if s.peek() != '{' {
					return s.skip() // not a message
				}
				var role, c json.RawMessage
				var seenM uint8
				ok := s.object(func(k []byte) bool {
					if !plainKey(k) || dup(&seenM, k, "role", "content") {
						return false
					}
					var ok bool
					switch string(k) {
					case "role":
						role, ok = s.value()
					case "content":
						c, ok = s.value()
					default:
						ok = s.skip()
					}
					return ok
				})
				if v, isStr := strView(role); isStr && string(v) == "user" {
					content = c
				}
				return ok
			})
		}
		return s.skip()
	})
	if s.ws(); !ok || s.i != len(b) {
		return false
	}
	x.reqModel = model
	x.prompt = contentText(content)
	return true
}

// chatChoice is what extraction reads of one element of "choices".
type chatChoice struct {
	index, finish, text                  json.RawMessage
	message                              bool // "message" is an object
	content, reasoningContent, reasoning json.RawMessage
	toolCalls                            json.RawMessage
}

// chatResponse reads a non-stream chat completion (or completion) into x:
// model, usage, and finish reason, text, reasoning and tool calls of the
// choice with index 0 (else the first).
func chatResponse(b []byte, x *extraction) (ok bool) {
	b = bytes.TrimSpace(b)
	if len(b) == 0 || b[0] != '{' {
		return false
	}
	s := &scanner{b: b}
	var model json.RawMessage
	var u [5]json.RawMessage // prompt_tokens, input_tokens, completion_tokens, output_tokens, total_tokens
	var zero, first chatChoice
	var haveZero, haveFirst bool
	var seen uint8
	ok = s.object(func(key []byte) bool {
		if !plainKey(key) || dup(&seen, key, "model", "usage", "choices") {
			return false
		}
		switch string(key) {
		case "model":
			var ok bool
			model, ok = s.value()
			return ok
		case "usage":
			if s.peek() != '{' {
				return s.skip() // not an object: no usage
			}
			return s.object(func(k []byte) bool {
				if !plainKey(k) {
					return false
				}
				for i, name := range [...]string{"prompt_tokens", "input_tokens", "completion_tokens", "output_tokens", "total_tokens"} {
					if string(k) == name {
						if u[i] != nil {
							return false // duplicate
						}
						var ok bool
						u[i], ok = s.value()
						return ok
					}
				}
				return s.skip()
			})
		case "choices":
			if s.peek() != '[' {
				return s.skip()
			}
			return s.array(func(i int) bool {
				if s.peek() != '{' {
					return s.skip() // not a choice
				}
				var c chatChoice
				if !s.chatChoice(&c) {
					return false
				}
				idx, isInt := intOf(c.index)
				switch {
				case haveZero:
				case (isInt && idx == 0) || (!isInt && i == 0):
					zero, haveZero = c, true
				case !haveFirst:
					first, haveFirst = c, true
				}
				return true
			})
		}
		return s.skip()
	})
	if s.ws(); !ok || s.i != len(b) {
		return false
	}
	x.respModel, _ = asString(model)
	pick := func(a, b json.RawMessage) *int64 {
		if v := intVal(a); v != nil {
			return v
		}
		return intVal(b)
	}
	x.usage = usage{prompt: pick(u[0], u[1]), completion: pick(u[2], u[3]), total: intVal(u[4])}
	c := first
	switch {
	case haveZero:
		c = zero
	case !haveFirst:
		return true
	}
	x.finishReason, _ = asString(c.finish)
	if t, ok := asString(c.text); ok {
		x.response = t
	}
	if c.message {
		x.response = contentText(c.content)
		rc, _ := asString(c.reasoningContent)
		r, _ := asString(c.reasoning)
		x.reasoning = firstNonEmpty(rc, r)
		x.toolCalls = toolCallsJSON(normalizeToolCalls(asArr(c.toolCalls)))
	}
	return true
}

// chatChoice reads one choice object.
func (s *scanner) chatChoice(c *chatChoice) bool {
	var seen uint8
	return s.object(func(k []byte) bool {
		if !plainKey(k) || dup(&seen, k, "index", "finish_reason", "text", "message") {
			return false
		}
		var ok bool
		switch string(k) {
		case "index":
			c.index, ok = s.value()
		case "finish_reason":
			c.finish, ok = s.value()
		case "text":
			c.text, ok = s.value()
		case "message":
			if s.peek() != '{' {
				return s.skip()
			}
			c.message = true
			var seenM uint8
			ok = s.object(func(mk []byte) bool {
				if !plainKey(mk) || dup(&seenM, mk, "content", "reasoning_content", "reasoning", "tool_calls") {
					return false
				}
				var ok bool
				switch string(mk) {
				case "content":
					c.content, ok = s.value()
				case "reasoning_content":
					c.reasoningContent, ok = s.value()
				case "reasoning":
					c.reasoning, ok = s.value()
				case "tool_calls":
					c.toolCalls, ok = s.value()
				default:
					ok = s.skip()
				}
				return ok
			})
		default:
			ok = s.skip()
		}
		return ok
	})
}

// value consumes any value and returns its text.
func (s *scanner) value() (json.RawMessage, bool) {
	s.ws()
	start := s.i
	if !s.skip() {
		return nil, false
	}
	return json.RawMessage(s.b[start:s.i:s.i]), true
}

// plainKey: a key that scanFields would read as it is (ASCII; the scanner
// already refuses escapes).
func plainKey(key []byte) bool {
	for _, c := range key {
		if c >= 0x80 {
			return false
		}
	}
	return true
}
