// Package pipeline turns events into committed rows: it decodes each event
// (ingest/decode), merges the work of concurrent callers into batches (group
// commit), writes each batch with one store.Write, and answers every caller
// with the result of the write that holds its events.
//
// Both ingest paths use it: the HTTP receiver (POST /v1/events, /v1/kong)
// calls Ingest, and `llmtap serve` hands the proxy's events in-process to
// Consume, so proxy events are batched and committed the same way whichever
// way they travel.
//
// # Guarantees
//
// Ingest and Consume return nil only after the batch holding the caller's
// rows is committed. On error nothing or everything of the call may have been
// written; the store is idempotent on event id, so the caller retries the
// whole call. Entries that cannot be decoded are stored as rejects
// (llm_rejects) in the same write and never fail the rest of the call.
//
// # Back-pressure
//
// Memory is bounded by Config.MaxPending (events) and MaxPendingBytes
// (captured bytes) admitted and not yet answered. When a call does not fit,
// Ingest blocks until earlier batches commit (back-pressure, not growth), at
// most Config.MaxWait or until ctx ends, and then fails with ErrOverloaded,
// which a caller should treat like store.ErrUnavailable: retry later.
package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/llmtap/llmtap/ingest/event"
	"github.com/llmtap/llmtap/ingest/record"
	"github.com/llmtap/llmtap/ingest/store"
	"github.com/prometheus/client_golang/prometheus"
)

var (
	// ErrOverloaded is returned when the pipeline had no room for a call
	// within Config.MaxWait. It is retryable.
	ErrOverloaded = errors.New("pipeline overloaded")
	// ErrClosed is returned by calls before Start or after Close.
	ErrClosed = errors.New("pipeline not running")
)

// Limits of Result.Errors.
const (
	maxResultErrors = 20
	maxErrorLen     = 300
	maxReasonLen    = 1000
)

// DecodeFunc turns one event into one record; an error makes the event a
// reject with the error as its reason.
type DecodeFunc func(ev event.Event) (record.Record, error)

// Option customises a Pipeline beyond its Config.
type Option func(*Pipeline)

// WithDecoder replaces the decoder (default: decode.Decode).
func WithDecoder(fn DecodeFunc) Option { return func(p *Pipeline) { p.decode = fn } }

// WithRejectFunc applies fn to every reject before it is stored: the
// caller's and those made from events the decoder refused (e.g. redaction,
// so that llm_rejects holds no more secrets than llm_requests). fn works on
// the pipeline's own copy and must be goroutine-safe.
func WithRejectFunc(fn func(*record.Reject)) Option { return func(p *Pipeline) { p.onReject = fn } }

// Result is the outcome of one Ingest call.
type Result struct {
	Accepted int      // events decoded and committed
	Rejected int      // entries committed to llm_rejects
	Errors   []string // short reasons of the first rejects (at most 20)
}

// Pipeline decodes and group-commits events. Its methods are safe for
// concurrent use.
type Pipeline struct {
	cfg      Config
	store    store.Store
	logger   *slog.Logger
	decode   DecodeFunc
	onReject func(*record.Reject)
	gate     *gate

	mu      sync.RWMutex // guards state and sends on queue
	state   int          // stateNew, stateRunning, stateClosed
	queue   chan *request
	writers sync.WaitGroup

	lastLog    atomic.Int64 // unix nanos of the last write-error log line
	suppressed atomic.Int64 // write errors not logged since
}

const (
	stateNew = iota
	stateRunning
	stateClosed
)

// request is one caller's work travelling to a writer.
type request struct {
	recs    []record.Record
	rejects []record.Reject
	n, b    int64      // what the caller took from the gate
	done    chan error // buffered; the writer sends exactly once
	err     error      // the writer's answer, while salvaging
}

// New returns a pipeline writing to st. It does nothing until Start. The
// pipeline does not own st: Close flushes but does not close the store.
func New(cfg Config, st store.Store, logger *slog.Logger, opts ...Option) *Pipeline {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	p := &Pipeline{
		cfg:    cfg,
		store:  st,
		logger: logger,
		decode: defaultDecode,
	}
	for _, o := range opts {
		o(p)
	}
	return p
}

