package limit

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/llmtap/llmtap/cmd/vllm-sim/sim"
)

func TestUsageTokens(t *testing.T) {
	tests := []struct {
		name   string
		body   string
		stream bool
		want   int64
	}{
		{"chat json", `{"id":"x","choices":[],"usage":{"prompt_tokens":13,"total_tokens":16,"completion_tokens":3}}`, false, 16},
		{"no total", `{"usage":{"prompt_tokens":13,"completion_tokens":3}}`, false, 16},
		{"responses api", `{"usage":{"input_tokens":37,"output_tokens":11}}`, false, 48},
		{"embeddings", `{"data":[],"usage":{"prompt_tokens":7,"total_tokens":7}}`, false, 7},
		{"no usage", `{"choices":[{"text":"hi"}]}`, false, 0},
		{"usage null", `{"usage":null}`, false, 0},
		{"empty", ``, false, 0},
		{"escaped key in content", `{"choices":[{"message":{"content":"\"usage\":{\"total_tokens\":999}"}}],"usage":{"total_tokens":5}}`, false, 5},
		{"only escaped", `{"content":"say \"usage\": {\"total_tokens\": 9}"}`, false, 0},
		{"whitespace", "{\"usage\" :\n {\"total_tokens\" : 21 }}", false, 21},
		{"negative", `{"usage":{"total_tokens":-5,"prompt_tokens":-1,"completion_tokens":-2}}`, false, 0},
		{"nested details", `{"usage":{"prompt_tokens":3606,"total_tokens":3646,"completion_tokens":40,"prompt_tokens_details":null}}`, false, 3646},
		{"truncated object", `{"usage":{"total_tokens":5`, false, 0},
		{"stream last chunk",
			"data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}],\"usage\":null}\n\n" +
				"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":2,\"total_tokens\":6}}\n\n" +
				"data: [DONE]\n\n", true, 6},
		{"stream continuous usage: last wins",
			"data: {\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":1,\"total_tokens\":5}}\n\n" +
				"data: {\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":2,\"total_tokens\":6}}\n\n" +
				"data: {\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":3,\"total_tokens\":7}}\n\n" +
				"data: [DONE]\n\n", true, 7},
		{"stream without usage", "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\ndata: [DONE]\n\n", true, 0},
		{"stream cut mid usage",
			"data: {\"usage\":{\"total_tokens\":5}}\n\ndata: {\"usage\":{\"total_to", true, 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := UsageTokens([]byte(tt.body), tt.stream); got != tt.want {
				t.Errorf("UsageTokens = %d, want %d", got, tt.want)
			}
		})
	}
}

// TestUsageTokensSamples: the recorded vLLM samples and SSE fixtures give
// the usage they carry (checked by a full, independent decode).
func TestUsageTokensSamples(t *testing.T) {
	var files []string
	for _, g := range []string{"../../testdata/samples/vllm-*", "../../testdata/sse/*"} {
		m, _ := filepath.Glob(g)
		files = append(files, m...)
	}
	if len(files) < 5 {
		t.Fatalf("found only %d sample files", len(files))
	}
	for _, f := range files {
		if !strings.HasSuffix(f, ".json") && !strings.HasSuffix(f, ".sse") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		stream := strings.HasSuffix(f, ".sse")
		want := fullDecodeUsage(t, b, stream)
		if got := UsageTokens(b, stream); got != want {
			t.Errorf("%s: UsageTokens = %d, full decode says %d", filepath.Base(f), got, want)
		}
	}
}

// fullDecodeUsage parses the whole body (every SSE data line) and returns
// the last usage found, the slow way.
func fullDecodeUsage(t *testing.T, b []byte, stream bool) int64 {
	t.Helper()
	var last int64
	take := func(payload []byte) {
		var v struct {
			Usage    *usageFields `json:"usage"`
			Response *struct {
				Usage *usageFields `json:"usage"`
			} `json:"response"`
		}
		if json.Unmarshal(payload, &v) != nil {
			return
		}
		us := v.Usage
		if us == nil && v.Response != nil {
			us = v.Response.Usage
		}
		if us == nil {
			return
		}
		n := us.Total
		if n <= 0 {
			n = us.Prompt + us.Completion
		}
		if n <= 0 {
			n = us.Input + us.Output
		}
		last = n
	}
	if !stream {
		take(b)
		return last
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 1<<20), 8<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if p, ok := bytes.CutPrefix(line, []byte("data:")); ok {
			take(bytes.TrimSpace(p))
		}
	}
	return last
}

// simServer is vllm-sim over real loopback HTTP.
func simServer(t *testing.T) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(sim.New(sim.DefaultConfig()))
	t.Cleanup(srv.Close)
	return srv
}

