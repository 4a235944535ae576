// Package limit enforces per-key rate limits for the proxy: requests per
// minute (RPM), tokens per minute (TPM) and concurrent requests.
//
// # Semantics
//
// RPM and TPM use an exact sliding-window log over Config.Window (one minute
// by default): the window at time t is (t-Window, t]. A request is admitted
// when, at admission time,
//
//   - fewer than Limits.RPM requests were admitted in the window,
//   - the tokens recorded in the window are below Limits.TPM (a request is
//     refused while the window's token budget is spent: used >= TPM), and
//   - fewer than Limits.Concurrent requests of the key are in flight.
//
// Refused requests are not counted, so with RPM = N exactly N requests pass in
// any window and the N+1st is refused; a client retrying in a loop does not
// push its own window forward. Tokens are recorded when the request ends (the
// caller passes them to the release function), at the time of the release.
// A limit of 0 means unlimited; when all three are 0, Admit does no work.
//
// # Backends
//
// Without Config.RedisURL counters live in this process (memory backend). With
// it, all counters live in Redis and every decision is one atomic Lua script,
// so any number of proxy replicas share one budget; the scripts use the Redis
// server's clock (TIME), so replicas' clock skew does not matter. Redis keys
// ("<prefix>{<keyID>}:req|tok|sum|conc") expire once idle. Concurrency slots in
// Redis are leases (a sorted set of request ids scored by expiry): the owning
// process refreshes its slots every Lease/3, so a slot of a process that died
// is reclaimed at most Lease later. When Redis fails (error or
// Config.Timeout), Config.FailurePolicy decides: "open" admits (and counts
// llmtap_ratelimit_backend_errors_total), "closed" refuses with Reason
// "unavailable" (503).
//
// Only single-node Redis (or a Sentinel primary) is supported; the key names
// carry a hash tag so that one key's counters would stay on one cluster slot.
// Scripts need Redis 5 or later (TIME before writes). A Redis restart loses
// the counters (the budget starts afresh) and the in-flight slots of running
// requests (concurrency is under-counted until they end).
//
// # Use in the proxy
//
// After authentication: d, release, err := l.Admit(ctx, key.ID,
// cfg.LimitsFor(key.RPM, key.TPM)). Refused: WriteRefusal(w, d) and audit the
// request with its status. Allowed: Headers(w.Header(), d) before the
// upstream response is written, and release(UsageTokens(tail, stream)) once
// the response has ended, whatever the outcome; Tail keeps the end of the
// response body for UsageTokens when the capture was truncated.
package limit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Failure policies for Config.FailurePolicy.
const (
	FailOpen   = "open"
	FailClosed = "closed"
)

// Reasons for a refusal (Decision.Reason).
const (
	ReasonRequests    = "requests"
	ReasonTokens      = "tokens"
	ReasonConcurrency = "concurrency"
	ReasonUnavailable = "unavailable"
)

// Config configures a Limiter.
type Config struct {
	// DefaultRPM and DefaultTPM apply to keys without their own value
	// (keys.Key.RPM/TPM == 0). 0 = unlimited.
	DefaultRPM, DefaultTPM int64
	// DefaultConcurrent is the maximum number of in-flight requests per key.
	// 0 = unlimited.
	DefaultConcurrent int64
	// RedisURL selects the Redis backend ("redis://host:port/db",
	// "rediss://…"); "" keeps the counters in this process.
	RedisURL string
	// KeyPrefix starts every Redis key (default "llmtap:rl:").
	KeyPrefix string
	// FailurePolicy is FailOpen or FailClosed: what Admit decides when
	// Redis cannot be reached.
	FailurePolicy string
	// Timeout bounds each Redis call (default 500ms).
	Timeout time.Duration
	// Window is the length of the sliding window (default one minute; the
	// limits are per Window). Tests shorten it.
	Window time.Duration
	// Lease is how long a Redis concurrency slot survives without refresh
	// (default 30s). A crashed process's slots are freed after at most Lease.
	Lease time.Duration
}

// DefaultConfig returns an unlimited, in-memory, fail-open configuration
// with a one-minute window.
func DefaultConfig() Config {
	return Config{
		KeyPrefix:     "llmtap:rl:",
		FailurePolicy: FailOpen,
		Timeout:       500 * time.Millisecond,
		Window:        time.Minute,
		Lease:         30 * time.Second,
	}
}

