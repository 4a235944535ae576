package pipeline

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

var (
	acceptedTotal = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "llmtap_ingest_accepted_total",
		Help: "Events decoded and committed to the store, by source.",
	}, []string{"source"})
	rejectedTotal = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "llmtap_ingest_rejected_total",
		Help: "Entries that could not be decoded, committed to llm_rejects, by source.",
	}, []string{"source"})
	writeSeconds = promauto.NewHistogram(prometheus.HistogramOpts{
		Name:    "llmtap_store_write_seconds",
		Help:    "Duration of one batch write to the store.",
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 15), // 1 ms … 16 s
	})
	writeErrors = promauto.NewCounter(prometheus.CounterOpts{
		Name: "llmtap_store_write_errors_total",
		Help: "Batch writes to the store that failed (every caller in the batch got the error).",
	})
	batchRows = promauto.NewHistogram(prometheus.HistogramOpts{
		Name:    "llmtap_ingest_batch_rows",
		Help:    "Rows (records + rejects) per batch written to the store.",
		Buckets: prometheus.ExponentialBuckets(1, 4, 9), // 1 … 65536
	})
	pendingEvents = promauto.NewGauge(prometheus.GaugeOpts{
		Name: "llmtap_ingest_pending_events",
		Help: "Events admitted by the pipeline and not yet committed or answered.",
	})
	overloadedTotal = promauto.NewCounter(prometheus.CounterOpts{
		Name: "llmtap_ingest_overloaded_total",
		Help: "Ingest calls refused with ErrOverloaded after waiting for room.",
	})
)
