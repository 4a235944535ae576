package decode

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	"github.com/llmtap/llmtap/ingest/event"
)

// FuzzChatFast checks the one-pass chat functions against the generic
// path: same extraction for every request and response body.
func FuzzChatFast(f *testing.F) {
	for _, dir := range []string{samplesDir, sseDir, benchDir} {
		addFiles(f, dir, "*.json", func(b []byte) { f.Add(b, b, uint8(0)) })
	}
	req := readFile(f, benchDir+"/chat-multiturn-request.json")
	addFiles(f, benchDir, "*.json", func(b []byte) { f.Add(req, b, uint8(1)) })
	f.Add([]byte(`{"messages":[{"role":"user","content":"a"},{"role":"u\u0073er","content":"b"},7,{"content":"c","role":"user"}],"model":1}`),
		[]byte(`{"choices":[{"index":1,"text":"x"},{"message":{"content":[{"type":"text","text":"y"}],"tool_calls":[{"id":"t","function":{"name":"f","arguments":{"a":1}}}]},"index":0.0,"finish_reason":"stop"}],"usage":{"input_tokens":3,"prompt_tokens":null,"total_tokens":"4"},"model":"m"}`), uint8(2))
	f.Add([]byte(`{"model":"m","model":"n","messages":[]}`), []byte(`{"usage":{"total_tokens":1,"total_tokens":2},"choices":[{"index":0},{"index":0,"message":null}]}`), uint8(3))
	f.Fuzz(func(t *testing.T, reqBody, respBody []byte, mode uint8) {
		path := "/v1/chat/completions"
		if mode&4 != 0 {
			path = "/v1/completions"
		}
		ev := event.Event{ID: "0190f5a0-0000-7000-8000-000000000202", Path: path, Status: 200, Stream: mode&8 != 0,
			RequestBody: reqBody, ResponseBody: respBody}
		endpoint := EndpointOf(path)
		fast := extractWith(&ev, endpoint, reqBody, respBody, true)
		slow := extractWith(&ev, endpoint, reqBody, respBody, false)
		if !reflect.DeepEqual(fast, slow) {
			t.Fatalf("one-pass and generic extraction differ for\nreq  %q\nresp %q:\nfast %+v\nslow %+v", reqBody, respBody, fast, slow)
		}
	})
}

// randJSON writes a random JSON value made of the keys and values that chat
// extraction reads (with duplicates, escapes, nulls and wrong types), for
// TestChatFastRandom.
func randJSON(r *rand.Rand, b *strings.Builder, depth int) {
	keys := []string{"model", "messages", "role", "content", "choices", "index", "message", "text", "finish_reason",
		"usage", "prompt_tokens", "input_tokens", "completion_tokens", "output_tokens", "total_tokens", "tool_calls",
		"reasoning_content", "reasoning", "type", "id", "function", "name", "arguments", "mod\\u0065l", "rôle", "x"}
	strs := []string{`"user"`, `"u\u0073er"`, `"assistant"`, `"text"`, `"hi"`, `"stop"`, `"a\nb"`, `""`, `"\ud83d\ude00"`, "\"\xff\""}
	nums := []string{"0", "1", "0.0", "-1", "1e2", "12", "9999999999999999999"}
	switch k := r.IntN(10); {
	case depth > 5 || k < 3:
		b.WriteString(strs[r.IntN(len(strs))])
	case k < 5:
		b.WriteString(nums[r.IntN(len(nums))])
	case k == 5:
		b.WriteString([]string{"null", "true", "false"}[r.IntN(3)])
	case k < 8:
		b.WriteString("{")
		for i, n := 0, r.IntN(5); i < n; i++ {
			if i > 0 {
				b.WriteString(",")
			}
			fmt.Fprintf(b, "%q:", keys[r.IntN(len(keys))])
			randJSON(r, b, depth+1)
		}
		b.WriteString("}")
	default:
		b.WriteString("[")
		for i, n := 0, r.IntN(4); i < n; i++ {
			if i > 0 {
				b.WriteString(" , ")
			}
			randJSON(r, b, depth+1)
		}
		b.WriteString("]")
	}
}

// The one-pass chat functions agree with the generic path on random
// documents of the shapes they read (FuzzChatFast explores bytes; this
// explores structure).
func TestChatFastRandom(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 11))
	fastReq, fastResp := 0, 0
	for i := 0; i < 30000; i++ {
		var req, resp strings.Builder
		randJSON(r, &req, 0)
		randJSON(r, &resp, 0)
		for _, path := range []string{"/v1/chat/completions", "/v1/completions"} {
			ev := event.Event{ID: "0190f5a0-0000-7000-8000-000000000203", Path: path, Status: 200}
			rb, sb := []byte(req.String()), []byte(resp.String())
			fast := extractWith(&ev, EndpointOf(path), rb, sb, true)
			slow := extractWith(&ev, EndpointOf(path), rb, sb, false)
			if !reflect.DeepEqual(fast, slow) {
				t.Fatalf("differ for\nreq  %s\nresp %s:\nfast %+v\nslow %+v", rb, sb, fast, slow)
			}
			var x extraction
			if chatRequest(rb, &x) {
				fastReq++
			}
			if chatResponse(sb, &x) {
				fastResp++
			}
		}
	}
	if fastReq == 0 || fastResp == 0 {
		t.Errorf("one-pass functions never succeeded (%d, %d)", fastReq, fastResp)
	}
	t.Logf("one-pass succeeded on %d requests, %d responses", fastReq, fastResp)
}

// plainRun stops where a byte-by-byte scan stops, at every position
// relative to its eight-byte words.
func TestPlainRun(t *testing.T) {
	for n := 0; n < 40; n++ {
		for c := 0; c < 256; c++ {
			b := append(bytes.Repeat([]byte{'a'}, n), byte(c), 'b')
			want := 0
			for want < len(b) && plainStr[b[want]] {
				want++
			}
			if got := plainRun(b); got != want {
				t.Fatalf("n=%d c=%#x: %d, want %d", n, c, got, want)
			}
		}
	}
}