// Validate reports every invalid field.
func (c Config) Validate() error {
	var errs []error
	if c.DefaultRPM < 0 || c.DefaultTPM < 0 || c.DefaultConcurrent < 0 {
		errs = append(errs, errors.New("limit: default rpm, tpm and concurrent must not be negative"))
	}
	if c.FailurePolicy != FailOpen && c.FailurePolicy != FailClosed {
		errs = append(errs, fmt.Errorf("limit: failure policy %q must be %q or %q", c.FailurePolicy, FailOpen, FailClosed))
	}
	if c.Timeout <= 0 {
		errs = append(errs, fmt.Errorf("limit: timeout %v must be positive", c.Timeout))
	}
	if c.Window < time.Millisecond {
		errs = append(errs, fmt.Errorf("limit: window %v must be at least 1ms", c.Window))
	}
	if c.Lease < 30*time.Millisecond {
		errs = append(errs, fmt.Errorf("limit: lease %v must be at least 30ms", c.Lease))
	}
	if c.RedisURL != "" && c.KeyPrefix == "" {
		errs = append(errs, errors.New("limit: key prefix must not be empty with redis"))
	}
	return errors.Join(errs...)
}

// LimitsFor returns the effective limits of a key whose own values (from the
// keys file) are rpm and tpm: a key's non-zero value overrides the default;
// concurrency always comes from DefaultConcurrent.
func (c Config) LimitsFor(rpm, tpm int64) Limits {
	l := Limits{RPM: c.DefaultRPM, TPM: c.DefaultTPM, Concurrent: c.DefaultConcurrent}
	if rpm > 0 {
		l.RPM = rpm
	}
	if tpm > 0 {
		l.TPM = tpm
	}
	return l
}

// Limits are the effective limits of one key. 0 = unlimited.
type Limits struct {
	RPM, TPM, Concurrent int64
}

func (l Limits) unlimited() bool { return l.RPM <= 0 && l.TPM <= 0 && l.Concurrent <= 0 }

// Decision is the outcome of Admit. The Limit*/Remaining*/Reset* fields are
// set for the dimensions that have a limit (Limit* == 0: unlimited, no
// headers). Remaining* count what is left after this request (requests) or
// before it (tokens, which are only known at the end). Reset* is the time
// until the remaining count next grows (the oldest counted entry leaves the
// window); on a refusal for that dimension it is the time until a request
// could pass again.
type Decision struct {
	Allowed bool
	// Reason is set on refusals: ReasonRequests, ReasonTokens,
	// ReasonConcurrency or ReasonUnavailable.
	Reason string

	LimitRequests, RemainingRequests int64
	ResetRequests                    time.Duration
	LimitTokens, RemainingTokens     int64
	ResetTokens                      time.Duration
	// LimitConcurrent is the concurrency limit applied (0: none).
	LimitConcurrent int64
	// RetryAfter is set on refusals: when to try again.
	RetryAfter time.Duration
}

// Release ends an admitted request; tokens (prompt + completion, 0 if
// unknown) count against the key's TPM from now on. It must be called exactly
// once per admitted request; extra calls are ignored. It blocks for at most
// Config.Timeout (Redis) and is safe to call from any goroutine.
type Release func(tokens int64)

// Limiter decides admission. Implementations are safe for concurrent use.
type Limiter interface {
	// Admit counts one request for keyID against RPM and concurrency and
	// checks the TPM budget. When d.Allowed the caller must call release
	// exactly once when the request ends (also when the client
	// disconnected); when not allowed release is a no-op and nothing was
	// counted. err is non-nil only when the backend failed; d already
	// follows the FailurePolicy then, so callers act on d.Allowed alone and
	// may log err. keyID is the key's id (never the plain key).
	Admit(ctx context.Context, keyID string, l Limits) (d Decision, release Release, err error)
	// Close stops background work and closes the backend connection.
	// In-flight Redis slots of this process are removed (best effort).
	Close() error
}

var (
	refusals = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "llmtap_ratelimit_refusals_total",
		Help: "Requests refused by the rate limiter, by reason (requests, tokens, concurrency, unavailable).",
	}, []string{"reason"})
	backendErrors = promauto.NewCounter(prometheus.CounterOpts{
		Name: "llmtap_ratelimit_backend_errors_total",
		Help: "Rate-limit backend (Redis) calls that failed or timed out.",
	})
)

func init() {
	for _, r := range []string{ReasonRequests, ReasonTokens, ReasonConcurrency, ReasonUnavailable} {
		refusals.WithLabelValues(r)
	}
}

// New returns the memory backend when cfg.RedisURL is empty and the Redis
// backend otherwise. The Redis backend checks the connection (PING) but
// starts even when Redis is down (the FailurePolicy applies until it is up).
func New(cfg Config, logger *slog.Logger) (Limiter, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if cfg.RedisURL == "" {
		return newMemory(cfg, time.Now), nil
	}
	return newRedis(cfg, logger)
}

func noRelease(int64) {}

func refused(d Decision) Decision {
	refusals.WithLabelValues(d.Reason).Inc()
	return d
}
