package proxy_test

import (
	"log/slog"
	"net/http"

	"github.com/llmtap/llmtap/ingest/event"
	"github.com/llmtap/llmtap/proxy"
	"github.com/llmtap/llmtap/proxy/keys"
	"github.com/llmtap/llmtap/proxy/limit"
)

type discard struct{}

func (discard) Emit(event.Event) {}
func (discard) Accepting() bool  { return true }

// Example_limits wires rate limits shared by every replica through Redis
// and bounds the metrics' consumer label. The limiter outlives the proxy:
// close it after the proxy's server has shut down.
func Example_limits() {
	logger := slog.Default()
	lc := limit.DefaultConfig()
	lc.RedisURL = "redis://127.0.0.1:6379/0" // "": per-process counters
	lc.DefaultRPM, lc.DefaultTPM, lc.DefaultConcurrent = 600, 200000, 16
	lc.FailurePolicy = limit.FailOpen
	lim, err := limit.New(lc, logger)
	if err != nil {
		panic(err)
	}
	defer lim.Close()

	ks, err := keys.NewWatcher("/etc/llmtap/keys.yaml", logger)
	if err != nil {
		return
	}
	cfg := proxy.DefaultConfig()
	cfg.Limiter, cfg.Limits = lim, lc
	cfg.MetricsMaxConsumers = 500
	p, err := proxy.New(cfg, ks, discard{}, logger)
	if err != nil {
		panic(err)
	}
	defer p.Close()
	_ = http.ListenAndServe // serve p; /metrics goes on the admin listener
}
