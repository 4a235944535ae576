package sim

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

// benchChat measures whole requests over real loopback HTTP (keep-alive).
func benchChat(b *testing.B, body string, parallel bool) {
	_, ts := newSim(b, Config{Tokens: 16})
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	b.Cleanup(client.CloseIdleConnections)
	one := func() int64 {
		req, _ := http.NewRequest("POST", ts.URL+"/v1/chat/completions", strings.NewReader(body))
		resp, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		n, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 {
			b.Fatalf("status %d err %v", resp.StatusCode, err)
		}
		return n
	}
	b.SetBytes(one())
	b.ReportAllocs()
	b.ResetTimer()
	if !parallel {
		for b.Loop() {
			one()
		}
		return
	}
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			one()
		}
	})
}

// BenchmarkChatStream: one streamed chat request (role + 16 token chunks +
// finish + usage + [DONE], each flushed) per op.
func BenchmarkChatStream(b *testing.B) {
	benchChat(b, chatBody("benchmark me", `"stream":true,"stream_options":{"include_usage":true}`), false)
}

func BenchmarkChatStreamParallel(b *testing.B) {
	benchChat(b, chatBody("benchmark me", `"stream":true,"stream_options":{"include_usage":true}`), true)
}

func BenchmarkChatNonStream(b *testing.B) {
	benchChat(b, chatBody("benchmark me", ""), false)
}
