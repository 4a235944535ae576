// Package proxy is llmtap's tee proxy in front of an OpenAI-compatible
// server (vLLM): it authenticates every request with a hashed API key,
// forwards it with the caller's identity in X-Consumer-Username, streams
// every response byte to the client at once, and captures what went in and
// out (capped) into an event.Event handed to an Emitter when the exchange
// ends.
//
// The proxy does not parse bodies, except to add
// stream_options.include_usage to streaming chat and completion requests
// (Config.StreamUsage "inject"), to remove the usage chunk this causes
// from that client's stream, to note the request's top-level "model" (a
// scan, no decode) and to read the response's usage (a backwards search).
//
// Rate limits (Config.Limiter, see package limit) apply after
// authentication and before the request body is read: a refused request is
// answered 429 (503 when the limiter's backend is down and fails closed)
// with OpenAI's x-ratelimit-* and Retry-After headers and audited with that
// status and Error "rate limit: <reason>"; admitted responses carry the
// remaining counts. The tokens of the response's usage (read from the
// captured body, or its last 16 KiB when the capture was truncated; 0 for
// compressed bodies) are charged to the key once the exchange has ended,
// whatever its outcome.
//
// Metrics (default registry): llmtap_requests_total{consumer,model,status},
// llmtap_tokens_total{consumer,model,type}, llmtap_request_duration_seconds
// {consumer,stream}, llmtap_time_to_first_token_seconds{consumer},
// llmtap_inflight_requests, llmtap_inflight_streams. The model is the
// request body's top-level "model". Consumer and model label values are
// bounded (Config.MetricsMaxConsumers, MetricsMaxModels; "other" beyond);
// a model takes a place only once upstream answered 2xx for it.
//
// Security contracts:
//   - every path needs a valid key (Authorization: Bearer or X-API-Key);
//     rejected attempts answer 401 and are still emitted;
//   - the client's key never reaches upstream (replaced by
//     Config.UpstreamAPIKey, or removed);
//   - X-Consumer-* headers from the client are removed and X-Consumer-Username
//     is set after hop-by-hop processing (httputil.ReverseProxy.Rewrite), so a
//     "Connection: X-Consumer-Username" header cannot remove it;
//   - captured headers have secrets replaced by "[REDACTED]"; Event.Path
//     has no query string; plain keys are never logged or emitted (only the
//     key's display prefix).
package proxy

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
	"net/http/httputil"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/llmtap/llmtap/ingest/event"
	"github.com/llmtap/llmtap/proxy/keys"
	"github.com/llmtap/llmtap/proxy/limit"
	"github.com/llmtap/llmtap/proxy/upstream"
)

// HeaderEventID carries the event id on every response.
const HeaderEventID = "X-Llmtap-Event-Id"

// HeaderConsumer tells upstream who called.
const HeaderConsumer = "X-Consumer-Username"

// Redacted replaces secret header values in captured headers.
const Redacted = "[REDACTED]"

// Emitter receives finished events.
type Emitter interface {
	// Emit takes ownership of ev (its byte slices are not reused by the
	// proxy). It must not block on I/O; it is called on the request's
	// goroutine after the response is complete.
	Emit(ev event.Event)
	// Accepting is false when audit delivery is failing and the policy is
	// fail-closed; the proxy then answers 503 before contacting upstream
	// and still emits the attempt.
	Accepting() bool
}

// KeySource provides the current key set. *keys.Watcher satisfies it.
type KeySource interface {
	Set() *keys.Set
}

// Proxy is an http.Handler. It is safe for concurrent use.
type Proxy struct {
	cfg          Config
	up           *url.URL
	ks           KeySource
	emit         Emitter
	log          *slog.Logger
	rp           *httputil.ReverseProxy
	transport    *upstream.Transport
	redact       map[string]bool
	upstreamAuth string
	inject       bool
	trusted      []netip.Prefix
	consumers    *labelSet // metric label bounds
	models       *labelSet
}

