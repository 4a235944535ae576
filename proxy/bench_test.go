package proxy

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/llmtap/llmtap/cmd/vllm-sim/sim"
)

// Benchmarks run against an in-process vllm-sim by default. For a
// side-by-side with another proxy, point them at external processes:
//
//	LLMTAP_BENCH_UPSTREAM=http://127.0.0.1:8000   # a running vllm-sim (the proxy forwards there)
//	LLMTAP_BENCH_NGINX=http://127.0.0.1:8080      # nginx in front of the same upstream
//	LLMTAP_BENCH_NGINX_KEY=sk-...                 # bearer key nginx's map accepts
//	go test ./proxy -run XXX -bench 'ProxyChat|ProxyStream$' -benchtime 5000x
//
// benchPair then also reports nginx-µs/req and nginx-added-µs/req.
type benchEnv struct {
	direct   string // upstream URL the client calls directly
	nginx    string
	nginxKey string
}

func benchHarness(b *testing.B, simCfg sim.Config) (*harness, benchEnv) {
	up := os.Getenv("LLMTAP_BENCH_UPSTREAM")
	h := newHarness(b, simCfg, func(c *Config) {
		if up != "" {
			c.Upstream = up
		}
	})
	env := benchEnv{direct: h.up.URL, nginx: os.Getenv("LLMTAP_BENCH_NGINX"), nginxKey: os.Getenv("LLMTAP_BENCH_NGINX_KEY")}
	if up != "" {
		env.direct = up
	}
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-h.rec.ch:
			case <-done:
				return
			}
		}
	}()
	b.Cleanup(func() { close(done) })
	return h, env
}

var benchClient = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1024, DisableCompression: true}}

// roundTrip sends one request and reads the whole answer; it returns the
// time to the first SSE event (or the whole body) and the total time.
func roundTrip(b *testing.B, url, key, body string, hdr map[string]string) (first, total time.Duration) {
	r, _ := http.NewRequest("POST", url, strings.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	if key != "" {
		r.Header.Set("Authorization", "Bearer "+key)
	}
	for k, v := range hdr {
		r.Header.Set(k, v)
	}
	start := time.Now()
	res, err := benchClient.Do(r)
	if err != nil {
		b.Fatal(err)
	}
	br := bufio.NewReaderSize(res.Body, 4096)
	if strings.HasPrefix(res.Header.Get("Content-Type"), "text/event-stream") {
		for {
			line, err := br.ReadSlice('\n')
			if err != nil {
				b.Fatalf("stream: %v", err)
			}
			if len(line) == 1 {
				break
			}
		}
	}
	first = time.Since(start)
	if _, err := io.Copy(io.Discard, br); err != nil {
		b.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 200 {
		b.Fatalf("status %d", res.StatusCode)
	}
	return first, time.Since(start)
}

// benchPair times the same request direct to vllm-sim and through the proxy,
// alternating, and reports both and the difference (µs per request).
func benchPair(b *testing.B, h *harness, env benchEnv, path, body string, hdr map[string]string) {
	var dFirst, dTotal, pFirst, pTotal, nFirst, nTotal time.Duration
	for range 20 { // warm the connection pools
		roundTrip(b, env.direct+path, "", body, hdr)
		roundTrip(b, h.srv.URL+path, h.alice, body, hdr)
		if env.nginx != "" {
			roundTrip(b, env.nginx+path, env.nginxKey, body, hdr)
		}
	}
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		f, t := roundTrip(b, env.direct+path, "", body, hdr)
		dFirst, dTotal = dFirst+f, dTotal+t
		f, t = roundTrip(b, h.srv.URL+path, h.alice, body, hdr)
		pFirst, pTotal = pFirst+f, pTotal+t
		if env.nginx != "" {
			f, t = roundTrip(b, env.nginx+path, env.nginxKey, body, hdr)
			nFirst, nTotal = nFirst+f, nTotal+t
		}
		n++
	}
	us := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(n) }
	b.ReportMetric(us(dTotal), "direct-µs/req")
	b.ReportMetric(us(pTotal), "proxy-µs/req")
	b.ReportMetric(us(pTotal-dTotal), "added-µs/req")
	if strings.Contains(body, `"stream":true`) {
		b.ReportMetric(us(dFirst), "direct-ttft-µs")
		b.ReportMetric(us(pFirst-dFirst), "added-ttft-µs")
	}
	if env.nginx != "" {
		b.ReportMetric(us(nTotal), "nginx-µs/req")
		b.ReportMetric(us(nTotal-dTotal), "nginx-added-µs/req")
		if strings.Contains(body, `"stream":true`) {
			b.ReportMetric(us(nFirst-dFirst), "nginx-added-ttft-µs")
		}
	}
}

