package decode

import (
	"bytes"
	"encoding/json"
	"strings"

	"github.com/llmtap/llmtap/ingest/decode/sse"
)

// chunkView is the part of one chat.completion.chunk or text_completion
// chunk that reassembly needs.
type chunkView struct {
	model        string
	errMsg       string
	usage        usage
	emptyChoices bool // "choices": [] (the final usage chunk)
	choices      []choiceView
}

type choiceView struct {
	index                      int
	text, content              *string
	reasoningContent, reasonin *string
	finish                     string
	toolCalls                  []toolDeltaView
}

type toolDeltaView struct {
	index                    int
	id, typ, name, arguments string
}

// fastChunk is the typed shape of a chunk; decoding into it is several
// times cheaper than the generic path, which is used when it fails (a field
// of an unexpected type).
type fastChunk struct {
	Model   *string         `json:"model"`
	Choices []fastChoice    `json:"choices"`
	Usage   *fastUsage      `json:"usage"`
	Error   json.RawMessage `json:"error"`
}

type fastChoice struct {
	Index        *int    `json:"index"`
	Text         *string `json:"text"`
	FinishReason *string `json:"finish_reason"`
	Delta        *struct {
		Content          *string `json:"content"`
		ReasoningContent *string `json:"reasoning_content"`
		Reasoning        *string `json:"reasoning"`
		ToolCalls        []struct {
			Index    *int    `json:"index"`
			ID       *string `json:"id"`
			Type     *string `json:"type"`
			Function *struct {
				Name      *string `json:"name"`
				Arguments *string `json:"arguments"`
			} `json:"function"`
		} `json:"tool_calls"`
	} `json:"delta"`
}

type fastUsage struct {
	PromptTokens     *int64 `json:"prompt_tokens"`
	CompletionTokens *int64 `json:"completion_tokens"`
	TotalTokens      *int64 `json:"total_tokens"`
	InputTokens      *int64 `json:"input_tokens"`
	OutputTokens     *int64 `json:"output_tokens"`
}

