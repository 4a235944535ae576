// Command loadgen sends numbered OpenAI-style chat requests (a mix of
// streamed and non-streamed) to a base URL with a bounded count or duration,
// and reports throughput, latency and time-to-first-byte percentiles, and
// its own CPU time (cpu_seconds in the JSON summary). With
// --record it writes one JSON line per request: the sequence number, the
// X-Llmtap-Event-Id the client saw, the status, and the SHA-256 of the exact
// response bytes the client received (the oracle for reliability tests).
//
// It is used by `make bench` (proxy vs direct vs nginx) and by the
// reliability scenarios. It only targets the address it is given; run it
// against loopback.
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Result is one request as the client saw it (one line of --record).
type Result struct {
	Seq      int64   `json:"seq"`
	EventID  string  `json:"event_id"`
	Consumer string  `json:"consumer"`
	Status   int     `json:"status"`
	Stream   bool    `json:"stream"`
	TTFBMs   float64 `json:"ttfb_ms"`
	TotalMs  float64 `json:"total_ms"`
	SHA256   string  `json:"sha256"` // of the response body bytes as received
	Bytes    int     `json:"bytes"`
	Err      string  `json:"err,omitempty"`
}

func main() {
	var (
		url         = flag.String("url", "http://127.0.0.1:8001", "base URL (…/v1/chat/completions is appended)")
		keysFlag    = flag.String("keys", "", "comma-separated API keys, one per consumer (requests rotate over them)")
		consumers   = flag.String("consumers", "", "comma-separated consumer names matching --keys (for the record)")
		n           = flag.Int64("n", 1000, "number of requests (0: until --duration)")
		duration    = flag.Duration("duration", 0, "stop after this long (0: until -n)")
		conc        = flag.Int("c", 16, "concurrent clients")
		streamRatio = flag.Float64("stream-ratio", 0.7, "fraction of streamed requests")
		model       = flag.String("model", "meta-llama/Llama-3.1-8B-Instruct", "model")
		maxTokens   = flag.Int("max-tokens", 16, "max_tokens per request")
		record      = flag.String("record", "", "write one JSON line per request to this file")
		label       = flag.String("label", "", "label printed with the summary")
		jsonOut     = flag.Bool("json", false, "print the summary as JSON")
		faultRatio  = flag.Float64("fault-ratio", 0, "fraction of requests that ask vllm-sim for a fault (X-Sim-Fault)")
		fault       = flag.String("fault", "error", "the fault to ask for: error | midstream-error | close")
	)
	flag.Parse()
	keys := splitNonEmpty(*keysFlag)
	names := splitNonEmpty(*consumers)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if *duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *duration)
		defer cancel()
	}

	tr := &http.Transport{MaxIdleConnsPerHost: *conc * 2, MaxConnsPerHost: *conc * 2, DisableCompression: true}
	hc := &http.Client{Transport: tr, Timeout: 5 * time.Minute}

	var rec *json.Encoder
	var recMu sync.Mutex
	if *record != "" {
		f, err := os.Create(*record)
		if err != nil {
			fmt.Fprintln(os.Stderr, "loadgen:", err)
			os.Exit(1)
		}
		defer f.Close()
		bw := bufio.NewWriter(f)
		defer bw.Flush()
		rec = json.NewEncoder(bw)
	}

	var (
		seq     atomic.Int64
		mu      sync.Mutex
		results []Result
		wg      sync.WaitGroup
	)
	start := time.Now()
	for w := 0; w < *conc; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := seq.Add(1)
				if *n > 0 && i > *n {
					return
				}
				stream := float64(i%100) < *streamRatio*100
				k, name := "", ""
				if len(keys) > 0 {
					k = keys[int(i)%len(keys)]
					if len(names) == len(keys) {
						name = names[int(i)%len(keys)]
					}
				}
				hdr := http.Header{}
				if *faultRatio > 0 && float64((i*37)%100) < *faultRatio*100 {
					hdr.Set("X-Sim-Fault", *fault)
				}
				r := do(ctx, hc, *url, k, *model, *maxTokens, i, stream, hdr)
				r.Consumer = name
				mu.Lock()
				results = append(results, r)
				mu.Unlock()
				if rec != nil {
					recMu.Lock()
					_ = rec.Encode(r)
					recMu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	printSummary(*label, results, elapsed, *jsonOut)
}