// New builds a Proxy. cfg must be valid; ks and emit must not be nil.
func New(cfg Config, ks KeySource, emit Emitter, logger *slog.Logger) (*Proxy, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if ks == nil || emit == nil {
		return nil, errors.New("proxy: key source and emitter are required")
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	up, _ := url.Parse(cfg.Upstream)
	p := &Proxy{
		cfg:       cfg,
		up:        up,
		ks:        ks,
		emit:      emit,
		log:       logger,
		inject:    cfg.StreamUsage == StreamUsageInject,
		trusted:   cfg.TrustedProxies,
		consumers: newLabelSet(cfg.MetricsMaxConsumers),
		models:    newLabelSet(cfg.MetricsMaxModels),
		redact: map[string]bool{
			"Authorization": true, "Proxy-Authorization": true, "X-Api-Key": true,
			"Api-Key": true, "Cookie": true, "Set-Cookie": true,
		},
	}
	for _, h := range cfg.RedactHeaders {
		p.redact[http.CanonicalHeaderKey(strings.TrimSpace(h))] = true
	}
	if cfg.UpstreamAPIKey != "" {
		p.upstreamAuth = "Bearer " + cfg.UpstreamAPIKey
	}
	// upstream.Transport runs each round trip on the request's own
	// goroutine (net/http.Transport adds two goroutines per connection):
	// cheaper per request and per open stream (BENCHMARKS.md).
	p.transport = &upstream.Transport{
		DialTimeout:           cfg.DialTimeout,
		MaxIdleConnsPerHost:   cfg.MaxIdleConnsPerHost,
		MaxConnsPerHost:       cfg.MaxConnsPerHost,
		IdleConnTimeout:       cfg.IdleConnTimeout,
		ResponseHeaderTimeout: cfg.ResponseHeaderTimeout,
		// Each upstream connection keeps its read buffer for its life,
		// so it counts in the memory per open stream: 2 KiB (default 4),
		// since bodies are read straight into the larger copy buffer once
		// the head is parsed. The write buffer is pooled; a request head
		// with a small body goes out in one write.
		ReadBufferSize:  upstreamBufSize,
		WriteBufferSize: upstreamWriteBufSize,
	}
	// The client's Accept-Encoding passes through untouched (the
	// transport never adds its own), so the captured bytes are exactly
	// what the client got.
	p.rp = &httputil.ReverseProxy{
		Rewrite:   p.rewrite,
		Transport: p.transport,
		// 0: ReverseProxy flushes after every write for text/event-stream
		// and for responses of unknown length (every SSE stream), and
		// batches writes of ordinary responses.
		FlushInterval:  0,
		BufferPool:     bufferPool{},
		ErrorLog:       slog.NewLogLogger(logger.Handler(), slog.LevelDebug),
		ErrorHandler:   p.errorHandler,
		ModifyResponse: p.modifyResponse,
	}
	return p, nil
}

// Close closes idle upstream connections.
func (p *Proxy) Close() { p.transport.CloseIdleConnections() }

type bufferPool struct{}

// copyBufSize is the ReverseProxy copy buffer. A stream holds its buffer
// for its whole life, so it is part of the memory per open stream; SSE
// events are far smaller.
const copyBufSize = 2 << 10

// upstreamBufSize is an upstream connection's read buffer;
// upstreamWriteBufSize the pooled buffer a request is written through.
const (
	upstreamBufSize      = 2 << 10
	upstreamWriteBufSize = 16 << 10
)

var copyBufs = sync.Pool{New: func() any { b := make([]byte, copyBufSize); return &b }}

func (bufferPool) Get() []byte  { return *copyBufs.Get().(*[]byte) }
func (bufferPool) Put(b []byte) { copyBufs.Put(&b) }

// exchange is the per-request state shared by ServeHTTP and the
// ReverseProxy hooks (all on the request's goroutine).
type exchange struct {
	ev        event.Event
	start     time.Time
	inject    bool
	capture   *captureReader
	model     string        // top-level "model" of the request body
	out       []byte        // the body sent upstream (nil: none)
	release   limit.Release // set when a limiter admitted the request
	streaming bool          // counted in llmtap_inflight_streams
}

type ctxKey struct{}

func newEventID() string {
	id, err := uuid.NewV7()
	if err != nil {
		id = uuid.New()
	}
	return id.String()
}

// ServeHTTP authenticates, forwards and captures one request.
//
// It stays small on purpose: its frame, ReverseProxy's and net/http's sit
// on the connection goroutine's stack for as long as a stream lasts, and
// the first flush (net/http writing the response head) must fit beside
// them in 8 KiB, or the runtime doubles that goroutine's stack to 16 KiB
// for the stream's lifetime. Admission and body work run in prepare, whose
// frame is gone by then. The margin is a few hundred bytes (go1.26): a new
// frame or wrapper on the streaming path must be checked with
// BenchmarkProxyStreamMemory (stack-KiB/stream about 11, not 19).
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	x := &exchange{start: time.Now()}
	inflight.Inc()
	defer func() {
		rec := recover()
		p.finish(x, r, rec != nil)
		inflight.Dec()
		if x.streaming {
			inflightStreams.Dec()
		}
		if rec != nil {
			if rec != http.ErrAbortHandler {
				p.log.Error("proxy: panic", "event_id", x.ev.ID, "panic", rec)
			}
			panic(rec)
		}
	}()
	if !p.prepare(w, r, x) {
		return
	}
	if d := p.cfg.ClientWriteTimeout; d > 0 {
		// net/http clears the write deadline after each response
		// (TestKeepAliveAfterStream), so the last one set here also covers
		// the server's final flush and does not leak into the next request.
		w = &deadlineWriter{ResponseWriter: w, rc: http.NewResponseController(w), d: d}
	}
	p.rp.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), ctxKey{}, x)))
}

