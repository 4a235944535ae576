package sim

import (
	"bufio"
	"context"
	"encoding/json"
	"regexp"
	"strings"
	"testing"
)

var chatIDRe = regexp.MustCompile(`^chatcmpl-[0-9a-f]{32}$`)

type chunk struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	Model   string `json:"model"`
	Choices []struct {
		Index int `json:"index"`
		Delta struct {
			Role      *string `json:"role"`
			Content   *string `json:"content"`
			ToolCalls []struct {
				Index    int    `json:"index"`
				ID       string `json:"id"`
				Type     string `json:"type"`
				Function struct {
					Name      string  `json:"name"`
					Arguments *string `json:"arguments"`
				} `json:"function"`
			} `json:"tool_calls"`
		} `json:"delta"`
		Text         *string `json:"text"`
		FinishReason *string `json:"finish_reason"`
	} `json:"choices"`
	Usage *struct {
		PromptTokens     int `json:"prompt_tokens"`
		TotalTokens      int `json:"total_tokens"`
		CompletionTokens int `json:"completion_tokens"`
	} `json:"usage"`
}

// chatStream posts a streaming request and returns its parsed events (the
// last being [DONE]) and decoded chunks.
func streamChunks(t *testing.T, url, body string, hdr map[string]string) ([]sseEvent, []chunk) {
	t.Helper()
	resp := post(t, url, body, hdr)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, readAll(t, resp))
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream; charset=utf-8" {
		t.Errorf("Content-Type = %q", ct)
	}
	evs := parseSSE(t, readAll(t, resp))
	if len(evs) == 0 || evs[len(evs)-1].Raw != "data: [DONE]\n\n" {
		t.Fatalf("stream does not end with data: [DONE]: %v", evs)
	}
	var chunks []chunk
	for _, ev := range evs[:len(evs)-1] {
		if ev.Event != "" {
			t.Errorf("unexpected event line in %q", ev.Raw)
		}
		if !isCompact(ev.Data) {
			t.Errorf("data is not compact JSON: %q", ev.Data)
		}
		var c chunk
		if err := json.Unmarshal([]byte(ev.Data), &c); err != nil {
			t.Fatalf("chunk %q: %v", ev.Data, err)
		}
		chunks = append(chunks, c)
	}
	return evs, chunks
}

func TestChatStreamWireFormat(t *testing.T) {
	s, ts := newSim(t, Config{})
	const user = "tell me about audit logs"
	evs, chunks := streamChunks(t, ts.URL+"/v1/chat/completions", chatBody(user, `"stream":true`), nil)
	if len(chunks) != 1+16+1 {
		t.Fatalf("got %d chunks, want role + 16 tokens + finish", len(chunks))
	}
	id := chunks[0].ID
	if !chatIDRe.MatchString(id) {
		t.Errorf("id %q is not chatcmpl-<32 hex>", id)
	}
	var text strings.Builder
	for i, c := range chunks {
		if c.ID != id || c.Object != "chat.completion.chunk" || c.Model != DefaultModel || c.Created == 0 {
			t.Errorf("chunk %d header: %+v", i, c)
		}
		if c.Usage != nil {
			t.Errorf("chunk %d has usage without include_usage", i)
		}
		if len(c.Choices) != 1 || c.Choices[0].Index != 0 {
			t.Fatalf("chunk %d choices: %+v", i, c.Choices)
		}
		if d := c.Choices[0].Delta; d.Content != nil {
			text.WriteString(*d.Content)
		}
	}
	first := chunks[0].Choices[0]
	if first.Delta.Role == nil || *first.Delta.Role != "assistant" || first.Delta.Content == nil || *first.Delta.Content != "" || first.FinishReason != nil {
		t.Errorf("first chunk is not the role chunk: %s", evs[0].Data)
	}
	last := chunks[len(chunks)-1].Choices[0]
	if last.FinishReason == nil || *last.FinishReason != "stop" || *last.Delta.Content != "" {
		t.Errorf("last chunk: %s", evs[len(evs)-2].Data)
	}
	if want := Answer(user, 16); text.String() != want {
		t.Errorf("text = %q, want %q", text.String(), want)
	}
	// Shapes against the real vLLM capture (role, finish chunks).
	sm := sampleEvents(t, "vllm-chat-stream-toolcalls.sse")
	assertShape(t, "role chunk", evs[0].Data, sm[0].Data)
	assertShape(t, "finish chunk", evs[len(evs)-2].Data, sm[len(sm)-2].Data)
	if !strings.HasSuffix(evs[len(evs)-2].Data, `"logprobs":null,"finish_reason":"stop","stop_reason":null}]}`) {
		t.Errorf("finish chunk layout: %s", evs[len(evs)-2].Data)
	}
	settle(t, s)
	if s.Started() != 1 || s.Completed() != 1 {
		t.Errorf("Started %d Completed %d", s.Started(), s.Completed())
	}
}

