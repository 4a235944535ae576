// Package receiver is ingest's HTTP API: it takes the proxy's NDJSON events
// (POST /v1/events) and Kong http-log payloads (POST /v1/kong), hands them to
// the pipeline, and answers only after the pipeline committed them.
//
// Routes:
//
//	POST /v1/events   NDJSON, one event.Event per line, optionally gzip
//	POST /v1/kong     Kong http-log: one JSON object or an array, optionally gzip
//	GET  /healthz     the process is up
//	GET  /readyz      the store is reachable and migrated
//
// Replies are JSON. 200 {"accepted":N,"rejected":M,"errors":[…]} means
// every entry is committed, as a record or as a reject (undecodable entries
// never fail the rest of a batch: Kong drops a whole batch on any non-2xx).
// 401 without the configured bearer token, 413 over the size limit (as sent
// or decompressed), 400 for an unreadable body, 405 for a wrong method, 415
// for an unknown Content-Encoding, and 503 with Retry-After while the store
// is unavailable or the pipeline is overloaded; the sender retries the same
// batch, which the store deduplicates by event id. statusOf is the one place
// that maps errors to statuses.
package receiver

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/llmtap/llmtap/ingest/decode"
	"github.com/llmtap/llmtap/ingest/event"
	"github.com/llmtap/llmtap/ingest/pipeline"
	"github.com/llmtap/llmtap/ingest/record"
	"github.com/llmtap/llmtap/ingest/store"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Ingester is what the receiver needs from the pipeline.
type Ingester interface {
	// Ingest commits events (decoding them) and rejects; see pipeline.Ingest.
	Ingest(ctx context.Context, events []event.Event, rejects []record.Reject) (pipeline.Result, error)
	// Ready reports whether the store is reachable and migrated.
	Ready(ctx context.Context) error
}

var requestsTotal = promauto.NewCounterVec(prometheus.CounterOpts{
	Name: "llmtap_ingest_http_requests_total",
	Help: "Requests to the ingest HTTP API, by route and status code.",
}, []string{"route", "code"})

// Receiver serves the ingest HTTP API. It is safe for concurrent use.
type Receiver struct {
	cfg       Config
	ing       Ingester
	logger    *slog.Logger
	tokenHash *[sha256.Size]byte // nil: no token required
	slots     chan struct{}      // one per POST in progress
}

// New returns a receiver feeding ing. Zero fields of cfg take their
// DefaultConfig values; call cfg.Validate first to reject bad settings.
func New(cfg Config, ing Ingester, logger *slog.Logger) *Receiver {
	def := DefaultConfig()
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = def.MaxBodyBytes
	}
	if cfg.MaxLineBytes <= 0 {
		cfg.MaxLineBytes = def.MaxLineBytes
	}
	if cfg.ReadTimeout <= 0 {
		cfg.ReadTimeout = def.ReadTimeout
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = def.RequestTimeout
	}
	if cfg.RetryAfter < time.Second {
		cfg.RetryAfter = def.RetryAfter
	}
	if cfg.MaxConcurrent <= 0 {
		cfg.MaxConcurrent = def.MaxConcurrent
	}
	if cfg.QueueWait <= 0 {
		cfg.QueueWait = def.QueueWait
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	r := &Receiver{cfg: cfg, ing: ing, logger: logger, slots: make(chan struct{}, cfg.MaxConcurrent)}
	if cfg.Token != "" {
		h := sha256.Sum256([]byte(cfg.Token))
		r.tokenHash = &h
	}
	return r
}

// Handler returns the API's routes.
func (r *Receiver) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/v1/events", r.route("events", http.MethodPost, r.guard(r.events)))
	mux.Handle("/v1/kong", r.route("kong", http.MethodPost, r.guard(r.kong)))
	mux.Handle("/healthz", r.route("healthz", http.MethodGet, r.healthz))
	mux.Handle("/readyz", r.route("readyz", http.MethodGet, r.readyz))
	mux.Handle("/", r.route("other", "", func(w http.ResponseWriter, _ *http.Request) error {
		return &httpError{status: http.StatusNotFound, msg: "not found"}
	}))
	return mux
}

// Server returns an http.Server for h with timeouts fit for this API:
// slow headers and idle connections are cut, bodies are bounded per request
// by ReadTimeout (set by the handler), the commit wait by RequestTimeout,
// and the whole exchange by a WriteTimeout just above the sum of both.
func (r *Receiver) Server(addr string, h http.Handler) *http.Server {
	return &http.Server{
		Addr:              addr,
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		WriteTimeout:      r.cfg.ReadTimeout + r.cfg.RequestTimeout + 10*time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(r.logger.Handler(), slog.LevelDebug),
	}
}

