package sim

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

type streamOptions struct {
	IncludeUsage         *bool `json:"include_usage"`
	ContinuousUsageStats bool  `json:"continuous_usage_stats"`
}

// usageFlags mirrors vLLM's should_include_usage: include_usage defaults to
// true once stream_options is present; continuous stats need both.
func (o *streamOptions) usageFlags() (include, continuous bool) {
	if o == nil {
		return false, false
	}
	include = o.IncludeUsage == nil || *o.IncludeUsage
	return include, include && o.ContinuousUsageStats
}

type chatMessage struct {
	Role    string          `json:"role"`
	Content json.RawMessage `json:"content"`
}

type chatTool struct {
	Type     string `json:"type"`
	Function struct {
		Name        string          `json:"name"`
		Description string          `json:"description"`
		Parameters  json.RawMessage `json:"parameters"`
	} `json:"function"`
}

type chatRequest struct {
	Model               string          `json:"model"`
	Messages            []chatMessage   `json:"messages"`
	Stream              bool            `json:"stream"`
	StreamOptions       *streamOptions  `json:"stream_options"`
	MaxTokens           *int            `json:"max_tokens"`
	MaxCompletionTokens *int            `json:"max_completion_tokens"`
	Tools               []chatTool      `json:"tools"`
	ToolChoice          json.RawMessage `json:"tool_choice"`
}

// contentText flattens message content: a string, or an array of parts whose
// "text" fields are joined with "\n"; null gives "".
func contentText(raw json.RawMessage) (string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return "", nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return s, nil
	}
	var parts []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	if err := json.Unmarshal(raw, &parts); err != nil {
		return "", fmt.Errorf("content must be a string or an array of parts")
	}
	var texts []string
	for _, p := range parts {
		if p.Text != "" {
			texts = append(texts, p.Text)
		}
	}
	return strings.Join(texts, "\n"), nil
}

const toolPromptTokens = 16 // prompt tokens each tool definition adds

// maxTokens validates a max_tokens style field.
func validMax(name string, v *int) string {
	if v != nil && *v < 1 {
		return fmt.Sprintf("%s must be at least 1, got %d.", name, *v)
	}
	return ""
}

// checkContext enforces MaxModelLen like vLLM (only when configured).
func (s *Server) checkContext(w http.ResponseWriter, prompt int, maxTokens *int) bool {
	if s.cfg.MaxModelLen <= 0 {
		return true
	}
	req := prompt
	if maxTokens != nil {
		req += *maxTokens
	}
	if req > s.cfg.MaxModelLen {
		mt := 0
		if maxTokens != nil {
			mt = *maxTokens
		}
		writeError(w, http.StatusBadRequest, fmt.Sprintf(
			"This model's maximum context length is %d tokens. However, you requested %d tokens (%d in the messages, %d in the completion). Please reduce the length of the messages or completion.",
			s.cfg.MaxModelLen, req, prompt, mt))
		return false
	}
	return true
}

// selectTool returns the tool to call, or nil: a call happens when tools are
// given and tool_choice is not "none"; a named tool_choice picks that tool,
// otherwise the first tool is called.
func selectTool(req *chatRequest) (*chatTool, string) {
	if len(req.Tools) == 0 {
		return nil, ""
	}
	choice := strings.TrimSpace(string(req.ToolChoice))
	if choice == `"none"` {
		return nil, ""
	}
	if strings.HasPrefix(choice, "{") {
		var named struct {
			Function struct {
				Name string `json:"name"`
			} `json:"function"`
		}
		if json.Unmarshal(req.ToolChoice, &named) == nil && named.Function.Name != "" {
			for i := range req.Tools {
				if req.Tools[i].Function.Name == named.Function.Name {
					return &req.Tools[i], ""
				}
			}
			return nil, fmt.Sprintf("Tool '%s' has not been passed in `tools`.", named.Function.Name)
		}
	}
	return &req.Tools[0], ""
}

// toolPieceBytes is the size of the argument fragments of streamed tool calls.
const toolPieceBytes = 7

