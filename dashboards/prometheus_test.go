package dashboards

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/grafana/grafana-foundation-sdk/go/prometheus"
	promclient "github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/llmtap/llmtap/cmd/vllm-sim/sim"
	"github.com/llmtap/llmtap/ingest/event"
	"github.com/llmtap/llmtap/proxy"
	"github.com/llmtap/llmtap/proxy/keys"
	"github.com/llmtap/llmtap/proxy/limit"
)

// prometheusBin is where Debian's prometheus package installs the server
// (scripts/services.sh installs it).
const prometheusBin = "/usr/bin/prometheus"

func TestPrometheusGeneratedUpToDate(t *testing.T) {
	want, err := Marshal(Prometheus)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(generatedDir, FileName(Prometheus))
	if *update {
		if _, err := Write(Prometheus, generatedDir); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./dashboards -update)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s is stale: run go test ./dashboards -update and commit it", path)
	}
}

// TestPrometheusDashboardShape checks the JSON Grafana imports: titles,
// units, whole numbers, every query on ${datasource} of type prometheus,
// range queries on time series panels and instant table queries on the
// table, and the consumer variable.
func TestPrometheusDashboardShape(t *testing.T) {
	d := generic(t, Prometheus)
	if d["uid"] != "llmtap-prometheus" {
		t.Errorf("uid = %v", d["uid"])
	}
	want := []struct{ title, typ, unit string }{
		{TitleRequestsPerMinute, "timeseries", "reqpm"},
		{TitleTokensPerMinute, "timeseries", "short"},
		{TitleErrorCodes, "timeseries", "reqpm"},
		{TitleLatency, "timeseries", "ms"},
		{TitleTTFT, "timeseries", "ms"},
		{TitleDailyUsage, "timeseries", "short"},
		{TitleUsageTable, "table", "short"},
	}
	panels := d["panels"].([]any)
	code := PrometheusPanels()
	if len(panels) != len(want) || len(code) != len(want) {
		t.Fatalf("%d panels (%d in code), want %d", len(panels), len(code), len(want))
	}
	for i, w := range want {
		p := panels[i].(map[string]any)
		if p["title"] != w.title || p["type"] != w.typ || code[i].Title != w.title || code[i].Table != (w.typ == "table") {
			t.Errorf("panel %d = %v %v, want %s %s", i, p["type"], p["title"], w.typ, w.title)
		}
		if p["id"] != float64(i+1) {
			t.Errorf("%s: id %v", w.title, p["id"])
		}
		defaults := p["fieldConfig"].(map[string]any)["defaults"].(map[string]any)
		if defaults["decimals"] != 0.0 || defaults["unit"] != w.unit || code[i].Unit != w.unit {
			t.Errorf("%s: unit %v decimals %v, want %s 0", w.title, defaults["unit"], defaults["decimals"], w.unit)
		}
		if ref := p["datasource"].(map[string]any); ref["type"] != "prometheus" || ref["uid"] != "${datasource}" {
			t.Errorf("%s: datasource %v", w.title, ref)
		}
		targets := p["targets"].([]any)
		if len(targets) != len(code[i].Targets) || len(targets) == 0 {
			t.Fatalf("%s: %d targets, code has %d", w.title, len(targets), len(code[i].Targets))
		}
		for j, raw := range targets {
			tg, ct := raw.(map[string]any), code[i].Targets[j]
			if ref := tg["datasource"].(map[string]any); ref["type"] != "prometheus" || ref["uid"] != "${datasource}" {
				t.Errorf("%s/%s: datasource %v", w.title, ct.RefID, ref)
			}
			if tg["expr"] != ct.Expr || tg["refId"] != ct.RefID || tg["editorMode"] != "code" {
				t.Errorf("%s/%s: target %v differs from PrometheusPanels", w.title, ct.RefID, tg)
			}
			if w.typ == "table" {
				if !ct.Instant || tg["instant"] != true || tg["range"] != false || tg["format"] != "table" {
					t.Errorf("%s/%s: table target %v is not an instant table query", w.title, ct.RefID, tg)
				}
			} else if ct.Instant || tg["range"] != true || tg["instant"] != false || tg["format"] != "time_series" || tg["legendFormat"] != ct.Legend || ct.Legend == "" {
				t.Errorf("%s/%s: time series target %v", w.title, ct.RefID, tg)
			}
			if !strings.Contains(ct.Expr, `consumer=~"$consumer"`) {
				t.Errorf("%s/%s: not filtered by $consumer", w.title, ct.RefID)
			}
		}
	}
	vars := d["templating"].(map[string]any)["list"].([]any)
	if len(vars) != 2 {
		t.Fatalf("%d variables", len(vars))
	}
	dsVar, cVar := vars[0].(map[string]any), vars[1].(map[string]any)
	if dsVar["type"] != "datasource" || dsVar["name"] != "datasource" || dsVar["query"] != "prometheus" {
		t.Errorf("datasource variable %v", dsVar)
	}
	if cVar["type"] != "query" || cVar["name"] != "consumer" || cVar["query"] != ConsumerVariablePromQL ||
		cVar["definition"] != ConsumerVariablePromQL || cVar["multi"] != true || cVar["includeAll"] != true ||
		cVar["allValue"] != ".*" || cVar["refresh"] != 2.0 {
		t.Errorf("consumer variable %v", cVar)
	}
	if ref := cVar["datasource"].(map[string]any); ref["type"] != "prometheus" || ref["uid"] != "${datasource}" {
		t.Errorf("consumer variable datasource %v", ref)
	}
	// The table merges its instant queries by consumer and names the
	// columns the way the SQL tables do.
	table := panels[6].(map[string]any)
	var ids []string
	for _, tr := range table["transformations"].([]any) {
		ids = append(ids, tr.(map[string]any)["id"].(string))
	}
	if strings.Join(ids, ",") != "merge,organize,sortBy" {
		t.Errorf("table transformations %v", ids)
	}
	rename := table["transformations"].([]any)[1].(map[string]any)["options"].(map[string]any)["renameByName"].(map[string]any)
	for i, tg := range code[6].Targets {
		if rename["Value #"+tg.RefID] == nil {
			t.Errorf("table column of query %s (%d) not named", tg.RefID, i)
		}
	}

	// Round trip through the SDK: the queries come back as Prometheus
	// queries equal to the built ones.
	built, err := Build(Prometheus)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := Marshal(Prometheus)
	var back dashboard.Dashboard
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	for i, p := range back.Panels {
		for j, q := range p.Panel.Targets {
			if _, ok := q.(*prometheus.Dataquery); !ok {
				t.Errorf("panel %d target %d unmarshals as %T", i, j, q)
			} else if !q.Equals(built.Panels[i].Panel.Targets[j]) {
				t.Errorf("panel %d target %d differs after round trip", i, j)
			}
		}
	}
}