func do(ctx context.Context, hc *http.Client, base, key, model string, maxTokens int, seq int64, stream bool, hdr http.Header) Result {
	body := fmt.Sprintf(`{"model":%q,"messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"request %d: say something about load testing"}],"max_tokens":%d,"stream":%t}`,
		model, seq, maxTokens, stream)
	res := Result{Seq: seq, Stream: stream}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(base, "/")+"/v1/chat/completions", strings.NewReader(body))
	if err != nil {
		res.Err = err.Error()
		return res
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	t0 := time.Now()
	resp, err := hc.Do(req)
	if err != nil {
		res.Err = err.Error()
		res.TotalMs = ms(time.Since(t0))
		return res
	}
	defer resp.Body.Close()
	res.Status = resp.StatusCode
	res.EventID = resp.Header.Get("X-Llmtap-Event-Id")
	h := sha256.New()
	buf := make([]byte, 32<<10)
	first := true
	for {
		nr, rerr := resp.Body.Read(buf)
		if nr > 0 {
			if first {
				res.TTFBMs = ms(time.Since(t0))
				first = false
			}
			h.Write(buf[:nr])
			res.Bytes += nr
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			res.Err = rerr.Error()
			break
		}
	}
	res.TotalMs = ms(time.Since(t0))
	res.SHA256 = hex.EncodeToString(h.Sum(nil))
	return res
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// Summary is what loadgen prints at the end.
type Summary struct {
	Label     string         `json:"label"`
	Requests  int            `json:"requests"`
	Errors    int            `json:"errors"`
	Statuses  map[string]int `json:"statuses"`
	Seconds   float64        `json:"seconds"`
	RPS       float64        `json:"rps"`
	P50Ms     float64        `json:"p50_ms"`
	P99Ms     float64        `json:"p99_ms"`
	TTFBP50Ms float64        `json:"ttfb_p50_ms"`
	TTFBP99Ms float64        `json:"ttfb_p99_ms"`
	// CPUSeconds is loadgen's own user+system CPU time (getrusage) when the
	// summary is printed, so that a benchmark can subtract the client's
	// share of a shared machine; -1 where it cannot be read.
	CPUSeconds float64 `json:"cpu_seconds"`
}

func printSummary(label string, rs []Result, elapsed time.Duration, asJSON bool) {
	s := Summary{Label: label, Requests: len(rs), Statuses: map[string]int{}, Seconds: elapsed.Seconds()}
	var lat, ttfb []float64
	for _, r := range rs {
		if r.Err != "" {
			s.Errors++
			s.Statuses["error"]++
			continue
		}
		s.Statuses[fmt.Sprint(r.Status)]++
		lat = append(lat, r.TotalMs)
		ttfb = append(ttfb, r.TTFBMs)
	}
	s.RPS = float64(len(rs)-s.Errors) / elapsed.Seconds()
	s.P50Ms, s.P99Ms = pct(lat, 0.50), pct(lat, 0.99)
	s.TTFBP50Ms, s.TTFBP99Ms = pct(ttfb, 0.50), pct(ttfb, 0.99)
	s.CPUSeconds = cpuSeconds()
	if asJSON {
		var b bytes.Buffer
		_ = json.NewEncoder(&b).Encode(s)
		os.Stdout.Write(b.Bytes())
		return
	}
	fmt.Printf("%s: %d requests (%d errors) in %.1fs = %.0f req/s; latency p50 %.2f ms p99 %.2f ms; ttfb p50 %.2f ms p99 %.2f ms; statuses %v; loadgen CPU %.2fs\n",
		label, s.Requests, s.Errors, s.Seconds, s.RPS, s.P50Ms, s.P99Ms, s.TTFBP50Ms, s.TTFBP99Ms, s.Statuses, s.CPUSeconds)
}

func pct(v []float64, q float64) float64 {
	if len(v) == 0 {
		return 0
	}
	slices.Sort(v)
	return v[int(q*float64(len(v)-1))]
}

func splitNonEmpty(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
