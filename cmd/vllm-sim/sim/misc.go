package sim

import (
	"bytes"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// ---- /metrics: vLLM-style Prometheus text ----

var latencyBuckets = []float64{0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80}

type histogram struct {
	mu     sync.Mutex
	counts []uint64 // per bucket (non-cumulative)
	sum    float64
	n      uint64
}

func (h *histogram) observe(v float64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.counts == nil {
		h.counts = make([]uint64, len(latencyBuckets))
	}
	for i, b := range latencyBuckets {
		if v <= b {
			h.counts[i]++
			break
		}
	}
	h.sum += v
	h.n++
}

type metrics struct {
	running      atomic.Int64
	promptTokens atomic.Int64
	genTokens    atomic.Int64
	success      map[string]*atomic.Int64 // finished_reason -> count
	ttft, e2e    histogram
}

var finishReasons = []string{"stop", "length", "abort", "error"}

func (m *metrics) init() {
	m.success = map[string]*atomic.Int64{}
	for _, r := range finishReasons {
		m.success[r] = new(atomic.Int64)
	}
}

func (m *metrics) record(g *gen) {
	m.promptTokens.Add(int64(g.prompt))
	m.genTokens.Add(int64(g.tokens))
	reason := g.finish
	if reason == "tool_calls" {
		reason = "stop"
	}
	if c := m.success[reason]; c != nil {
		c.Add(1)
	}
	if !g.first.IsZero() {
		m.ttft.observe(g.first.Sub(g.start).Seconds())
	}
	m.e2e.observe(time.Since(g.start).Seconds())
}

func (s *Server) handleMetrics(w http.ResponseWriter, r *http.Request) {
	var b bytes.Buffer
	lbl := fmt.Sprintf(`engine="0",model_name=%s`, strconv.Quote(s.cfg.Model))
	gauge := func(name, help string, v float64) {
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s gauge\n%s{%s} %s\n", name, help, name, name, lbl, fmtFloat(v))
	}
	counter := func(name, help string, v float64) {
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s counter\n%s{%s} %s\n", name, help, name, name, lbl, fmtFloat(v))
	}
	running := s.m.running.Load()
	gauge("vllm:num_requests_running", "Number of requests in model execution batches.", float64(running))
	gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed.", 0)
	gauge("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", math.Min(1, float64(running)*0.01))
	counter("vllm:prompt_tokens_total", "Number of prefill tokens processed.", float64(s.m.promptTokens.Load()))
	counter("vllm:generation_tokens_total", "Number of generation tokens processed.", float64(s.m.genTokens.Load()))
	b.WriteString("# HELP vllm:request_success_total Count of successfully processed requests.\n# TYPE vllm:request_success_total counter\n")
	for _, reason := range finishReasons {
		fmt.Fprintf(&b, "vllm:request_success_total{%s,finished_reason=%q} %s\n", lbl, reason, fmtFloat(float64(s.m.success[reason].Load())))
	}
	hist := func(name, help string, h *histogram) {
		h.mu.Lock()
		defer h.mu.Unlock()
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name)
		var cum uint64
		for i, le := range latencyBuckets {
			if h.counts != nil {
				cum += h.counts[i]
			}
			fmt.Fprintf(&b, "%s_bucket{%s,le=%q} %s\n", name, lbl, fmtFloat(le), fmtFloat(float64(cum)))
		}
		fmt.Fprintf(&b, "%s_bucket{%s,le=\"+Inf\"} %s\n", name, lbl, fmtFloat(float64(h.n)))
		fmt.Fprintf(&b, "%s_count{%s} %s\n", name, lbl, fmtFloat(float64(h.n)))
		fmt.Fprintf(&b, "%s_sum{%s} %s\n", name, lbl, fmtFloat(h.sum))
	}
	hist("vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.", &s.m.ttft)
	hist("vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.", &s.m.e2e)
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	_, _ = w.Write(b.Bytes())
}

// fmtFloat prints like Python's prometheus_client ("3.0", "0.25").
func fmtFloat(v float64) string {
	s := strconv.FormatFloat(v, 'g', -1, 64)
	if !bytes.ContainsAny([]byte(s), ".eIN") {
		s += ".0"
	}
	return s
}

// ---- small endpoints ----

func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusOK)
}

func (s *Server) handleVersion(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"version": s.cfg.Version})
}

type modelPermission struct {
	ID                 string `json:"id"`
	Object             string `json:"object"`
	Created            int64  `json:"created"`
	AllowCreateEngine  bool   `json:"allow_create_engine"`
	AllowSampling      bool   `json:"allow_sampling"`
	AllowLogprobs      bool   `json:"allow_logprobs"`
	AllowSearchIndices bool   `json:"allow_search_indices"`
	AllowView          bool   `json:"allow_view"`
	AllowFineTuning    bool   `json:"allow_fine_tuning"`
	Organization       string `json:"organization"`
	Group              any    `json:"group"`
	IsBlocking         bool   `json:"is_blocking"`
}

type modelCard struct {
	ID          string            `json:"id"`
	Object      string            `json:"object"`
	Created     int64             `json:"created"`
	OwnedBy     string            `json:"owned_by"`
	Root        string            `json:"root"`
	Parent      any               `json:"parent"`
	MaxModelLen int               `json:"max_model_len"`
	Permission  []modelPermission `json:"permission"`
}

func (s *Server) maxModelLen() int {
	if s.cfg.MaxModelLen > 0 {
		return s.cfg.MaxModelLen
	}
	return reportedMaxModelLen
}

func (s *Server) handleModels(w http.ResponseWriter, r *http.Request) {
	card := modelCard{
		ID: s.cfg.Model, Object: "model", Created: s.created, OwnedBy: "vllm", Root: s.cfg.Model,
		MaxModelLen: s.maxModelLen(),
		Permission: []modelPermission{{
			ID: "modelperm-" + randomHex(), Object: "model_permission", Created: s.created,
			AllowSampling: true, AllowLogprobs: true, AllowView: true, Organization: "*",
		}},
	}
	writeJSON(w, http.StatusOK, struct {
		Object string      `json:"object"`
		Data   []modelCard `json:"data"`
	}{"list", []modelCard{card}})
}

// handleTokenize answers POST /tokenize with fake token ids (one per word).
func (s *Server) handleTokenize(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Model    string        `json:"model"`
		Prompt   string        `json:"prompt"`
		Messages []chatMessage `json:"messages"`
	}
	if !s.readBody(w, r, &req) || !s.checkModel(w, req.Model) {
		return
	}
	text := req.Prompt
	for _, m := range req.Messages {
		t, err := contentText(m.Content)
		if err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		text += " " + t
	}
	ids := tokenIDs(text)
	writeJSON(w, http.StatusOK, struct {
		Count       int   `json:"count"`
		MaxModelLen int   `json:"max_model_len"`
		Tokens      []int `json:"tokens"`
		TokenStrs   any   `json:"token_strs"`
	}{len(ids), s.maxModelLen(), ids, nil})
}
