package proxy

import (
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"time"

	"github.com/llmtap/llmtap/proxy/limit"
)

// Stream usage modes (Config.StreamUsage).
const (
	StreamUsageInject = "inject"
	StreamUsageOff    = "off"
)

// Config configures a Proxy. Start from DefaultConfig.
type Config struct {
	// Upstream is the base URL of the OpenAI-compatible server (vLLM),
	// e.g. http://127.0.0.1:8000. Its path, if any, prefixes every request.
	Upstream string
	// UpstreamAPIKey, when set, is sent upstream as "Authorization: Bearer";
	// the client's own key never reaches upstream.
	UpstreamAPIKey string
	// StreamUsage is StreamUsageInject (default) or StreamUsageOff.
	StreamUsage string
	// MaxRequestBody is the largest request body forwarded (413 above it).
	MaxRequestBody int64
	// CaptureLimit caps the captured bytes per direction (request, response).
	CaptureLimit int64
	// RedactHeaders are extra header names whose captured values are
	// replaced by "[REDACTED]" (Authorization, X-API-Key, Cookie,
	// Set-Cookie and Proxy-Authorization always are).
	RedactHeaders []string
	// TrustedProxies lists the networks whose X-Forwarded-For is believed
	// when deriving the client IP. Empty: the TCP peer is the client.
	TrustedProxies []netip.Prefix

	// ResponseHeaderTimeout bounds the wait for upstream response headers
	// (prefill and queueing included); 504 when exceeded. 0: no limit.
	ResponseHeaderTimeout time.Duration
	// DialTimeout bounds connecting to upstream.
	DialTimeout time.Duration
	// IdleConnTimeout closes idle upstream connections.
	IdleConnTimeout time.Duration
	// MaxIdleConnsPerHost sizes the upstream keep-alive pool; set it to the
	// expected number of concurrent requests (streams hold a connection).
	MaxIdleConnsPerHost int
	// MaxConnsPerHost, when > 0, limits upstream connections.
	MaxConnsPerHost int
	// ClientWriteTimeout bounds each write to the client (renewed per
	// write, so long streams are fine). A client that stops reading is cut
	// after it, which cancels the upstream generation. 0: no limit.
	ClientWriteTimeout time.Duration
	// RequestBodyTimeout bounds reading the whole request body (408 when
	// exceeded), so that clients trickling a body cannot hold connections
	// and memory. 0: no limit.
	RequestBodyTimeout time.Duration

	// Limiter, when not nil, rate-limits every authenticated request
	// (limit.New builds it from Limits). The proxy does not close it.
	Limiter limit.Limiter
	// Limits gives the per-key limits (Limits.LimitsFor with the key's RPM
	// and TPM from the keys file, Limits.DefaultConcurrent). Used only with
	// Limiter; it should be the configuration Limiter was built from.
	Limits limit.Config

	// MetricsMaxConsumers bounds the distinct values of the consumer label
	// of the proxy's metrics; consumers beyond it are counted as "other".
	MetricsMaxConsumers int
	// MetricsMaxModels does the same for the model label (only models
	// upstream answered 2xx for take a place).
	MetricsMaxModels int
}

// Defaults.
const (
	DefaultMaxRequestBody      = 32 << 20
	DefaultCaptureLimit        = 8 << 20
	DefaultMaxIdleConnsPerHost = 1024
	DefaultMetricsMaxConsumers = 200
	DefaultMetricsMaxModels    = 50
)

// DefaultConfig returns the defaults: upstream http://127.0.0.1:8000, usage
// injection on, 32 MiB request limit, 8 MiB capture per direction, 5 min
// to upstream response headers, a 1024-connection idle pool, 1 min per
// client write, 30 s to receive a request body, no rate limits, 200 consumer and 50 model label values.
func DefaultConfig() Config {
	return Config{
		Upstream:              "http://127.0.0.1:8000",
		StreamUsage:           StreamUsageInject,
		MaxRequestBody:        DefaultMaxRequestBody,
		CaptureLimit:          DefaultCaptureLimit,
		ResponseHeaderTimeout: 5 * time.Minute,
		DialTimeout:           10 * time.Second,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConnsPerHost:   DefaultMaxIdleConnsPerHost,
		ClientWriteTimeout:    time.Minute,
		RequestBodyTimeout:    30 * time.Second,
		Limits:                limit.DefaultConfig(),
		MetricsMaxConsumers:   DefaultMetricsMaxConsumers,
		MetricsMaxModels:      DefaultMetricsMaxModels,
	}
}

// Validate reports every invalid field.
func (c Config) Validate() error {
	var errs []error
	if u, err := url.Parse(c.Upstream); err != nil {
		errs = append(errs, fmt.Errorf("proxy: upstream %q: %w", c.Upstream, err))
	} else if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		errs = append(errs, fmt.Errorf("proxy: upstream %q must be an http:// or https:// URL with a host", c.Upstream))
	} else if u.RawQuery != "" || u.Fragment != "" {
		errs = append(errs, fmt.Errorf("proxy: upstream %q must not have a query or fragment", c.Upstream))
	}
	if c.StreamUsage != StreamUsageInject && c.StreamUsage != StreamUsageOff {
		errs = append(errs, fmt.Errorf("proxy: stream_usage %q must be %q or %q", c.StreamUsage, StreamUsageInject, StreamUsageOff))
	}
	if c.MaxRequestBody <= 0 {
		errs = append(errs, fmt.Errorf("proxy: max request body %d must be > 0", c.MaxRequestBody))
	}
	if c.CaptureLimit < 0 {
		errs = append(errs, fmt.Errorf("proxy: capture limit %d must not be negative", c.CaptureLimit))
	}
	if c.ResponseHeaderTimeout < 0 || c.DialTimeout < 0 || c.IdleConnTimeout < 0 || c.ClientWriteTimeout < 0 || c.RequestBodyTimeout < 0 {
		errs = append(errs, errors.New("proxy: timeouts must not be negative"))
	}
	if c.MaxIdleConnsPerHost < 0 || c.MaxConnsPerHost < 0 {
		errs = append(errs, errors.New("proxy: connection limits must not be negative"))
	}
	for _, p := range c.TrustedProxies {
		if !p.IsValid() {
			errs = append(errs, fmt.Errorf("proxy: trusted proxy %v is not a valid prefix", p))
		}
	}
	if c.Limiter != nil {
		if err := c.Limits.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("proxy: limits: %w", err))
		}
	}
	if c.MetricsMaxConsumers < 1 || c.MetricsMaxModels < 1 {
		errs = append(errs, fmt.Errorf("proxy: metrics max consumers %d and max models %d must be >= 1", c.MetricsMaxConsumers, c.MetricsMaxModels))
	}
	return errors.Join(errs...)
}
