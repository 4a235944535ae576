package sim

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Server is the simulator; it implements http.Handler. All methods are safe
// for concurrent use.
type Server struct {
	cfg     Config
	keyHash [sha256.Size]byte
	hasKey  bool
	created int64 // model creation time reported by /v1/models

	rngMu sync.Mutex
	rng   *mrand.Rand

	inFlight, started, cancelled, completed, faulted atomic.Int64
	m                                                metrics
}

// New returns a Server for cfg; zero fields get their defaults. New panics if
// cfg is invalid: call cfg.Validate first to get an error instead.
func New(cfg Config) *Server {
	if err := cfg.Validate(); err != nil {
		panic(err)
	}
	cfg = cfg.withDefaults()
	s := &Server{
		cfg:     cfg,
		created: time.Now().Unix(),
		rng:     mrand.New(mrand.NewPCG(uint64(cfg.Seed), 0x6c6c6d746170)),
	}
	if cfg.APIKey != "" {
		s.keyHash = sha256.Sum256([]byte(cfg.APIKey))
		s.hasKey = true
	}
	s.m.init()
	return s
}

// Config returns the effective configuration (defaults applied).
func (s *Server) Config() Config { return s.cfg }

// InFlight returns the number of generations running now.
func (s *Server) InFlight() int64 { return s.inFlight.Load() }

// Started returns the number of generations started. At rest,
// Started == Completed + Cancelled + Faulted.
func (s *Server) Started() int64 { return s.started.Load() }

// Cancelled returns the number of generations stopped because the client or
// the request context went away.
func (s *Server) Cancelled() int64 { return s.cancelled.Load() }

// Completed returns the number of generations that ran to their end
// (finish_reason sent, or the full non-stream answer written).
func (s *Server) Completed() int64 { return s.completed.Load() }

// Faulted returns the number of generations ended by an injected mid-stream
// error or abrupt close.
func (s *Server) Faulted() int64 { return s.faulted.Load() }

// ServeHTTP routes like vLLM's OpenAI server: the API-key check runs first
// for /v1 paths, unknown paths get FastAPI's {"detail":"Not Found"}.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Server", "uvicorn")
	if s.hasKey && r.Method != http.MethodOptions && strings.HasPrefix(r.URL.Path, "/v1") && !s.authorized(r) {
		writeRaw(w, http.StatusUnauthorized, []byte(`{"error":"Unauthorized"}`))
		return
	}
	type route struct {
		methods string
		h       func(http.ResponseWriter, *http.Request)
	}
	var rt route
	switch r.URL.Path {
	case "/v1/chat/completions":
		rt = route{"POST", s.handleChat}
	case "/v1/completions":
		rt = route{"POST", s.handleCompletions}
	case "/v1/embeddings":
		rt = route{"POST", s.handleEmbeddings}
	case "/v1/responses":
		rt = route{"POST", s.handleResponses}
	case "/v1/models":
		rt = route{"GET", s.handleModels}
	case "/health":
		rt = route{"GET", s.handleHealth}
	case "/ping":
		rt = route{"GET POST", s.handleHealth}
	case "/metrics":
		rt = route{"GET", s.handleMetrics}
	case "/version":
		rt = route{"GET", s.handleVersion}
	case "/tokenize":
		rt = route{"POST", s.handleTokenize}
	default:
		writeRaw(w, http.StatusNotFound, []byte(`{"detail":"Not Found"}`))
		return
	}
	if !strings.Contains(rt.methods, r.Method) || r.Method == "" {
		w.Header().Set("Allow", strings.ReplaceAll(rt.methods, " ", ", "))
		writeRaw(w, http.StatusMethodNotAllowed, []byte(`{"detail":"Method Not Allowed"}`))
		return
	}
	rt.h(w, r)
}

// authorized checks "Authorization: Bearer <key>" (scheme case-insensitive)
// by comparing SHA-256 digests in constant time, like vLLM.
func (s *Server) authorized(r *http.Request) bool {
	h := r.Header.Get("Authorization")
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	d := sha256.Sum256([]byte(strings.TrimSpace(tok)))
	return subtle.ConstantTimeCompare(d[:], s.keyHash[:]) == 1
}

// ---- responses and errors ----

func writeRaw(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// marshal encodes v compactly without HTML escaping (like pydantic).
func marshal(v any) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		panic(fmt.Errorf("sim: marshal %T: %w", v, err))
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	writeRaw(w, status, marshal(v))
}

