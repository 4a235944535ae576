package proxy

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"

	"github.com/llmtap/llmtap/cmd/vllm-sim/sim"
	"github.com/llmtap/llmtap/proxy/keys"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// scrape returns the default registry's exposition, as /metrics serves it.
func scrape(t *testing.T) string {
	t.Helper()
	srv := httptest.NewServer(promhttp.Handler())
	defer srv.Close()
	res, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// checkLine asserts that the exposition has the sample line exactly.
func checkLine(t *testing.T, expo, line string) {
	t.Helper()
	for _, l := range strings.Split(expo, "\n") {
		if l == line {
			return
		}
	}
	name := line[:strings.IndexAny(line, "{ ")]
	var have []string
	for _, l := range strings.Split(expo, "\n") {
		if strings.HasPrefix(l, name) {
			have = append(have, l)
		}
	}
	t.Errorf("no sample %q; have:\n%s", line, strings.Join(have, "\n"))
}

// TestMetricsAfterTraffic: real traffic through the proxy to vllm-sim, then
// a /metrics scrape: requests by consumer, model and status, tokens equal
// to the simulator's usage (streams included, whose client did not ask for
// usage), latency by stream, TTFT, nothing left in flight.
func TestMetricsAfterTraffic(t *testing.T) {
	model := "test-model-" + randHex(4)
	simCfg := sim.Config{Tokens: 4, Model: model}
	h := newHarness(t, simCfg, nil)
	consumer := "metrics-" + randHex(4)
	key := addKey(t, h, keys.CreateOptions{Consumer: consumer})

	chat := `{"model":"` + model + `","messages":[{"role":"user","content":"hello there"}]}`
	stream := `{"model":"` + model + `","stream":true,"messages":[{"role":"user","content":"hello there"}]}`
	withUsage := `{"model":"` + model + `","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hello there"}]}`
	p, c := simUsage(t, simCfg, "/v1/chat/completions", withUsage)

	for i := 0; i < 2; i++ {
		if res, b, _ := h.do(t, h.req(t, "POST", "/v1/chat/completions", chat, bearer(key))); res.StatusCode != 200 {
			t.Fatalf("chat: %d %s", res.StatusCode, b)
		}
	}
	if res, b, _ := h.do(t, h.req(t, "POST", "/v1/chat/completions", stream, bearer(key))); res.StatusCode != 200 || strings.Contains(string(b), `"usage":{`) {
		t.Fatalf("stream: %d %s", res.StatusCode, b)
	}
	other := `{"model":"not-served","messages":[{"role":"user","content":"hi"}]}`
	if res, _, _ := h.do(t, h.req(t, "POST", "/v1/chat/completions", other, bearer(key))); res.StatusCode != 404 {
		t.Fatalf("unknown model: %d", res.StatusCode)
	}
	if res, _, _ := h.do(t, h.req(t, "GET", "/v1/models", "", bearer(key))); res.StatusCode != 200 {
		t.Fatalf("models: %d", res.StatusCode)
	}

	expo := scrape(t)
	for _, line := range []string{
		fmt.Sprintf(`llmtap_requests_total{consumer="%s",model="%s",status="200"} 3`, consumer, model),
		// A model upstream does not serve takes no label value of its own.
		fmt.Sprintf(`llmtap_requests_total{consumer="%s",model="other",status="404"} 1`, consumer),
		fmt.Sprintf(`llmtap_requests_total{consumer="%s",model="unknown",status="200"} 1`, consumer),
		fmt.Sprintf(`llmtap_tokens_total{consumer="%s",model="%s",type="prompt"} %d`, consumer, model, 3*p),
		fmt.Sprintf(`llmtap_tokens_total{consumer="%s",model="%s",type="completion"} %d`, consumer, model, 3*c),
		fmt.Sprintf(`llmtap_request_duration_seconds_count{consumer="%s",stream="false"} 4`, consumer),
		fmt.Sprintf(`llmtap_request_duration_seconds_count{consumer="%s",stream="true"} 1`, consumer),
		fmt.Sprintf(`llmtap_request_duration_seconds_bucket{consumer="%s",stream="true",le="+Inf"} 1`, consumer),
		fmt.Sprintf(`llmtap_time_to_first_token_seconds_count{consumer="%s"} 1`, consumer),
		`llmtap_inflight_requests 0`,
		`llmtap_inflight_streams 0`,
	} {
		checkLine(t, expo, line)
	}
	for _, gone := range []string{"llmtap_proxy_requests_total", "llmtap_proxy_inflight"} {
		if strings.Contains(expo, gone) {
			t.Errorf("old metric %s still exported", gone)
		}
	}
	if strings.Contains(expo, "not-served") {
		t.Error("an unserved model became a label value")
	}
}

// TestMetricsInflight: an open stream is one request and one stream in
// flight.
func TestMetricsInflight(t *testing.T) {
	h := newHarness(t, sim.Config{Tokens: 1}, nil)
	r := h.req(t, "POST", "/v1/chat/completions", streamBody, map[string]string{"Authorization": "Bearer " + h.alice, "X-Sim-Tokens": "3", "X-Sim-Token-Interval": "200ms"})
	res, err := http.DefaultClient.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	readEvent(t, bufio.NewReader(res.Body))
	if v := metricValue(t, "llmtap_inflight_streams", nil); v != 1 {
		t.Errorf("inflight streams %v during one stream", v)
	}
	if v := metricValue(t, "llmtap_inflight_requests", nil); v != 1 {
		t.Errorf("inflight requests %v during one stream", v)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	h.rec.next(t)
	if v := metricValue(t, "llmtap_inflight_streams", nil); v != 0 {
		t.Errorf("inflight streams %v after the stream", v)
	}
}

// TestMetricsCardinality: beyond MetricsMaxConsumers distinct consumers
// and MetricsMaxModels models, label values become "other"; a model
// upstream rejected does not take a place.
func TestMetricsCardinality(t *testing.T) {
	model := "card-model-" + randHex(4)
	h := newHarness(t, sim.Config{Tokens: 1, Model: model}, func(c *Config) {
		c.MetricsMaxConsumers, c.MetricsMaxModels = 2, 1
	})
	suffix := randHex(4)
	var names []string
	var plain []string
	for i := 0; i < 4; i++ {
		names = append(names, fmt.Sprintf("card%d-%s", i, suffix))
		plain = append(plain, addKey(t, h, keys.CreateOptions{Consumer: names[i]}))
	}
	body := func(m string) string {
		return `{"model":"` + m + `","messages":[{"role":"user","content":"hi"}]}`
	}
	send := func(key, m string, want int) {
		t.Helper()
		if res, b, _ := h.do(t, h.req(t, "POST", "/v1/chat/completions", body(m), bearer(key))); res.StatusCode != want {
			t.Fatalf("%s: %d %s", m, res.StatusCode, b)
		}
	}
	// A 404 model first: it must not take the only model place.
	send(plain[0], "bogus-"+suffix, 404)
	send(plain[0], model, 200)
	send(plain[1], model, 200)
	// Concurrent newcomers: both overflow.
	var wg sync.WaitGroup
	for _, k := range plain[2:] {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := h.req(t, "POST", "/v1/chat/completions", body(model), bearer(k))
			res, err := http.DefaultClient.Do(r)
			if err != nil {
				t.Error(err)
				return
			}
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
		}()
	}
	wg.Wait()
	h.rec.next(t)
	h.rec.next(t)
	// The model place is taken now: a second served model name would
	// overflow; the same model again keeps its name.
	send(plain[1], model, 200)

	for i, want := range []float64{1, 2, 0, 0} {
		if got := metricValue(t, "llmtap_requests_total", map[string]string{"consumer": names[i], "model": model, "status": "200"}); got != want {
			t.Errorf("requests{consumer=%s} = %v, want %v", names[i], got, want)
		}
	}
	if got := metricValue(t, "llmtap_requests_total", map[string]string{"consumer": names[0], "model": "other", "status": "404"}); got != 1 {
		t.Errorf("404 of an unserved model: %v", got)
	}
	// The model is unique to this test, so these series are too.
	if got := metricValue(t, "llmtap_requests_total", map[string]string{"consumer": "other", "model": model, "status": "200"}); got != 2 {
		t.Errorf("overflow consumers counted %v, want 2", got)
	}
	if got := metricValue(t, "llmtap_tokens_total", map[string]string{"consumer": "other", "model": model, "type": "completion"}); got != 4 {
		t.Errorf("overflow consumers' completion tokens %v, want 2 × 2", got)
	}
	expo := scrape(t)
	for _, n := range names[2:] {
		if strings.Contains(expo, n) {
			t.Errorf("consumer %s beyond the bound is a label value", n)
		}
	}
}

func TestLabelSet(t *testing.T) {
	s := newLabelSet(2)
	steps := []struct {
		in    string
		admit bool
		want  string
	}{
		{"a", false, LabelOther}, // not admitted: no place taken
		{"a", true, "a"},
		{"a", false, "a"}, // known values pass without admission
		{"b", true, "b"},
		{"c", true, LabelOther}, // full
		{"b", true, "b"},
		{strings.Repeat("x", maxLabelLen+1), true, LabelOther},
		{"\xff", true, LabelOther},
	}
	for i, st := range steps {
		if got := s.value(st.in, st.admit); got != st.want {
			t.Fatalf("step %d: value(%q, %v) = %q, want %q", i, st.in, st.admit, got, st.want)
		}
	}
	// Concurrent callers never exceed the bound.
	s = newLabelSet(10)
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 100; i++ {
				s.value(fmt.Sprintf("v%d-%d", g, i), true)
			}
		}()
	}
	wg.Wait()
	if len(s.seen) != 10 {
		t.Fatalf("%d values kept, bound 10", len(s.seen))
	}
}

