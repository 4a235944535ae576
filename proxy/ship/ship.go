// Package ship moves the proxy's audit events to the next hop (an
// event.Consumer: ingest over HTTP in `llmtap proxy`, the in-process ingest
// pipeline in `llmtap serve`) in batches, without ever making a client
// request wait on it, and without losing an event that was handed to it
// while the next hop is down: such events wait in a bounded disk spool.
//
// # Delivery contract
//
// Delivery is at-least-once: an event passed to Emit before Close is either
// consumed by the next hop (its Consume returned nil) or, when Close
// returns, written and fsync'ed to the spool, from where the next Shipper
// started on the same directory replays it. Duplicates happen (a batch
// whose answer was lost, a spool segment partly replayed before a restart)
// and are harmless because ingest is idempotent on Event.ID. The only
// exceptions are counted in llmtap_events_dropped_total (by reason) and
// logged: the spool is full or unwritable, both in-memory queues are full,
// Emit after Close, or ingest permanently refused a single event.
//
// # How events flow
//
//   - Emit puts the event on a bounded in-memory queue (QueueSize) and
//     returns; it never blocks and never does I/O. When that queue is full
//     (the next hop is slow), the event goes to an equally bounded overflow
//     queue that a spool writer drains to disk.
//   - The sender takes events from the queue into batches bounded by
//     BatchSize events, BatchBytes of bodies, and BatchAge of waiting. While
//     the next hop is healthy it makes exactly one attempt per batch,
//     bounded by AttemptTimeout, with up to Senders attempts in flight at
//     once (so that a next hop that answers after its commit, like the
//     in-process pipeline, is kept busy). If an attempt fails the next hop
//     is marked unhealthy and the batch is spooled at once; while
//     unhealthy, batches go straight to the spool, in order, without an
//     attempt. Memory therefore holds at most Senders+1 batches beyond the
//     two queues.
//   - The replayer sends spooled batches oldest first, deleting a segment
//     only after all of its batches were consumed. It retries with
//     exponential backoff and jitter (RetryInitial doubling up to RetryMax,
//     or the server's Retry-After) and marks the next hop healthy again on
//     success. Recovery bound: once the next hop is back, the replay resumes
//     within RetryMax (5 s by default; longer only if the server asked for
//     it with Retry-After), and then drains at the next hop's speed with no
//     further waits. A batch the next hop refuses permanently (a 4xx other than
//     401/403, e.g. 413) is split in halves until the single refused events
//     are found; those are appended to rejected.seg in the spool directory
//     (same record format, not replayed) and counted as dropped with reason
//     "rejected". 401/403 ("ingest rejected the token") are retried at
//     RetryMax forever: the events stay spooled until the token is fixed.
//
// # When the spool is full
//
// OnAuditFailure "pass" keeps serving: batches that do not fit are dropped,
// each event counted (reason "spool_full") with a rate-limited warning.
// "reject" (fail closed) makes Accepting report false once the spool's
// bytes plus the bytes reserved by events still in memory reach the
// high-water mark (7/8 of SpoolMaxBytes), or a spool write failed, and true
// again once the replayer freed room; the proxy then answers new requests
// with 503. Every Emit under "reject" reserves a conservative estimate of
// its encoded size (the uncompressed estimate; the spool holds gzip) until
// the event is consumed, spooled or dropped, so events waiting in the
// queues or in a batch in flight count against the budget. The 1/8 margin
// is left for events of requests that were admitted but had not emitted
// yet when admission stopped (requests in flight), and for the refused
// attempts' own records.
//
// Guarantee under "reject": every request the proxy answered with anything
// but 503 has its event consumed by the next hop or spooled, unless the
// disk itself fails (counted as "spool_error") or the requests in flight at
// the moment admission stopped needed more than SpoolMaxBytes/8 of spool
// (128 MiB for the default 1 GiB; logged as an error when it happens). The
// records of refused attempts (status 503) are kept only while the spool is
// below its high-water mark, else counted as "spool_full": they must not
// eat the margin kept for admitted requests.
package ship

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/llmtap/llmtap/ingest/client"
	"github.com/llmtap/llmtap/ingest/event"
)

// Policies for Config.OnAuditFailure.
const (
	PolicyPass   = "pass"
	PolicyReject = "reject"
)