// Start validates the configuration and starts the writers. ctx is used only
// for starting; stop the pipeline with Close.
func (p *Pipeline) Start(ctx context.Context) error {
	if err := p.cfg.Validate(); err != nil {
		return err
	}
	if p.store == nil {
		return errors.New("pipeline: no store")
	}
	if p.decode == nil {
		return errors.New("pipeline: no decoder")
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("pipeline: start: %w", err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.state != stateNew {
		return errors.New("pipeline: already started")
	}
	p.gate = newGate(int64(p.cfg.MaxPending), p.cfg.MaxPendingBytes)
	p.queue = make(chan *request, 1024)
	p.state = stateRunning
	for range p.cfg.Writers {
		p.writers.Add(1)
		go p.writer()
	}
	return nil
}

// Close stops accepting work, writes everything already admitted and waits
// for the writers, at most until ctx ends. It is idempotent; calls after the
// first wait for the same flush.
func (p *Pipeline) Close(ctx context.Context) error {
	p.mu.Lock()
	if p.state == stateRunning {
		close(p.queue)
	}
	p.state = stateClosed
	p.mu.Unlock()

	done := make(chan struct{})
	go func() { p.writers.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("pipeline: close: %w", ctx.Err())
	}
}

// Ready reports whether the store is reachable and migrated.
func (p *Pipeline) Ready(ctx context.Context) error {
	p.mu.RLock()
	running := p.state == stateRunning
	p.mu.RUnlock()
	if !running {
		return ErrClosed
	}
	if err := p.store.Ping(ctx); err != nil {
		return fmt.Errorf("pipeline: store: %w", err)
	}
	return nil
}

// Consume implements event.Consumer for in-process producers (the proxy's
// shipper in `llmtap serve`): nil means the events are committed, as records
// or as rejects.
func (p *Pipeline) Consume(ctx context.Context, events []event.Event) error {
	_, err := p.Ingest(ctx, events, nil)
	return err
}

var _ event.Consumer = (*Pipeline)(nil)

// Ingest decodes events, stores them with rejects (entries the caller
// already failed to parse) in the next batch, and returns after that batch
// is committed.
//
// Events whose decoding fails become rejects with the decoder's error as the
// reason and the event's JSON as the payload. The caller keeps ownership of
// events and rejects but must not modify them until Ingest returns. When ctx
// ends first, Ingest returns ctx's error and the write may still happen (a
// retry is deduplicated by the store); until that write ends the pipeline
// still reads the rejects' Payload bytes (not the events), so a caller that
// gave up must not reuse those buffers.
//
// Errors: ErrClosed, ErrOverloaded (no room within MaxWait), ctx's error, or
// the store's error (wrapping store.ErrUnavailable when a retry may cure it).
func (p *Pipeline) Ingest(ctx context.Context, events []event.Event, rejects []record.Reject) (Result, error) {
	if len(events) == 0 && len(rejects) == 0 {
		return Result{}, p.checkRunning()
	}
	if err := p.checkRunning(); err != nil {
		return Result{}, err
	}

	n, b := weigh(events, rejects)
	if err := p.admit(ctx, n, b); err != nil {
		return Result{}, err
	}

	req := &request{n: n, b: b, done: make(chan error, 1)}
	req.recs = make([]record.Record, 0, len(events))
	req.rejects = rejects
	now := time.Now().UTC()
	extra := false
	for i := range events {
		rec, err := p.decode(events[i])
		if err != nil {
			if !extra { // never append to the caller's slice
				req.rejects = append(make([]record.Reject, 0, len(rejects)+1), rejects...)
				extra = true
			}
			req.rejects = append(req.rejects, eventReject(&events[i], err, now))
			continue
		}
		req.recs = append(req.recs, rec)
	}
	if p.onReject != nil && len(req.rejects) > 0 {
		if !extra {
			req.rejects = append([]record.Reject(nil), rejects...)
		}
		for i := range req.rejects {
			p.onReject(&req.rejects[i])
		}
	}

	if err := p.enqueue(req); err != nil {
		p.gate.release(n, b)
		return Result{}, err
	}
	select {
	case err := <-req.done:
		if err != nil {
			return Result{}, err
		}
	case <-ctx.Done():
		return Result{}, fmt.Errorf("pipeline: waiting for commit: %w", ctx.Err())
	}
	return result(req), nil
}

func (p *Pipeline) checkRunning() error {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.state != stateRunning {
		return ErrClosed
	}
	return nil
}

// admit waits for room in the gate, at most MaxWait.
func (p *Pipeline) admit(ctx context.Context, n, b int64) error {
	wctx, cancel := context.WithTimeout(ctx, p.cfg.MaxWait)
	defer cancel()
	err := p.gate.acquire(wctx, n, b)
	if err == nil {
		return nil
	}
	if ctx.Err() != nil { // the caller gave up
		return fmt.Errorf("pipeline: waiting for room: %w", ctx.Err())
	}
	overloadedTotal.Inc()
	return fmt.Errorf("%w: %d events pending, waited %s", ErrOverloaded, p.cfg.MaxPending, p.cfg.MaxWait)
}

func (p *Pipeline) enqueue(req *request) error {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.state != stateRunning {
		return ErrClosed
	}
	p.queue <- req // writers drain the queue until it is closed, under p.mu
	return nil
}

// weigh estimates what a call costs while pending: one unit per entry, and
// the bytes it carries.
func weigh(events []event.Event, rejects []record.Reject) (n, b int64) {
	n = int64(len(events) + len(rejects))
	for i := range events {
		e := &events[i]
		b += int64(len(e.RequestBody)+len(e.ResponseBody)) + 512
	}
	for i := range rejects {
		b += int64(len(rejects[i].Payload)) + 128
	}
	return n, b
}

func eventReject(ev *event.Event, err error, now time.Time) record.Reject {
	payload, merr := json.Marshal(ev)
	if merr != nil { // cannot happen for event.Event; keep what we can
		payload = []byte(ev.ID)
	}
	reason := err.Error()
	if len(reason) > maxReasonLen {
		reason = reason[:maxReasonLen]
	}
	src := ev.Source
	if src == "" {
		src = "unknown"
	}
	return record.Reject{ReceivedAt: now, Source: src, Reason: reason, Payload: payload}
}

func result(req *request) Result {
	r := Result{Accepted: len(req.recs), Rejected: len(req.rejects), Errors: []string{}}
	for i := range req.rejects {
		if i == maxResultErrors {
			r.Errors = append(r.Errors, fmt.Sprintf("… and %d more", len(req.rejects)-i))
			break
		}
		reason := req.rejects[i].Reason
		if len(reason) > maxErrorLen {
			reason = reason[:maxErrorLen] + "…"
		}
		r.Errors = append(r.Errors, reason)
	}
	return r
}

// writer collects requests into batches and writes them until the queue is
// closed and drained.
func (p *Pipeline) writer() {
	defer p.writers.Done()
	var batch []*request
	for first := range p.queue {
		batch = append(batch[:0], first)
		rows := first.rows()
		if rows < p.cfg.BatchSize {
			rows = p.collect(&batch, rows)
		}
		p.write(batch, rows)
		clear(batch)
	}
}

// collect adds queued requests to batch until it holds BatchSize rows, the
// group-commit window BatchAge has passed, or the queue is closed.
func (p *Pipeline) collect(batch *[]*request, rows int) int {
	var timeout <-chan time.Time
	if p.cfg.BatchAge > 0 {
		t := time.NewTimer(p.cfg.BatchAge)
		defer t.Stop()
		timeout = t.C
	}
	for rows < p.cfg.BatchSize {
		if timeout == nil { // no window: take only what is queued now
			select {
			case r, ok := <-p.queue:
				if !ok {
					return rows
				}
				*batch = append(*batch, r)
				rows += r.rows()
			default:
				return rows
			}
			continue
		}
		select {
		case r, ok := <-p.queue:
			if !ok {
				return rows
			}
			*batch = append(*batch, r)
			rows += r.rows()
		case <-timeout:
			return rows
		}
	}
	return rows
}

func (r *request) rows() int { return len(r.recs) + len(r.rejects) }

// write commits one batch and answers its callers.
//
// When the store refuses the batch with an error a retry cannot cure (not
// store.ErrUnavailable), one bad row must not fail everyone: each caller's
// work is written alone, and within a caller the records the store refuses
// one by one (found by bisection) become rejects with the store's reason
// and the record as JSON payload, so nothing is lost and nothing blocks.
// At most maxRefused records per batch are turned into rejects; beyond
// that the failure is taken as systemic (schema, permissions) and returned.
func (p *Pipeline) write(batch []*request, rows int) {
	recs, rejects := merge(batch, rows)
	err := p.storeWrite(recs, rejects)
	if err == nil {
		count(recs, rejects)
		p.answer(batch, nil)
		return
	}
	if !permanent(err) {
		p.answer(batch, err)
		return
	}
	budget := maxRefused
	for _, r := range batch {
		if budget < 0 { // systemic: stop trying
			r.err = err
			continue
		}
		r.err = p.salvage(r, &budget, len(batch) > 1)
	}
	for _, r := range batch {
		r.done <- r.err
		p.gate.release(r.n, r.b)
	}
}

// maxRefused bounds the records per batch that salvage turns into rejects.
const maxRefused = 10

func (p *Pipeline) answer(batch []*request, err error) {
	for _, r := range batch {
		r.done <- err
		p.gate.release(r.n, r.b)
	}
}

// storeWrite is one timed, counted store.Write.
func (p *Pipeline) storeWrite(recs []record.Record, rejects []record.Reject) error {
	if len(recs) == 0 && len(rejects) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), p.cfg.WriteTimeout)
	start := time.Now()
	err := p.store.Write(ctx, recs, rejects)
	cancel()
	writeSeconds.Observe(time.Since(start).Seconds())
	batchRows.Observe(float64(len(recs) + len(rejects)))
	if err == nil {
		return nil
	}
	writeErrors.Inc()
	if errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, store.ErrUnavailable) {
		err = fmt.Errorf("%w: %w", store.ErrUnavailable, err)
	}
	err = fmt.Errorf("pipeline: store write of %d rows: %w", len(recs)+len(rejects), err)
	p.logWriteError(err)
	return err
}