// handlerFunc serves one request; a returned error becomes the reply.
type handlerFunc func(w http.ResponseWriter, req *http.Request) error

// route wraps h with the method check, error replies and metrics. Handlers
// that return nil have replied 200.
func (r *Receiver) route(name, method string, h handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		var err error
		switch {
		case method == "", req.Method == method, method == http.MethodGet && req.Method == http.MethodHead:
			err = h(w, req)
		default:
			allow := method
			if method == http.MethodGet {
				allow += ", " + http.MethodHead
			}
			w.Header().Set("Allow", allow)
			err = &httpError{status: http.StatusMethodNotAllowed, msg: "method " + req.Method + " not allowed; use " + method}
		}
		code := http.StatusOK
		if err != nil {
			code = r.replyError(w, req, err)
		}
		requestsTotal.WithLabelValues(name, strconv.Itoa(code)).Inc()
	})
}

// guard checks the token, then runs h in one of the MaxConcurrent slots,
// waiting at most QueueWait for one (back-pressure before the body is read).
func (r *Receiver) guard(h handlerFunc) handlerFunc {
	return func(w http.ResponseWriter, req *http.Request) error {
		if err := r.authorize(req); err != nil {
			return err
		}
		select {
		case r.slots <- struct{}{}:
		default:
			t := time.NewTimer(r.cfg.QueueWait)
			defer t.Stop()
			select {
			case r.slots <- struct{}{}:
			case <-t.C:
				return errBusy
			case <-req.Context().Done():
				return fmt.Errorf("waiting for a slot: %w", req.Context().Err())
			}
		}
		defer func() { <-r.slots }()
		return h(w, req)
	}
}

// events handles POST /v1/events.
func (r *Receiver) events(w http.ResponseWriter, req *http.Request) error {
	body, err := r.readBody(w, req)
	if err != nil {
		return err
	}
	evs, rejects, err := decode.NDJSON(bytes.NewReader(body), r.cfg.MaxLineBytes)
	if err != nil {
		return &httpError{status: http.StatusBadRequest, msg: "unreadable NDJSON", err: err}
	}
	return r.ingest(w, req, evs, rejects)
}

// kong handles POST /v1/kong.
func (r *Receiver) kong(w http.ResponseWriter, req *http.Request) error {
	body, err := r.readBody(w, req)
	if err != nil {
		return err
	}
	evs, rejects := decode.Kong(body)
	return r.ingest(w, req, evs, rejects)
}

func (r *Receiver) ingest(w http.ResponseWriter, req *http.Request, evs []event.Event, rejects []record.Reject) error {
	ctx, cancel := context.WithTimeout(req.Context(), r.cfg.RequestTimeout)
	defer cancel()
	res, err := r.ing.Ingest(ctx, evs, rejects)
	if err != nil {
		return err
	}
	if res.Errors == nil {
		res.Errors = []string{}
	}
	writeJSON(w, http.StatusOK, reply{Accepted: res.Accepted, Rejected: res.Rejected, Errors: res.Errors})
	return nil
}

type reply struct {
	Accepted int      `json:"accepted"`
	Rejected int      `json:"rejected"`
	Errors   []string `json:"errors"`
}

func (r *Receiver) healthz(w http.ResponseWriter, _ *http.Request) error {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	return nil
}

