package decode

import (
	"bytes"
	"encoding/json"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// scanner is a small, allocation-light JSON reader used on the hot path
// (one call per streamed chunk). It understands exactly RFC 8259 JSON and
// fails (ok == false) on anything else, including valid JSON of a shape the
// caller did not expect; callers then fall back to encoding/json. FuzzScanChunk
// checks it against encoding/json.
type scanner struct {
	b     []byte
	i     int
	depth int
}

const maxScanDepth = 512

func (s *scanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// peek returns the next non-space byte (0 at the end).
func (s *scanner) peek() byte {
	s.ws()
	if s.i >= len(s.b) {
		return 0
	}
	return s.b[s.i]
}

func (s *scanner) lit(word string) bool {
	if bytes.HasPrefix(s.b[s.i:], []byte(word)) {
		s.i += len(word)
		return true
	}
	return false
}

// null consumes a null literal if one is next.
func (s *scanner) null() bool {
	if s.peek() == 'n' {
		return s.lit("null")
	}
	return false
}

// str reads a string value.
func (s *scanner) str() (string, bool) {
	if s.peek() != '"' {
		return "", false
	}
	s.i++
	start := s.i
	for s.i < len(s.b) {
		c := s.b[s.i]
		switch {
		case c == '"':
			raw := s.b[start:s.i]
			s.i++
			if !asciiOrValid(raw) {
				return "", false
			}
			return string(raw), true
		case c == '\\':
			return s.strSlow(start)
		case c < 0x20:
			return "", false
		}
		s.i++
	}
	return "", false
}

func asciiOrValid(b []byte) bool {
	for _, c := range b {
		if c >= 0x80 {
			return utf8.Valid(b)
		}
	}
	return true
}

// strSlow reads the rest of a string that has escapes; s.i is at the first
// backslash, start after the opening quote.
func (s *scanner) strSlow(start int) (string, bool) {
	out := make([]byte, 0, s.i-start+16)
	out = append(out, s.b[start:s.i]...)
	for s.i < len(s.b) {
		c := s.b[s.i]
		switch {
		case c == '"':
			s.i++
			if !asciiOrValid(out) {
				return "", false
			}
			return string(out), true
		case c < 0x20:
			return "", false
		case c != '\\':
			out = append(out, c)
			s.i++
			continue
		}
		if s.i+1 >= len(s.b) {
			return "", false
		}
		e := s.b[s.i+1]
		s.i += 2
		switch e {
		case '"', '\\', '/':
			out = append(out, e)
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			r, ok := s.hex4()
			if !ok {
				return "", false
			}
			if utf16.IsSurrogate(r) {
				r2 := rune(-1)
				if s.i+1 < len(s.b) && s.b[s.i] == '\\' && s.b[s.i+1] == 'u' {
					save := s.i
					s.i += 2
					var ok2 bool
					if r2, ok2 = s.hex4(); !ok2 {
						return "", false
					}
					if d := utf16.DecodeRune(r, r2); d != utf8.RuneError {
						out = utf8.AppendRune(out, d)
						continue
					}
					s.i = save // not a pair: the second escape is read on its own
				}
				out = utf8.AppendRune(out, utf8.RuneError)
				continue
			}
			out = utf8.AppendRune(out, r)
		default:
			return "", false
		}
	}
	return "", false
}

func (s *scanner) hex4() (rune, bool) {
	if s.i+4 > len(s.b) {
		return 0, false
	}
	var r rune
	for _, c := range s.b[s.i : s.i+4] {
		r <<= 4
		switch {
		case c >= '0' && c <= '9':
			r |= rune(c - '0')
		case c >= 'a' && c <= 'f':
			r |= rune(c-'a') + 10
		case c >= 'A' && c <= 'F':
			r |= rune(c-'A') + 10
		default:
			return 0, false
		}
	}
	s.i += 4
	return r, true
}

// number consumes a JSON number and returns its text.
func (s *scanner) number() ([]byte, bool) {
	s.ws()
	start := s.i
	if s.i < len(s.b) && s.b[s.i] == '-' {
		s.i++
	}
	digits := func() int {
		n := 0
		for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
			s.i++
			n++
		}
		return n
	}
	if s.i < len(s.b) && s.b[s.i] == '0' {
		s.i++
	} else if digits() == 0 {
		return nil, false
	}
	if s.i < len(s.b) && s.b[s.i] == '.' {
		s.i++
		if digits() == 0 {
			return nil, false
		}
	}
	if s.i < len(s.b) && (s.b[s.i] == 'e' || s.b[s.i] == 'E') {
		s.i++
		if s.i < len(s.b) && (s.b[s.i] == '+' || s.b[s.i] == '-') {
			s.i++
		}
		if digits() == 0 {
			return nil, false
		}
	}
	return s.b[start:s.i], true
}

// integer reads an integer number (no fraction or exponent).
func (s *scanner) integer() (int64, bool) {
	t, ok := s.number()
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseInt(string(t), 10, 64)
	return n, err == nil
}

// skipStr consumes a string without decoding it. Like encoding/json, it
// does not insist on valid UTF-8 (decoders replace bad bytes later).
func (s *scanner) skipStr() bool {
	if s.peek() != '"' {
		return false
	}
	s.i++
	for s.i < len(s.b) {
		c := s.b[s.i]
		switch {
		case c == '"':
			s.i++
			return true
		case c < 0x20:
			return false
		case c == '\\':
			if s.i+1 >= len(s.b) {
				return false
			}
			switch s.b[s.i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				s.i += 2
			case 'u':
				s.i += 2
				if _, ok := s.hex4(); !ok {
					return false
				}
			default:
				return false
			}
			continue
		}
		s.i++
	}
	return false
}

// scanObj reads a JSON object into an obj whose values alias b, in one
// pass; ok is false when encoding/json should do it (escaped or non-ASCII
// keys, very deep nesting, invalid JSON).
func scanObj(b []byte) (obj, bool) {
	s := &scanner{b: b}
	o := make(obj, 8)
	ok := s.object(func(key []byte) bool {
		for _, c := range key {
			if c >= 0x80 {
				return false
			}
		}
		s.ws()
		start := s.i
		if !s.skip() {
			return false
		}
		o[string(key)] = json.RawMessage(b[start:s.i:s.i])
		return true
	})
	if s.ws(); !ok || s.i != len(b) {
		return nil, false
	}
	return o, true
}

// scanArray splits a JSON array into its elements (aliasing b); ok is false
// when encoding/json should do it.
func scanArray(b []byte) ([]json.RawMessage, bool) {
	s := &scanner{b: b}
	out := make([]json.RawMessage, 0, 4) // "[]" is empty, not absent
	ok := s.array(func(int) bool {
		s.ws()
		start := s.i
		if !s.skip() {
			return false
		}
		out = append(out, json.RawMessage(b[start:s.i:s.i]))
		return true
	})
	if s.ws(); !ok || s.i != len(b) {
		return nil, false
	}
	return out, true
}

// skip consumes any value.
func (s *scanner) skip() bool {
	switch s.peek() {
	case '"':
		return s.skipStr()
	case '{':
		return s.object(func([]byte) bool { return s.skip() })
	case '[':
		return s.array(func(int) bool { return s.skip() })
	case 't':
		return s.lit("true")
	case 'f':
		return s.lit("false")
	case 'n':
		return s.lit("null")
	default:
		_, ok := s.number()
		return ok
	}
}

// object iterates an object; field must consume the value of each key.
func (s *scanner) object(field func(key []byte) bool) bool {
	if s.peek() != '{' {
		return false
	}
	if s.depth++; s.depth > maxScanDepth {
		return false
	}
	defer func() { s.depth-- }()
	s.i++
	if s.peek() == '}' {
		s.i++
		return true
	}
	for {
		if s.peek() != '"' {
			return false
		}
		s.i++
		start := s.i
		for s.i < len(s.b) && s.b[s.i] != '"' {
			if s.b[s.i] == '\\' || s.b[s.i] < 0x20 {
				return false // escaped keys: leave to encoding/json
			}
			s.i++
		}
		if s.i >= len(s.b) {
			return false
		}
		key := s.b[start:s.i]
		s.i++
		if s.peek() != ':' {
			return false
		}
		s.i++
		if !field(key) {
			return false
		}
		switch s.peek() {
		case ',':
			s.i++
		case '}':
			s.i++
			return true
		default:
			return false
		}
	}
}

// array iterates an array; elem must consume each element.
func (s *scanner) array(elem func(i int) bool) bool {
	if s.peek() != '[' {
		return false
	}
	if s.depth++; s.depth > maxScanDepth {
		return false
	}
	defer func() { s.depth-- }()
	s.i++
	if s.peek() == ']' {
		s.i++
		return true
	}
	for n := 0; ; n++ {
		if !elem(n) {
			return false
		}
		switch s.peek() {
		case ',':
			s.i++
		case ']':
			s.i++
			return true
		default:
			return false
		}
	}
}

// skipUnknown skips the value of a key the caller does not use. It fails
// when the key could still mean a known one to encoding/json (which matches
// keys case-insensitively, with Unicode folding), so that both readers
// always agree.
func (s *scanner) skipUnknown(key []byte, known ...string) bool {
	for _, c := range key {
		if c >= 0x80 {
			return false
		}
	}
	for _, k := range known {
		// ASCII keys fold only to names of the same length.
		if len(k) == len(key) && bytes.EqualFold(key, []byte(k)) {
			return false
		}
	}
	return s.skip()
}

// dup reports whether key is one of names and was seen before in this
// object (duplicate keys are left to encoding/json, whose merge rules the
// scanner does not copy).
func dup(seen *uint8, key []byte, names ...string) bool {
	for i, n := range names {
		if string(key) == n {
			bit := uint8(1) << i
			if *seen&bit != 0 {
				return true
			}
			*seen |= bit
			return false
		}
	}
	return false
}

// optStr reads a string or null into *string.
func (s *scanner) optStr(dst **string) bool {
	if s.null() {
		*dst = nil
		return true
	}
	v, ok := s.str()
	if !ok {
		return false
	}
	*dst = &v
	return true
}

func (s *scanner) optInt(dst **int64) bool {
	if s.null() {
		*dst = nil
		return true
	}
	v, ok := s.integer()
	if !ok {
		return false
	}
	*dst = &v
	return true
}

// scanChunk reads a chat/completions chunk with the scanner. ok is false
// when the data is not a chunk of the expected shape; the caller then uses
// encoding/json.
func scanChunk(data []byte) (v chunkView, ok bool) {
	s := &scanner{b: data}
	var model *string
	var u fastUsage
	var hasUsage, choicesSeen bool
	var seenTop uint8
	ok = s.object(func(key []byte) bool {
		if dup(&seenTop, key, "model", "choices", "usage", "error") {
			return false
		}
		switch string(key) {
		case "model":
			return s.optStr(&model)
		case "choices":
			if s.null() {
				return true
			}
			choicesSeen = true
			v.choices = v.choices[:0]
			return s.array(func(i int) bool {
				cv := choiceView{index: i}
				var idx *int64
				var finish *string
				var seen uint8
				okc := s.object(func(k []byte) bool {
					if dup(&seen, k, "index", "text", "finish_reason", "delta") {
						return false
					}
					switch string(k) {
					case "index":
						return s.optInt(&idx)
					case "text":
						return s.optStr(&cv.text)
					case "finish_reason":
						return s.optStr(&finish)
					case "delta":
						if s.null() {
							return true
						}
						var seenD uint8
						return s.object(func(dk []byte) bool {
							if dup(&seenD, dk, "content", "reasoning_content", "reasoning", "tool_calls") {
								return false
							}
							switch string(dk) {
							case "content":
								return s.optStr(&cv.content)
							case "reasoning_content":
								return s.optStr(&cv.reasoningContent)
							case "reasoning":
								return s.optStr(&cv.reasonin)
							case "tool_calls":
								if s.null() {
									return true
								}
								return s.array(func(pos int) bool {
									td := toolDeltaView{index: pos}
									var tIdx *int64
									var id, typ, name, args *string
									var seenT uint8
									okt := s.object(func(tk []byte) bool {
										if dup(&seenT, tk, "index", "id", "type", "function") {
											return false
										}
										switch string(tk) {
										case "index":
											return s.optInt(&tIdx)
										case "id":
											return s.optStr(&id)
										case "type":
											return s.optStr(&typ)
										case "function":
											if s.null() {
												return true
											}
											var seenF uint8
											return s.object(func(fk []byte) bool {
												if dup(&seenF, fk, "name", "arguments") {
													return false
												}
												switch string(fk) {
												case "name":
													return s.optStr(&name)
												case "arguments":
													return s.optStr(&args)
												}
												return s.skipUnknown(fk, "name", "arguments")
											})
										}
										return s.skipUnknown(tk, "index", "id", "type", "function")
									})
									if tIdx != nil {
										td.index = int(*tIdx)
									}
									td.id, td.typ, td.name, td.arguments = deref(id), deref(typ), deref(name), deref(args)
									cv.toolCalls = append(cv.toolCalls, td)
									return okt
								})
							}
							return s.skipUnknown(dk, "content", "reasoning_content", "reasoning", "tool_calls")
						})
					}
					return s.skipUnknown(k, "index", "text", "finish_reason", "delta")
				})
				if idx != nil {
					cv.index = int(*idx)
				}
				cv.finish = deref(finish)
				v.choices = append(v.choices, cv)
				return okc
			})
		case "usage":
			if s.null() {
				return true
			}
			hasUsage = true
			var seenU uint8
			return s.object(func(k []byte) bool {
				if dup(&seenU, k, "prompt_tokens", "completion_tokens", "total_tokens", "input_tokens", "output_tokens") {
					return false
				}
				switch string(k) {
				case "prompt_tokens":
					return s.optInt(&u.PromptTokens)
				case "completion_tokens":
					return s.optInt(&u.CompletionTokens)
				case "total_tokens":
					return s.optInt(&u.TotalTokens)
				case "input_tokens":
					return s.optInt(&u.InputTokens)
				case "output_tokens":
					return s.optInt(&u.OutputTokens)
				}
				return s.skipUnknown(k, "prompt_tokens", "completion_tokens", "total_tokens", "input_tokens", "output_tokens")
			})
		case "error":
			if s.null() {
				return true
			}
			return false // rare: leave error chunks to encoding/json
		}
		return s.skipUnknown(key, "model", "choices", "usage", "error")
	})
	if s.ws(); !ok || s.i != len(s.b) {
		return chunkView{}, false
	}
	v.model = deref(model)
	if hasUsage {
		v.usage = usage{prompt: firstPtr(u.PromptTokens, u.InputTokens),
			completion: firstPtr(u.CompletionTokens, u.OutputTokens), total: u.TotalTokens}
	}
	v.emptyChoices = choicesSeen && len(v.choices) == 0
	return v, true
}