// errorType names vLLM's error types by status.
func errorType(status int) string {
	switch status {
	case 400:
		return "BadRequestError"
	case 401:
		return "AuthenticationError"
	case 404:
		return "NotFoundError"
	case 413:
		return "RequestEntityTooLargeError"
	case 422:
		return "UnprocessableEntityError"
	case 429:
		return "RateLimitError"
	case 500:
		return "InternalServerError"
	case 501:
		return "NotImplementedError"
	case 503:
		return "ServiceUnavailableError"
	}
	t := strings.ReplaceAll(http.StatusText(status), " ", "")
	if t == "" {
		t = "Unknown"
	}
	return t + "Error"
}

// ErrorBody is vLLM's (>= 0.10.1) error envelope.
type ErrorBody struct {
	Error ErrorInfo `json:"error"`
}

// ErrorInfo is the inner object of ErrorBody.
type ErrorInfo struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    int     `json:"code"`
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, ErrorBody{ErrorInfo{Message: msg, Type: errorType(status), Code: status}})
}

// streamErrorEvent is the SSE event vLLM sends when generation fails after the
// stream started: json.dumps style (spaces after ':' and ','), then [DONE].
func streamErrorEvent(status int, msg string) []byte {
	b := []byte(`data: {"error": {"message": `)
	b = appendJSONString(b, msg)
	b = append(b, `, "type": `...)
	b = appendJSONString(b, errorType(status))
	b = append(b, `, "param": null, "code": `...)
	b = strconv.AppendInt(b, int64(status), 10)
	return append(b, "}}\n\ndata: [DONE]\n\n"...)
}

func notFoundModel(w http.ResponseWriter, model string) {
	writeError(w, http.StatusNotFound, fmt.Sprintf("The model `%s` does not exist.", model))
}

// readBody reads and decodes the JSON body into v, answering 400/413 itself.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request, v any) bool {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("Request body exceeds %d bytes.", s.cfg.MaxBodyBytes))
			return false
		}
		writeError(w, http.StatusBadRequest, "Could not read the request body: "+err.Error())
		return false
	}
	if err := json.Unmarshal(body, v); err != nil {
		writeError(w, http.StatusBadRequest, "JSON decode error: "+err.Error())
		return false
	}
	return true
}

// checkModel answers 404 for a model other than the served one.
func (s *Server) checkModel(w http.ResponseWriter, model string) bool {
	if model != "" && model != s.cfg.Model {
		notFoundModel(w, model)
		return false
	}
	return true
}

func randomHex() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// requestID is the id suffix: the client's X-Request-Id when it is sane (vLLM
// embeds it), else 32 random hex digits.
func requestID(r *http.Request) string {
	id := r.Header.Get("X-Request-Id")
	if id == "" || len(id) > 128 {
		return randomHex()
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c == '-' || c == '_' || c == '.' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
			return randomHex()
		}
	}
	return id
}

// ---- per-request plan: delays, length, faults ----

type fault int

const (
	faultNone fault = iota
	faultError
	faultMidStream
	faultClose
)

// faultAfter is how many visible tokens a stream sends before a mid-stream
// fault (fewer when the answer is shorter).
const faultAfter = 3

type plan struct {
	tokens         int
	ttft, interval time.Duration
	fault          fault
	status         int
}

// plan reads the X-Sim-* headers and rolls the fault dice. A bad header is a
// 400 error (returned as the message).
func (s *Server) plan(r *http.Request, stream bool) (plan, string) {
	p := plan{tokens: s.cfg.Tokens, ttft: s.cfg.TTFT, interval: s.cfg.TokenInterval, status: s.cfg.ErrorStatus}
	h := r.Header
	if v := h.Get("X-Sim-Tokens"); v != "" {
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil || n < 0 || n > 1_000_000 {
			return p, "invalid X-Sim-Tokens: " + strconv.Quote(v)
		}
		p.tokens = n
	}
	for _, d := range []struct {
		name string
		dst  *time.Duration
	}{{"X-Sim-TTFT", &p.ttft}, {"X-Sim-Token-Interval", &p.interval}} {
		if v := h.Get(d.name); v != "" {
			x, err := time.ParseDuration(strings.TrimSpace(v))
			if err != nil || x < 0 {
				return p, "invalid " + d.name + ": " + strconv.Quote(v)
			}
			*d.dst = x
		}
	}
	if v := h.Get("X-Sim-Status"); v != "" {
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil || n < 400 || n > 599 {
			return p, "invalid X-Sim-Status: " + strconv.Quote(v)
		}
		p.status = n
	}
	if v := h.Get("X-Sim-Fault"); v != "" {
		switch strings.ToLower(strings.TrimSpace(v)) {
		case "none":
		case "error":
			p.fault = faultError
		case "midstream-error":
			p.fault = faultMidStream
		case "close":
			p.fault = faultClose
		default:
			return p, "invalid X-Sim-Fault: " + strconv.Quote(v)
		}
		return p, ""
	}
	if s.cfg.ErrorRate == 0 && s.cfg.MidStreamErrorRate == 0 && s.cfg.AbruptCloseRate == 0 {
		return p, ""
	}
	s.rngMu.Lock()
	defer s.rngMu.Unlock()
	switch {
	case s.cfg.ErrorRate > 0 && s.rng.Float64() < s.cfg.ErrorRate:
		p.fault = faultError
	case stream && s.cfg.MidStreamErrorRate > 0 && s.rng.Float64() < s.cfg.MidStreamErrorRate:
		p.fault = faultMidStream
	case stream && s.cfg.AbruptCloseRate > 0 && s.rng.Float64() < s.cfg.AbruptCloseRate:
		p.fault = faultClose
	}
	return p, ""
}

