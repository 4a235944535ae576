package decode

import (
	"bytes"
	"encoding/binary"
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
	b       []byte
	i       int
	depth   int
	scratch []byte // decoded strings with escapes (see strBytes)
}

const maxScanDepth = 512

func (s *scanner) ws() {
	if s.i < len(s.b) && s.b[s.i] > ' ' { // the usual case: no space at all
		return
	}
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
	v, ok := s.strBytes()
	return string(v), ok
}

// strBytes reads a string value without copying it when it has no escapes:
// the result then aliases s.b. A string with escapes is decoded onto the end
// of s.scratch (nil: a new buffer), so results read before stay valid.
func (s *scanner) strBytes() ([]byte, bool) {
	if s.peek() != '"' {
		return nil, false
	}
	s.i++
	start := s.i
	s.i += plainRun(s.b[s.i:])
	if s.i >= len(s.b) {
		return nil, false
	}
	switch s.b[s.i] {
	case '"':
		raw := s.b[start:s.i:s.i]
		s.i++
		if !utf8.Valid(raw) {
			return nil, false
		}
		return raw, true
	case '\\':
		return s.strSlow(start)
	default: // a control character
		return nil, false
	}
}

// plainRun is the length of the prefix of b that a JSON string holds as it
// is (no '"', '\\' or control character). It tests eight bytes at a time:
// most of a body's bytes are in strings, and this loop was the scanner's
// hottest (BenchmarkDecodeProxy/stream64).
func plainRun(b []byte) int {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	i := 0
	for ; i+8 <= len(b); i += 8 {
		w := binary.LittleEndian.Uint64(b[i:])
		q, bs := w^('"'*ones), w^('\\'*ones) // zero bytes where w has '"', '\\'
		// (x - n*ones) &^ x & highs is not 0 exactly when a byte of x is
		// below n (n <= 0x80): a control character, '"' or '\\'.
		if ((w-0x20*ones)&^w|(q-ones)&^q|(bs-ones)&^bs)&highs != 0 {
			break
		}
	}
	for i < len(b) && plainStr[b[i]] {
		i++
	}
	return i
}