func TestRequestModel(t *testing.T) {
	cases := []struct{ body, want string }{
		{`{"model":"m1","messages":[]}`, "m1"},
		{` { "messages" : [{"model":"inner"}], "model" : "m2" }`, "m2"},
		{`{"model":"a\/b\u00e9"}`, "a/bé"},
		{`{"model":"first","model":"last"}`, "last"},
		{`{"model":7}`, ""},
		{`{"model":null}`, ""},
		{`{"messages":[]}`, ""},
		{`[{"model":"x"}]`, ""},
		{`{"model":"x"`, ""},
		{``, ""},
	}
	for _, tc := range cases {
		top, ok := scanTopLevel([]byte(tc.body))
		if got := requestModel([]byte(tc.body), top, ok); got != tc.want {
			t.Errorf("requestModel(%s) = %q, want %q", tc.body, got, tc.want)
		}
	}
}

// TestTruncatedHints: when the captures are cut, the event carries the
// request's model and the response's usage, which the stored bodies lost.
func TestTruncatedHints(t *testing.T) {
	simCfg := sim.Config{Tokens: 3}
	p, c := simUsage(t, simCfg, "/v1/chat/completions", streamUsageBody)
	h := newHarness(t, simCfg, func(c *Config) { c.CaptureLimit = 30 })
	res, b, ev := h.do(t, h.req(t, "POST", "/v1/chat/completions", streamBody, bearer(h.alice)))
	if res.StatusCode != 200 || !ev.RequestTruncated || !ev.ResponseTruncated {
		t.Fatalf("%d truncated %v/%v: %s", res.StatusCode, ev.RequestTruncated, ev.ResponseTruncated, b)
	}
	if ev.Model != sim.DefaultModel {
		t.Errorf("model hint %q", ev.Model)
	}
	if u := ev.Usage; u == nil || *u.PromptTokens != p || *u.CompletionTokens != c || *u.TotalTokens != p+c {
		t.Errorf("usage hint %+v, want %d+%d", u, p, c)
	}
	// Not truncated: no hints (the bodies carry both).
	h = newHarness(t, simCfg, nil)
	if _, _, ev := h.do(t, h.req(t, "POST", "/v1/chat/completions", streamBody, bearer(h.alice))); ev.Model != "" || ev.Usage != nil {
		t.Errorf("hints on a complete capture: %q %+v", ev.Model, ev.Usage)
	}
}

// FuzzRequestModel: whenever the scanner understands a valid JSON body,
// the model it finds is the one a full decode finds.
func FuzzRequestModel(f *testing.F) {
	for _, s := range []string{
		`{"model":"m1","messages":[]}`, `{"model":"a\"b"}`, `{"model":"x","model":"y"}`,
		`{"model":1}`, `{"messages":[{"model":"inner"}]}`, `{"model":"\u00e9\ud83d\ude00"}`, `[]`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		top, ok := scanTopLevel(b)
		got := requestModel(b, top, ok)
		if !ok || !json.Valid(b) || !utf8.Valid(b) {
			return // (decode replaces invalid UTF-8; labels refuse it anyway)
		}
		var v map[string]any
		if json.Unmarshal(b, &v) != nil {
			return
		}
		want, _ := v["model"].(string)
		if got != want {
			t.Fatalf("requestModel(%s) = %q, decode %q", b, got, want)
		}
	})
}

func BenchmarkLabelSetKnown(b *testing.B) {
	s := newLabelSet(200)
	for i := 0; i < 200; i++ {
		s.value(fmt.Sprintf("consumer-%d", i), true)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			s.value("consumer-42", true)
		}
	})
}