func (s *Server) handleChat(w http.ResponseWriter, r *http.Request) {
	var req chatRequest
	if !s.readBody(w, r, &req) {
		return
	}
	if !s.checkModel(w, req.Model) {
		return
	}
	if len(req.Messages) == 0 {
		writeError(w, http.StatusBadRequest, "messages: Field required (at least one message).")
		return
	}
	if req.StreamOptions != nil && !req.Stream {
		writeError(w, http.StatusBadRequest, "Stream options can only be defined when `stream=True`.")
		return
	}
	maxTokens := req.MaxCompletionTokens
	if maxTokens == nil {
		maxTokens = req.MaxTokens
	}
	if msg := validMax("max_tokens", maxTokens); msg != "" {
		writeError(w, http.StatusBadRequest, msg)
		return
	}
	prompt := chatTemplateBase
	seed := ""
	for i, m := range req.Messages {
		text, err := contentText(m.Content)
		if err != nil {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("messages[%d]: %v", i, err))
			return
		}
		prompt += chatTemplatePerMsg + CountWords(text)
		if m.Role == "user" {
			seed = text
		}
	}
	prompt += toolPromptTokens * len(req.Tools)
	tool, msg := selectTool(&req)
	if msg != "" {
		writeError(w, http.StatusBadRequest, msg)
		return
	}
	if !s.checkContext(w, prompt, maxTokens) {
		return
	}
	p, msg := s.plan(r, req.Stream)
	if msg != "" {
		writeError(w, http.StatusBadRequest, msg)
		return
	}
	if p.fault == faultError {
		injectedError(w, p.status)
		return
	}

	// The answer: text tokens, or for a tool call the name delta followed by
	// argument fragments.
	var items []string
	var toolID, toolName, toolArgs string
	if tool != nil {
		toolID = "chatcmpl-tool-" + randomHex()
		toolName = tool.Function.Name
		toolArgs = toolArguments(tool.Function.Parameters, seed)
		items = append([]string{""}, splitPieces(toolArgs, toolPieceBytes)...)
	} else {
		items = AnswerTokens(seed, p.tokens)
	}
	visible, eos := budget(len(items), maxTokens)
	finish := "stop"
	if !eos {
		finish = "length"
	} else if tool != nil {
		finish = "tool_calls"
	}

	id := "chatcmpl-" + requestID(r)
	g := s.begin(w, r, prompt)
	defer g.end()
	g.finish = finish
	if !req.Stream {
		s.chatNonStream(g, p, &req, id, items[:visible], eos, tool != nil, toolID, toolName)
		return
	}
	include, continuous := req.StreamOptions.usageFlags()
	cs := chatStream{g: g, continuous: continuous}
	cs.prefix = fmt.Appendf(nil, `data: {"id":%s,"object":"chat.completion.chunk","created":%d,"model":%s,"choices":[`,
		appendJSONString(nil, id), time.Now().Unix(), appendJSONString(nil, s.cfg.Model))
	if !g.startStream() || !g.wait(p.ttft) {
		return
	}
	b := cs.head()
	b = append(b, `{"index":0,"delta":{"role":"assistant","content":""}`...)
	if !cs.send(b, "") {
		return
	}
	for i := 0; i < visible; i++ {
		if i == min(faultAfter, visible) && !cs.fault(p) {
			return
		}
		if i > 0 && !g.wait(p.interval) {
			return
		}
		g.markToken()
		fin := ""
		if i == visible-1 && !eos {
			fin = finish
		}
		b := cs.head()
		switch {
		case tool != nil && i == 0:
			b = append(b, `{"index":0,"delta":{"tool_calls":[{"id":`...)
			b = appendJSONString(b, toolID)
			b = append(b, `,"type":"function","index":0,"function":{"name":`...)
			b = appendJSONString(b, toolName)
			b = append(b, `}}]}`...)
		case tool != nil:
			b = append(b, `{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":`...)
			b = appendJSONString(b, items[i])
			b = append(b, `}}]}`...)
		default:
			b = append(b, `{"index":0,"delta":{"content":`...)
			b = appendJSONString(b, items[i])
			b = append(b, '}')
		}
		if !cs.send(b, fin) {
			return
		}
	}
	if visible < faultAfter && !cs.fault(p) {
		return
	}
	if eos {
		if visible > 0 && !g.wait(p.interval) {
			return
		}
		g.markToken()
		b := cs.head()
		b = append(b, `{"index":0,"delta":{"content":""}`...)
		if !cs.send(b, finish) {
			return
		}
	}
	if include {
		b := cs.head()
		b = append(b, ']')
		b = appendUsage(b, g.prompt, g.tokens)
		b = append(b, "}\n\n"...)
		g.buf = b
		if !g.send(b) {
			return
		}
	}
	g.send([]byte("data: [DONE]\n\n"))
}

// chatStream builds chat.completion.chunk events in one reused buffer.
type chatStream struct {
	g          *gen
	prefix     []byte // `data: {"id":…,"choices":[`
	continuous bool
}

// head starts an event in the reused buffer: the prefix up to "choices":[.
func (cs *chatStream) head() []byte {
	return append(cs.g.buf[:0], cs.prefix...)
}