// prepare starts x's event, authenticates, admits (limits, audit
// availability) and reads the body, answering the client itself when the
// request goes no further (it returns false then). On true, r carries the
// body to send upstream.
func (p *Proxy) prepare(w http.ResponseWriter, r *http.Request, x *exchange) bool {
	x.ev = event.Event{
		ID:             newEventID(),
		Time:           x.start.UTC(),
		Source:         event.SourceProxy,
		Method:         r.Method,
		Path:           r.URL.Path,
		ClientIP:       p.clientIP(r),
		RequestHeaders: p.captureHeaders(r.Header),
	}
	w.Header().Set(HeaderEventID, x.ev.ID)

	plain := presentedKey(r.Header)
	x.ev.KeyPrefix = keys.DisplayPrefix(plain)
	k, res := p.ks.Set().Lookup(plain)
	if res != keys.OK {
		x.ev.KeyID = k.ID // known but revoked or expired
		msg := "Invalid API key. Send it as 'Authorization: Bearer <key>' or 'X-API-Key: <key>'."
		switch {
		case plain == "":
			msg = "Missing API key. Send it as 'Authorization: Bearer <key>' or 'X-API-Key: <key>'."
		case res == keys.Revoked:
			msg = "This API key has been revoked."
		case res == keys.Expired:
			msg = "This API key has expired."
		}
		x.ev.Error = "auth: " + res.String()
		p.answer(w, x, http.StatusUnauthorized, msg, "invalid_request_error", "invalid_api_key")
		return false
	}
	x.ev.Consumer, x.ev.KeyID = k.Consumer, k.ID

	if !p.emit.Accepting() {
		w.Header().Set("Retry-After", "5")
		x.ev.Error = "audit delivery unavailable"
		p.answer(w, x, http.StatusServiceUnavailable, "The audit log is unavailable; requests are refused until it recovers.", "service_unavailable", "audit_unavailable")
		return false
	}

	if l := p.cfg.Limiter; l != nil {
		d, release, err := l.Admit(r.Context(), k.ID, p.cfg.Limits.LimitsFor(k.RPM, k.TPM))
		if err != nil && r.Context().Err() == nil {
			p.log.Debug("rate limit backend", "event_id", x.ev.ID, "err", err)
		}
		if !d.Allowed {
			if r.Context().Err() != nil {
				x.ev.Status, x.ev.Error = 499, "client disconnected"
				return false
			}
			x.ev.Status, x.ev.Error = d.Status(), "rate limit: "+d.Reason
			p.keepAnswer(x, w.Header(), limit.WriteRefusal(w, d))
			return false
		}
		x.release = release
		limit.Headers(w.Header(), d)
	}

	var rc *http.ResponseController
	if d := p.cfg.RequestBodyTimeout; d > 0 && r.Body != nil && r.Body != http.NoBody {
		rc = http.NewResponseController(w)
		if rc.SetReadDeadline(time.Now().Add(d)) != nil {
			rc = nil // not supported by this ResponseWriter
		}
	}
	body, err := p.readBody(r)
	if rc != nil {
		// Cleared at once: the server's background read (which notices a
		// client leaving) must not inherit the deadline.
		_ = rc.SetReadDeadline(time.Time{})
	}
	if err != nil {
		var ne net.Error
		if rc != nil && errors.As(err, &ne) && ne.Timeout() {
			// (The server cancels the request context on the read error.)
			x.ev.Error = "reading request body: timeout"
			w.Header().Set("Connection", "close")
			p.answer(w, x, http.StatusRequestTimeout,
				fmt.Sprintf("The request body was not received within %s.", p.cfg.RequestBodyTimeout),
				"invalid_request_error", "request_timeout")
			return false
		}
		if errors.Is(err, errTooLarge) {
			x.ev.Error = err.Error()
			p.answer(w, x, http.StatusRequestEntityTooLarge,
				fmt.Sprintf("Request body is larger than the limit of %d bytes.", p.cfg.MaxRequestBody),
				"invalid_request_error", "request_too_large")
			return false
		}
		if r.Context().Err() != nil {
			x.ev.Status, x.ev.Error = 499, "client disconnected"
			return false
		}
		x.ev.Error = "reading request body: " + err.Error()
		p.answer(w, x, http.StatusBadRequest, "Could not read the request body.", "invalid_request_error", "bad_request_body")
		return false
	}
	capped := min(int64(len(body)), p.cfg.CaptureLimit)
	if capped > 0 {
		x.ev.RequestBody = body[:capped:capped]
	}
	x.ev.RequestTruncated = int64(len(body)) > capped

	out := body
	if r.Method == http.MethodPost && len(body) > 0 {
		top, scanned := scanTopLevel(body)
		x.model = requestModel(body, top, scanned)
		if p.inject && injectPath(r.URL.Path) {
			if b, ok := injectUsageScanned(body, top, scanned); ok {
				out, x.inject, x.ev.UsageInjected = b, true, true
			}
		}
	}
	if len(out) == 0 {
		r.Body, r.ContentLength, r.GetBody = http.NoBody, 0, nil
	} else {
		x.out = out
		r.Body = io.NopCloser(bytes.NewReader(out))
		r.ContentLength = int64(len(out))
		r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(out)), nil }
	}
	r.TransferEncoding = nil
	r.Header.Del("Content-Length") // set from ContentLength by the transport
	return true
}