// Reasons in llmtap_events_dropped_total{reason}.
const (
	DropSpoolFull  = "spool_full"  // the spool had no room (policy pass; under reject: 503 attempts above the high-water mark, or more in flight than the 1/8 margin)
	DropSpoolError = "spool_error" // the spool could not be written and the next hop failed too
	DropQueueFull  = "queue_full"  // both in-memory queues were full
	DropClosed     = "closed"      // Emit after Close
	DropRejected   = "rejected"    // the next hop refused the event permanently (kept in rejected.seg)
)

var (
	eventsShipped = promauto.NewCounter(prometheus.CounterOpts{
		Name: "llmtap_events_shipped_total", Help: "Audit events consumed by the next hop (ingest).",
	})
	eventsSpooled = promauto.NewCounter(prometheus.CounterOpts{
		Name: "llmtap_events_spooled_total", Help: "Audit events written to the disk spool.",
	})
	eventsDropped = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "llmtap_events_dropped_total", Help: "Audit events lost, by reason.",
	}, []string{"reason"})
	spoolBytes = promauto.NewGauge(prometheus.GaugeOpts{
		Name: "llmtap_spool_bytes", Help: "Bytes waiting in the disk spool.",
	})
	shipErrors = promauto.NewCounter(prometheus.CounterOpts{
		Name: "llmtap_ship_errors_total", Help: "Failed attempts to hand a batch to the next hop.",
	})
	spoolCorrupt = promauto.NewCounter(prometheus.CounterOpts{
		Name: "llmtap_spool_corrupt_records_total", Help: "Damaged spool regions quarantined (each region is one or more damaged records; intact records around it are replayed).",
	})
)

// Config configures a Shipper.
type Config struct {
	BatchSize  int           // max events per batch
	BatchBytes int64         // max captured body bytes per batch (approximate)
	BatchAge   time.Duration // max time the first event of a batch waits
	QueueSize  int           // in-memory queue (and overflow queue) length, in events
	// Senders bounds the live delivery attempts in flight at once (0: 1).
	Senders int

	SpoolDir      string
	SpoolMaxBytes int64 // bound of all segments together
	// SegmentBytes: a new segment starts when a record would exceed this.
	// Space is freed a segment at a time, so New lowers it to
	// SpoolMaxBytes/8 when it is larger.
	SegmentBytes int64

	OnAuditFailure string // PolicyPass | PolicyReject

	AttemptTimeout         time.Duration // bound of one live delivery attempt
	RetryInitial, RetryMax time.Duration // replay backoff
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		BatchSize:      500,
		BatchBytes:     8 << 20,
		BatchAge:       time.Second,
		QueueSize:      1000,
		Senders:        4,
		SpoolDir:       "data/spool",
		SpoolMaxBytes:  1 << 30,
		SegmentBytes:   16 << 20,
		OnAuditFailure: PolicyPass,
		AttemptTimeout: 5 * time.Second,
		RetryInitial:   500 * time.Millisecond,
		RetryMax:       5 * time.Second,
	}
}

