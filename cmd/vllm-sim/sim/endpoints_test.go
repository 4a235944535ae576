package sim

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"math"
	"regexp"
	"strings"
	"testing"
)

func TestCompletions(t *testing.T) {
	s, ts := newSim(t, Config{Tokens: 5})
	url := ts.URL + "/v1/completions"
	t.Run("nonstream shape", func(t *testing.T) {
		body := readAll(t, post(t, url, `{"model":"`+DefaultModel+`","prompt":"San Francisco is a"}`, nil))
		assertShape(t, "text_completion", string(body), sample(t, "vllm-completions-nonstream.json"))
		m := decode(t, body)
		if !regexp.MustCompile(`^cmpl-[0-9a-f]{32}$`).MatchString(m["id"].(string)) || m["object"] != "text_completion" {
			t.Errorf("header %s", body)
		}
		c := m["choices"].([]any)[0].(map[string]any)
		if c["text"] != Answer("San Francisco is a", 5) || c["finish_reason"] != "stop" {
			t.Errorf("choice %v", c)
		}
		u := m["usage"].(map[string]any)
		if u["prompt_tokens"] != 5.0 || u["completion_tokens"] != 6.0 || u["total_tokens"] != 11.0 {
			t.Errorf("usage %v", u)
		}
	})
	t.Run("default max_tokens is 16", func(t *testing.T) {
		m := decode(t, readAll(t, post(t, url, `{"prompt":"x"}`, map[string]string{"X-Sim-Tokens": "20"})))
		c := m["choices"].([]any)[0].(map[string]any)
		if c["finish_reason"] != "length" || c["text"] != Answer("x", 16) {
			t.Errorf("choice %v", c)
		}
	})
	t.Run("stream with usage", func(t *testing.T) {
		evs, chunks := streamChunks(t, url, `{"prompt":"hello world","stream":true,"stream_options":{"include_usage":true},"max_tokens":3}`, nil)
		var text strings.Builder
		for i, c := range chunks[:len(chunks)-1] {
			if c.Object != "text_completion" || !strings.HasPrefix(c.ID, "cmpl-") {
				t.Errorf("chunk %d: %s", i, evs[i].Data)
			}
			text.WriteString(*c.Choices[0].Text)
			fin := c.Choices[0].FinishReason
			if (i == len(chunks)-2) != (fin != nil) || (fin != nil && *fin != "length") {
				t.Errorf("chunk %d finish %v", i, fin)
			}
			if !strings.HasSuffix(evs[i].Data, `"stop_reason":null}]}`) {
				t.Errorf("chunk layout %s", evs[i].Data)
			}
		}
		if text.String() != Answer("hello world", 3) {
			t.Errorf("text %q", text.String())
		}
		final := chunks[len(chunks)-1]
		if len(final.Choices) != 0 || final.Usage == nil || final.Usage.PromptTokens != 3 || final.Usage.CompletionTokens != 3 {
			t.Errorf("usage chunk %s", evs[len(evs)-2].Data)
		}
	})
	t.Run("stream without usage ends with stop chunk", func(t *testing.T) {
		_, chunks := streamChunks(t, url, `{"prompt":"hi","stream":true}`, nil)
		last := chunks[len(chunks)-1]
		if last.Usage != nil || *last.Choices[0].FinishReason != "stop" || *last.Choices[0].Text != "" {
			t.Errorf("last %+v", last)
		}
	})
	t.Run("prompt arrays", func(t *testing.T) {
		cases := []struct {
			prompt      string
			seeds       []string
			promptTotal float64
		}{
			{`["one two","three"]`, []string{"one two", "three"}, 3 + 2},
			{`[1,2,3]`, []string{"1 2 3"}, 3},
			{`[[5,6],[7]]`, []string{"5 6", "7"}, 3},
		}
		for _, tc := range cases {
			m := decode(t, readAll(t, post(t, url, `{"prompt":`+tc.prompt+`}`, nil)))
			choices := m["choices"].([]any)
			if len(choices) != len(tc.seeds) {
				t.Fatalf("%s: %d choices", tc.prompt, len(choices))
			}
			for i, c := range choices {
				c := c.(map[string]any)
				if c["index"] != float64(i) || c["text"] != Answer(tc.seeds[i], 5) {
					t.Errorf("%s choice %d: %v", tc.prompt, i, c)
				}
			}
			u := m["usage"].(map[string]any)
			if u["prompt_tokens"] != tc.promptTotal || u["completion_tokens"] != float64(6*len(tc.seeds)) {
				t.Errorf("%s usage %v", tc.prompt, u)
			}
		}
		_, chunks := streamChunks(t, url, `{"prompt":["a","b"],"stream":true,"stream_options":{}}`, nil)
		seen := map[int]string{}
		for _, c := range chunks[:len(chunks)-1] {
			seen[c.Choices[0].Index] += *c.Choices[0].Text
		}
		if seen[0] != Answer("a", 5) || seen[1] != Answer("b", 5) {
			t.Errorf("stream texts %v", seen)
		}
		if u := chunks[len(chunks)-1].Usage; u.CompletionTokens != 12 {
			t.Errorf("usage %+v", u)
		}
	})
	t.Run("bad prompt", func(t *testing.T) {
		for _, b := range []string{`{}`, `{"prompt":{}}`, `{"prompt":[[]]}`, `{"prompt":"x","max_tokens":0}`} {
			resp := post(t, url, b, nil)
			if resp.StatusCode != 400 {
				t.Errorf("%s: status %d", b, resp.StatusCode)
			}
			assertShape(t, b, string(readAll(t, resp)), sample(t, "vllm-error.json"))
		}
	})
	settle(t, s)
}

