package sim

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"
)

type responsesRequest struct {
	Model           string          `json:"model"`
	Input           json.RawMessage `json:"input"`
	Instructions    *string         `json:"instructions"`
	Stream          bool            `json:"stream"`
	MaxOutputTokens *int            `json:"max_output_tokens"`
	Temperature     *float64        `json:"temperature"`
	TopP            *float64        `json:"top_p"`
}

// parseResponsesInput returns the seed (last user text) and prompt tokens for
// an input that is a string or an array of message items.
func parseResponsesInput(raw json.RawMessage, instructions *string) (seed string, prompt int, err error) {
	prompt = chatTemplateBase
	if instructions != nil {
		prompt += chatTemplatePerMsg + CountWords(*instructions)
	}
	if len(raw) == 0 || string(raw) == "null" {
		return "", 0, fmt.Errorf("input: Field required")
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s, prompt + chatTemplatePerMsg + CountWords(s), nil
	}
	var items []struct {
		Type    string          `json:"type"`
		Role    string          `json:"role"`
		Content json.RawMessage `json:"content"`
		Output  string          `json:"output"`
	}
	if err := json.Unmarshal(raw, &items); err != nil {
		return "", 0, fmt.Errorf("input must be a string or an array of input items")
	}
	for i, it := range items {
		text, err := contentText(it.Content)
		if err != nil {
			return "", 0, fmt.Errorf("input[%d]: %w", i, err)
		}
		if it.Output != "" {
			text = it.Output
		}
		prompt += chatTemplatePerMsg + CountWords(text)
		if it.Role == "user" {
			seed = text
		}
	}
	return seed, prompt, nil
}

type outputText struct {
	Annotations []any  `json:"annotations"`
	Text        string `json:"text"`
	Type        string `json:"type"`
	Logprobs    any    `json:"logprobs"`
}

type outputMessage struct {
	ID      string       `json:"id"`
	Content []outputText `json:"content"`
	Role    string       `json:"role"`
	Status  string       `json:"status"`
	Type    string       `json:"type"`
}

type responseUsage struct {
	InputTokens         int            `json:"input_tokens"`
	InputTokensDetails  map[string]int `json:"input_tokens_details"`
	OutputTokens        int            `json:"output_tokens"`
	OutputTokensDetails map[string]int `json:"output_tokens_details"`
	TotalTokens         int            `json:"total_tokens"`
}

type responseObject struct {
	ID                 string          `json:"id"`
	CreatedAt          int64           `json:"created_at"`
	IncompleteDetails  any             `json:"incomplete_details"`
	Instructions       *string         `json:"instructions"`
	Metadata           any             `json:"metadata"`
	Model              string          `json:"model"`
	Object             string          `json:"object"`
	Output             []outputMessage `json:"output"`
	ParallelToolCalls  bool            `json:"parallel_tool_calls"`
	Temperature        float64         `json:"temperature"`
	ToolChoice         string          `json:"tool_choice"`
	Tools              []any           `json:"tools"`
	TopP               float64         `json:"top_p"`
	Background         bool            `json:"background"`
	MaxOutputTokens    *int            `json:"max_output_tokens"`
	MaxToolCalls       any             `json:"max_tool_calls"`
	PreviousResponseID any             `json:"previous_response_id"`
	Prompt             any             `json:"prompt"`
	Reasoning          any             `json:"reasoning"`
	ServiceTier        string          `json:"service_tier"`
	Status             string          `json:"status"`
	Text               any             `json:"text"`
	TopLogprobs        any             `json:"top_logprobs"`
	Truncation         string          `json:"truncation"`
	Usage              *responseUsage  `json:"usage"`
	User               any             `json:"user"`
}