// send completes b, which ends inside a choice right after its delta object,
// with logprobs and finish_reason (plus stop_reason when finishing), closes
// the event (adding cumulative usage for continuous_usage_stats) and sends it.
func (cs *chatStream) send(b []byte, fin string) bool {
	g := cs.g
	b = append(b, `,"logprobs":null,"finish_reason":`...)
	if fin == "" {
		b = append(b, "null}"...)
	} else {
		b = appendJSONString(b, fin)
		b = append(b, `,"stop_reason":null}`...)
	}
	b = append(b, ']')
	if cs.continuous {
		b = appendUsage(b, g.prompt, g.tokens)
	}
	b = append(b, "}\n\n"...)
	g.buf = b
	return g.send(b)
}

// fault runs a mid-stream fault; false means the stream is over.
func (cs *chatStream) fault(p plan) bool {
	switch p.fault {
	case faultMidStream:
		cs.g.outcome = outcomeFaulted
		cs.g.send(streamErrorEvent(p.status, "Simulated mid-stream error injected by vllm-sim."))
		return false
	case faultClose:
		cs.g.abort()
	}
	return true
}

// appendUsage appends `,"usage":{…}` in vLLM's key order.
func appendUsage(b []byte, prompt, completion int) []byte {
	b = append(b, `,"usage":{"prompt_tokens":`...)
	b = strconv.AppendInt(b, int64(prompt), 10)
	b = append(b, `,"total_tokens":`...)
	b = strconv.AppendInt(b, int64(prompt+completion), 10)
	b = append(b, `,"completion_tokens":`...)
	b = strconv.AppendInt(b, int64(completion), 10)
	return append(b, '}')
}

// ---- non-stream ----

type toolCall struct {
	ID       string `json:"id"`
	Type     string `json:"type"`
	Function struct {
		Name      string `json:"name"`
		Arguments string `json:"arguments"`
	} `json:"function"`
}

type chatResponse struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	Model   string `json:"model"`
	Choices []struct {
		Index   int `json:"index"`
		Message struct {
			Role             string     `json:"role"`
			ReasoningContent *string    `json:"reasoning_content"`
			Content          *string    `json:"content"`
			ToolCalls        []toolCall `json:"tool_calls"`
		} `json:"message"`
		Logprobs     any    `json:"logprobs"`
		FinishReason string `json:"finish_reason"`
		StopReason   any    `json:"stop_reason"`
	} `json:"choices"`
	Usage          usageDetails `json:"usage"`
	PromptLogprobs any          `json:"prompt_logprobs"`
	KVTransfer     any          `json:"kv_transfer_params"`
}

type usageDetails struct {
	PromptTokens        int `json:"prompt_tokens"`
	TotalTokens         int `json:"total_tokens"`
	CompletionTokens    int `json:"completion_tokens"`
	PromptTokensDetails any `json:"prompt_tokens_details"`
}

// generateNonStream paces a whole answer of visible (+EOS) tokens; false
// means the request ended (cancelled, or the close fault fired).
func (g *gen) generateNonStream(p plan, visible int, eos bool) bool {
	if !g.wait(p.ttft) {
		return false
	}
	n := visible
	if eos {
		n++
	}
	for i := 0; i < n; i++ {
		if i > 0 && !g.wait(p.interval) {
			return false
		}
		g.markToken()
	}
	switch p.fault {
	case faultClose:
		g.abort()
	case faultMidStream:
		g.outcome = outcomeFaulted
		injectedError(g.w, p.status)
		return false
	}
	return true
}

func (s *Server) chatNonStream(g *gen, p plan, req *chatRequest, id string, items []string, eos, isTool bool, toolID, toolName string) {
	if !g.generateNonStream(p, len(items), eos) {
		return
	}
	var resp chatResponse
	resp.ID, resp.Object, resp.Created, resp.Model = id, "chat.completion", time.Now().Unix(), s.cfg.Model
	resp.Choices = make([]struct {
		Index   int `json:"index"`
		Message struct {
			Role             string     `json:"role"`
			ReasoningContent *string    `json:"reasoning_content"`
			Content          *string    `json:"content"`
			ToolCalls        []toolCall `json:"tool_calls"`
		} `json:"message"`
		Logprobs     any    `json:"logprobs"`
		FinishReason string `json:"finish_reason"`
		StopReason   any    `json:"stop_reason"`
	}, 1)
	c := &resp.Choices[0]
	c.Message.Role = "assistant"
	c.Message.ToolCalls = []toolCall{}
	c.FinishReason = g.finish
	if isTool {
		if len(items) > 0 {
			var tc toolCall
			tc.ID, tc.Type = toolID, "function"
			tc.Function.Name = toolName
			tc.Function.Arguments = strings.Join(items[1:], "")
			c.Message.ToolCalls = append(c.Message.ToolCalls, tc)
		}
	} else {
		text := strings.Join(items, "")
		c.Message.Content = &text
	}
	resp.Usage = usageDetails{PromptTokens: g.prompt, TotalTokens: g.prompt + g.tokens, CompletionTokens: g.tokens}
	writeJSON(g.w, http.StatusOK, resp)
}