func deref(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

func firstPtr(a, b *int64) *int64 {
	if a != nil {
		return a
	}
	return b
}

// viewChunkJSON reads a chunk with encoding/json only (what the scanner
// leaves to it); ok is false when data is not a JSON object.
func viewChunkJSON(data []byte) (v chunkView, ok bool) {
	var f fastChunk
	if err := json.Unmarshal(data, &f); err == nil {
		v.model = deref(f.Model)
		if len(f.Error) > 0 && string(f.Error) != "null" {
			v.errMsg = errorMessage(obj{{key: []byte("error"), val: f.Error}})
		}
		if f.Usage != nil {
			v.usage = usage{prompt: firstPtr(f.Usage.PromptTokens, f.Usage.InputTokens),
				completion: firstPtr(f.Usage.CompletionTokens, f.Usage.OutputTokens), total: f.Usage.TotalTokens}
		}
		v.emptyChoices = f.Choices != nil && len(f.Choices) == 0
		v.choices = make([]choiceView, len(f.Choices))
		for i, c := range f.Choices {
			cv := &v.choices[i]
			cv.index = i
			if c.Index != nil {
				cv.index = *c.Index
			}
			cv.text, cv.finish = c.Text, deref(c.FinishReason)
			if d := c.Delta; d != nil {
				cv.content, cv.reasoningContent, cv.reasonin = d.Content, d.ReasoningContent, d.Reasoning
				for pos, tc := range d.ToolCalls {
					td := toolDeltaView{index: pos, id: deref(tc.ID), typ: deref(tc.Type)}
					if tc.Index != nil {
						td.index = *tc.Index
					}
					if tc.Function != nil {
						td.name, td.arguments = deref(tc.Function.Name), deref(tc.Function.Arguments)
					}
					cv.toolCalls = append(cv.toolCalls, td)
				}
			}
		}
		return v, true
	}
	// Generic, field-by-field path.
	o := parseObj(data)
	if o == nil {
		return v, false
	}
	v.model = o.str("model")
	if raw, ok := o.get("error"); ok && string(raw) != "null" {
		v.errMsg = errorMessage(obj{{key: []byte("error"), val: raw}})
	}
	v.usage = parseUsage(o.obj("usage"))
	choices := o.arr("choices")
	v.emptyChoices = choices != nil && len(choices) == 0
	for i, raw := range choices {
		c := parseObj(raw)
		if c == nil {
			continue
		}
		cv := choiceView{index: i, finish: c.str("finish_reason")}
		if n, ok := intOf(c.raw("index")); ok {
			cv.index = int(n)
		}
		strp := func(o obj, key string) *string {
			if s, ok := asString(o.raw(key)); ok {
				return &s
			}
			return nil
		}
		cv.text = strp(c, "text")
		if d := c.obj("delta"); d != nil {
			cv.content, cv.reasoningContent, cv.reasonin = strp(d, "content"), strp(d, "reasoning_content"), strp(d, "reasoning")
			for pos, tr := range d.arr("tool_calls") {
				to := parseObj(tr)
				if to == nil {
					continue
				}
				td := toolDeltaView{index: pos, id: to.str("id"), typ: to.str("type")}
				if n, ok := intOf(to.raw("index")); ok {
					td.index = int(n)
				}
				if f := to.obj("function"); f != nil {
					td.name, td.arguments = f.str("name"), f.str("arguments")
				}
				cv.toolCalls = append(cv.toolCalls, td)
			}
		}
		v.choices = append(v.choices, cv)
	}
	return v, true
}

// toolAcc assembles one streamed tool call.
type toolAcc struct {
	call  toolCall
	args  []byte // chat streams: the argument deltas so far
	order int
}

// reassembleChat rebuilds a chat completions or completions stream:
// deltas of choice 0 (content, text, reasoning_content/reasoning, tool
// calls by index), finish_reason, the usage chunk, and error events.
func reassembleChat(body []byte, x *extraction) {
	var (
		text, reasoning strings.Builder
		finish0         string
		finishLast      string
		usageFinal      usage // from a chunk with choices == []
		usageLast       usage // last non-null usage
		tools           map[int]*toolAcc
		cs              chunkScanner
	)
	p := sse.Parser{}
	handle := func(e sse.RawEvent) {
		data := bytes.TrimSpace(e.Data)
		if len(data) == 0 || string(data) == "[DONE]" {
			return
		}
		if e.Type == "error" { // typed error event (Responses-style or gateway)
			x.streamError = firstNonEmpty(errorMessage(parseObj(data)), textSnippet(data))
			return
		}
		ch, ok := cs.scan(data)
		if !ok {
			v, ok := viewChunkJSON(data)
			if !ok {
				return
			}
			ch = rawOf(v)
		}
		if len(ch.model) > 0 && x.respModel == "" {
			x.respModel = string(ch.model)
		}
		if ch.errMsg != "" {
			x.streamError = ch.errMsg
		}
		if ch.usage.any() {
			usageLast = ch.usage
			if ch.emptyChoices {
				usageFinal = ch.usage
			}
		}
		for i := range ch.choices {
			c := &ch.choices[i]
			if len(c.finish) > 0 {
				if string(c.finish) != finishLast {
					finishLast = string(c.finish)
				}
				if c.index == 0 {
					finish0 = finishLast
				}
			}
			if c.index != 0 {
				continue
			}
			if c.text.set {
				text.Write(c.text.b)
			}
			if c.content.set {
				text.Write(c.content.b)
			}
			if c.reasoningContent.set {
				reasoning.Write(c.reasoningContent.b)
			} else if c.reasoin.set {
				reasoning.Write(c.reasoin.b)
			}
			for _, td := range c.toolCalls {
				if tools == nil {
					tools = map[int]*toolAcc{}
				}
				acc := tools[td.index]
				if acc == nil {
					acc = &toolAcc{order: len(tools)}
					tools[td.index] = acc
				}
				if len(td.id) > 0 && acc.call.ID == "" {
					acc.call.ID = string(td.id)
				}
				if len(td.typ) > 0 && acc.call.Type == "" {
					acc.call.Type = string(td.typ)
				}
				if len(td.name) > 0 && acc.call.Function.Name == "" {
					acc.call.Function.Name = string(td.name)
				}
				acc.args = append(acc.args, td.arguments...)
			}
		}
	}
	p.FeedRaw(body, handle)
	p.CloseRaw(handle)

	x.response = text.String()
	x.reasoning = reasoning.String()
	x.finishReason = firstNonEmpty(finish0, finishLast)
	if usageFinal.any() {
		x.usage = usageFinal
	} else {
		x.usage = usageLast
	}
	if len(tools) > 0 {
		calls := make([]toolCall, len(tools))
		for _, k := range sortedKeys(tools) {
			acc := tools[k]
			acc.call.Function.Arguments = string(acc.args)
			calls[acc.order] = acc.call
		}
		x.toolCalls = toolCallsJSON(calls)
	}
}

// reassembleResponses rebuilds a Responses API stream (typed events, no
// [DONE]): output_text deltas per (output_index, content_index), reasoning
// deltas, function call items and argument deltas; the terminal event's
// response object (completed, incomplete, failed) is the final truth for
// text, usage and status when it carries them.
func reassembleResponses(body []byte, x *extraction) {
	type key struct{ out, content int }
	var (
		texts     = map[key]*strings.Builder{}
		textOrder []key
		reasoning strings.Builder
		tools     = map[int]*toolAcc{}
	)
	textFor := func(k key) *strings.Builder {
		b := texts[k]
		if b == nil {
			b = &strings.Builder{}
			texts[k] = b
			textOrder = append(textOrder, k)
		}
		return b
	}
	toolFor := func(i int) *toolAcc {
		acc := tools[i]
		if acc == nil {
			acc = &toolAcc{order: len(tools), call: toolCall{Type: "function"}}
			tools[i] = acc
		}
		return acc
	}
	var final obj
	handle := func(e sse.Event) {
		d := parseObj([]byte(e.Data))
		if d == nil {
			return
		}
		typ := e.Type
		if t := d.str("type"); t != "" {
			typ = t
		}
		oi, ci := 0, 0
		if v, ok := intOf(d.raw("output_index")); ok {
			oi = int(v)
		}
		if v, ok := intOf(d.raw("content_index")); ok {
			ci = int(v)
		}
		switch {
		case typ == "response.output_text.delta":
			textFor(key{oi, ci}).WriteString(d.str("delta"))
		case typ == "response.output_text.done":
			if t, ok := asString(d.raw("text")); ok {
				b := textFor(key{oi, ci})
				b.Reset()
				b.WriteString(t)
			}
		case strings.HasPrefix(typ, "response.reasoning") && strings.HasSuffix(typ, ".delta"):
			reasoning.WriteString(d.str("delta"))
		case typ == "response.output_item.added" || typ == "response.output_item.done":
			it := d.obj("item")
			if it == nil || !it.strIs("type", "function_call") {
				return
			}
			acc := toolFor(oi)
			if id := firstNonEmpty(it.str("call_id"), it.str("id")); id != "" && acc.call.ID == "" {
				acc.call.ID = id
			}
			if n := it.str("name"); n != "" {
				acc.call.Function.Name = n
			}
			if a := it.str("arguments"); a != "" && typ == "response.output_item.done" {
				acc.call.Function.Arguments = a
			}
		case typ == "response.function_call_arguments.delta":
			toolFor(oi).call.Function.Arguments += d.str("delta")
		case typ == "response.function_call_arguments.done":
			if a, ok := asString(d.raw("arguments")); ok {
				toolFor(oi).call.Function.Arguments = a
			}
		case typ == "error":
			x.streamError = firstNonEmpty(d.str("message"), errorMessage(d))
		case strings.HasPrefix(typ, "response."):
			if r := d.obj("response"); r != nil {
				if m := r.str("model"); m != "" {
					x.respModel = m
				}
				switch typ {
				case "response.completed", "response.incomplete", "response.failed":
					final = r
				}
			}
		}
	}
	var p sse.Parser
	p.Feed(body, handle)
	p.Close(handle)

	var sb strings.Builder
	for _, k := range textOrder {
		sb.WriteString(texts[k].String())
	}
	x.response = sb.String()
	x.reasoning = reasoning.String()
	if len(tools) > 0 {
		calls := make([]toolCall, len(tools))
		for _, k := range sortedKeys(tools) {
			calls[tools[k].order] = tools[k].call
		}
		x.toolCalls = toolCallsJSON(calls)
	}
	if final != nil {
		applyResponseObject(final, x)
	}
}
