package proxy

import (
	"strconv"
	"sync"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Label values used when the real one is missing or bounded away.
const (
	// LabelOther replaces consumer and model values beyond the configured
	// maximum of distinct values (Config.MetricsMaxConsumers/MaxModels).
	LabelOther = "other"
	// LabelAnonymous is the consumer of requests without a valid key.
	LabelAnonymous = "anonymous"
	// LabelUnknown is the model of requests whose body names none (GET
	// /v1/models, refused before the body was read, not JSON).
	LabelUnknown = "unknown"
)

// maxLabelLen bounds a label value's length; longer values count as
// LabelOther.
const maxLabelLen = 128

var (
	requestsTotal = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "llmtap_requests_total",
		Help: "Requests handled by the proxy, by consumer, model and the status the client got (499: client left).",
	}, []string{"consumer", "model", "status"})
	tokensTotal = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "llmtap_tokens_total",
		Help: "Tokens reported by upstream usage, by consumer, model and type (prompt, completion).",
	}, []string{"consumer", "model", "type"})
	requestSeconds = promauto.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "llmtap_request_duration_seconds",
		Help:    "Time from request arrival to the end of the response, by consumer and whether the response was a stream.",
		Buckets: []float64{.005, .025, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300},
	}, []string{"consumer", "stream"})
	ttftSeconds = promauto.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "llmtap_time_to_first_token_seconds",
		Help:    "Time from request arrival to the first complete SSE event of a streamed response, by consumer.",
		Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
	}, []string{"consumer"})
	inflight = promauto.NewGauge(prometheus.GaugeOpts{
		Name: "llmtap_inflight_requests",
		Help: "Requests in progress in the proxy (open streams included).",
	})
	inflightStreams = promauto.NewGauge(prometheus.GaugeOpts{
		Name: "llmtap_inflight_streams",
		Help: "Streamed (text/event-stream) responses in progress in the proxy.",
	})
)

// labelSet bounds the cardinality of one label: the first max distinct
// values pass, later new ones become LabelOther. Safe for concurrent use.
type labelSet struct {
	max  int
	mu   sync.RWMutex
	seen map[string]struct{}
}

func newLabelSet(max int) *labelSet {
	return &labelSet{max: max, seen: make(map[string]struct{})}
}

// value returns v, or LabelOther when v is new and the set is full, or
// when v is not a valid label (invalid UTF-8, longer than 128 bytes).
// A new v is remembered only when admit is true, so that callers can keep
// values they cannot vouch for (a model upstream rejected) from using up
// the set; such values map to LabelOther until admitted.
func (s *labelSet) value(v string, admit bool) string {
	if len(v) > maxLabelLen || !utf8.ValidString(v) {
		return LabelOther
	}
	s.mu.RLock()
	_, ok := s.seen[v]
	s.mu.RUnlock()
	if ok {
		return v
	}
	if !admit {
		return LabelOther
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.seen[v]; ok {
		return v
	}
	if len(s.seen) >= s.max {
		return LabelOther
	}
	s.seen[v] = struct{}{}
	return v
}

// observe records the metrics of one finished exchange. prompt and
// completion are the usage tokens (hasUsage false: none reported).
func (p *Proxy) observe(x *exchange, prompt, completion int64, hasUsage bool) {
	ev := &x.ev
	consumer := LabelAnonymous
	if ev.Consumer != "" {
		consumer = p.consumers.value(ev.Consumer, true)
	}
	model := LabelUnknown
	if x.model != "" {
		// Only models upstream answered for (2xx) take a slot.
		model = p.models.value(x.model, ev.Status >= 200 && ev.Status < 300)
	}
	requestsTotal.WithLabelValues(consumer, model, strconv.Itoa(ev.Status)).Inc()
	stream := "false"
	if ev.Stream {
		stream = "true"
	}
	requestSeconds.WithLabelValues(consumer, stream).Observe(ev.LatencyMs / 1000)
	if ev.TTFTMs != nil {
		ttftSeconds.WithLabelValues(consumer).Observe(*ev.TTFTMs / 1000)
	}
	if hasUsage {
		tokensTotal.WithLabelValues(consumer, model, "prompt").Add(float64(prompt))
		tokensTotal.WithLabelValues(consumer, model, "completion").Add(float64(completion))
	}
}