// permanent reports whether a store error is one a retry would repeat.
func permanent(err error) bool {
	return !errors.Is(err, store.ErrUnavailable) && !errors.Is(err, context.DeadlineExceeded) &&
		!errors.Is(err, context.Canceled)
}

// salvage writes one caller's work after its batch was refused; see write.
// It updates r's rows to what was committed (refused records move to
// r.rejects). budget counts down the refusals left; below 0 means systemic.
func (p *Pipeline) salvage(r *request, budget *int, retryWhole bool) error {
	if retryWhole {
		err := p.storeWrite(r.recs, r.rejects)
		if err == nil {
			count(r.recs, r.rejects)
			return nil
		}
		if !permanent(err) {
			return err
		}
	}
	refused, err := p.bisect(r.recs, budget)
	if err != nil {
		return err
	}
	if len(refused) == 0 { // the records went in; the rejects were refused
		err := p.storeWrite(nil, r.rejects)
		if err == nil {
			count(r.recs, r.rejects)
		}
		return err
	}
	now := time.Now().UTC()
	bad := make(map[int]bool, len(refused))
	rejects := append(make([]record.Reject, 0, len(r.rejects)+len(refused)), r.rejects...)
	for _, f := range refused {
		bad[f.i] = true
		payload, merr := json.Marshal(r.recs[f.i])
		if merr != nil {
			payload = []byte(r.recs[f.i].EventID)
		}
		reason := "store refused the record: " + f.err.Error()
		if len(reason) > maxReasonLen {
			reason = reason[:maxReasonLen]
		}
		rejects = append(rejects, record.Reject{ReceivedAt: now, Source: r.recs[f.i].Source, Reason: reason, Payload: payload})
	}
	if err := p.storeWrite(nil, rejects); err != nil {
		return err
	}
	kept := make([]record.Record, 0, len(r.recs)-len(refused))
	for i := range r.recs {
		if !bad[i] {
			kept = append(kept, r.recs[i])
		}
	}
	r.recs, r.rejects = kept, rejects
	count(r.recs, r.rejects)
	p.logger.Warn("store refused records; kept them as rejects", "records", len(refused), "err", refused[0].err)
	return nil
}