// BenchmarkProxyChat: non-streaming chat, 16 tokens, no simulated delay.
// ns/op covers one direct and one proxied request.
func BenchmarkProxyChat(b *testing.B) {
	h, env := benchHarness(b, sim.Config{})
	benchPair(b, h, env, "/v1/chat/completions", chatBody, map[string]string{"X-Sim-Tokens": "16"})
}

// BenchmarkProxyStream: streaming chat, 64 tokens, with usage injection
// and stripping (the default) and without.
func BenchmarkProxyStream(b *testing.B) {
	for _, mode := range []string{StreamUsageInject, StreamUsageOff} {
		b.Run(mode, func(b *testing.B) {
			h, env := benchHarness(b, sim.Config{})
			h.px.inject = mode == StreamUsageInject
			benchPair(b, h, env, "/v1/chat/completions", streamBody, map[string]string{"X-Sim-Tokens": "64"})
		})
	}
}

// BenchmarkProxyParallel measures throughput with concurrent clients,
// direct and through the proxy, as sub-benchmarks of one run.
func BenchmarkProxyParallel(b *testing.B) {
	for _, tc := range []struct{ name, body string }{{"chat", chatBody}, {"stream", streamBody}} {
		h, env := benchHarness(b, sim.Config{})
		targets := []struct{ name, url, key string }{{"direct", env.direct, ""}, {"proxy", h.srv.URL, h.alice}}
		if env.nginx != "" {
			targets = append(targets, struct{ name, url, key string }{"nginx", env.nginx, env.nginxKey})
		}
		for _, target := range targets {
			b.Run(tc.name+"/"+target.name, func(b *testing.B) {
				b.SetParallelism(8)
				b.ReportAllocs()
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						roundTrip(b, target.url+"/v1/chat/completions", target.key, tc.body, map[string]string{"X-Sim-Tokens": "16"})
					}
				})
			})
		}
	}
}

// BenchmarkProxyStreamMemory opens many slow streams at once, first direct
// then through the proxy, and reports the extra Go heap and stack per open
// stream (proxy side, captured bytes included; they are small here), after
// a warm-up round on each path.
func BenchmarkProxyStreamMemory(b *testing.B) {
	const streams = 200
	h, _ := benchHarness(b, sim.Config{})
	hdr := map[string]string{"X-Sim-Tokens": "3", "X-Sim-Token-Interval": "1s"}
	heapWith := func(url, key string) (heap, stack uint64) {
		var wg sync.WaitGroup
		ready := make(chan struct{}, streams)
		for range streams {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r, _ := http.NewRequest("POST", url+"/v1/chat/completions", bytes.NewReader([]byte(streamBody)))
				if key != "" {
					r.Header.Set("Authorization", "Bearer "+key)
				}
				for k, v := range hdr {
					r.Header.Set(k, v)
				}
				res, err := benchClient.Do(r)
				if err != nil {
					b.Error(err)
					ready <- struct{}{}
					return
				}
				br := bufio.NewReader(res.Body)
				br.ReadString('\n') // first event
				ready <- struct{}{}
				io.Copy(io.Discard, br)
				res.Body.Close()
			}()
		}
		for range streams {
			<-ready
		}
		time.Sleep(200 * time.Millisecond)
		var ms runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&ms)
		wg.Wait()
		// Close the idle connections so that the next run starts from the
		// same base (idle pools hold buffers and goroutines).
		benchClient.CloseIdleConnections()
		h.px.Close()
		time.Sleep(200 * time.Millisecond)
		return ms.HeapInuse, ms.StackInuse
	}
	// One unmeasured round on each path first: what the first streams
	// allocate once (pools, per-consumer metric series, the transports'
	// first connections) is not memory per open stream, and would
	// otherwise be divided among the streams of the first round only, so
	// the figure would depend on -benchtime.
	heapWith(h.up.URL, "")
	heapWith(h.srv.URL, h.alice)
	var dh, ds, ph, ps uint64
	for b.Loop() {
		hp, st := heapWith(h.up.URL, "")
		dh, ds = dh+hp, ds+st
		hp, st = heapWith(h.srv.URL, h.alice)
		ph, ps = ph+hp, ps+st
	}
	n := float64(b.N) * streams * 1024
	b.ReportMetric((float64(ph)-float64(dh))/n, "heap-KiB/stream")
	b.ReportMetric((float64(ps)-float64(ds))/n, "stack-KiB/stream")
	b.ReportMetric((float64(ph+ps)-float64(dh+ds))/n, "KiB/stream")
}
