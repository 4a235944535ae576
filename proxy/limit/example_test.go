package limit_test

import (
	"io"
	"log/slog"
	"net/http"

	"github.com/llmtap/llmtap/proxy/limit"
)

// Example shows the request path the proxy follows: authenticate, Admit with
// the key's limits, answer refusals with WriteRefusal, put the remaining
// counts on successful responses, and release with the tokens of the usage
// at the very end (also when the client went away).
func Example() {
	cfg := limit.DefaultConfig()
	cfg.DefaultRPM, cfg.DefaultConcurrent = 600, 16
	lim, err := limit.New(cfg, slog.Default())
	if err != nil {
		panic(err)
	}
	defer lim.Close()

	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		keyID, keyRPM, keyTPM := "key_3f9c0a1b2c4d5e6f", int64(0), int64(100000) // from keys.Set.Lookup
		d, release, _ := lim.Admit(r.Context(), keyID, cfg.LimitsFor(keyRPM, keyTPM))
		if !d.Allowed {
			limit.WriteRefusal(w, d) // 429 (or 503 fail-closed); audit it with that status
			return
		}
		tail := limit.NewTail(16 << 10)
		stream := false
		defer func() { release(limit.UsageTokens(tail.Bytes(), stream)) }()
		limit.Headers(w.Header(), d) // before the upstream response is written
		// … forward upstream, copying the response body through tail …
		io.WriteString(io.MultiWriter(w, tail), `{"usage":{"total_tokens":12}}`)
	})
	_ = handler
}