type refusal struct {
	i   int // index in the request's records
	err error
}

// bisect writes recs, splitting the slice while the store refuses it
// permanently; records refused alone are returned (indexes offset by the
// slice's position). Budget exhausted or a retryable error ends it with an
// error.
func (p *Pipeline) bisect(recs []record.Record, budget *int) ([]refusal, error) {
	var walk func(lo, hi int) ([]refusal, error)
	walk = func(lo, hi int) ([]refusal, error) {
		if lo == hi {
			return nil, nil
		}
		err := p.storeWrite(recs[lo:hi], nil)
		if err == nil {
			return nil, nil
		}
		if !permanent(err) {
			return nil, err
		}
		if hi-lo == 1 {
			*budget--
			if *budget < 0 {
				return nil, err
			}
			return []refusal{{i: lo, err: err}}, nil
		}
		mid := (lo + hi) / 2
		a, err := walk(lo, mid)
		if err != nil {
			return nil, err
		}
		b, err := walk(mid, hi)
		if err != nil {
			return nil, err
		}
		return append(a, b...), nil
	}
	return walk(0, len(recs))
}

// merge concatenates the batch's rows, dropping records whose event id
// already occurs earlier in the batch (the same event sent twice at once).
func merge(batch []*request, rows int) ([]record.Record, []record.Reject) {
	if len(batch) == 1 && !hasDup(batch[0].recs) {
		return batch[0].recs, batch[0].rejects
	}
	recs := make([]record.Record, 0, rows)
	var rejects []record.Reject
	seen := make(map[string]struct{}, rows)
	for _, r := range batch {
		for i := range r.recs {
			id := r.recs[i].EventID
			if _, dup := seen[id]; dup {
				continue
			}
			seen[id] = struct{}{}
			recs = append(recs, r.recs[i])
		}
		rejects = append(rejects, r.rejects...)
	}
	return recs, rejects
}