// grafanaVars are the values Grafana substitutes into a panel's PromQL.
type grafanaVars struct {
	consumers    []string // nil: All
	rateInterval string   // $__rate_interval
	rng          string   // $__range (the panel's range: timeFrom when set)
}

// expandPromQL expands a panel expression the way Grafana does for the
// Prometheus datasource: $consumer in a regexp matcher becomes the custom
// all value for All, else the regexp-escaped alternation (a|b); the
// interval and range variables become durations.
func expandPromQL(t *testing.T, expr string, v grafanaVars) string {
	t.Helper()
	consumer := PromAllValue
	if v.consumers != nil {
		var q []string
		for _, c := range v.consumers {
			q = append(q, regexp.QuoteMeta(c))
		}
		consumer = "(" + strings.Join(q, "|") + ")"
	}
	out := strings.NewReplacer(
		"$__rate_interval", v.rateInterval,
		"$__range", v.rng,
		"$consumer", consumer,
	).Replace(expr)
	if strings.Contains(out, "$") {
		t.Fatalf("unexpanded variable in %s", out)
	}
	return out
}

func TestExpandPromQL(t *testing.T) {
	for _, c := range []struct {
		in   string
		v    grafanaVars
		want string
	}{
		{`rate(x{consumer=~"$consumer"}[$__rate_interval])`, grafanaVars{rateInterval: "1m"}, `rate(x{consumer=~".*"}[1m])`},
		{`increase(x{consumer=~"$consumer"}[$__range] @ end())`, grafanaVars{consumers: []string{"alice", "b.b"}, rng: "1h"}, `increase(x{consumer=~"(alice|b\.b)"}[1h] @ end())`},
	} {
		if got := expandPromQL(t, c.in, c.v); got != c.want {
			t.Errorf("expand(%s) = %s, want %s", c.in, got, c.want)
		}
	}
}