func (r *Receiver) readyz(w http.ResponseWriter, req *http.Request) error {
	ctx, cancel := context.WithTimeout(req.Context(), 5*time.Second)
	defer cancel()
	if err := r.ing.Ready(ctx); err != nil {
		return &httpError{status: http.StatusServiceUnavailable, msg: "not ready", err: err}
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	return nil
}

// authorize checks the bearer token, if one is configured. The comparison
// is constant-time over SHA-256 digests, so neither content nor length leaks.
func (r *Receiver) authorize(req *http.Request) error {
	if r.tokenHash == nil {
		return nil
	}
	scheme, tok, ok := strings.Cut(req.Header.Get("Authorization"), " ")
	if ok && strings.EqualFold(scheme, "Bearer") {
		sum := sha256.Sum256([]byte(strings.TrimSpace(tok)))
		if subtle.ConstantTimeCompare(sum[:], r.tokenHash[:]) == 1 {
			return nil
		}
	}
	return errUnauthorized
}

var (
	errUnauthorized = &httpError{status: http.StatusUnauthorized, msg: "missing or invalid bearer token"}
	errTooLarge     = errors.New("body too large")
	errBusy         = errors.New("too many concurrent requests")
)

// readBody reads the whole body, bounded by MaxBodyBytes as sent and, with
// Content-Encoding gzip, after decompression too. The returned slice is the
// caller's.
func (r *Receiver) readBody(w http.ResponseWriter, req *http.Request) ([]byte, error) {
	limit := r.cfg.MaxBodyBytes
	if req.ContentLength > limit {
		return nil, fmt.Errorf("%w: Content-Length %d over %d bytes", errTooLarge, req.ContentLength, limit)
	}
	// Bound how long a slow sender may take; unsupported writers ignore it.
	_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(r.cfg.ReadTimeout))
	defer func() { _ = http.NewResponseController(w).SetReadDeadline(time.Time{}) }()

	raw := http.MaxBytesReader(w, req.Body, limit)
	var src io.Reader = raw
	sizeHint := req.ContentLength
	switch enc := strings.ToLower(strings.TrimSpace(req.Header.Get("Content-Encoding"))); enc {
	case "", "identity":
	case "gzip", "x-gzip":
		zr, err := gzip.NewReader(raw)
		if err != nil {
			return nil, bodyError("gzip header", err)
		}
		defer func() { _ = zr.Close() }()
		src = io.LimitReader(zr, limit+1) // one byte more tells "over the limit"
		sizeHint *= 4
	default:
		return nil, &httpError{status: http.StatusUnsupportedMediaType, msg: "unsupported Content-Encoding " + strconv.Quote(enc) + "; use gzip or none"}
	}

	var buf bytes.Buffer
	if sizeHint > 0 {
		buf.Grow(int(min(sizeHint, limit) + bytes.MinRead))
	}
	if _, err := buf.ReadFrom(src); err != nil {
		return nil, bodyError("reading body", err)
	}
	if int64(buf.Len()) > limit {
		return nil, fmt.Errorf("%w: decompressed body over %d bytes", errTooLarge, limit)
	}
	return buf.Bytes(), nil
}

// bodyError classifies a body read failure: over the limit (413) or
// unreadable (400).
func bodyError(what string, err error) error {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return fmt.Errorf("%w: over %d bytes", errTooLarge, mbe.Limit)
	}
	return &httpError{status: http.StatusBadRequest, msg: what + ": " + err.Error(), err: err}
}

// httpError is an error that carries its reply status.
type httpError struct {
	status int
	msg    string
	err    error
}

func (e *httpError) Error() string {
	if e.err != nil {
		return e.msg + ": " + e.err.Error()
	}
	return e.msg
}

func (e *httpError) Unwrap() error { return e.err }

// statusOf maps an error to the reply status; it is the only such mapping.
// Errors a retry may cure (store unavailable, pipeline overloaded or not
// running, timeouts) are 503, so senders keep the batch and retry it.
func statusOf(err error) int {
	var he *httpError
	switch {
	case errors.As(err, &he):
		return he.status
	case errors.Is(err, errTooLarge):
		return http.StatusRequestEntityTooLarge
	case errors.Is(err, store.ErrUnavailable),
		errors.Is(err, pipeline.ErrOverloaded),
		errors.Is(err, errBusy),
		errors.Is(err, pipeline.ErrClosed),
		errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, context.Canceled):
		return http.StatusServiceUnavailable
	default:
		return http.StatusInternalServerError
	}
}

// replyError writes err as a JSON error reply with the status statusOf
// gives. 5xx messages do not carry internal details (they are logged).
func (r *Receiver) replyError(w http.ResponseWriter, req *http.Request, err error) int {
	status := statusOf(err)
	msg := err.Error()
	switch {
	case status == http.StatusServiceUnavailable:
		w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(r.cfg.RetryAfter.Seconds()))))
		if req.URL.Path != "/readyz" {
			msg = "temporarily unavailable, retry later: " + shortCause(err)
		}
		r.logger.Debug("ingest request refused", "path", req.URL.Path, "status", status, "err", err)
	case status >= 500:
		r.logger.Error("ingest request failed", "path", req.URL.Path, "status", status, "err", err)
		msg = "internal error"
	case status == http.StatusUnauthorized:
		w.Header().Set("WWW-Authenticate", `Bearer realm="llmtap-ingest"`)
	}
	if len(msg) > 500 {
		msg = msg[:500] + "…"
	}
	writeJSON(w, status, map[string]string{"error": msg})
	return status
}

// shortCause names the retryable condition without internal details.
func shortCause(err error) string {
	switch {
	case errors.Is(err, store.ErrUnavailable):
		return "store unavailable"
	case errors.Is(err, pipeline.ErrOverloaded), errors.Is(err, errBusy):
		return "ingest overloaded"
	case errors.Is(err, pipeline.ErrClosed):
		return "ingest shutting down"
	default:
		return "timed out"
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