// deadlineWriter renews the connection's write deadline before writes and
// flushes, so a client that stops reading fails the write after d (at most
// d+d/8) instead of holding the stream (and the upstream generation)
// forever. The deadline is moved only when less than d is left, to
// now+d+d/8: a stream sets it about every d/8, not twice per event.
type deadlineWriter struct {
	http.ResponseWriter
	rc    *http.ResponseController
	d     time.Duration
	until time.Time // the deadline set last (zero: none)
}

func (w *deadlineWriter) renew() {
	now := time.Now()
	if w.until.Sub(now) >= w.d {
		return
	}
	until := now.Add(w.d + w.d/8)
	if w.rc.SetWriteDeadline(until) == nil {
		w.until = until
	}
}

func (w *deadlineWriter) Write(b []byte) (int, error) {
	w.renew()
	return w.ResponseWriter.Write(b)
}

func (w *deadlineWriter) FlushError() error {
	w.renew()
	return w.rc.Flush()
}

func (w *deadlineWriter) Flush() { _ = w.FlushError() }

func (w *deadlineWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// finish completes the event and emits it. aborted is true when the
// response was cut (ReverseProxy panicked with http.ErrAbortHandler).
func (p *Proxy) finish(x *exchange, r *http.Request, aborted bool) {
	ev := &x.ev
	if c := x.capture; c != nil {
		ev.ResponseBody = c.buf
		ev.ResponseTruncated = c.truncated
		if !c.ttft.IsZero() {
			ms := msSince(x.start, c.ttft)
			ev.TTFTMs = &ms
		}
		if aborted || r.Context().Err() != nil {
			if c.err != nil && r.Context().Err() == nil {
				ev.Error = "upstream response interrupted: " + c.err.Error()
			} else if !c.eof || aborted {
				ev.Status, ev.Error = 499, "client disconnected"
			}
		}
	} else if aborted && ev.Status == 0 {
		ev.Status, ev.Error = 499, "client disconnected"
	}
	if ev.Status == 0 {
		ev.Status = http.StatusBadGateway
	}
	ev.LatencyMs = msSince(x.start, time.Now())
	var prompt, completion, total int64
	var hasUsage bool
	if c := x.capture; c != nil && ev.ResponseEncoding == "" && ev.Status >= 200 && ev.Status < 300 {
		// Compressed bodies are not read: their tokens count as 0.
		b := c.usageBody()
		prompt, completion, total, hasUsage = limit.UsageCounts(b, ev.Stream)
		if hasUsage {
			if c.truncated {
				// The stored body lost its usage: pass it on as a hint.
				ev.Usage = &event.Usage{PromptTokens: &prompt, CompletionTokens: &completion, TotalTokens: &total}
			}
		}
	}
	if ev.RequestTruncated && ev.Model == "" {
		ev.Model = x.model
	}
	if x.release != nil {
		x.release(total)
	}
	p.observe(x, prompt, completion, hasUsage)
	p.emit.Emit(*ev)
}

func msSince(start, t time.Time) float64 {
	return float64(t.Sub(start).Microseconds()) / 1000
}

// answer writes the proxy's own OpenAI-style error response.
func (p *Proxy) answer(w http.ResponseWriter, x *exchange, status int, msg, typ, code string) {
	x.ev.Status = status
	p.keepAnswer(x, w.Header(), writeError(w, status, msg, typ, code))
}

// keepAnswer records a response the proxy wrote itself (401, 413, 429, 502,
// 503, …) in the event, so the audit record holds what the client got.
func (p *Proxy) keepAnswer(x *exchange, h http.Header, body []byte) {
	x.ev.ResponseHeaders = p.captureHeaders(h)
	x.ev.ResponseBody = body
}

type apiError struct {
	Error apiErrorBody `json:"error"`
}

type apiErrorBody struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    string  `json:"code"`
}