func post(t *testing.T, url, body string, tokens string) []byte {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if tokens != "" {
		req.Header.Set("X-Sim-Tokens", tokens)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != 200 {
		t.Fatalf("%s: %d %s", url, res.StatusCode, b)
	}
	return b
}

// TestUsageTokensVLLMSim: every endpoint of vllm-sim, streamed and not.
func TestUsageTokensVLLMSim(t *testing.T) {
	srv := simServer(t)
	model := sim.DefaultModel
	tests := []struct {
		name, path, body string
		stream           bool
	}{
		{"chat", "/v1/chat/completions", `{"model":"` + model + `","messages":[{"role":"user","content":"hello there"}]}`, false},
		{"chat stream usage", "/v1/chat/completions", `{"model":"` + model + `","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hello there"}]}`, true},
		{"chat stream continuous", "/v1/chat/completions", `{"model":"` + model + `","stream":true,"stream_options":{"include_usage":true,"continuous_usage_stats":true},"messages":[{"role":"user","content":"hi"}]}`, true},
		{"completions", "/v1/completions", `{"model":"` + model + `","prompt":"once upon a time"}`, false},
		{"completions stream", "/v1/completions", `{"model":"` + model + `","prompt":"once","stream":true,"stream_options":{"include_usage":true}}`, true},
		{"embeddings", "/v1/embeddings", `{"model":"` + model + `","input":"some text to embed"}`, false},
		{"responses", "/v1/responses", `{"model":"` + model + `","input":"hello"}`, false},
		{"responses stream", "/v1/responses", `{"model":"` + model + `","input":"hello","stream":true}`, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := post(t, srv.URL+tt.path, tt.body, "")
			want := fullDecodeUsage(t, b, tt.stream)
			if want <= 0 {
				t.Fatalf("vllm-sim reported no usage: %s", b)
			}
			if got := UsageTokens(b, tt.stream); got != want {
				t.Fatalf("UsageTokens = %d, full decode %d", got, want)
			}
		})
	}
}

// TestTPMWithVLLMSim: admit, call vllm-sim, release with the sniffed usage:
// the request that spends the budget passes, the next one is refused.
func TestTPMWithVLLMSim(t *testing.T) {
	srv := simServer(t)
	body := `{"model":"` + sim.DefaultModel + `","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"count to ten"}]}`
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			l := b.open(t, DefaultConfig())
			per := UsageTokens(post(t, srv.URL+"/v1/chat/completions", body, "20"), true)
			if per <= 20 {
				t.Fatalf("usage per request %d", per)
			}
			const requests = 4
			lim := Limits{TPM: per*(requests-1) + 1} // spent by the 4th request
			var admitted int64
			for i := 0; i < 10; i++ {
				d, release, err := l.Admit(context.Background(), "key_sim", lim)
				if err != nil {
					t.Fatal(err)
				}
				if !d.Allowed {
					if d.Reason != ReasonTokens || i != requests {
						t.Fatalf("request %d refused (%s), want the %dth refused for tokens", i+1, d.Reason, requests+1)
					}
					return
				}
				admitted++
				release(UsageTokens(post(t, srv.URL+"/v1/chat/completions", body, "20"), true))
			}
			t.Fatalf("never refused after %d requests of %d tokens with TPM %d", admitted, per, lim.TPM)
		})
	}
}

func TestUsage(t *testing.T) {
	tests := []struct {
		name         string
		body         string
		prompt, comp int64
		ok           bool
	}{
		{"chat json", `{"choices":[],"usage":{"prompt_tokens":13,"total_tokens":16,"completion_tokens":3}}`, 13, 3, true},
		{"prompt only (embeddings)", `{"data":[],"usage":{"prompt_tokens":7,"total_tokens":7}}`, 7, 0, true},
		{"responses api", `{"usage":{"input_tokens":37,"output_tokens":11,"total_tokens":48}}`, 37, 11, true},
		{"total only", `{"usage":{"total_tokens":9}}`, 0, 0, true},
		{"zeros", `{"usage":{"prompt_tokens":0,"completion_tokens":0}}`, 0, 0, true},
		{"negative", `{"usage":{"prompt_tokens":-1,"completion_tokens":-2}}`, 0, 0, true},
		{"no usage", `{"choices":[{"text":"hi"}]}`, 0, 0, false},
		{"usage null", `{"usage":null}`, 0, 0, false},
		{"empty", ``, 0, 0, false},
		{"escaped key in content", `{"content":"\"usage\":{\"prompt_tokens\":999}","usage":{"prompt_tokens":2,"completion_tokens":1}}`, 2, 1, true},
		{"stream last chunk wins",
			"data: {\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":1}}\n\n" +
				"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":2,\"total_tokens\":6}}\n\n" +
				"data: [DONE]\n\n", 4, 2, true},
		{"stream cut mid usage", "data: {\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":5}}\n\ndata: {\"usage\":{\"prompt_to", 3, 5, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, c, ok := Usage([]byte(tt.body), true)
			if p != tt.prompt || c != tt.comp || ok != tt.ok {
				t.Errorf("Usage = %d, %d, %v; want %d, %d, %v", p, c, ok, tt.prompt, tt.comp, tt.ok)
			}
		})
	}
}