// injectedError answers the "error" fault.
func injectedError(w http.ResponseWriter, status int) {
	writeError(w, status, "Simulated error injected by vllm-sim.")
}

// ---- generation lifecycle ----

type outcome int

const (
	outcomeCompleted outcome = iota
	outcomeCancelled
	outcomeFaulted
)

// gen tracks one generation: pacing, counting, writing.
type gen struct {
	s       *Server
	ctx     context.Context
	w       http.ResponseWriter
	rc      *http.ResponseController
	timer   *time.Timer
	start   time.Time
	first   time.Time // first token sent
	prompt  int
	tokens  int // generated tokens so far (visible + EOS)
	finish  string
	outcome outcome
	buf     []byte
}

func (s *Server) begin(w http.ResponseWriter, r *http.Request, promptTokens int) *gen {
	s.started.Add(1)
	s.inFlight.Add(1)
	s.m.running.Add(1)
	return &gen{s: s, ctx: r.Context(), w: w, rc: http.NewResponseController(w), start: time.Now(), prompt: promptTokens, outcome: outcomeCompleted}
}

// end records the outcome; call it exactly once (deferred).
func (g *gen) end() {
	s := g.s
	if g.timer != nil {
		g.timer.Stop()
	}
	s.inFlight.Add(-1)
	s.m.running.Add(-1)
	switch g.outcome {
	case outcomeCompleted:
		s.completed.Add(1)
	case outcomeCancelled:
		s.cancelled.Add(1)
		g.finish = "abort"
	case outcomeFaulted:
		s.faulted.Add(1)
		g.finish = "error"
	}
	s.m.record(g)
}

// wait sleeps d unless the request context ends first; false means cancelled.
func (g *gen) wait(d time.Duration) bool {
	if d <= 0 {
		if g.ctx.Err() != nil {
			g.outcome = outcomeCancelled
			return false
		}
		return true
	}
	if g.timer == nil {
		g.timer = time.NewTimer(d)
	} else {
		g.timer.Reset(d)
	}
	select {
	case <-g.ctx.Done():
		g.timer.Stop()
		g.outcome = outcomeCancelled
		return false
	case <-g.timer.C:
		return true
	}
}

// startStream writes the SSE headers at once (like uvicorn does before the
// first token).
func (g *gen) startStream() bool {
	h := g.w.Header()
	h.Set("Content-Type", "text/event-stream; charset=utf-8")
	g.w.WriteHeader(http.StatusOK)
	return g.flush()
}

// send writes b and flushes it; false means the client is gone.
func (g *gen) send(b []byte) bool {
	if _, err := g.w.Write(b); err != nil {
		g.outcome = outcomeCancelled
		return false
	}
	return g.flush()
}

func (g *gen) flush() bool {
	if err := g.rc.Flush(); err != nil && !errors.Is(err, http.ErrNotSupported) {
		g.outcome = outcomeCancelled
		return false
	}
	return true
}

func (g *gen) markToken() {
	if g.first.IsZero() {
		g.first = time.Now()
	}
	g.tokens++
}

// abort cuts the connection (abrupt-close fault). It does not return.
func (g *gen) abort() {
	g.outcome = outcomeFaulted
	panic(http.ErrAbortHandler)
}

// budget decides how many visible tokens to send for an answer of n tokens
// under maxTokens (nil: no cap) and whether an EOS token ends it: an answer
// that fits gets n visible tokens plus EOS (finish "stop"); one that does not
// is cut at maxTokens (finish "length").
func budget(n int, maxTokens *int) (visible int, eos bool) {
	if maxTokens != nil && *maxTokens <= n {
		return *maxTokens, false
	}
	return n, true
}