func writeError(w http.ResponseWriter, status int, msg, typ, code string) []byte {
	b, _ := json.Marshal(apiError{Error: apiErrorBody{Message: msg, Type: typ, Code: code}})
	b = append(b, '\n')
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(b)
	return b
}

// presentedKey returns the key from Authorization: Bearer, else X-API-Key.
func presentedKey(h http.Header) string {
	if a := h.Get("Authorization"); a != "" {
		if len(a) > 7 && strings.EqualFold(a[:7], "bearer ") {
			return strings.TrimSpace(a[7:])
		}
	}
	return strings.TrimSpace(h.Get("X-Api-Key"))
}

var errTooLarge = errors.New("request body too large")

// readBody reads the whole request body, refusing more than MaxRequestBody
// bytes (Content-Length first, then counting for chunked bodies).
func (p *Proxy) readBody(r *http.Request) ([]byte, error) {
	if r.Body == nil || r.Body == http.NoBody {
		return nil, nil
	}
	limit := p.cfg.MaxRequestBody
	if r.ContentLength > limit {
		return nil, errTooLarge
	}
	if r.ContentLength > 0 && r.ContentLength <= 1<<20 {
		// Larger declared lengths are read in chunks: a client declaring
		// 30 MB and trickling must not make the proxy allocate them.
		b := make([]byte, r.ContentLength)
		if _, err := io.ReadFull(r.Body, b); err != nil {
			return nil, err
		}
		return b, nil
	}
	b, err := readChunks(r.Body, limit)
	if err == nil && r.ContentLength > 0 && int64(len(b)) != r.ContentLength {
		return nil, io.ErrUnexpectedEOF
	}
	return b, err
}

// readChunks reads a body of unknown length in growing chunks (64 KiB to
// 4 MiB) joined once at the end, so that refusing an oversized body costs
// at most limit bytes, not the repeated copies of a doubling buffer.
func readChunks(rd io.Reader, limit int64) ([]byte, error) {
	var chunks [][]byte
	var total int64
	size := int64(64 << 10)
	for {
		buf := make([]byte, min(size, limit+1-total))
		n, err := fill(rd, buf)
		total += int64(n)
		if n > 0 {
			chunks = append(chunks, buf[:n])
		}
		if total > limit {
			return nil, errTooLarge
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err // io.ErrUnexpectedEOF included: a cut body
		}
		size = min(size*2, 4<<20)
	}
	switch len(chunks) {
	case 0:
		return nil, nil
	case 1:
		return chunks[0], nil
	}
	b := make([]byte, 0, total)
	for _, c := range chunks {
		b = append(b, c...)
	}
	return b, nil
}