// TestUsageVLLMSim: prompt and completion tokens of vllm-sim's answers
// (chat streamed and not, Responses API) equal a full decode's.
func TestUsageVLLMSim(t *testing.T) {
	srv := simServer(t)
	model := sim.DefaultModel
	tests := []struct {
		name, path, body string
		stream           bool
	}{
		{"chat", "/v1/chat/completions", `{"model":"` + model + `","messages":[{"role":"user","content":"hello there"}]}`, false},
		{"chat stream usage", "/v1/chat/completions", `{"model":"` + model + `","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hello there"}]}`, true},
		{"completions", "/v1/completions", `{"model":"` + model + `","prompt":"once upon a time"}`, false},
		{"responses", "/v1/responses", `{"model":"` + model + `","input":"hello"}`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := post(t, srv.URL+tt.path, tt.body, "7")
			var last []byte
			for _, line := range bytes.Split(b, []byte("\n")) {
				line = bytes.TrimPrefix(line, []byte("data: "))
				if bytes.Contains(line, []byte(`"usage":{`)) {
					last = line
				}
			}
			if !tt.stream {
				last = b
			}
			var v struct {
				Usage *usageFields `json:"usage"`
			}
			if err := json.Unmarshal(last, &v); err != nil || v.Usage == nil {
				t.Fatalf("no usage in %s: %v", b, err)
			}
			wantP, wantC := v.Usage.Prompt+v.Usage.Input, v.Usage.Completion+v.Usage.Output
			p, c, ok := Usage(b, tt.stream)
			if !ok || p != wantP || c != wantC || p <= 0 || c <= 0 {
				t.Fatalf("Usage = %d, %d, %v; full decode %d, %d", p, c, ok, wantP, wantC)
			}
			if total := UsageTokens(b, tt.stream); total != p+c {
				t.Fatalf("UsageTokens %d != prompt %d + completion %d", total, p, c)
			}
		})
	}
}

func FuzzUsageTokens(f *testing.F) {
	for _, s := range []string{
		`{"usage":{"total_tokens":5}}`,
		`{"usage":null,"x":"\"usage\":{"}`,
		"data: {\"usage\":{\"input_tokens\":1,\"output_tokens\":2}}\n\ndata: [DONE]\n\n",
		`"usage":{"prompt_tokens":1e30}`,
		`"usage""usage":{`,
	} {
		f.Add([]byte(s), false)
	}
	f.Fuzz(func(t *testing.T, b []byte, stream bool) {
		orig := append([]byte(nil), b...)
		n := UsageTokens(b, stream)
		if n < 0 {
			t.Fatalf("negative tokens %d", n)
		}
		if !bytes.Equal(b, orig) {
			t.Fatal("UsageTokens modified its input")
		}
		p, c, ok := Usage(b, stream)
		if p < 0 || c < 0 || (!ok && (p != 0 || c != 0 || n != 0)) {
			t.Fatalf("Usage = %d, %d, %v (UsageTokens %d)", p, c, ok, n)
		}
		if !bytes.Equal(b, orig) {
			t.Fatal("Usage modified its input")
		}
		if p2, c2, n2, ok2 := UsageCounts(b, stream); p2 != p || c2 != c || n2 != n || ok2 != ok {
			t.Fatalf("UsageCounts = %d, %d, %d, %v; Usage = %d, %d, %v; UsageTokens = %d", p2, c2, n2, ok2, p, c, ok, n)
		}
		// usageAt reads the object at an opening brace as json.Decoder
		// reads the first value there.
		if i := bytes.IndexByte(b, '{'); i >= 0 {
			var want usageFields
			werr := json.NewDecoder(bytes.NewReader(b[i:])).Decode(&want)
			got, gok := usageAt(append([]byte(":"), b[i:]...))
			if gok != (werr == nil) || (gok && got != want) {
				t.Fatalf("usageAt(%q) = %+v, %v; json.Decoder: %+v, %v", b[i:], got, gok, want, werr)
			}
		}
	})
}