func hasDup(recs []record.Record) bool {
	if len(recs) < 2 {
		return false
	}
	seen := make(map[string]struct{}, len(recs))
	for i := range recs {
		if _, dup := seen[recs[i].EventID]; dup {
			return true
		}
		seen[recs[i].EventID] = struct{}{}
	}
	return false
}

// count updates the per-source counters after a commit, one Add per run of
// equal sources (batches are mostly one source).
func count(recs []record.Record, rejects []record.Reject) {
	runs(len(recs), func(i int) string { return recs[i].Source }, acceptedTotal)
	runs(len(rejects), func(i int) string { return rejects[i].Source }, rejectedTotal)
}

func runs(n int, source func(int) string, vec *prometheus.CounterVec) {
	var last string
	var c float64
	for i := range n {
		if s := source(i); s != last {
			if c > 0 {
				vec.WithLabelValues(last).Add(c)
			}
			last, c = s, 0
		}
		c++
	}
	if c > 0 {
		vec.WithLabelValues(last).Add(c)
	}
}

// logWriteError logs at most one line per 5 s; the metric counts them all.
func (p *Pipeline) logWriteError(err error) {
	now := time.Now().UnixNano()
	last := p.lastLog.Load()
	if now-last < int64(5*time.Second) || !p.lastLog.CompareAndSwap(last, now) {
		p.suppressed.Add(1)
		return
	}
	p.logger.Warn("store write failed; callers get a retryable error",
		"err", err, "suppressed_since_last", p.suppressed.Swap(0))
}