func (s *Server) handleResponses(w http.ResponseWriter, r *http.Request) {
	var req responsesRequest
	if !s.readBody(w, r, &req) || !s.checkModel(w, req.Model) {
		return
	}
	seed, prompt, err := parseResponsesInput(req.Input, req.Instructions)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if msg := validMax("max_output_tokens", req.MaxOutputTokens); msg != "" {
		writeError(w, http.StatusBadRequest, msg)
		return
	}
	if !s.checkContext(w, prompt, req.MaxOutputTokens) {
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
	tokens := AnswerTokens(seed, p.tokens)
	visible, eos := budget(len(tokens), req.MaxOutputTokens)
	tokens = tokens[:visible]

	resp := responseObject{
		ID: "resp_" + requestID(r), CreatedAt: time.Now().Unix(), Instructions: req.Instructions,
		Model: s.cfg.Model, Object: "response", Output: []outputMessage{}, ParallelToolCalls: true,
		Temperature: 1, ToolChoice: "auto", Tools: []any{}, TopP: 1, MaxOutputTokens: req.MaxOutputTokens,
		ServiceTier: "auto", Status: "in_progress", Truncation: "disabled",
	}
	if req.Temperature != nil {
		resp.Temperature = *req.Temperature
	}
	if req.TopP != nil {
		resp.TopP = *req.TopP
	}
	msgID := "msg_" + randomHex()
	g := s.begin(w, r, prompt)
	defer g.end()
	g.finish = "stop"
	status := "completed"
	if !eos {
		g.finish, status = "length", "incomplete"
	}
	complete := func() {
		resp.Status = status
		if !eos {
			resp.IncompleteDetails = map[string]string{"reason": "max_output_tokens"}
		}
		resp.Output = []outputMessage{{ID: msgID, Role: "assistant", Status: status, Type: "message",
			Content: []outputText{{Annotations: []any{}, Text: strings.Join(tokens, ""), Type: "output_text"}}}}
		resp.Usage = &responseUsage{
			InputTokens: g.prompt, InputTokensDetails: map[string]int{"cached_tokens": 0},
			OutputTokens: g.tokens, OutputTokensDetails: map[string]int{"reasoning_tokens": 0},
			TotalTokens: g.prompt + g.tokens,
		}
	}
	if !req.Stream {
		if !g.generateNonStream(p, visible, eos) {
			return
		}
		complete()
		writeJSON(w, http.StatusOK, resp)
		return
	}

	seq := 0
	event := func(typ string, v any) bool {
		b := append(g.buf[:0], "event: "...)
		b = append(b, typ...)
		b = append(b, "\ndata: "...)
		b = append(b, marshal(v)...)
		b = append(b, "\n\n"...)
		g.buf = b
		seq++
		return g.send(b)
	}
	type respEvent struct {
		Response       *responseObject `json:"response"`
		SequenceNumber int             `json:"sequence_number"`
		Type           string          `json:"type"`
	}
	type itemEvent struct {
		Item           outputMessage `json:"item"`
		OutputIndex    int           `json:"output_index"`
		SequenceNumber int           `json:"sequence_number"`
		Type           string        `json:"type"`
	}
	type partEvent struct {
		ContentIndex   int        `json:"content_index"`
		ItemID         string     `json:"item_id"`
		OutputIndex    int        `json:"output_index"`
		Part           outputText `json:"part"`
		SequenceNumber int        `json:"sequence_number"`
		Type           string     `json:"type"`
	}
	type deltaEvent struct {
		ContentIndex   int    `json:"content_index"`
		Delta          string `json:"delta"`
		ItemID         string `json:"item_id"`
		Logprobs       []any  `json:"logprobs"`
		OutputIndex    int    `json:"output_index"`
		SequenceNumber int    `json:"sequence_number"`
		Type           string `json:"type"`
	}
	type textDoneEvent struct {
		ContentIndex   int    `json:"content_index"`
		ItemID         string `json:"item_id"`
		Logprobs       []any  `json:"logprobs"`
		OutputIndex    int    `json:"output_index"`
		SequenceNumber int    `json:"sequence_number"`
		Text           string `json:"text"`
		Type           string `json:"type"`
	}
	type errorEvent struct {
		Code           string `json:"code"`
		Message        string `json:"message"`
		Param          any    `json:"param"`
		SequenceNumber int    `json:"sequence_number"`
		Type           string `json:"type"`
	}
	faultNow := func() bool {
		switch p.fault {
		case faultMidStream:
			g.outcome = outcomeFaulted
			event("error", errorEvent{Code: errorType(p.status), Message: "Simulated mid-stream error injected by vllm-sim.", SequenceNumber: seq, Type: "error"})
			return false
		case faultClose:
			g.abort()
		}
		return true
	}
	if !g.startStream() {
		return
	}
	if !event("response.created", respEvent{&resp, seq, "response.created"}) ||
		!event("response.in_progress", respEvent{&resp, seq, "response.in_progress"}) {
		return
	}
	item := outputMessage{ID: msgID, Content: []outputText{}, Role: "assistant", Status: "in_progress", Type: "message"}
	if !g.wait(p.ttft) ||
		!event("response.output_item.added", itemEvent{item, 0, seq, "response.output_item.added"}) ||
		!event("response.content_part.added", partEvent{0, msgID, 0, outputText{Annotations: []any{}, Type: "output_text"}, seq, "response.content_part.added"}) {
		return
	}
	for i := 0; i < visible; i++ {
		if i == min(faultAfter, visible) && !faultNow() {
			return
		}
		if i > 0 && !g.wait(p.interval) {
			return
		}
		g.markToken()
		if !event("response.output_text.delta", deltaEvent{0, tokens[i], msgID, []any{}, 0, seq, "response.output_text.delta"}) {
			return
		}
	}
	if visible < faultAfter && !faultNow() {
		return
	}
	if eos {
		if visible > 0 && !g.wait(p.interval) {
			return
		}
		g.markToken()
	}
	complete()
	text := strings.Join(tokens, "")
	part := outputText{Annotations: []any{}, Text: text, Type: "output_text"}
	item.Content, item.Status = []outputText{part}, status
	_ = event("response.output_text.done", textDoneEvent{0, msgID, []any{}, 0, seq, text, "response.output_text.done"}) &&
		event("response.content_part.done", partEvent{0, msgID, 0, part, seq, "response.content_part.done"}) &&
		event("response.output_item.done", itemEvent{item, 0, seq, "response.output_item.done"}) &&
		event("response.completed", respEvent{&resp, seq, "response.completed"})
}