func TestChatStreamUsage(t *testing.T) {
	_, ts := newSim(t, Config{Tokens: 5})
	const user = "count my tokens please"
	// prompt: 3 + (4+2 "be brief") + (4+4) = 17; completion: 5 + EOS.
	const prompt, completion = 17, 6
	cases := []struct {
		name                  string
		extra                 string
		wantFinal, continuous bool
	}{
		{"no stream_options", `"stream":true`, false, false},
		{"include_usage true", `"stream":true,"stream_options":{"include_usage":true}`, true, false},
		{"include_usage false", `"stream":true,"stream_options":{"include_usage":false}`, false, false},
		{"empty stream_options defaults to usage", `"stream":true,"stream_options":{}`, true, false},
		{"continuous", `"stream":true,"stream_options":{"include_usage":true,"continuous_usage_stats":true}`, true, true},
		{"continuous without usage", `"stream":true,"stream_options":{"include_usage":false,"continuous_usage_stats":true}`, false, false},
	}
	usageSample := sampleEvents(t, "vllm-chat-stream-usage.sse")
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			evs, chunks := streamChunks(t, ts.URL+"/v1/chat/completions", chatBody(user, tc.extra), nil)
			final := chunks[len(chunks)-1]
			hasFinal := len(final.Choices) == 0
			if hasFinal != tc.wantFinal {
				t.Fatalf("final usage chunk present = %v, want %v", hasFinal, tc.wantFinal)
			}
			if hasFinal {
				if final.Usage == nil || final.Usage.PromptTokens != prompt || final.Usage.CompletionTokens != completion || final.Usage.TotalTokens != prompt+completion {
					t.Errorf("usage = %+v, want %d/%d", final.Usage, prompt, completion)
				}
				assertShape(t, "usage chunk", evs[len(evs)-2].Data, usageSample[len(usageSample)-2].Data)
				if !strings.Contains(evs[len(evs)-2].Data, `"choices":[],"usage":{"prompt_tokens":17,"total_tokens":23,"completion_tokens":6}}`) {
					t.Errorf("usage chunk layout: %s", evs[len(evs)-2].Data)
				}
				chunks = chunks[:len(chunks)-1]
			}
			for i, c := range chunks {
				if (c.Usage != nil) != tc.continuous {
					t.Fatalf("chunk %d usage present = %v, want %v", i, c.Usage != nil, tc.continuous)
				}
				if tc.continuous {
					want := i // role chunk 0, then one per token
					if c.Usage.CompletionTokens != want || c.Usage.PromptTokens != prompt || c.Usage.TotalTokens != prompt+want {
						t.Errorf("chunk %d continuous usage %+v, want completion %d", i, c.Usage, want)
					}
				}
			}
		})
	}
}

func TestChatNonStream(t *testing.T) {
	s, ts := newSim(t, Config{Tokens: 7})
	const user = "hello"
	resp := post(t, ts.URL+"/v1/chat/completions", chatBody(user, `"stream":false`), nil)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("status %d content-type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	body := readAll(t, resp)
	assertShape(t, "chat.completion", string(body), sample(t, "vllm-chat-nonstream.json"))
	var got struct {
		ID      string `json:"id"`
		Object  string `json:"object"`
		Model   string `json:"model"`
		Choices []struct {
			Message struct {
				Role    string `json:"role"`
				Content string `json:"content"`
			} `json:"message"`
			FinishReason string `json:"finish_reason"`
		} `json:"choices"`
		Usage map[string]any `json:"usage"`
	}
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatal(err)
	}
	if !chatIDRe.MatchString(got.ID) || got.Object != "chat.completion" || got.Model != DefaultModel {
		t.Errorf("header fields: %s", body)
	}
	if c := got.Choices[0]; c.Message.Role != "assistant" || c.Message.Content != Answer(user, 7) || c.FinishReason != "stop" {
		t.Errorf("choice: %+v", c)
	}
	// prompt 3 + 6 + 5 = 14, completion 7 + EOS.
	if got.Usage["prompt_tokens"] != 14.0 || got.Usage["completion_tokens"] != 8.0 || got.Usage["total_tokens"] != 22.0 {
		t.Errorf("usage: %v", got.Usage)
	}
	settle(t, s)
}

func TestChatContentParts(t *testing.T) {
	_, ts := newSim(t, Config{Tokens: 3})
	body := `{"messages":[{"role":"user","content":[{"type":"text","text":"part one"},{"type":"text","text":"part two"}]}]}`
	m := decode(t, readAll(t, post(t, ts.URL+"/v1/chat/completions", body, nil)))
	msg := m["choices"].([]any)[0].(map[string]any)["message"].(map[string]any)
	if msg["content"] != Answer("part one\npart two", 3) {
		t.Errorf("content %v", msg["content"])
	}
	if u := m["usage"].(map[string]any); u["prompt_tokens"] != float64(3+4+4) {
		t.Errorf("prompt tokens %v", u["prompt_tokens"])
	}
}