func TestEmbeddings(t *testing.T) {
	s, ts := newSim(t, Config{})
	url := ts.URL + "/v1/embeddings"
	type embResp struct {
		ID     string `json:"id"`
		Object string `json:"object"`
		Model  string `json:"model"`
		Data   []struct {
			Index     int             `json:"index"`
			Object    string          `json:"object"`
			Embedding json.RawMessage `json:"embedding"`
		} `json:"data"`
		Usage map[string]any `json:"usage"`
	}
	get := func(body string) embResp {
		t.Helper()
		resp := post(t, url, body, nil)
		b := readAll(t, resp)
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d %s", body, resp.StatusCode, b)
		}
		var r embResp
		if err := json.Unmarshal(b, &r); err != nil {
			t.Fatal(err)
		}
		return r
	}
	r := get(`{"model":"` + DefaultModel + `","input":"the quick fox"}`)
	if !strings.HasPrefix(r.ID, "embd-") || r.Object != "list" || r.Model != DefaultModel || len(r.Data) != 1 || r.Data[0].Object != "embedding" {
		t.Fatalf("response %+v", r)
	}
	var vec []float32
	if err := json.Unmarshal(r.Data[0].Embedding, &vec); err != nil {
		t.Fatal(err)
	}
	want := Embedding("the quick fox", 16)
	if len(vec) != 16 {
		t.Fatalf("dim %d", len(vec))
	}
	var norm float64
	for i := range vec {
		if vec[i] != want[i] {
			t.Fatalf("vec[%d] = %v, want %v", i, vec[i], want[i])
		}
		norm += float64(vec[i]) * float64(vec[i])
	}
	if math.Abs(norm-1) > 1e-5 {
		t.Errorf("norm² = %v", norm)
	}
	if r.Usage["prompt_tokens"] != 4.0 || r.Usage["total_tokens"] != 4.0 || r.Usage["completion_tokens"] != 0.0 {
		t.Errorf("usage %v", r.Usage)
	}

	// base64: little-endian float32, same values.
	r = get(`{"input":"the quick fox","encoding_format":"base64"}`)
	var b64 string
	if err := json.Unmarshal(r.Data[0].Embedding, &b64); err != nil {
		t.Fatal(err)
	}
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || len(raw) != 64 {
		t.Fatalf("base64 %q: %v", b64, err)
	}
	for i := range want {
		if f := math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:])); f != want[i] {
			t.Fatalf("base64 value %d = %v, want %v", i, f, want[i])
		}
	}

	r = get(`{"input":["a","b c"],"dimensions":5}`)
	if len(r.Data) != 2 || r.Data[1].Index != 1 || r.Usage["prompt_tokens"] != 5.0 {
		t.Errorf("array input %+v", r)
	}
	if err := json.Unmarshal(r.Data[1].Embedding, &vec); err != nil || len(vec) != 5 {
		t.Errorf("dimensions: %v %v", vec, err)
	}
	for _, bad := range []string{`{}`, `{"input":"x","encoding_format":"int8"}`, `{"input":"x","dimensions":0}`, `{"input":"x","model":"nope"}`} {
		resp := post(t, url, bad, nil)
		if resp.StatusCode != 400 && resp.StatusCode != 404 {
			t.Errorf("%s: status %d", bad, resp.StatusCode)
		}
		readAll(t, resp)
	}
	if s.Started() != 0 {
		t.Errorf("embeddings counted as generations: %d", s.Started())
	}
}

