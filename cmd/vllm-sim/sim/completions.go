package sim

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// completionsDefaultMaxTokens is vLLM's CompletionRequest.max_tokens default.
const completionsDefaultMaxTokens = 16

type completionRequest struct {
	Model         string          `json:"model"`
	Prompt        json.RawMessage `json:"prompt"`
	Stream        bool            `json:"stream"`
	StreamOptions *streamOptions  `json:"stream_options"`
	MaxTokens     *int            `json:"max_tokens"`
}

// promptInput is one prompt: its seed text and token count.
type promptInput struct {
	seed   string
	tokens int
}

// parsePrompts accepts a string, an array of strings, an array of token ids,
// or an array of token-id arrays. Text prompts count words + BOS; token
// prompts count their ids.
func parsePrompts(raw json.RawMessage) ([]promptInput, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, fmt.Errorf("prompt: Field required")
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return []promptInput{{s, CountWords(s) + completionBOS}}, nil
	}
	var ss []string
	if json.Unmarshal(raw, &ss) == nil && len(ss) > 0 {
		out := make([]promptInput, len(ss))
		for i, s := range ss {
			out[i] = promptInput{s, CountWords(s) + completionBOS}
		}
		return out, nil
	}
	ids := func(l []int) promptInput {
		parts := make([]string, len(l))
		for i, id := range l {
			parts[i] = strconv.Itoa(id)
		}
		return promptInput{strings.Join(parts, " "), len(l)}
	}
	var ii []int
	if json.Unmarshal(raw, &ii) == nil && len(ii) > 0 {
		return []promptInput{ids(ii)}, nil
	}
	var iii [][]int
	if json.Unmarshal(raw, &iii) == nil && len(iii) > 0 {
		out := make([]promptInput, len(iii))
		for i, l := range iii {
			if len(l) == 0 {
				return nil, fmt.Errorf("prompt[%d]: empty token list", i)
			}
			out[i] = ids(l)
		}
		return out, nil
	}
	return nil, fmt.Errorf("prompt must be a string, an array of strings, an array of token ids or an array of token-id arrays")
}

func (s *Server) handleCompletions(w http.ResponseWriter, r *http.Request) {
	var req completionRequest
	if !s.readBody(w, r, &req) || !s.checkModel(w, req.Model) {
		return
	}
	prompts, err := parsePrompts(req.Prompt)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if req.StreamOptions != nil && !req.Stream {
		writeError(w, http.StatusBadRequest, "Stream options can only be defined when `stream=True`.")
		return
	}
	if msg := validMax("max_tokens", req.MaxTokens); msg != "" {
		writeError(w, http.StatusBadRequest, msg)
		return
	}
	maxTokens := req.MaxTokens
	if maxTokens == nil {
		d := completionsDefaultMaxTokens
		maxTokens = &d
	}
	promptTotal := 0
	for _, p := range prompts {
		if !s.checkContext(w, p.tokens, maxTokens) {
			return
		}
		promptTotal += p.tokens
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
	answers := make([][]string, len(prompts))
	for i, pr := range prompts {
		answers[i] = AnswerTokens(pr.seed, p.tokens)
	}
	visible, eos := budget(p.tokens, maxTokens)
	finish := "stop"
	if !eos {
		finish = "length"
	}
	id := "cmpl-" + requestID(r)
	g := s.begin(w, r, promptTotal)
	defer g.end()
	g.finish = finish
	if !req.Stream {
		s.completionsNonStream(g, p, id, answers, visible, eos)
		return
	}
	include, continuous := req.StreamOptions.usageFlags()
	cs := chatStream{g: g, continuous: continuous}
	cs.prefix = fmt.Appendf(nil, `data: {"id":%s,"object":"text_completion","created":%d,"model":%s,"choices":[`,
		appendJSONString(nil, id), time.Now().Unix(), appendJSONString(nil, s.cfg.Model))
	if !g.startStream() || !g.wait(p.ttft) {
		return
	}
	send := func(i int, text, fin string) bool {
		b := cs.head()
		b = append(b, `{"index":`...)
		b = strconv.AppendInt(b, int64(i), 10)
		b = append(b, `,"text":`...)
		b = appendJSONString(b, text)
		b = append(b, `,"logprobs":null,"finish_reason":`...)
		if fin == "" {
			b = append(b, "null"...)
		} else {
			b = appendJSONString(b, fin)
		}
		b = append(b, `,"stop_reason":null}]`...)
		if cs.continuous {
			b = appendUsage(b, g.prompt, g.tokens)
		}
		b = append(b, "}\n\n"...)
		g.buf = b
		return g.send(b)
	}
	for t := 0; t < visible; t++ {
		if t == min(faultAfter, visible) && !cs.fault(p) {
			return
		}
		if t > 0 && !g.wait(p.interval) {
			return
		}
		fin := ""
		if t == visible-1 && !eos {
			fin = finish
		}
		for i := range answers {
			g.markToken()
			if !send(i, answers[i][t], fin) {
				return
			}
		}
	}
	if visible < faultAfter && !cs.fault(p) {
		return
	}
	if eos {
		if visible > 0 && !g.wait(p.interval) {
			return
		}
		for i := range answers {
			g.markToken()
			if !send(i, "", finish) {
				return
			}
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

type completionChoice struct {
	Index          int    `json:"index"`
	Text           string `json:"text"`
	Logprobs       any    `json:"logprobs"`
	FinishReason   string `json:"finish_reason"`
	StopReason     any    `json:"stop_reason"`
	PromptLogprobs any    `json:"prompt_logprobs"`
}

type completionUsage struct {
	PromptTokens     int `json:"prompt_tokens"`
	TotalTokens      int `json:"total_tokens"`
	CompletionTokens int `json:"completion_tokens"`
}

func (s *Server) completionsNonStream(g *gen, p plan, id string, answers [][]string, visible int, eos bool) {
	if !g.generateNonStream(p, visible, eos) {
		return
	}
	per := g.tokens // generateNonStream counted one answer
	g.tokens = per * len(answers)
	choices := make([]completionChoice, len(answers))
	for i, a := range answers {
		choices[i] = completionChoice{Index: i, Text: strings.Join(a[:visible], ""), FinishReason: g.finish}
	}
	writeJSON(g.w, http.StatusOK, struct {
		ID      string             `json:"id"`
		Object  string             `json:"object"`
		Created int64              `json:"created"`
		Model   string             `json:"model"`
		Choices []completionChoice `json:"choices"`
		Usage   completionUsage    `json:"usage"`
	}{id, "text_completion", time.Now().Unix(), s.cfg.Model, choices,
		completionUsage{g.prompt, g.prompt + g.tokens, g.tokens}})
}