func TestRequestIDHeaderEmbedded(t *testing.T) {
	_, ts := newSim(t, Config{Tokens: 1})
	m := decode(t, readAll(t, post(t, ts.URL+"/v1/chat/completions", chatBody("x", ""), map[string]string{"X-Request-Id": "abc-123"})))
	if m["id"] != "chatcmpl-abc-123" {
		t.Errorf("id = %v", m["id"])
	}
	m = decode(t, readAll(t, post(t, ts.URL+"/v1/chat/completions", chatBody("x", ""), map[string]string{"X-Request-Id": "bad id\"<"})))
	if !chatIDRe.MatchString(m["id"].(string)) {
		t.Errorf("id = %v", m["id"])
	}
}

func TestMaxTokensLength(t *testing.T) {
	_, ts := newSim(t, Config{Tokens: 10})
	const user = "limit me"
	cases := []struct {
		name, extra    string
		visible        int
		finish         string
		wantCompletion int
	}{
		{"max_tokens below answer", `"max_tokens":4`, 4, "length", 4},
		{"max_completion_tokens wins", `"max_tokens":2,"max_completion_tokens":3`, 3, "length", 3},
		{"max_tokens equal answer", `"max_tokens":10`, 10, "length", 10},
		{"max_tokens above answer", `"max_tokens":11`, 10, "stop", 11},
	}
	for _, tc := range cases {
		t.Run(tc.name+"/stream", func(t *testing.T) {
			evs, chunks := streamChunks(t, ts.URL+"/v1/chat/completions", chatBody(user, `"stream":true,"stream_options":{"include_usage":true},`+tc.extra), nil)
			var text strings.Builder
			finishes := 0
			for _, c := range chunks[:len(chunks)-1] {
				if c.Choices[0].Delta.Content != nil {
					text.WriteString(*c.Choices[0].Delta.Content)
				}
				if f := c.Choices[0].FinishReason; f != nil {
					finishes++
					if *f != tc.finish {
						t.Errorf("finish_reason %q, want %q", *f, tc.finish)
					}
				}
			}
			if finishes != 1 {
				t.Errorf("%d chunks with finish_reason", finishes)
			}
			if text.String() != Answer(user, tc.visible) {
				t.Errorf("text %q, want %q", text.String(), Answer(user, tc.visible))
			}
			if u := chunks[len(chunks)-1].Usage; u == nil || u.CompletionTokens != tc.wantCompletion {
				t.Errorf("usage %+v, want completion %d (%s)", u, tc.wantCompletion, evs[len(evs)-2].Data)
			}
			if tc.finish == "length" && !strings.Contains(evs[len(evs)-3].Data, `"finish_reason":"length","stop_reason":null`) {
				t.Errorf("length chunk: %s", evs[len(evs)-3].Data)
			}
		})
		t.Run(tc.name+"/nonstream", func(t *testing.T) {
			m := decode(t, readAll(t, post(t, ts.URL+"/v1/chat/completions", chatBody(user, tc.extra), nil)))
			c := m["choices"].([]any)[0].(map[string]any)
			if c["finish_reason"] != tc.finish || c["message"].(map[string]any)["content"] != Answer(user, tc.visible) {
				t.Errorf("choice %v", c)
			}
			if m["usage"].(map[string]any)["completion_tokens"] != float64(tc.wantCompletion) {
				t.Errorf("usage %v", m["usage"])
			}
		})
	}
}

const weatherTools = `"tools":[{"type":"function","function":{"name":"get_weather","description":"Weather","parameters":{"type":"object","properties":{"city":{"type":"string"},"unit":{"type":"string","enum":["celsius","fahrenheit"]},"days":{"type":"integer"},"hourly":{"type":"boolean"}},"required":["city"]}}},{"type":"function","function":{"name":"run_command","parameters":{"type":"object","properties":{"command":{"type":"string"}}}}}]`

