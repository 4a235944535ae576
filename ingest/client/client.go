// Package client is an event.Consumer that ships events to a remote ingest
// over HTTP: POST {URL}/v1/events with a gzip-compressed NDJSON body (one
// JSON-encoded event.Event per line; []byte fields as base64) and, when a
// token is configured, Authorization: Bearer <token>.
//
// # Delivery contract
//
// Consume returns nil only when every request of the batch got a 2xx answer.
// The ingest receiver answers 2xx after commit; entries it could not decode
// are stored in llm_rejects by the server, so they count as delivered (they
// are reported in Result.Rejected and logged as a count, never as content).
//
// Errors are classified for the caller's retry policy:
//   - 5xx, 429, 408 and network errors are retryable; RetryAfter(err) returns
//     the server's Retry-After hint when it sent one.
//   - Any other 4xx is permanent: errors.Is(err, ErrPermanent) is true. 401
//     and 403 also match ErrUnauthorized ("ingest rejected the token").
//
// Request bodies, response bodies and the token are never logged nor put in
// error messages.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/llmtap/llmtap/ingest/event"
)

// EventsPath is the receiver's path for proxy events.
const EventsPath = "/v1/events"

// Sentinel errors. Use errors.Is.
var (
	// ErrPermanent marks an error that retrying the same request cannot fix
	// (a 4xx other than 408 and 429).
	ErrPermanent = errors.New("permanent ingest error")
	// ErrUnauthorized marks a 401 or 403: ingest rejected the token. It is
	// also permanent.
	ErrUnauthorized = errors.New("ingest rejected the token")
)

// maxResponseBytes caps how much of a response body is read.
const maxResponseBytes = 1 << 20

// Config configures a Client.
type Config struct {
	// URL is the ingest base URL, e.g. http://127.0.0.1:8002. The client
	// posts to URL + "/v1/events".
	URL string
	// Token is sent as Authorization: Bearer <token> when not empty.
	Token string
	// Timeout bounds one HTTP request (connect, send, answer).
	Timeout time.Duration
	// MaxBatchBytes bounds the uncompressed NDJSON size of one request; a
	// larger batch is split into several requests. A single event larger
	// than the bound is sent alone.
	MaxBatchBytes int64
	// Logger receives warnings (rejected counts); nil discards.
	Logger *slog.Logger
	// Transport overrides the HTTP transport (tests, TLS settings); nil
	// uses a dedicated tuned transport.
	Transport http.RoundTripper
}

// DefaultConfig returns a Config with defaults and an empty URL.
func DefaultConfig() Config {
	return Config{Timeout: 30 * time.Second, MaxBatchBytes: 16 << 20}
}