// fill reads into b until it is full (err nil) or rd ends (io.EOF, or
// rd's error). Unlike io.ReadFull it keeps io.EOF and rd's own
// io.ErrUnexpectedEOF apart.
func fill(rd io.Reader, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := rd.Read(b[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// clientAddrHeaders are removed from every request sent upstream: a
// client could forge them (X-Forwarded-For is set by SetXForwarded).
var clientAddrHeaders = []string{"X-Real-Ip", "True-Client-Ip", "X-Client-Ip", "Cf-Connecting-Ip", "Fastly-Client-Ip", "X-Cluster-Client-Ip", "X-Original-Forwarded-For"}

// isIdentityHeader reports client headers that could pose as identity set
// by an authenticating gateway (Kong's key-auth set).
func isIdentityHeader(name string) bool {
	n := strings.ToLower(strings.ReplaceAll(name, "_", "-"))
	return strings.HasPrefix(n, "x-consumer-") || n == "x-credential-identifier" ||
		n == "x-anonymous-consumer" || n == "x-credential-username"
}

// rewrite runs after hop-by-hop headers (including those named in
// Connection) are removed from the outbound request, so nothing the client
// sends can remove what it sets.
func (p *Proxy) rewrite(pr *httputil.ProxyRequest) {
	x := pr.In.Context().Value(ctxKey{}).(*exchange)
	pr.SetURL(p.up)
	h := pr.Out.Header
	for name := range h {
		if isIdentityHeader(name) {
			delete(h, name)
		}
	}
	// Client-address headers other proxies trust; Rewrite already removed
	// Forwarded and X-Forwarded-*.
	for _, name := range clientAddrHeaders {
		h.Del(name)
	}
	h.Set(HeaderConsumer, x.ev.Consumer)
	h.Del("Authorization")
	h.Del("X-Api-Key")
	// The body is already read; do not make upstream answer 100-continue
	// (see CVE-2024-24791).
	h.Del("Expect")
	if p.upstreamAuth != "" {
		h.Set("Authorization", p.upstreamAuth)
	}
	pr.SetXForwarded()
}

func (p *Proxy) modifyResponse(res *http.Response) error {
	x := res.Request.Context().Value(ctxKey{}).(*exchange)
	now := time.Now()
	ttfb := msSince(x.start, now)
	x.ev.TTFBMs = &ttfb
	x.ev.Status = res.StatusCode
	res.Header.Del(HeaderEventID)
	if p.cfg.Limiter != nil {
		// The client sees this proxy's limits, not upstream's.
		for _, h := range rateLimitHeaders {
			res.Header.Del(h)
		}
	}
	x.ev.ResponseHeaders = p.captureHeaders(res.Header)
	enc := strings.ToLower(strings.TrimSpace(res.Header.Get("Content-Encoding")))
	if enc == "identity" {
		enc = ""
	}
	x.ev.ResponseEncoding = enc
	x.ev.RequestID = res.Header.Get("X-Request-Id")
	x.ev.Stream = isEventStream(res.Header.Get("Content-Type"))
	if x.ev.Stream && !x.streaming {
		x.streaming = true
		inflightStreams.Inc()
	}
	c := &captureReader{src: res.Body, limit: p.cfg.CaptureLimit, stream: x.ev.Stream}
	if res.ContentLength > 0 {
		c.buf = make([]byte, 0, min(res.ContentLength, p.cfg.CaptureLimit))
	}
	x.capture = c
	res.Body = c
	if x.inject && x.ev.Stream && res.StatusCode == http.StatusOK && enc == "" {
		res.Body = struct {
			io.Reader
			io.Closer
		}{newUsageStripper(c), c}
	}
	return nil
}

var rateLimitHeaders = []string{
	limit.HeaderLimitRequests, limit.HeaderRemainingRequests, limit.HeaderResetRequests,
	limit.HeaderLimitTokens, limit.HeaderRemainingTokens, limit.HeaderResetTokens,
}

func isEventStream(ct string) bool {
	if i := strings.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	return strings.EqualFold(strings.TrimSpace(ct), "text/event-stream")
}

func (p *Proxy) errorHandler(w http.ResponseWriter, r *http.Request, err error) {
	x := r.Context().Value(ctxKey{}).(*exchange)
	if r.Context().Err() != nil {
		x.ev.Status, x.ev.Error = 499, "client disconnected"
		return
	}
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		x.ev.Error = "upstream timeout: " + err.Error()
		p.answer(w, x, http.StatusGatewayTimeout, "The model server did not answer in time.", "upstream_error", "upstream_timeout")
		return
	}
	x.ev.Error = "upstream unavailable: " + err.Error()
	p.log.Warn("upstream unavailable", "event_id", x.ev.ID, "err", err)
	p.answer(w, x, http.StatusBadGateway, "The model server is unavailable.", "upstream_error", "upstream_unavailable")
}

// captureHeaders copies h for the event with secrets redacted.
func (p *Proxy) captureHeaders(h http.Header) map[string]string {
	if len(h) == 0 {
		return nil
	}
	m := make(map[string]string, len(h))
	for name, vals := range h {
		if p.redact[name] || p.redact[http.CanonicalHeaderKey(name)] {
			m[name] = Redacted
			continue
		}
		if len(vals) == 1 {
			m[name] = vals[0]
		} else {
			m[name] = strings.Join(vals, ", ")
		}
	}
	return m
}

// clientIP is the TCP peer, or, when the peer is a trusted proxy, the
// right-most address in X-Forwarded-For that is not a trusted proxy.
func (p *Proxy) clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	if len(p.trusted) == 0 {
		return host
	}
	addr, err := netip.ParseAddr(host)
	if err != nil || !p.isTrusted(addr) {
		return host
	}
	xff := r.Header.Values("X-Forwarded-For")
	for i := len(xff) - 1; i >= 0; i-- {
		parts := strings.Split(xff[i], ",")
		for j := len(parts) - 1; j >= 0; j-- {
			a, err := netip.ParseAddr(strings.TrimSpace(parts[j]))
			if err != nil {
				return host
			}
			a = a.Unmap()
			if !p.isTrusted(a) {
				return a.String()
			}
			host = a.String()
		}
	}
	return host
}

func (p *Proxy) isTrusted(a netip.Addr) bool {
	a = a.Unmap()
	for _, pf := range p.trusted {
		if pf.Contains(a) {
			return true
		}
	}
	return false
}

// captureReader tees the upstream response body into a capped buffer and
// notes the time of the first complete SSE event. Used on one goroutine.
type captureReader struct {
	src       io.ReadCloser
	buf       []byte
	limit     int64
	truncated bool
	stream    bool
	ttft      time.Time
	nl        int // SSE boundary state: 1 after '\n', 2 after "\n\r"
	err       error
	eof       bool
	tail      *limit.Tail // the end of the body past limit (for the usage)
	over      int64       // bytes past limit
}

// usageTail is how much of the end of a truncated response is kept for
// its usage.
const usageTail = 16 << 10

// usageBody returns the body to read the usage from: the capture, or when
// it was truncated the end of the body (the capture's end joined to the
// tail when they are contiguous).
func (c *captureReader) usageBody() []byte {
	if !c.truncated || c.tail == nil {
		return c.buf
	}
	t := c.tail.Bytes()
	if c.over > usageTail {
		return t
	}
	head := c.buf[max(0, len(c.buf)-usageTail):]
	return append(append(make([]byte, 0, len(head)+len(t)), head...), t...)
}

func (c *captureReader) Read(b []byte) (int, error) {
	n, err := c.src.Read(b)
	if n > 0 {
		chunk := b[:n]
		if room := c.limit - int64(len(c.buf)); room >= int64(n) {
			c.buf = append(c.buf, chunk...)
		} else {
			room = max(room, 0)
			c.buf = append(c.buf, chunk[:room]...)
			c.truncated = true
			if c.tail == nil {
				c.tail = limit.NewTail(usageTail)
			}
			c.tail.Write(chunk[room:])
			c.over += int64(n) - room
		}
		if c.stream && c.ttft.IsZero() {
			c.scanBoundary(chunk)
		}
	}
	if err == io.EOF {
		c.eof = true
	} else if err != nil && c.err == nil {
		c.err = err
	}
	return n, err
}

func (c *captureReader) scanBoundary(b []byte) {
	for _, ch := range b {
		switch {
		case ch == '\n' && c.nl > 0:
			c.ttft = time.Now()
			return
		case ch == '\n':
			c.nl = 1
		case ch == '\r' && c.nl == 1:
			c.nl = 2
		default:
			c.nl = 0
		}
	}
}

func (c *captureReader) Close() error { return c.src.Close() }