func TestToolCallStream(t *testing.T) {
	s, ts := newSim(t, Config{})
	cases := []struct {
		name, extra string
		wantName    string
	}{
		{"auto", weatherTools + `,"tool_choice":"auto"`, "get_weather"},
		{"absent choice", weatherTools, "get_weather"},
		{"required", weatherTools + `,"tool_choice":"required"`, "get_weather"},
		{"named", weatherTools + `,"tool_choice":{"type":"function","function":{"name":"run_command"}}`, "run_command"},
	}
	sm := sampleEvents(t, "vllm-chat-stream-toolcalls.sse")
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			evs, chunks := streamChunks(t, ts.URL+"/v1/chat/completions", chatBody("weather in Oslo", `"stream":true,`+tc.extra), nil)
			assertShape(t, "tool name delta", evs[1].Data, sm[1].Data)
			assertShape(t, "tool args delta", evs[2].Data, sm[2].Data)
			assertShape(t, "tool finish", evs[len(evs)-2].Data, sm[len(sm)-2].Data)
			var name, id, args string
			pieces := 0
			for _, c := range chunks[1:] {
				for _, tcall := range c.Choices[0].Delta.ToolCalls {
					if tcall.Index != 0 {
						t.Errorf("tool call index %d", tcall.Index)
					}
					if tcall.Function.Name != "" {
						if name != "" {
							t.Errorf("name sent twice")
						}
						name, id = tcall.Function.Name, tcall.ID
						if tcall.Type != "function" || tcall.Function.Arguments != nil {
							t.Errorf("first tool delta: %+v", tcall)
						}
					}
					if tcall.Function.Arguments != nil {
						args += *tcall.Function.Arguments
						pieces++
					}
				}
			}
			if name != tc.wantName || !strings.HasPrefix(id, "chatcmpl-tool-") {
				t.Errorf("name %q id %q", name, id)
			}
			if pieces < 2 {
				t.Errorf("arguments came in %d pieces, want several", pieces)
			}
			var parsed map[string]any
			if err := json.Unmarshal([]byte(args), &parsed); err != nil {
				t.Fatalf("arguments %q do not parse: %v", args, err)
			}
			if tc.wantName == "get_weather" {
				if parsed["unit"] != "celsius" || parsed["hourly"] != true || parsed["days"] == nil || parsed["city"] == "" {
					t.Errorf("arguments %v", parsed)
				}
			}
			if f := chunks[len(chunks)-1].Choices[0].FinishReason; f == nil || *f != "tool_calls" {
				t.Errorf("finish %v", f)
			}
			// The non-stream answer carries the same arguments.
			m := decode(t, readAll(t, post(t, ts.URL+"/v1/chat/completions", chatBody("weather in Oslo", tc.extra), nil)))
			c := m["choices"].([]any)[0].(map[string]any)
			msg := c["message"].(map[string]any)
			calls := msg["tool_calls"].([]any)
			if len(calls) != 1 || c["finish_reason"] != "tool_calls" || msg["content"] != nil {
				t.Fatalf("non-stream tool answer: %v", c)
			}
			fn := calls[0].(map[string]any)["function"].(map[string]any)
			if fn["name"] != tc.wantName || fn["arguments"] != args {
				t.Errorf("non-stream function %v, stream args %q", fn, args)
			}
		})
	}
	t.Run("none", func(t *testing.T) {
		_, chunks := streamChunks(t, ts.URL+"/v1/chat/completions", chatBody("weather", `"stream":true,`+weatherTools+`,"tool_choice":"none"`), nil)
		for _, c := range chunks {
			if len(c.Choices[0].Delta.ToolCalls) > 0 {
				t.Fatal("tool call despite tool_choice none")
			}
		}
		if f := chunks[len(chunks)-1].Choices[0].FinishReason; *f != "stop" {
			t.Errorf("finish %q", *f)
		}
	})
	t.Run("unknown named tool", func(t *testing.T) {
		resp := post(t, ts.URL+"/v1/chat/completions", chatBody("x", weatherTools+`,"tool_choice":{"type":"function","function":{"name":"nope"}}`), nil)
		if resp.StatusCode != 400 {
			t.Errorf("status %d", resp.StatusCode)
		}
		readAll(t, resp)
	})
	t.Run("truncated by max_tokens", func(t *testing.T) {
		_, chunks := streamChunks(t, ts.URL+"/v1/chat/completions", chatBody("weather", `"stream":true,"max_tokens":3,`+weatherTools), nil)
		if f := chunks[len(chunks)-1].Choices[0].FinishReason; f == nil || *f != "length" {
			t.Errorf("finish %v", f)
		}
	})
	settle(t, s)
}

func TestChatStreamNotBuffered(t *testing.T) {
	// The first token must reach the client while the generation is still
	// running (the next token is an hour away).
	s, ts := newSim(t, Config{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	resp := do(t, ctx, "POST", ts.URL+"/v1/chat/completions", chatBody("x", `"stream":true`), map[string]string{"X-Sim-Token-Interval": "1h"})
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	readEvent(t, br) // role
	ev := readEvent(t, br)
	if !strings.Contains(ev, `"delta":{"content":`) {
		t.Fatalf("second event %q", ev)
	}
	if s.InFlight() != 1 {
		t.Errorf("InFlight = %d while streaming", s.InFlight())
	}
	cancel()
	settle(t, s)
}