// Validate reports whether the config can be used.
func (c Config) Validate() error {
	if c.URL == "" {
		return errors.New("client: URL is empty (set proxy.ingest_url)")
	}
	u, err := url.Parse(c.URL)
	if err != nil {
		return fmt.Errorf("client: ingest URL does not parse: %w", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("client: ingest URL %q must start with http:// or https://", u.Redacted())
	}
	if u.Host == "" {
		return fmt.Errorf("client: ingest URL %q has no host", u.Redacted())
	}
	if c.Timeout <= 0 {
		return errors.New("client: Timeout must be > 0")
	}
	if c.MaxBatchBytes <= 0 {
		return errors.New("client: MaxBatchBytes must be > 0")
	}
	if strings.ContainsAny(c.Token, "\r\n") {
		return errors.New("client: token contains a line break")
	}
	return nil
}

// Result is the receiver's answer to one Send, summed over its requests.
type Result struct {
	Accepted int `json:"accepted"`
	Rejected int `json:"rejected"`
}

// Client posts events to ingest. It is safe for concurrent use.
type Client struct {
	cfg      Config
	endpoint string
	display  string // endpoint without userinfo, for messages
	http     *http.Client
	log      *slog.Logger
}

var _ event.Consumer = (*Client)(nil)

// New returns a Client for cfg. Zero Timeout and MaxBatchBytes take the
// defaults.
func New(cfg Config) (*Client, error) {
	def := DefaultConfig()
	if cfg.Timeout == 0 {
		cfg.Timeout = def.Timeout
	}
	if cfg.MaxBatchBytes == 0 {
		cfg.MaxBatchBytes = def.MaxBatchBytes
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	u, _ := url.Parse(cfg.URL)
	u.Path = strings.TrimRight(u.Path, "/") + EventsPath
	u.RawQuery, u.Fragment = "", ""
	rt := cfg.Transport
	if rt == nil {
		rt = &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConns:          8,
			MaxIdleConnsPerHost:   8,
			IdleConnTimeout:       90 * time.Second,
			TLSHandshakeTimeout:   5 * time.Second,
			ExpectContinueTimeout: time.Second,
			ForceAttemptHTTP2:     true,
			DisableCompression:    true,
		}
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Client{
		cfg:      cfg,
		endpoint: u.String(),
		display:  u.Redacted(),
		http: &http.Client{
			Transport: rt,
			// Never follow redirects: they would resend the token elsewhere.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		log: log,
	}, nil
}

// Close releases idle connections.
func (c *Client) Close() error {
	c.http.CloseIdleConnections()
	return nil
}

// Consume implements event.Consumer: it sends events and returns nil once
// ingest acknowledged all of them (see the package doc for error classes).
func (c *Client) Consume(ctx context.Context, events []event.Event) error {
	_, err := c.Send(ctx, events)
	return err
}

// Send posts events, split into requests of at most MaxBatchBytes of
// uncompressed NDJSON, and returns the summed receiver answer. It stops at
// the first failed request; earlier requests stay delivered (resending them
// is harmless: ingest is idempotent on event ids).
func (c *Client) Send(ctx context.Context, events []event.Event) (Result, error) {
	var total Result
	if len(events) == 0 {
		return total, nil
	}
	bw := getBody()
	defer putBody(bw)
	enc := json.NewEncoder(&bw.raw)
	enc.SetEscapeHTML(false)
	n := 0
	flush := func() error {
		if n == 0 {
			return nil
		}
		r, err := c.post(ctx, bw, n)
		total.Accepted += r.Accepted
		total.Rejected += r.Rejected
		bw.raw.Reset()
		n = 0
		return err
	}
	for i := range events {
		mark := bw.raw.Len()
		if err := enc.Encode(&events[i]); err != nil {
			return total, fmt.Errorf("client: encode event %q: %w", events[i].ID, errors.Join(ErrPermanent, err))
		}
		if n > 0 && int64(bw.raw.Len()) > c.cfg.MaxBatchBytes {
			// Move the event that overflowed into the next request.
			line := append([]byte(nil), bw.raw.Bytes()[mark:]...)
			bw.raw.Truncate(mark)
			if err := flush(); err != nil {
				return total, err
			}
			bw.raw.Write(line)
		}
		n++
	}
	return total, flush()
}

// body holds the reusable buffers of one Send.
type body struct {
	raw bytes.Buffer // NDJSON
	gz  bytes.Buffer // compressed
	zw  *gzip.Writer
}

var bodyPool = sync.Pool{New: func() any {
	b := &body{}
	b.zw, _ = gzip.NewWriterLevel(&b.gz, gzip.BestSpeed)
	return b
}}

func getBody() *body { return bodyPool.Get().(*body) }

func putBody(b *body) {
	if b.raw.Cap() > 64<<20 || b.gz.Cap() > 64<<20 {
		return // do not keep huge buffers alive
	}
	b.raw.Reset()
	b.gz.Reset()
	bodyPool.Put(b)
}

func (c *Client) post(ctx context.Context, b *body, n int) (Result, error) {
	b.gz.Reset()
	b.zw.Reset(&b.gz)
	if _, err := b.zw.Write(b.raw.Bytes()); err != nil {
		return Result{}, fmt.Errorf("client: gzip: %w", err)
	}
	if err := b.zw.Close(); err != nil {
		return Result{}, fmt.Errorf("client: gzip: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	rb := &reqBody{Reader: bytes.NewReader(b.gz.Bytes()), done: make(chan struct{})}
	// The transport may close (stop reading) the body after Do returned;
	// the buffer is reused only once it did.
	defer func() {
		select {
		case <-rb.done:
		default:
			b.gz = bytes.Buffer{} // still referenced by the transport: let it go
		}
	}()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.endpoint, rb)
	if err != nil {
		return Result{}, fmt.Errorf("client: build request: %w", errors.Join(ErrPermanent, err))
	}
	req.ContentLength = int64(b.gz.Len())
	req.Header.Set("Content-Type", "application/x-ndjson")
	req.Header.Set("Content-Encoding", "gzip")
	req.Header.Set("User-Agent", "llmtap-proxy")
	if c.cfg.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.cfg.Token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return Result{}, &StatusError{URL: c.display, Events: n, Err: err}
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		var r struct {
			Accepted *int `json:"accepted"`
			Rejected int  `json:"rejected"`
		}
		res := Result{Accepted: n}
		if json.Unmarshal(data, &r) == nil && r.Accepted != nil {
			res = Result{Accepted: *r.Accepted, Rejected: r.Rejected}
		}
		if res.Rejected > 0 {
			c.log.Warn("ingest stored undecodable events as rejects",
				"url", c.display, "events", n, "accepted", res.Accepted, "rejected", res.Rejected)
		}
		return res, nil
	}
	return Result{}, &StatusError{
		URL:        c.display,
		Events:     n,
		StatusCode: resp.StatusCode,
		RetryAfter: parseRetryAfter(resp.Header.Get("Retry-After"), time.Now()),
	}
}

// reqBody is a request body that reports when the transport closed it.
type reqBody struct {
	*bytes.Reader
	once sync.Once
	done chan struct{}
}

func (r *reqBody) Close() error {
	r.once.Do(func() { close(r.done) })
	return nil
}

// StatusError is a failed request: a non-2xx answer (StatusCode set) or a
// transport error (Err set). It never holds bodies or the token.
type StatusError struct {
	URL        string // endpoint, without userinfo
	Events     int    // events in the failed request
	StatusCode int    // 0 for transport errors
	RetryAfter time.Duration
	Err        error
}

func (e *StatusError) Error() string {
	switch {
	case e.StatusCode == http.StatusUnauthorized || e.StatusCode == http.StatusForbidden:
		return fmt.Sprintf("client: ingest rejected the token (HTTP %d from %s): check that proxy.ingest_token matches ingest.token", e.StatusCode, e.URL)
	case e.StatusCode != 0:
		s := fmt.Sprintf("client: ingest answered HTTP %d %s for %d events (%s)", e.StatusCode, http.StatusText(e.StatusCode), e.Events, e.URL)
		if e.RetryAfter > 0 {
			s += fmt.Sprintf(", retry after %s", e.RetryAfter)
		}
		return s
	default:
		return fmt.Sprintf("client: post %d events: %v", e.Events, e.Err)
	}
}

func (e *StatusError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrPermanent) and errors.Is(err, ErrUnauthorized)
// work.
func (e *StatusError) Is(target error) bool {
	switch target {
	case ErrPermanent:
		return e.permanent()
	case ErrUnauthorized:
		return e.StatusCode == http.StatusUnauthorized || e.StatusCode == http.StatusForbidden
	}
	return false
}

// Retryable reports whether retrying the same request may succeed.
func (e *StatusError) Retryable() bool { return !e.permanent() }

func (e *StatusError) permanent() bool {
	c := e.StatusCode
	return c >= 400 && c < 500 && c != http.StatusRequestTimeout && c != http.StatusTooManyRequests
}

// IsPermanent reports whether err is a permanent ingest error.
func IsPermanent(err error) bool { return errors.Is(err, ErrPermanent) }

// RetryAfter returns the server's Retry-After hint carried by err, if any.
func RetryAfter(err error) (time.Duration, bool) {
	var se *StatusError
	if errors.As(err, &se) && se.RetryAfter > 0 {
		return se.RetryAfter, true
	}
	return 0, false
}

// parseRetryAfter reads delta-seconds or an HTTP date; 0 when absent or
// invalid. The result is capped at one hour.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	var d time.Duration
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs <= 0 {
			return 0
		}
		if secs > 3600 {
			secs = 3600
		}
		d = time.Duration(secs) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(now)
	}
	if d <= 0 {
		return 0
	}
	return min(d, time.Hour)
}