// startPrometheus runs the real Prometheus server scraping target (host:port,
// path /metrics) every 100 ms and returns its base URL.
func startPrometheus(t *testing.T, target string) string {
	t.Helper()
	if _, err := os.Stat(prometheusBin); err != nil {
		t.Fatalf("%s missing (%v): scripts/services.sh installs it (apt-get install -y prometheus)", prometheusBin, err)
	}
	dir := t.TempDir()
	cfg := fmt.Sprintf(`global:
  scrape_interval: 100ms
  scrape_timeout: 90ms
scrape_configs:
  - job_name: llmtap
    static_configs:
      - targets: ['%s']
`, target)
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	var logs bytes.Buffer
	cmd := exec.Command(prometheusBin,
		"--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr,
		"--log.level=warn")
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("prometheus log:\n%s", logs.String())
		}
	})
	base := "http://" + addr
	deadline := time.Now().Add(30 * time.Second)
	for {
		res, err := http.Get(base + "/-/ready")
		if err == nil {
			res.Body.Close()
			if res.StatusCode == 200 {
				return base
			}
		}
		select {
		case <-exited:
			t.Fatalf("prometheus exited:\n%s", logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("prometheus not ready after 30 s:\n%s", logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

type promSample struct {
	labels map[string]string
	value  float64
}

// promAPI calls a Prometheus HTTP API query endpoint and returns the last
// value of every series (range) or the value (instant).
func promAPI(t *testing.T, base, path string, params url.Values) []promSample {
	t.Helper()
	res, err := http.PostForm(base+path, params)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	var r struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			ResultType string `json:"resultType"`
			Result     []struct {
				Metric map[string]string `json:"metric"`
				Value  []any             `json:"value"`
				Values [][]any           `json:"values"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &r); err != nil || r.Status != "success" {
		t.Fatalf("%s %v: %s %s (%v)", path, params, r.Status, body, err)
	}
	var out []promSample
	for _, s := range r.Data.Result {
		v := s.Value
		if r.Data.ResultType == "matrix" {
			if len(s.Values) == 0 {
				continue
			}
			v = s.Values[len(s.Values)-1]
		}
		f, err := strconv.ParseFloat(v[1].(string), 64)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, promSample{labels: s.Metric, value: f})
	}
	return out
}

func promInstant(t *testing.T, base, expr string, at time.Time) []promSample {
	t.Helper()
	return promAPI(t, base, "/api/v1/query", url.Values{"query": {expr}, "time": {fmtTime(at)}})
}

// promRangeLast runs expr as a range query ending at end (as Grafana does
// for time series panels; @ end() is the range's end) and returns each
// series' value at end.
func promRangeLast(t *testing.T, base, expr string, end time.Time) []promSample {
	t.Helper()
	out := promAPI(t, base, "/api/v1/query_range", url.Values{"query": {expr},
		"start": {fmtTime(end.Add(-2 * time.Second))}, "end": {fmtTime(end)}, "step": {"1"}})
	return out
}

func fmtTime(t time.Time) string {
	return strconv.FormatFloat(float64(t.UnixMilli())/1000, 'f', 3, 64)
}

// memEmitter is the proxy's event emitter for the test: events in memory.
type memEmitter struct {
	mu     sync.Mutex
	events []event.Event
}

func (m *memEmitter) Emit(ev event.Event) {
	m.mu.Lock()
	m.events = append(m.events, ev)
	m.mu.Unlock()
}
func (m *memEmitter) Accepting() bool { return true }

func (m *memEmitter) snapshot() []event.Event {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]event.Event(nil), m.events...)
}

// call is one request the test sends through the proxy.
type call struct {
	consumer string // "" : no valid key
	stream   bool
	model    string // "" : the served model
	fault    bool   // sim answers 500
	status   int
}

// TestPrometheusPanelsAgainstPrometheus runs every panel query of the
// Prometheus dashboard on a real Prometheus that scraped the proxy's
// metrics after real traffic through the proxy to vllm-sim, and checks the
// series and values each panel shows, for All and for selections of the
// consumer variable.
//
// Prometheus's increase() does not see the first increment of a series
// that appears with a value (a known Prometheus property), so every series
// is created by a warm-up round that Prometheus scrapes before the measured
// traffic; the expected numbers are those of the measured traffic.
// increase() and rate() extrapolate to the window's edges, so counts and
// rates are compared within 8 %; quantiles are exact because every
// observation of a selection falls in one histogram bucket.
func TestPrometheusPanelsAgainstPrometheus(t *testing.T) {
	if testing.Short() {
		t.Skip("starts prometheus")
	}
	const (
		model = "prom-dash-model"
		ttft  = 600 * time.Millisecond // all generations land in the (0.5 s, 1 s] buckets
	)
	simSrv := httptest.NewServer(sim.New(sim.Config{Model: model, Tokens: 3, TTFT: ttft}))
	defer simSrv.Close()

	dir := t.TempDir()
	keysPath := filepath.Join(dir, "keys.yaml")
	// Measured traffic: requests per consumer (distinct counts, so the
	// top 10 is unambiguous), errors for alice (404) and bob (500), alice's
	// successes half streamed, one unauthenticated 401.
	counts := map[string]int{"alice": 18, "bob": 12}
	for i := 3; i <= 11; i++ {
		counts[fmt.Sprintf("c%02d", i)] = 13 - i // c03 10 … c11 2
	}
	plain := map[string]string{}
	for c := range counts {
		_, k, err := keys.Create(keysPath, keys.CreateOptions{Consumer: c})
		if err != nil {
			t.Fatal(err)
		}
		plain[c] = k
	}
	watcher, err := keys.NewWatcher(keysPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go watcher.Run(ctx)

	cfg := proxy.DefaultConfig()
	cfg.Upstream = simSrv.URL
	em := &memEmitter{}
	px, err := proxy.New(cfg, watcher, em, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer px.Close()
	pxSrv := httptest.NewServer(px)
	defer pxSrv.Close()
	metricsSrv := httptest.NewServer(promhttp.Handler())
	defer metricsSrv.Close()
	prom := startPrometheus(t, strings.TrimPrefix(metricsSrv.URL, "http://"))

	// The usage vllm-sim reports for a plain and for a streamed call,
	// asked directly (the proxy adds include_usage to streams).
	usage := map[bool][2]float64{}
	for _, stream := range []bool{false, true} {
		res, err := http.Post(simSrv.URL+"/v1/chat/completions", "application/json", strings.NewReader(chatBody(model, stream, true)))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		p, c, ok := limit.Usage(b, stream)
		if !ok || p <= 0 || c <= 0 {
			t.Fatalf("sim usage: %s", b)
		}
		usage[stream] = [2]float64{float64(p), float64(c)}
	}
	prompt, completion, toks := map[string]float64{}, map[string]float64{}, map[string]float64{}
	usageOf := func(calls []call) float64 {
		var n float64
		for _, c := range calls {
			if c.status == 200 {
				n += usage[c.stream][0] + usage[c.stream][1]
			}
		}
		return n
	}

	send := func(calls []call) {
		t.Helper()
		var wg sync.WaitGroup
		sem := make(chan struct{}, 16)
		for _, c := range calls {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				m := model
				if c.model != "" {
					m = c.model
				}
				r, _ := http.NewRequest("POST", pxSrv.URL+"/v1/chat/completions", strings.NewReader(chatBody(m, c.stream, false)))
				r.Header.Set("Content-Type", "application/json")
				key := "sk-not-a-valid-key-0000000000000000000000000000000"
				if c.consumer != "" {
					key = plain[c.consumer]
				}
				r.Header.Set("Authorization", "Bearer "+key)
				if c.fault {
					r.Header.Set("X-Sim-Fault", "error")
					r.Header.Set("X-Sim-Status", "500")
				}
				res, err := http.DefaultClient.Do(r)
				if err != nil {
					t.Error(err)
					return
				}
				io.Copy(io.Discard, res.Body)
				res.Body.Close()
				if res.StatusCode != c.status {
					t.Errorf("%+v: status %d", c, res.StatusCode)
				}
			}()
		}
		wg.Wait()
		if t.Failed() {
			t.FailNow()
		}
	}
	// The process's registry keeps counters of earlier runs (-count):
	// Prometheus will see those totals plus this run's.
	base := registryTotals(t)
	// waitScraped waits until the proxy emitted n events and Prometheus's
	// latest scrape holds all their metrics, then for a few more scrapes.
	waitScraped := func(n, streams int, tokens float64) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for len(em.snapshot()) < n {
			if time.Now().After(deadline) {
				t.Fatalf("%d of %d events emitted", len(em.snapshot()), n)
			}
			time.Sleep(20 * time.Millisecond)
		}
		want := map[string]float64{
			"sum(llmtap_requests_total)":                    base["llmtap_requests_total"] + float64(n),
			"sum(llmtap_request_duration_seconds_count)":    base["llmtap_request_duration_seconds"] + float64(n),
			"sum(llmtap_time_to_first_token_seconds_count)": base["llmtap_time_to_first_token_seconds"] + float64(streams),
			"sum(llmtap_tokens_total)":                      base["llmtap_tokens_total"] + tokens,
		}
		for expr, v := range want {
			for {
				s := promInstant(t, prom, expr, time.Now())
				if len(s) == 1 && s[0].value == v {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%s = %v in Prometheus, want %v", expr, s, v)
				}
				time.Sleep(50 * time.Millisecond)
			}
		}
		time.Sleep(300 * time.Millisecond)
	}

	// Warm-up: one request of every series the measured traffic touches.
	warm := []call{
		{consumer: "alice", status: 200}, {consumer: "alice", stream: true, status: 200},
		{consumer: "alice", model: "not-served", status: 404},
		{consumer: "bob", status: 200}, {consumer: "bob", fault: true, status: 500},
		{status: 401},
	}
	for i := 3; i <= 11; i++ {
		warm = append(warm, call{consumer: fmt.Sprintf("c%02d", i), status: 200})
	}
	// The model label of an error is the model's name only once upstream
	// served the model, so the first success goes alone.
	send(warm[:1])
	send(warm[1:])
	waitScraped(len(warm), 1, usageOf(warm))
	start := time.Now()
	nWarm := len(em.snapshot())

	var traffic []call
	for c, n := range counts {
		switch c {
		case "alice":
			for i := 0; i < n-2; i++ {
				traffic = append(traffic, call{consumer: c, stream: i%2 == 0, status: 200})
			}
			traffic = append(traffic, call{consumer: c, model: "not-served", status: 404}, call{consumer: c, model: "not-served", status: 404})
		case "bob":
			for i := 0; i < n-3; i++ {
				traffic = append(traffic, call{consumer: c, status: 200})
			}
			for i := 0; i < 3; i++ {
				traffic = append(traffic, call{consumer: c, fault: true, status: 500})
			}
		default:
			for i := 0; i < n; i++ {
				traffic = append(traffic, call{consumer: c, status: 200})
			}
		}
	}
	traffic = append(traffic, call{status: 401})
	send(traffic)
	waitScraped(nWarm+len(traffic), 1+(counts["alice"]-2)/2, usageOf(warm)+usageOf(traffic))
	end := time.Now()

	// What the measured traffic was: requests and statuses from the
	// proxy's own events, tokens from vllm-sim's usage for each call.
	for _, c := range traffic {
		if c.status == 200 {
			u := usage[c.stream]
			prompt[c.consumer] += u[0]
			completion[c.consumer] += u[1]
			toks[c.consumer] += u[0] + u[1]
		}
	}
	reqs := map[string]float64{}
	errs := map[string]float64{}
	statuses := map[string]float64{}
	for _, ev := range em.snapshot()[nWarm:] {
		c := ev.Consumer
		if c == "" {
			c = proxy.LabelAnonymous
		}
		reqs[c]++
		if ev.Status >= 400 {
			errs[c]++
			statuses[strconv.Itoa(ev.Status)]++
		}
	}
	if reqs["alice"] != 18 || reqs[proxy.LabelAnonymous] != 1 || errs["bob"] != 3 || statuses["404"] != 2 || statuses["401"] != 1 || statuses["500"] != 3 {
		t.Fatalf("traffic: requests %v errors %v statuses %v", reqs, errs, statuses)
	}
	if toks["c11"] == 0 || toks["alice"] == 0 {
		t.Fatalf("no usage: %v", toks)
	}

	// Every window covers the measured traffic and not the warm-up's
	// series creation: rates are per window, counts over it.
	windowMs := end.Sub(start).Milliseconds() + 200
	window := strconv.FormatInt(windowMs, 10) + "ms"
	perMinute := func(m map[string]float64) map[string]float64 {
		out := map[string]float64{}
		for k, v := range m {
			out[k] = v * 60000 / float64(windowMs)
		}
		return out
	}
	only := func(m map[string]float64, keys ...string) map[string]float64 {
		out := map[string]float64{}
		for _, k := range keys {
			if v, ok := m[k]; ok {
				out[k] = v
			}
		}
		return out
	}
	top := func(m map[string]float64, sel []string) []string {
		var names []string
		for k := range m {
			if sel == nil || containsStr(sel, k) {
				names = append(names, k)
			}
		}
		sort.Slice(names, func(i, j int) bool { return m[names[i]] > m[names[j]] })
		if len(names) > TopN {
			if m[names[TopN-1]] == m[names[TopN]] {
				t.Fatalf("tie at the top-%d boundary: %v", TopN, m)
			}
			names = names[:TopN]
		}
		return names
	}
	all := []string(nil)
	small := []string{"c11", proxy.LabelAnonymous}
	slow := []string{"c03", "c04"}

	// Latency: c03/c04 only succeed, every request in (0.5, 1] s: the
	// quantiles interpolate in that bucket.
	exact := func(q float64) map[string]float64 { return map[string]float64{"": 500 + 500*q} }

	type check struct {
		title, ref string
		v          grafanaVars
		want       map[string]float64 // by the panel's legend label
		label      string             // label naming the series ("" : one series)
		exact      bool               // compare to 1e-9 instead of 8 %
		within     [2]float64         // when set: the one value lies in (lo, hi]
	}
	rate := func(c []string) grafanaVars { return grafanaVars{consumers: c, rateInterval: window, rng: window} }
	day := func(c []string) grafanaVars { return grafanaVars{consumers: c, rng: "7d"} }
	table := func(c []string) grafanaVars { return grafanaVars{consumers: c, rng: "24h"} }
	checks := []check{
		{TitleRequestsPerMinute, "A", rate(all), only(perMinute(reqs), top(reqs, nil)...), "consumer", false, [2]float64{}},
		{TitleRequestsPerMinute, "A", rate(small), only(perMinute(reqs), small...), "consumer", false, [2]float64{}},
		{TitleTokensPerMinute, "A", rate(all), only(perMinute(toks), top(toks, nil)...), "consumer", false, [2]float64{}},
		{TitleTokensPerMinute, "A", rate([]string{"alice", "c11"}), only(perMinute(toks), "alice", "c11"), "consumer", false, [2]float64{}},
		{TitleErrorCodes, "A", rate(all), only(perMinute(statuses), "401", "404"), "status", false, [2]float64{}},
		{TitleErrorCodes, "B", rate(all), only(perMinute(statuses), "500"), "status", false, [2]float64{}},
		{TitleErrorCodes, "A", rate([]string{"alice"}), only(perMinute(statuses), "404"), "status", false, [2]float64{}},
		{TitleErrorCodes, "B", rate([]string{"alice"}), map[string]float64{}, "status", false, [2]float64{}},
		{TitleErrorCodes, "A", rate([]string{"bob"}), map[string]float64{}, "status", false, [2]float64{}},
		{TitleErrorCodes, "B", rate([]string{"bob"}), only(perMinute(statuses), "500"), "status", false, [2]float64{}},
		{TitleLatency, "A", rate(slow), exact(0.5), "", true, [2]float64{}},
		{TitleLatency, "B", rate(slow), exact(0.95), "", true, [2]float64{}},
		{TitleLatency, "A", rate(all), nil, "", false, [2]float64{500, 1000}},
		{TitleLatency, "B", rate(all), nil, "", false, [2]float64{500, 1000}},
		{TitleTTFT, "A", rate(all), exact(0.5), "", true, [2]float64{}},
		{TitleTTFT, "B", rate(all), exact(0.95), "", true, [2]float64{}},
		{TitleTTFT, "A", rate([]string{"bob"}), map[string]float64{}, "", false, [2]float64{}},
		{TitleDailyUsage, "A", day(all), only(reqs, top(reqs, nil)...), "consumer", false, [2]float64{}},
		{TitleDailyUsage, "B", day(all), only(toks, top(reqs, nil)...), "consumer", false, [2]float64{}},
		{TitleDailyUsage, "A", day(small), only(reqs, small...), "consumer", false, [2]float64{}},
		{TitleUsageTable, "A", table(all), reqs, "consumer", false, [2]float64{}},
		{TitleUsageTable, "A", table(slow), only(reqs, slow...), "consumer", false, [2]float64{}},
		{TitleUsageTable, "B", table(all), prompt, "consumer", false, [2]float64{}},
		{TitleUsageTable, "C", table(all), completion, "consumer", false, [2]float64{}},
		{TitleUsageTable, "D", table(all), withZeros(errs, reqs), "consumer", false, [2]float64{}},
		{TitleUsageTable, "E", table(slow), map[string]float64{"c03": 750, "c04": 750}, "consumer", true, [2]float64{}},
		{TitleUsageTable, "F", table(slow), map[string]float64{"c03": 975, "c04": 975}, "consumer", true, [2]float64{}},
	}
	// The table's latency of every consumer whose requests all succeeded.
	for c := range counts {
		if errs[c] == 0 {
			checks = append(checks, check{TitleUsageTable, "E", table([]string{c}), map[string]float64{c: 750}, "consumer", true, [2]float64{}})
		}
	}

	covered := map[string]bool{}
	for _, p := range PrometheusPanels() {
		for _, tg := range p.Targets {
			for _, c := range checks {
				if c.title != p.Title || c.ref != tg.RefID {
					continue
				}
				covered[p.Title+"/"+tg.RefID] = true
				expr := expandPromQL(t, tg.Expr, c.v)
				var got []promSample
				if tg.Instant {
					got = promInstant(t, prom, expr, end)
				} else {
					got = promRangeLast(t, prom, expr, end)
				}
				name := fmt.Sprintf("%s/%s consumers=%v", p.Title, tg.RefID, c.v.consumers)
				if c.within != [2]float64{} {
					if len(got) != 1 || !(got[0].value > c.within[0] && got[0].value <= c.within[1]) {
						t.Errorf("%s = %v, want one value in (%v, %v]", name, got, c.within[0], c.within[1])
					}
					continue
				}
				have := map[string]float64{}
				for _, s := range got {
					have[s.labels[c.label]] = s.value
				}
				if len(have) != len(got) || len(have) != len(c.want) {
					t.Errorf("%s: series %v, want %v", name, have, c.want)
					continue
				}
				for k, w := range c.want {
					g, ok := have[k]
					switch {
					case !ok:
						t.Errorf("%s: no series %q (have %v)", name, k, have)
					case c.exact && math.Abs(g-w) > 1e-9:
						t.Errorf("%s[%s] = %v, want %v", name, k, g, w)
					case !c.exact && (w == 0 && g != 0 || math.Abs(g-w) > 0.08*w):
						t.Errorf("%s[%s] = %v, want %v ± 8%%", name, k, g, w)
					}
				}
			}
		}
	}
	for _, p := range PrometheusPanels() {
		for _, tg := range p.Targets {
			if !covered[p.Title+"/"+tg.RefID] {
				t.Errorf("no check runs %s/%s", p.Title, tg.RefID)
			}
		}
	}

	// The consumer variable lists every consumer label value.
	var r struct {
		Data []string `json:"data"`
	}
	if ConsumerVariablePromQL != "label_values(llmtap_requests_total, consumer)" {
		t.Fatalf("variable query %s: update this check", ConsumerVariablePromQL)
	}
	res, err := http.Get(prom + "/api/v1/label/consumer/values?match[]=llmtap_requests_total")
	if err != nil {
		t.Fatal(err)
	}
	json.NewDecoder(res.Body).Decode(&r)
	res.Body.Close()
	var wantNames []string
	for c := range reqs {
		wantNames = append(wantNames, c)
	}
	sort.Strings(wantNames)
	if strings.Join(r.Data, ",") != strings.Join(wantNames, ",") {
		t.Errorf("consumer variable values %v, want %v", r.Data, wantNames)
	}
}

func containsStr(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// withZeros is m with 0 for every key of all that m lacks.
func withZeros(m, all map[string]float64) map[string]float64 {
	out := map[string]float64{}
	for k := range all {
		out[k] = m[k]
	}
	return out
}

// chatBody is a chat completion request; withUsage asks a stream for its
// usage chunk.
func chatBody(model string, stream, withUsage bool) string {
	opts := ""
	if stream {
		opts = `"stream":true,`
		if withUsage {
			opts += `"stream_options":{"include_usage":true},`
		}
	}
	return `{"model":"` + model + `",` + opts + `"messages":[{"role":"user","content":"how many tokens is this"}]}`
}

// registryTotals sums each llmtap counter family of the default registry
// (histograms: their sample counts).
func registryTotals(t *testing.T) map[string]float64 {
	t.Helper()
	mfs, err := promclient.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			switch {
			case m.Counter != nil:
				out[mf.GetName()] += m.Counter.GetValue()
			case m.Histogram != nil:
				out[mf.GetName()] += float64(m.Histogram.GetSampleCount())
			}
		}
	}
	return out
}

// The shipped Prometheus datasource file parses and names the plugin the
// dashboard's datasource variable lists.
func TestPrometheusProvisioningFile(t *testing.T) {
	var f struct {
		APIVersion  int `yaml:"apiVersion"`
		Datasources []struct {
			Name, Type, UID, Access, URL string
			Editable                     bool
			JSONData                     map[string]any `yaml:"jsonData"`
		} `yaml:"datasources"`
	}
	readYAML(t, filepath.Join("provisioning", "datasources", "llmtap-prometheus.yaml"), &f)
	if f.APIVersion != 1 || len(f.Datasources) != 1 {
		t.Fatalf("apiVersion %d, %d datasources", f.APIVersion, len(f.Datasources))
	}
	ds := f.Datasources[0]
	if ds.Type != PrometheusPluginType || ds.UID != "llmtap-prometheus" || ds.Access != "proxy" || !strings.HasPrefix(ds.URL, "http://") {
		t.Errorf("datasource %+v", ds)
	}
	if ds.JSONData["timeInterval"] != "15s" {
		t.Errorf("jsonData %v", ds.JSONData)
	}
}