// strSlow reads the rest of a string that has escapes; s.i is at the first
// backslash, start after the opening quote. The decoded value is appended to
// s.scratch (a failed string leaves s.scratch as it was).
func (s *scanner) strSlow(start int) ([]byte, bool) {
	base := len(s.scratch)
	out := append(s.scratch, s.b[start:s.i]...)
	for s.i < len(s.b) {
		c := s.b[s.i]
		switch {
		case c == '"':
			s.i++
			if !utf8.Valid(out[base:]) {
				return nil, false
			}
			s.scratch = out
			return out[base:len(out):len(out)], true
		case c < 0x20:
			return nil, false
		case c != '\\':
			out = append(out, c)
			s.i++
			continue
		}
		if s.i+1 >= len(s.b) {
			return nil, false
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
				return nil, false
			}
			if utf16.IsSurrogate(r) {
				r2 := rune(-1)
				if s.i+1 < len(s.b) && s.b[s.i] == '\\' && s.b[s.i+1] == 'u' {
					save := s.i
					s.i += 2
					var ok2 bool
					if r2, ok2 = s.hex4(); !ok2 {
						return nil, false
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
			return nil, false
		}
	}
	return nil, false
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
	if s.i < len(s.b) && s.b[s.i] == '0' {
		s.i++
	} else if s.digits() == 0 {
		return nil, false
	}
	if s.i < len(s.b) && s.b[s.i] == '.' {
		s.i++
		if s.digits() == 0 {
			return nil, false
		}
	}
	if s.i < len(s.b) && (s.b[s.i] == 'e' || s.b[s.i] == 'E') {
		s.i++
		if s.i < len(s.b) && (s.b[s.i] == '+' || s.b[s.i] == '-') {
			s.i++
		}
		if s.digits() == 0 {
			return nil, false
		}
	}
	return s.b[start:s.i], true
}

// digits consumes decimal digits and returns how many.
func (s *scanner) digits() int {
	start := s.i
	for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
		s.i++
	}
	return s.i - start
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

// plainStr marks the bytes that a string may contain as they are (not '"',
// '\\' or a control character).
var plainStr = func() (t [256]bool) {
	for c := 0x20; c < 256; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// skipStr consumes a string without decoding it. Like encoding/json, it
// does not insist on valid UTF-8 (decoders replace bad bytes later).
func (s *scanner) skipStr() bool {
	if s.peek() != '"' {
		return false
	}
	s.i++
	for {
		s.i += plainRun(s.b[s.i:])
		if s.i >= len(s.b) {
			return false
		}
		switch s.b[s.i] {
		case '"':
			s.i++
			return true
		case '\\':
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
		default: // a control character
			return false
		}
	}
}

// scanFields reads a JSON object into its members (aliasing b), in one pass;
// ok is false when encoding/json should do it (escaped or non-ASCII keys,
// very deep nesting, invalid JSON). It allocates once (nothing for {}).
func scanFields(b []byte) (obj, bool) {
	s := &scanner{b: b}
	var buf [16]field
	fs := buf[:0]
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
		fs = append(fs, field{key: key, val: json.RawMessage(b[start:s.i:s.i])})
		return true
	})
	if s.ws(); !ok || s.i != len(b) {
		return nil, false
	}
	o := make(obj, len(fs)) // non-nil even when empty
	copy(o, fs)
	return o, true
}

// scanObj is scanFields as a map, for comparison with encoding/json.
func scanObj(b []byte) (map[string]json.RawMessage, bool) {
	fs, ok := scanFields(b)
	if !ok {
		return nil, false
	}
	m := make(map[string]json.RawMessage, len(fs))
	for _, f := range fs {
		m[string(f.key)] = f.val
	}
	return m, true
}

// scanArray splits a JSON array into its elements (aliasing b); ok is false
// when encoding/json should do it. "[]" gives a non-nil empty slice without
// allocating.
func scanArray(b []byte) ([]json.RawMessage, bool) {
	s := &scanner{b: b}
	var buf [16]json.RawMessage
	elems := buf[:0]
	ok := s.array(func(int) bool {
		s.ws()
		start := s.i
		if !s.skip() {
			return false
		}
		elems = append(elems, json.RawMessage(b[start:s.i:s.i]))
		return true
	})
	if s.ws(); !ok || s.i != len(b) {
		return nil, false
	}
	out := make([]json.RawMessage, len(elems)) // "[]" is empty, not absent
	copy(out, elems)
	return out, true
}

// skip consumes any value. Containers are skipped by direct recursion, not
// through object and array, whose callbacks cost more than the skipping on
// the extraction path (most bytes of a body are skipped).
func (s *scanner) skip() bool {
	switch s.peek() {
	case '"':
		return s.skipStr()
	case '{':
		return s.skipObject()
	case '[':
		return s.skipArray()
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

// skipObject consumes an object; s.b[s.i] is '{'. On failure s.depth is
// left as it is (a failed scan is abandoned).
func (s *scanner) skipObject() bool {
	if s.depth++; s.depth > maxScanDepth {
		return false
	}
	s.i++
	if s.peek() == '}' {
		s.i++
		s.depth--
		return true
	}
	for {
		if !s.skipStr() {
			return false
		}
		if s.peek() != ':' {
			return false
		}
		s.i++
		if !s.skip() {
			return false
		}
		switch s.peek() {
		case ',':
			s.i++
		case '}':
			s.i++
			s.depth--
			return true
		default:
			return false
		}
	}
}

// skipArray consumes an array; s.b[s.i] is '['.
func (s *scanner) skipArray() bool {
	if s.depth++; s.depth > maxScanDepth {
		return false
	}
	s.i++
	if s.peek() == ']' {
		s.i++
		s.depth--
		return true
	}
	for {
		if !s.skip() {
			return false
		}
		switch s.peek() {
		case ',':
			s.i++
		case ']':
			s.i++
			s.depth--
			return true
		default:
			return false
		}
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
		s.i += plainRun(s.b[s.i:])
		if s.i >= len(s.b) || s.b[s.i] != '"' {
			return false // escaped keys: leave to encoding/json
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

// optBytes is a string value that may be absent or null (set false), its
// bytes aliasing the scanned data or the scanner's scratch.
type optBytes struct {
	b   []byte
	set bool
}

// ptr is the value as a new *string, nil when not set.
func (o optBytes) ptr() *string {
	if !o.set {
		return nil
	}
	v := string(o.b)
	return &v
}

// optBytes reads a string or null.
func (s *scanner) optBytes(dst *optBytes) bool {
	if s.null() {
		*dst = optBytes{}
		return true
	}
	v, ok := s.strBytes()
	if !ok {
		return false
	}
	*dst = optBytes{b: v, set: true}
	return true
}

// optInt reads an integer or null into *int64.
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

// optIndex reads an integer or null; set reports an integer.
func (s *scanner) optIndex(dst *int, set *bool) bool {
	if s.null() {
		*set = false
		return true
	}
	v, ok := s.integer()
	if !ok {
		return false
	}
	*dst, *set = int(v), true
	return true
}

// chunkRaw is one chat.completion.chunk or text_completion chunk as
// reassembly reads it: chunkView with its strings as bytes that alias the
// chunk's data or the scanner's scratch, valid until the next chunk is
// scanned.
type chunkRaw struct {
	model        []byte
	errMsg       string
	usage        usage
	emptyChoices bool // "choices": [] (the final usage chunk)
	choices      []choiceRaw
}

type choiceRaw struct {
	index                     int
	text, content             optBytes
	reasoningContent, reasoin optBytes
	finish                    []byte
	toolCalls                 []toolDeltaRaw
}

type toolDeltaRaw struct {
	index                    int
	id, typ, name, arguments []byte
}

// addChoice appends a choice at array position pos, reusing the space (and
// the tool call slice) of an earlier chunk's choice.
func (r *chunkRaw) addChoice(pos int) *choiceRaw {
	if n := len(r.choices); n < cap(r.choices) {
		r.choices = r.choices[:n+1]
		c := &r.choices[n]
		*c = choiceRaw{index: pos, toolCalls: c.toolCalls[:0]}
		return c
	}
	r.choices = append(r.choices, choiceRaw{index: pos})
	return &r.choices[len(r.choices)-1]
}

// view copies r into a chunkView.
func (r *chunkRaw) view() chunkView {
	v := chunkView{model: string(r.model), errMsg: r.errMsg, usage: r.usage, emptyChoices: r.emptyChoices}
	for _, c := range r.choices {
		cv := choiceView{index: c.index, text: c.text.ptr(), content: c.content.ptr(),
			reasoningContent: c.reasoningContent.ptr(), reasonin: c.reasoin.ptr(), finish: string(c.finish)}
		for _, t := range c.toolCalls {
			cv.toolCalls = append(cv.toolCalls, toolDeltaView{index: t.index, id: string(t.id), typ: string(t.typ),
				name: string(t.name), arguments: string(t.arguments)})
		}
		v.choices = append(v.choices, cv)
	}
	return v
}

// rawOf is the chunkRaw of a chunkView (from encoding/json).
func rawOf(v chunkView) *chunkRaw {
	opt := func(p *string) optBytes {
		if p == nil {
			return optBytes{}
		}
		return optBytes{b: []byte(*p), set: true}
	}
	r := &chunkRaw{model: []byte(v.model), errMsg: v.errMsg, usage: v.usage, emptyChoices: v.emptyChoices}
	for _, c := range v.choices {
		cr := choiceRaw{index: c.index, text: opt(c.text), content: opt(c.content),
			reasoningContent: opt(c.reasoningContent), reasoin: opt(c.reasonin), finish: []byte(c.finish)}
		for _, t := range c.toolCalls {
			cr.toolCalls = append(cr.toolCalls, toolDeltaRaw{index: t.index, id: []byte(t.id), typ: []byte(t.typ),
				name: []byte(t.name), arguments: []byte(t.arguments)})
		}
		r.choices = append(r.choices, cr)
	}
	return r
}

// scanChunk reads a chat/completions chunk with the scanner. ok is false
// when the data is not a chunk of the expected shape; the caller then uses
// encoding/json.
func scanChunk(data []byte) (chunkView, bool) {
	var cs chunkScanner
	r, ok := cs.scan(data)
	if !ok {
		return chunkView{}, false
	}
	return r.view(), true
}

// chunkScanner is scanChunk for a whole stream: it reuses its buffers from
// one chunk to the next, so that a chunk costs no allocation (the strings
// of a chunkView cost two allocations each, and streams are mostly
// one-token chunks: BenchmarkDecodeProxy/stream64).
type chunkScanner struct {
	s   scanner
	raw chunkRaw
}

// scan reads one chunk; the result is valid until the next call.
func (cs *chunkScanner) scan(data []byte) (*chunkRaw, bool) {
	cs.s = scanner{b: data, scratch: cs.s.scratch[:0]}
	s, r := &cs.s, &cs.raw
	*r = chunkRaw{choices: r.choices[:0]}
	var model optBytes
	var u fastUsage
	var hasUsage, choicesSeen bool
	var seenTop uint8
	ok := s.object(func(key []byte) bool {
		if dup(&seenTop, key, "model", "choices", "usage", "error") {
			return false
		}
		switch string(key) {
		case "model":
			return s.optBytes(&model)
		case "choices":
			if s.null() {
				return true
			}
			choicesSeen = true
			return s.array(func(i int) bool { return cs.choice(r.addChoice(i)) })
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
		return nil, false
	}
	r.model = model.b
	if hasUsage {
		r.usage = usage{prompt: firstPtr(u.PromptTokens, u.InputTokens),
			completion: firstPtr(u.CompletionTokens, u.OutputTokens), total: u.TotalTokens}
	}
	r.emptyChoices = choicesSeen && len(r.choices) == 0
	return r, true
}

// choice reads one element of choices into c.
func (cs *chunkScanner) choice(c *choiceRaw) bool {
	s := &cs.s
	var idx int
	var idxSet bool
	var finish optBytes
	var seen uint8
	ok := s.object(func(k []byte) bool {
		if dup(&seen, k, "index", "text", "finish_reason", "delta") {
			return false
		}
		switch string(k) {
		case "index":
			return s.optIndex(&idx, &idxSet)
		case "text":
			return s.optBytes(&c.text)
		case "finish_reason":
			return s.optBytes(&finish)
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
					return s.optBytes(&c.content)
				case "reasoning_content":
					return s.optBytes(&c.reasoningContent)
				case "reasoning":
					return s.optBytes(&c.reasoin)
				case "tool_calls":
					if s.null() {
						return true
					}
					return s.array(func(pos int) bool { return cs.toolDelta(c, pos) })
				}
				return s.skipUnknown(dk, "content", "reasoning_content", "reasoning", "tool_calls")
			})
		}
		return s.skipUnknown(k, "index", "text", "finish_reason", "delta")
	})
	if idxSet {
		c.index = idx
	}
	c.finish = finish.b
	return ok
}

// toolDelta reads one element of delta.tool_calls (at array position pos)
// and appends it to c.
func (cs *chunkScanner) toolDelta(c *choiceRaw, pos int) bool {
	s := &cs.s
	td := toolDeltaRaw{index: pos}
	var idx int
	var idxSet bool
	var id, typ, name, args optBytes
	var seen uint8
	ok := s.object(func(k []byte) bool {
		if dup(&seen, k, "index", "id", "type", "function") {
			return false
		}
		switch string(k) {
		case "index":
			return s.optIndex(&idx, &idxSet)
		case "id":
			return s.optBytes(&id)
		case "type":
			return s.optBytes(&typ)
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
					return s.optBytes(&name)
				case "arguments":
					return s.optBytes(&args)
				}
				return s.skipUnknown(fk, "name", "arguments")
			})
		}
		return s.skipUnknown(k, "index", "id", "type", "function")
	})
	if idxSet {
		td.index = idx
	}
	td.id, td.typ, td.name, td.arguments = id.b, typ.b, name.b, args.b
	c.toolCalls = append(c.toolCalls, td)
	return ok
}