func TestResponsesStream(t *testing.T) {
	s, ts := newSim(t, Config{Tokens: 4})
	resp := post(t, ts.URL+"/v1/responses", `{"model":"`+DefaultModel+`","input":"write a haiku","instructions":"be poetic","stream":true}`, nil)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream; charset=utf-8" {
		t.Fatalf("status %d ct %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	evs := parseSSE(t, readAll(t, resp))
	wantOrder := []string{"response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
		"response.output_text.delta", "response.output_text.delta", "response.output_text.delta", "response.output_text.delta",
		"response.output_text.done", "response.content_part.done", "response.output_item.done", "response.completed"}
	if len(evs) != len(wantOrder) {
		t.Fatalf("%d events, want %d: %v", len(evs), len(wantOrder), evs)
	}
	var text string
	for i, ev := range evs {
		if ev.Event != wantOrder[i] {
			t.Errorf("event %d = %q, want %q", i, ev.Event, wantOrder[i])
		}
		if ev.Data == "[DONE]" || !isCompact(ev.Data) {
			t.Fatalf("event %d data %q", i, ev.Data)
		}
		m := decode(t, []byte(ev.Data))
		if m["type"] != ev.Event || m["sequence_number"] != float64(i) {
			t.Errorf("event %d type %v seq %v", i, m["type"], m["sequence_number"])
		}
		if ev.Event == "response.output_text.delta" {
			text += m["delta"].(string)
		}
	}
	if text != Answer("write a haiku", 4) {
		t.Errorf("text %q", text)
	}
	final := decode(t, []byte(evs[len(evs)-1].Data))["response"].(map[string]any)
	if final["status"] != "completed" || !strings.HasPrefix(final["id"].(string), "resp_") || final["object"] != "response" {
		t.Errorf("final response %v", final)
	}
	u := final["usage"].(map[string]any)
	// prompt: 3 + (4+2) + (4+3) = 16; output: 4 + EOS.
	if u["input_tokens"] != 16.0 || u["output_tokens"] != 5.0 || u["total_tokens"] != 21.0 {
		t.Errorf("usage %v", u)
	}
	out := final["output"].([]any)[0].(map[string]any)["content"].([]any)[0].(map[string]any)
	if out["text"] != text || out["type"] != "output_text" {
		t.Errorf("output %v", out)
	}
	settle(t, s)
}

func TestResponsesNonStream(t *testing.T) {
	s, ts := newSim(t, Config{Tokens: 6})
	cases := []struct {
		name, body, seed, status string
		visible                  int
		output                   float64
	}{
		{"string input", `{"input":"hi there"}`, "hi there", "completed", 6, 7},
		{"message items", `{"input":[{"role":"user","content":"first"},{"role":"assistant","content":"ok"},{"role":"user","content":[{"type":"input_text","text":"second one"}]}]}`, "second one", "completed", 6, 7},
		{"max_output_tokens", `{"input":"hi","max_output_tokens":2}`, "hi", "incomplete", 2, 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := decode(t, readAll(t, post(t, ts.URL+"/v1/responses", tc.body, nil)))
			if m["status"] != tc.status || m["object"] != "response" {
				t.Errorf("status %v object %v", m["status"], m["object"])
			}
			item := m["output"].([]any)[0].(map[string]any)
			if item["type"] != "message" || item["role"] != "assistant" {
				t.Errorf("item %v", item)
			}
			text := item["content"].([]any)[0].(map[string]any)["text"]
			if text != Answer(tc.seed, tc.visible) {
				t.Errorf("text %q, want %q", text, Answer(tc.seed, tc.visible))
			}
			if u := m["usage"].(map[string]any); u["output_tokens"] != tc.output {
				t.Errorf("usage %v", u)
			}
			if tc.status == "incomplete" && m["incomplete_details"].(map[string]any)["reason"] != "max_output_tokens" {
				t.Errorf("incomplete_details %v", m["incomplete_details"])
			}
		})
	}
	resp := post(t, ts.URL+"/v1/responses", `{"model":"gpt-4o","input":"x"}`, nil)
	if resp.StatusCode != 404 {
		t.Errorf("unknown model: %d", resp.StatusCode)
	}
	readAll(t, resp)
	settle(t, s)
}

func TestModelsHealthVersionTokenize(t *testing.T) {
	_, ts := newSim(t, Config{Model: "granite", MaxModelLen: 4096})
	resp := do(t, nil, "GET", ts.URL+"/v1/models", "", nil)
	body := readAll(t, resp)
	assertShape(t, "models", string(body), sample(t, "vllm-models.json"))
	d := decode(t, body)["data"].([]any)[0].(map[string]any)
	if d["id"] != "granite" || d["owned_by"] != "vllm" || d["max_model_len"] != 4096.0 {
		t.Errorf("model card %v", d)
	}
	resp = do(t, nil, "GET", ts.URL+"/health", "", nil)
	if b := readAll(t, resp); resp.StatusCode != 200 || len(b) != 0 {
		t.Errorf("health %d %q", resp.StatusCode, b)
	}
	resp = do(t, nil, "GET", ts.URL+"/version", "", nil)
	if m := decode(t, readAll(t, resp)); m["version"] != DefaultVersion {
		t.Errorf("version %v", m)
	}
	m := decode(t, readAll(t, post(t, ts.URL+"/tokenize", `{"prompt":"a b c"}`, nil)))
	if m["count"] != 3.0 || len(m["tokens"].([]any)) != 3 || m["max_model_len"] != 4096.0 {
		t.Errorf("tokenize %v", m)
	}
}