// Validate reports whether the config can be used.
func (c Config) Validate() error {
	var errs []error
	if c.BatchSize <= 0 {
		errs = append(errs, errors.New("BatchSize must be > 0"))
	}
	if c.BatchBytes <= 0 {
		errs = append(errs, errors.New("BatchBytes must be > 0"))
	}
	if c.BatchAge <= 0 {
		errs = append(errs, errors.New("BatchAge must be > 0"))
	}
	if c.QueueSize <= 0 {
		errs = append(errs, errors.New("QueueSize must be > 0"))
	}
	if c.Senders < 0 {
		errs = append(errs, errors.New("Senders must be >= 0"))
	}
	if c.SpoolDir == "" {
		errs = append(errs, errors.New("SpoolDir is empty (set proxy.spool_dir)"))
	}
	if c.SegmentBytes <= 0 {
		errs = append(errs, errors.New("SegmentBytes must be > 0"))
	}
	if c.SpoolMaxBytes <= 0 {
		errs = append(errs, errors.New("SpoolMaxBytes must be > 0 (set proxy.spool_max_bytes)"))
	}
	if c.OnAuditFailure != PolicyPass && c.OnAuditFailure != PolicyReject {
		errs = append(errs, fmt.Errorf("OnAuditFailure %q must be %q or %q", c.OnAuditFailure, PolicyPass, PolicyReject))
	}
	if c.AttemptTimeout <= 0 {
		errs = append(errs, errors.New("AttemptTimeout must be > 0"))
	}
	if c.RetryInitial <= 0 || c.RetryMax < c.RetryInitial {
		errs = append(errs, errors.New("need 0 < RetryInitial <= RetryMax"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("ship: invalid config: %w", err)
	}
	return nil
}

// Stats are one Shipper's counters (the Prometheus metrics sum all
// Shippers of the process).
type Stats struct {
	Shipped, Spooled, Errors, Corrupt int64
	Dropped                           map[string]int64
	SpoolBytes                        int64
}

// DroppedTotal sums Dropped over reasons.
func (s Stats) DroppedTotal() int64 {
	var n int64
	for _, v := range s.Dropped {
		n += v
	}
	return n
}

// Shipper batches events to the next hop with a disk spool. Emit and
// Accepting are safe for concurrent use; Start and Close are called once
// each by the owner (Close is idempotent).
type Shipper struct {
	cfg  Config
	next event.Consumer
	log  *slog.Logger

	mu       sync.RWMutex // guards closed against sends on the queues
	closed   bool
	queue    chan event.Event
	overflow chan event.Event

	startOnce sync.Once
	startErr  error
	sp        *spool                // set by Start; used by the goroutines it starts
	spPub     atomic.Pointer[spool] // sp, for Accepting and Stats

	healthy      atomic.Bool
	appendFailed atomic.Bool
	// reserved is the estimated encoded size of the events emitted and not
	// yet consumed, spooled or dropped (policy reject only).
	reserved atomic.Int64
	reject   bool
	kick     chan struct{}

	liveCtx      context.Context // parent of live attempts; cancelled when Close's ctx is done
	liveCancel   context.CancelFunc
	replayCtx    context.Context
	replayCancel context.CancelFunc
	workers      sync.WaitGroup // sender and spool writer
	replayer     sync.WaitGroup
	closeOnce    sync.Once
	closeErr     error

	shipped, spooled, errs, corrupt atomic.Int64
	dropMu                          sync.Mutex
	dropped                         map[string]int64
	dropsSinceWarn                  int64
	lastDropWarn                    time.Time
	lastAuthWarn                    atomic.Int64
}

// New returns a Shipper that hands events to next. It does no I/O; call
// Start.
func New(cfg Config, next event.Consumer, logger *slog.Logger) (*Shipper, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if next == nil {
		return nil, errors.New("ship: next consumer is nil")
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	cfg.SegmentBytes = max(min(cfg.SegmentBytes, cfg.SpoolMaxBytes/8), 1)
	s := &Shipper{
		cfg:      cfg,
		next:     next,
		log:      logger.With("component", "ship"),
		queue:    make(chan event.Event, cfg.QueueSize),
		overflow: make(chan event.Event, cfg.QueueSize),
		kick:     make(chan struct{}, 1),
		dropped:  map[string]int64{},
		reject:   cfg.OnAuditFailure == PolicyReject,
	}
	s.healthy.Store(true)
	s.replayCtx, s.replayCancel = context.WithCancel(context.Background())
	s.liveCtx, s.liveCancel = context.WithCancel(context.Background())
	return s, nil
}

// Start opens (and repairs) the spool and starts the sender, the spool
// writer and the replayer. ctx bounds only the start itself; the Shipper
// runs until Close. Spooled events from an earlier run are replayed.
func (s *Shipper) Start(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.startOnce.Do(func() {
		s.sp, s.startErr = openSpool(s.cfg.SpoolDir, s.cfg.SpoolMaxBytes, s.cfg.SegmentBytes, s.log,
			func() { s.corrupt.Add(1); spoolCorrupt.Inc() }, nil,
			batchCheck)
		if s.startErr != nil {
			return
		}
		s.spPub.Store(s.sp)
		if b := s.sp.size(); b > 0 {
			s.log.Info("spool holds events from an earlier run; replaying", "bytes", b, "dir", s.cfg.SpoolDir)
		}
		s.workers.Add(2)
		go s.runSender()
		go s.runSpoolWriter()
		s.replayer.Add(1)
		go s.runReplayer()
		s.wake()
	})
	return s.startErr
}

// Emit hands ev to the shipper and returns at once; it never blocks and
// never does I/O. The Shipper owns ev from now on, including its byte
// slices and maps: the caller must not modify them. Safe for concurrent
// use. Events emitted before Start wait in the queue.
func (s *Shipper) Emit(ev event.Event) {
	sanitize(&ev)
	var size int64
	if s.reject {
		size = eventSize(&ev)
		if ev.Status == 503 && s.budgetUsed()+size > s.highWater() {
			// A refused attempt (or an upstream 503) while the spool is
			// at its high-water mark: the margin is kept for the events
			// of admitted requests.
			s.drop(DropSpoolFull, 1)
			return
		}
		s.reserved.Add(size)
	}
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		s.release(size)
		s.drop(DropClosed, 1)
		return
	}
	select {
	case s.queue <- ev:
	default:
		select {
		case s.overflow <- ev:
		default:
			s.mu.RUnlock()
			s.release(size)
			s.drop(DropQueueFull, 1)
			return
		}
	}
	s.mu.RUnlock()
}

// release returns reserved bytes (policy reject only; a no-op otherwise).
func (s *Shipper) release(n int64) {
	if s.reject && n != 0 {
		s.reserved.Add(-n)
	}
}

// budgetUsed is the spool's bytes plus the reserved bytes.
func (s *Shipper) budgetUsed() int64 {
	n := s.reserved.Load()
	if sp := s.spPub.Load(); sp != nil {
		n += sp.size()
	}
	return n
}

// sanitize replaces values that JSON cannot encode (NaN and infinite
// timings, years outside 0-9999), so that one odd event cannot make a whole
// batch unencodable.
func sanitize(ev *event.Event) {
	bad := func(f float64) bool { return math.IsNaN(f) || math.IsInf(f, 0) }
	if bad(ev.LatencyMs) {
		ev.LatencyMs = 0
	}
	if ev.TTFBMs != nil && bad(*ev.TTFBMs) {
		ev.TTFBMs = nil
	}
	if ev.TTFTMs != nil && bad(*ev.TTFTMs) {
		ev.TTFTMs = nil
	}
	if y := ev.Time.Year(); y < 0 || y > 9999 {
		ev.Time = time.Time{}
	}
}

// Accepting reports whether new requests should be served. It is false
// only under policy "reject" while the spool is at its high-water mark or
// cannot be written; it is always true under "pass".
func (s *Shipper) Accepting() bool {
	if s.cfg.OnAuditFailure != PolicyReject {
		return true
	}
	if s.appendFailed.Load() {
		return false
	}
	return s.budgetUsed() < s.highWater()
}

func (s *Shipper) highWater() int64 { return s.cfg.SpoolMaxBytes - s.cfg.SpoolMaxBytes/8 }

// Stats returns this Shipper's counters.
func (s *Shipper) Stats() Stats {
	st := Stats{
		Shipped: s.shipped.Load(), Spooled: s.spooled.Load(), Errors: s.errs.Load(), Corrupt: s.corrupt.Load(),
		Dropped: map[string]int64{},
	}
	s.dropMu.Lock()
	for k, v := range s.dropped {
		st.Dropped[k] = v
	}
	s.dropMu.Unlock()
	if sp := s.spPub.Load(); sp != nil {
		st.SpoolBytes = sp.size()
	}
	return st
}

// Close stops accepting events, delivers what is queued to the next hop
// while ctx allows and spools the rest, stops the replayer (an interrupted
// replay stays spooled) and closes the spool. When Close returns, every
// event emitted before it is consumed, spooled (and fsync'ed), or counted
// as dropped. Writing the remaining queue to disk is not cut short by ctx:
// it is bounded by the queue sizes. Close is idempotent.
func (s *Shipper) Close(ctx context.Context) error {
	s.closeOnce.Do(func() {
		// Events emitted before a Start that never came still get spooled.
		if err := s.Start(context.Background()); err != nil {
			s.log.Error("ship: cannot open the spool at close", "err", err)
		}
		s.replayCancel()
		stop := context.AfterFunc(ctx, s.liveCancel)
		defer stop()
		defer s.liveCancel()
		s.mu.Lock()
		s.closed = true
		close(s.queue)
		close(s.overflow)
		s.mu.Unlock()
		if s.startErr != nil {
			// Nothing runs; count what waited in the queues.
			n := len(s.queue) + len(s.overflow)
			s.drop(DropSpoolError, n)
			s.closeErr = s.startErr
			return
		}
		s.workers.Wait()
		s.replayer.Wait()
		s.closeErr = s.sp.close()
		s.flushDropWarning()
		st := s.Stats()
		s.log.Info("shipper closed", "shipped", st.Shipped, "spooled", st.Spooled,
			"dropped", st.DroppedTotal(), "spool_bytes", st.SpoolBytes)
	})
	return s.closeErr
}

// runSender batches the queue and delivers or spools each batch. Live
// attempts run on up to Senders goroutines; spooling while the next hop is
// unhealthy happens here, in order. It returns after every attempt it
// started has ended.
func (s *Shipper) runSender() {
	defer s.workers.Done()
	slots := make(chan struct{}, max(s.cfg.Senders, 1))
	var inflight sync.WaitGroup
	defer inflight.Wait()
	// last is closed once the latest batch handed to an attempt has been
	// consumed or spooled.
	last := make(chan struct{})
	close(last)
	batch := make([]event.Event, 0, s.cfg.BatchSize)
	var size int64
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	flush := func() {
		if len(batch) == 0 {
			return
		}
		timer.Stop()
		if !s.healthy.Load() || s.liveCtx.Err() != nil {
			<-last // batches before this one are consumed or spooled
			s.deliver(batch)
			s.release(size)
			clear(batch)
			batch, size = batch[:0], 0
			return
		}
		slots <- struct{}{}
		b, bsize, prev, done := batch, size, last, make(chan struct{})
		last = done
		batch, size = make([]event.Event, 0, s.cfg.BatchSize), 0
		inflight.Add(1)
		go func() {
			defer func() { <-slots; inflight.Done() }()
			ok := s.attempt(b)
			// Failed batches reach the spool in batch order.
			<-prev
			if !ok {
				if err := s.spoolBatch(b); err != nil {
					s.drop(dropReason(err), len(b))
				}
			}
			s.release(bsize)
			close(done)
		}()
	}
	for {
		select {
		case ev, ok := <-s.queue:
			if !ok {
				flush()
				return
			}
			if len(batch) == 0 {
				timer.Reset(s.cfg.BatchAge)
			}
			batch = append(batch, ev)
			size += eventSize(&ev)
			if len(batch) >= s.cfg.BatchSize || size >= s.cfg.BatchBytes {
				flush()
			}
		case <-timer.C:
			flush()
		}
	}
}

// runSpoolWriter writes the overflow queue to the spool.
func (s *Shipper) runSpoolWriter() {
	defer s.workers.Done()
	batch := make([]event.Event, 0, s.cfg.BatchSize)
	for ev := range s.overflow {
		batch = append(batch, ev)
		size := eventSize(&ev)
	more:
		for len(batch) < s.cfg.BatchSize && size < s.cfg.BatchBytes {
			select {
			case ev, ok := <-s.overflow:
				if !ok {
					break more
				}
				batch = append(batch, ev)
				size += eventSize(&ev)
			default:
				break more
			}
		}
		if err := s.spoolBatch(batch); err != nil {
			s.drop(dropReason(err), len(batch))
		}
		s.release(size)
		clear(batch)
		batch = batch[:0]
	}
}

// eventSize estimates an event's encoded size.
func eventSize(ev *event.Event) int64 {
	n := int64(len(ev.RequestBody)+len(ev.ResponseBody))*4/3 + 512
	for k, v := range ev.RequestHeaders {
		n += int64(len(k) + len(v) + 6)
	}
	for k, v := range ev.ResponseHeaders {
		n += int64(len(k) + len(v) + 6)
	}
	return n
}

// deliver makes one live attempt when the next hop is healthy, and spools
// the batch otherwise or when the attempt fails.
func (s *Shipper) deliver(batch []event.Event) {
	tried := false
	if s.healthy.Load() && s.liveCtx.Err() == nil {
		if s.attempt(batch) {
			return
		}
		tried = true
	}
	err := s.spoolBatch(batch)
	if err == nil {
		return
	}
	// The spool cannot take it: last chance, try the next hop.
	if !tried && s.liveCtx.Err() == nil && s.attempt(batch) {
		return
	}
	s.drop(dropReason(err), len(batch))
}

// attempt makes one delivery attempt bounded by AttemptTimeout and by
// Close's deadline.
func (s *Shipper) attempt(batch []event.Event) bool {
	ctx, cancel := context.WithTimeout(s.liveCtx, s.cfg.AttemptTimeout)
	err := s.next.Consume(ctx, batch)
	cancel()
	if err != nil {
		s.failed(err, "live")
		return false
	}
	s.healthy.Store(true)
	s.countShipped(len(batch))
	return true
}

func dropReason(spoolErr error) string {
	if errors.Is(spoolErr, errSpoolFull) {
		return DropSpoolFull
	}
	return DropSpoolError
}

// spoolBatch encodes and appends a batch to the spool.
func (s *Shipper) spoolBatch(batch []event.Event) error {
	payload, err := encodeBatch(batch)
	if err != nil {
		return err
	}
	if err := s.sp.append(payload); err != nil {
		full := errors.Is(err, errSpoolFull)
		if !s.appendFailed.Swap(true) && !full {
			s.log.Error("ship: cannot write the spool", "dir", s.cfg.SpoolDir, "err", err)
		}
		if full && s.reject {
			// Admission should have stopped before this: the requests in
			// flight needed more than the 1/8 margin.
			s.log.Error("ship: spool full under policy reject; events of answered requests are lost (raise spool_max_bytes)",
				"events", len(batch), "spool_bytes", s.sp.size(), "spool_max_bytes", s.cfg.SpoolMaxBytes)
		}
		return err
	}
	s.appendFailed.Store(false)
	s.spooled.Add(int64(len(batch)))
	eventsSpooled.Add(float64(len(batch)))
	s.wake()
	return nil
}

func (s *Shipper) wake() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

func (s *Shipper) countShipped(n int) {
	s.shipped.Add(int64(n))
	eventsShipped.Add(float64(n))
}

// failed records a failed attempt and marks the next hop unhealthy.
func (s *Shipper) failed(err error, where string) {
	s.errs.Add(1)
	shipErrors.Inc()
	was := s.healthy.Swap(false)
	if errors.Is(err, client.ErrUnauthorized) {
		now := time.Now().UnixNano()
		if last := s.lastAuthWarn.Load(); now-last > int64(time.Minute) && s.lastAuthWarn.CompareAndSwap(last, now) {
			s.log.Error("ingest rejected the token; events stay spooled until it is fixed", "err", err)
		}
		return
	}
	if was {
		s.log.Warn("next hop failed; spooling events until it recovers", "attempt", where, "err", err)
	}
}

// drop counts n lost events and warns at most every 10 seconds.
func (s *Shipper) drop(reason string, n int) {
	if n <= 0 {
		return
	}
	eventsDropped.WithLabelValues(reason).Add(float64(n))
	s.dropMu.Lock()
	s.dropped[reason] += int64(n)
	s.dropsSinceWarn += int64(n)
	now := time.Now()
	warn := now.Sub(s.lastDropWarn) >= 10*time.Second
	var since int64
	if warn {
		since, s.dropsSinceWarn, s.lastDropWarn = s.dropsSinceWarn, 0, now
	}
	s.dropMu.Unlock()
	if warn {
		s.log.Warn("audit events dropped", "reason", reason, "events", since,
			"policy", s.cfg.OnAuditFailure, "spool_dir", s.cfg.SpoolDir)
	}
}

func (s *Shipper) flushDropWarning() {
	s.dropMu.Lock()
	n := s.dropsSinceWarn
	s.dropsSinceWarn = 0
	s.dropMu.Unlock()
	if n > 0 {
		s.log.Warn("audit events dropped", "events", n, "policy", s.cfg.OnAuditFailure)
	}
}

// runReplayer sends spooled batches, oldest first.
func (s *Shipper) runReplayer() {
	defer s.replayer.Done()
	ctx := s.replayCtx
	backoff := s.cfg.RetryInitial
	sleep := func(d time.Duration) bool {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
			return true
		case <-ctx.Done():
			return false
		}
	}
	for ctx.Err() == nil {
		payload, p, err := s.sp.next()
		if errors.Is(err, errSpoolEmpty) {
			select {
			case <-s.kick:
				continue
			case <-ctx.Done():
				return
			}
		}
		if err != nil {
			s.log.Error("ship: spool read failed", "err", err)
			if !sleep(s.cfg.RetryMax) {
				return
			}
			continue
		}
		events, err := decodeBatch(payload)
		if err != nil {
			// Checksum fine but undecodable: never replay it again (no
			// crash loop), keep it for inspection.
			s.log.Error("ship: spooled batch does not decode; quarantined", "err", err)
			s.keepAside("undecodable.seg", payload)
			s.corrupt.Add(1)
			spoolCorrupt.Inc()
			s.ackSpool(p)
			continue
		}
		err = s.replay(ctx, events)
		if err == nil {
			s.ackSpool(p)
			if !s.healthy.Swap(true) {
				s.log.Info("next hop recovered; replaying the spool", "spool_bytes", s.sp.size())
			}
			backoff = s.cfg.RetryInitial
			continue
		}
		if ctx.Err() != nil {
			return
		}
		s.failed(err, "replay")
		wait := backoff/2 + rand.N(backoff/2+1)
		if errors.Is(err, client.ErrUnauthorized) {
			wait = s.cfg.RetryMax
		}
		if ra, ok := client.RetryAfter(err); ok {
			wait = max(wait, min(ra, 5*time.Minute))
		}
		backoff = min(2*backoff, s.cfg.RetryMax)
		if !sleep(wait) {
			return
		}
	}
}

func (s *Shipper) ackSpool(p pos) {
	if s.sp.ack(p) {
		s.appendFailed.Store(false)
	}
}

// replay consumes events; permanently refused batches are split to find
// the refused events, which are set aside and counted as dropped.
func (s *Shipper) replay(ctx context.Context, events []event.Event) error {
	actx, cancel := context.WithTimeout(ctx, s.cfg.AttemptTimeout)
	err := s.next.Consume(actx, events)
	cancel()
	if err == nil {
		s.countShipped(len(events))
		return nil
	}
	if !client.IsPermanent(err) || errors.Is(err, client.ErrUnauthorized) {
		return err
	}
	if len(events) > 1 {
		h := len(events) / 2
		if err := s.replay(ctx, events[:h]); err != nil {
			return err
		}
		return s.replay(ctx, events[h:])
	}
	s.errs.Add(1)
	shipErrors.Inc()
	s.log.Error("ingest refused an event permanently; kept in rejected.seg", "event_id", events[0].ID, "err", err)
	if payload, eerr := encodeBatch(events); eerr == nil {
		s.keepAside("rejected.seg", payload)
	}
	s.drop(DropRejected, 1)
	return nil
}

// keepAside appends a record to a side file in the spool directory.
func (s *Shipper) keepAside(name string, payload []byte) {
	f, err := os.OpenFile(filepath.Join(s.cfg.SpoolDir, name), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		s.log.Error("ship: cannot keep record aside", "file", name, "err", err)
		return
	}
	defer f.Close()
	if _, err := f.Write(encodeRecord(payload)); err == nil {
		f.Sync()
	}
}

// batchCheck accepts a spooled payload when it is a batch: gzip (magic,
// deflate) that decodes to events. Used only to resynchronise after damage.
var batchCheck = &payloadCheck{
	prefix: []byte{0x1f, 0x8b, 0x08},
	valid:  func(p []byte) bool { _, err := decodeBatch(p); return err == nil },
}

// encodeBatch encodes events as gzip NDJSON.
func encodeBatch(events []event.Event) ([]byte, error) {
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
	enc := json.NewEncoder(zw)
	enc.SetEscapeHTML(false)
	for i := range events {
		if err := enc.Encode(&events[i]); err != nil {
			return nil, fmt.Errorf("ship: encode event %q: %w", events[i].ID, err)
		}
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// decodeBatch decodes a spooled payload.
func decodeBatch(payload []byte) ([]event.Event, error) {
	zr, err := gzip.NewReader(bytes.NewReader(payload))
	if err != nil {
		return nil, fmt.Errorf("ship: spooled batch: %w", err)
	}
	defer zr.Close()
	dec := json.NewDecoder(zr)
	var events []event.Event
	for dec.More() {
		var ev event.Event
		if err := dec.Decode(&ev); err != nil {
			return nil, fmt.Errorf("ship: spooled batch: %w", err)
		}
		events = append(events, ev)
	}
	if len(events) == 0 {
		return nil, errors.New("ship: spooled batch is empty")
	}
	return events, nil
}
