package pipeline_test

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/llmtap/llmtap/ingest/event"
	"github.com/llmtap/llmtap/ingest/pipeline"
	"github.com/llmtap/llmtap/ingest/pipeline/pipelinetest"
	"github.com/llmtap/llmtap/ingest/record"
	"github.com/llmtap/llmtap/ingest/store"
	"github.com/llmtap/llmtap/proxy/ship"
)

var backends = pipelinetest.Backends("llmtap_test_pipeline")

func TestMain(m *testing.M) {
	flag.Parse()
	if !testing.Short() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		err := pipelinetest.Setup(ctx, backends)
		cancel()
		if err != nil {
			fmt.Fprintln(os.Stderr, "pipeline tests need PostgreSQL and ClickHouse (make services):", err)
			os.Exit(1)
		}
	}
	os.Exit(m.Run())
}

func needStores(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("needs PostgreSQL and ClickHouse")
	}
}

func openStore(t testing.TB, dsn string) store.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := store.Open(ctx, dsn, pipelinetest.Logger(true))
	if err != nil {
		t.Fatalf("open store %s: %v", dsn, err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

// start returns a started pipeline on st, closed at cleanup.
func start(t testing.TB, cfg pipeline.Config, st store.Store, opts ...pipeline.Option) *pipeline.Pipeline {
	t.Helper()
	p := pipeline.New(cfg, st, pipelinetest.Logger(true), opts...)
	if err := p.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := p.Close(ctx); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return p
}

func fastConfig() pipeline.Config {
	cfg := pipeline.DefaultConfig()
	cfg.BatchAge = 5 * time.Millisecond
	cfg.WriteTimeout = 10 * time.Second
	return cfg
}

func chatEvents(consumer string, n int) []event.Event {
	evs := make([]event.Event, n)
	for i := range evs {
		evs[i] = pipelinetest.ChatEvent(consumer, 200)
	}
	return evs
}

func count(t testing.TB, b pipelinetest.Backend, table, where string, args ...any) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n, err := pipelinetest.Count(ctx, b.DSN, table, where, args...)
	if err != nil {
		t.Fatalf("%s: count %s: %v", b.Name, table, err)
	}
	return n
}

func consumerRows(t testing.TB, b pipelinetest.Backend, consumer string) int64 {
	t.Helper()
	return count(t, b, "llm_requests", "consumer = "+pipelinetest.Placeholder(b.DSN, 1), consumer)
}

// metric returns the value of a counter (or a histogram's count) in the
// default registry, 0 when absent.
func metric(t testing.TB, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if v, ok := labels[lp.GetName()]; ok && v != lp.GetValue() {
					continue next
				}
			}
			if c := m.GetCounter(); c != nil {
				return c.GetValue()
			}
			if h := m.GetHistogram(); h != nil {
				return float64(h.GetSampleCount())
			}
		}
	}
	return 0
}

func uniq(t testing.TB) string {
	return fmt.Sprintf("%s-%d", t.Name(), time.Now().UnixNano())
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		mod     func(*pipeline.Config)
		wantErr string
	}{
		{"default", func(*pipeline.Config) {}, ""},
		{"no window", func(c *pipeline.Config) { c.BatchAge = 0 }, ""},
		{"batch size", func(c *pipeline.Config) { c.BatchSize = 0 }, "batch size"},
		{"negative age", func(c *pipeline.Config) { c.BatchAge = -1 }, "batch age"},
		{"writers", func(c *pipeline.Config) { c.Writers = 0 }, "writers"},
		{"max pending", func(c *pipeline.Config) { c.MaxPending = 0 }, "max pending"},
		{"max pending bytes", func(c *pipeline.Config) { c.MaxPendingBytes = 0 }, "max pending bytes"},
		{"max wait", func(c *pipeline.Config) { c.MaxWait = 0 }, "max wait"},
		{"write timeout", func(c *pipeline.Config) { c.WriteTimeout = 0 }, "write timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := pipeline.DefaultConfig()
			tt.mod(&c)
			err := c.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Validate() = %v, want error mentioning %q", err, tt.wantErr)
			}
		})
	}
}

func TestStartChecks(t *testing.T) {
	bad := pipeline.DefaultConfig()
	bad.BatchSize = 0
	if err := pipeline.New(bad, nopStore{}, nil).Start(context.Background()); err == nil {
		t.Error("Start with invalid config succeeded")
	}
	if err := pipeline.New(pipeline.DefaultConfig(), nil, nil).Start(context.Background()); err == nil {
		t.Error("Start without store succeeded")
	}
	p := pipeline.New(pipeline.DefaultConfig(), nopStore{}, nil)
	if _, err := p.Ingest(context.Background(), chatEvents("x", 1), nil); !errors.Is(err, pipeline.ErrClosed) {
		t.Errorf("Ingest before Start = %v, want ErrClosed", err)
	}
	if err := p.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := p.Start(context.Background()); err == nil {
		t.Error("second Start succeeded")
	}
	if err := p.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(context.Background()); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := p.Ingest(context.Background(), chatEvents("x", 1), nil); !errors.Is(err, pipeline.ErrClosed) {
		t.Errorf("Ingest after Close = %v, want ErrClosed", err)
	}
	if err := p.Ready(context.Background()); !errors.Is(err, pipeline.ErrClosed) {
		t.Errorf("Ready after Close = %v, want ErrClosed", err)
	}
}

// nopStore is only for the lifecycle checks above, which never write.
type nopStore struct{}

func (nopStore) Write(context.Context, []record.Record, []record.Reject) error {
	return errors.New("nopStore: unexpected write")
}
func (nopStore) Ping(context.Context) error { return nil }
func (nopStore) Close() error               { return nil }

// TestIngest commits decoded events, undecodable events and the caller's
// rejects in one call, on both stores.
func TestIngest(t *testing.T) {
	needStores(t)
	for _, b := range backends {
		t.Run(b.Name, func(t *testing.T) {
			p := start(t, fastConfig(), openStore(t, b.DSN))
			consumer := uniq(t)
			evs := chatEvents(consumer, 5)
			bad := pipelinetest.ChatEvent(consumer, 0)
			bad.ID = "not-a-uuid"
			bad.Source = "pipeline-test-" + consumer // unique per run: rejects are not reset between runs
			evs = append(evs, bad)
			callerReject := record.Reject{ReceivedAt: time.Now(), Source: bad.Source, Reason: "line 9: invalid event", Payload: []byte("{oops")}
			acceptedBefore := metric(t, "llmtap_ingest_accepted_total", map[string]string{"source": "proxy"})
			writesBefore := metric(t, "llmtap_store_write_seconds", nil)

			res, err := p.Ingest(context.Background(), evs, []record.Reject{callerReject})
			if err != nil {
				t.Fatal(err)
			}
			if res.Accepted != 5 || res.Rejected != 2 {
				t.Fatalf("result = %+v, want 5 accepted, 2 rejected", res)
			}
			if len(res.Errors) != 2 || !strings.Contains(res.Errors[1], "not a UUID") {
				t.Errorf("errors = %q, want the caller's reason and the decoder's", res.Errors)
			}
			if n := consumerRows(t, b, consumer); n != 5 {
				t.Errorf("rows for consumer = %d, want 5", n)
			}
			rows, err := pipelinetest.Rejects(context.Background(), b.DSN, bad.Source)
			if err != nil {
				t.Fatal(err)
			}
			if len(rows) != 2 {
				t.Fatalf("reject rows = %d, want 2", len(rows))
			}
			var sawDecode bool
			for _, r := range rows {
				if strings.Contains(r.Reason, "not a UUID") {
					sawDecode = true
					if !strings.Contains(string(r.Payload), `"event_id":"not-a-uuid"`) {
						t.Errorf("decode reject payload = %.200s, want the event's JSON", r.Payload)
					}
				}
			}
			if !sawDecode {
				t.Errorf("no reject with the decoder's reason: %+v", rows)
			}

			// Consume is the same path for in-process producers.
			more := chatEvents(consumer, 3)
			if err := p.Consume(context.Background(), more); err != nil {
				t.Fatal(err)
			}
			if n := consumerRows(t, b, consumer); n != 8 {
				t.Errorf("rows after Consume = %d, want 8", n)
			}
			if d := metric(t, "llmtap_ingest_accepted_total", map[string]string{"source": "proxy"}) - acceptedBefore; d != 8 {
				t.Errorf("accepted_total grew by %v, want 8", d)
			}
			if v := metric(t, "llmtap_ingest_rejected_total", map[string]string{"source": bad.Source}); v != 2 {
				t.Errorf("rejected_total{source=%s} = %v, want 2", bad.Source, v)
			}
			if d := metric(t, "llmtap_store_write_seconds", nil) - writesBefore; d < 2 {
				t.Errorf("write_seconds observed %v writes, want at least 2", d)
			}
			if err := p.Ready(context.Background()); err != nil {
				t.Errorf("Ready = %v", err)
			}
		})
	}
}

// TestIdempotent sends the same events twice, one after the other and at
// the same time, and expects each stored once.
func TestIdempotent(t *testing.T) {
	needStores(t)
	for _, b := range backends {
		t.Run(b.Name, func(t *testing.T) {
			cfg := fastConfig()
			cfg.BatchAge = 30 * time.Millisecond
			p := start(t, cfg, openStore(t, b.DSN))
			consumer := uniq(t)
			evs := chatEvents(consumer, 20)
			for range 2 {
				if _, err := p.Ingest(context.Background(), evs, nil); err != nil {
					t.Fatal(err)
				}
			}
			var wg sync.WaitGroup
			errs := make(chan error, 4)
			twice := chatEvents(consumer, 10)
			for range 4 {
				wg.Go(func() {
					_, err := p.Ingest(context.Background(), twice, nil)
					errs <- err
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					t.Fatal(err)
				}
			}
			if n := consumerRows(t, b, consumer); n != 30 {
				t.Errorf("rows = %d, want 30 (each event once)", n)
			}
		})
	}
}

// TestGroupCommit merges concurrent callers into fewer writes.
func TestGroupCommit(t *testing.T) {
	needStores(t)
	for _, b := range backends {
		t.Run(b.Name, func(t *testing.T) {
			cs := &pipelinetest.CountingStore{Store: openStore(t, b.DSN)}
			cfg := fastConfig()
			cfg.BatchAge = 50 * time.Millisecond
			cfg.Writers = 1
			p := start(t, cfg, cs)
			consumer := uniq(t)
			const callers = 50
			var wg sync.WaitGroup
			errs := make(chan error, callers)
			for range callers {
				wg.Go(func() {
					res, err := p.Ingest(context.Background(), chatEvents(consumer, 4), nil)
					if err == nil && res.Accepted != 4 {
						err = fmt.Errorf("accepted %d, want 4", res.Accepted)
					}
					errs <- err
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					t.Fatal(err)
				}
			}
			if n := consumerRows(t, b, consumer); n != callers*4 {
				t.Errorf("rows = %d, want %d", n, callers*4)
			}
			if w := cs.Writes.Load(); w >= callers {
				t.Errorf("store writes = %d for %d callers, want fewer (group commit)", w, callers)
			}
			t.Logf("%d callers, %d writes", callers, cs.Writes.Load())
		})
	}
}

// TestBackPressure: beyond MaxPending a caller waits for room, and gets the
// retryable ErrOverloaded after MaxWait; memory does not grow.
func TestBackPressure(t *testing.T) {
	needStores(t)
	b := backends[0]
	for _, tc := range []struct {
		name    string
		maxWait time.Duration
		waits   bool // the second caller gets in once the held write commits
	}{
		{"gives up after MaxWait", 200 * time.Millisecond, false},
		{"waits for room", 30 * time.Second, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hs := pipelinetest.NewHold(openStore(t, b.DSN))
			defer hs.Release()
			cfg := fastConfig()
			cfg.BatchAge = 0
			cfg.Writers = 1
			cfg.MaxPending = 10
			cfg.MaxWait = tc.maxWait
			p := start(t, cfg, hs)
			consumer := uniq(t)

			first := make(chan error, 1)
			go func() {
				_, err := p.Ingest(context.Background(), chatEvents(consumer, 10), nil)
				first <- err
			}()
			<-hs.Entered // 10 events pending, the write is held

			second := make(chan error, 1)
			startWait := time.Now()
			go func() {
				_, err := p.Ingest(context.Background(), chatEvents(consumer, 5), nil)
				second <- err
			}()
			if !tc.waits {
				err := <-second
				if !errors.Is(err, pipeline.ErrOverloaded) {
					t.Fatalf("Ingest over MaxPending = %v, want ErrOverloaded", err)
				}
				if waited := time.Since(startWait); waited < cfg.MaxWait {
					t.Errorf("gave up after %s, want to wait MaxWait %s first", waited, cfg.MaxWait)
				}
				hs.Release()
				if err := <-first; err != nil {
					t.Fatalf("held write: %v", err)
				}
				if n := consumerRows(t, b, consumer); n != 10 {
					t.Errorf("rows = %d, want 10", n)
				}
				return
			}
			select {
			case err := <-second:
				t.Fatalf("second caller returned %v while the pipeline was full, want it to wait", err)
			case <-time.After(150 * time.Millisecond):
			}
			hs.Release()
			if err := <-first; err != nil {
				t.Fatalf("held write: %v", err)
			}
			if err := <-second; err != nil {
				t.Fatalf("waiting caller: %v", err)
			}
			if n := consumerRows(t, b, consumer); n != 15 {
				t.Errorf("rows = %d, want 15", n)
			}
		})
	}
}

// TestCallerGivesUp: a caller whose ctx ends gets its error, and the write
// it started still commits (it may retry; the store dedupes).
func TestCallerGivesUp(t *testing.T) {
	needStores(t)
	b := backends[1]
	hs := pipelinetest.NewHold(openStore(t, b.DSN))
	p := start(t, fastConfig(), hs)
	consumer := uniq(t)
	evs := chatEvents(consumer, 3)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := p.Ingest(ctx, evs, nil)
		done <- err
	}()
	<-hs.Entered
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Ingest after cancel = %v, want context.Canceled", err)
	}
	hs.Release()
	if _, err := p.Ingest(context.Background(), evs, nil); err != nil { // the retry
		t.Fatal(err)
	}
	if n := consumerRows(t, b, consumer); n != 3 {
		t.Errorf("rows = %d, want 3", n)
	}
}

// TestStoreDownThenUp cuts the connection to the real server: callers get
// an error wrapping store.ErrUnavailable, Ready fails, and after recovery
// the retried calls commit, nothing lost, nothing doubled.
func TestStoreDownThenUp(t *testing.T) {
	needStores(t)
	for _, b := range backends {
		t.Run(b.Name, func(t *testing.T) {
			target := pipelinetest.PGAddr
			if b.Name == "clickhouse" {
				target = pipelinetest.CHAddr
			}
			fw, err := pipelinetest.NewForwarder(target)
			if err != nil {
				t.Fatal(err)
			}
			defer fw.Close()
			cfg := fastConfig()
			cfg.WriteTimeout = 5 * time.Second
			p := start(t, cfg, openStore(t, b.At(fw.Addr())))
			consumer := uniq(t)

			ctx := context.Background()
			if _, err := p.Ingest(ctx, chatEvents(consumer, 5), nil); err != nil {
				t.Fatalf("before outage: %v", err)
			}
			errsBefore := metric(t, "llmtap_store_write_errors_total", nil)
			fw.Down()
			var failed [][]event.Event
			for range 3 {
				evs := chatEvents(consumer, 4)
				_, err := p.Ingest(ctx, evs, nil)
				if err == nil {
					t.Fatal("Ingest succeeded while the store was down")
				}
				if !errors.Is(err, store.ErrUnavailable) {
					t.Fatalf("Ingest while down = %v, want store.ErrUnavailable", err)
				}
				failed = append(failed, evs)
			}
			if err := p.Ready(ctx); err == nil {
				t.Error("Ready while down = nil")
			}
			if d := metric(t, "llmtap_store_write_errors_total", nil) - errsBefore; d < 3 {
				t.Errorf("write_errors_total grew by %v, want at least 3", d)
			}
			if err := fw.Up(); err != nil {
				t.Fatal(err)
			}
			for _, evs := range failed {
				var err error
				for try := 0; try < 300; try++ { // the pool may hold dead connections
					if _, err = p.Ingest(ctx, evs, nil); err == nil {
						break
					}
					time.Sleep(100 * time.Millisecond)
				}
				if err != nil {
					t.Fatalf("after recovery: %v", err)
				}
			}
			if err := p.Ready(ctx); err != nil {
				t.Errorf("Ready after recovery = %v", err)
			}
			if n := consumerRows(t, b, consumer); n != 5+3*4 {
				t.Errorf("rows = %d, want %d", n, 5+3*4)
			}
		})
	}
}

// TestCloseFlushes: Close writes everything admitted before it, waiting
// for writes in flight; callers are told the truth (nil = committed).
func TestCloseFlushes(t *testing.T) {
	needStores(t)
	b := backends[0]
	hs := pipelinetest.NewHold(openStore(t, b.DSN))
	defer hs.Release()
	cfg := fastConfig()
	cfg.BatchAge = 20 * time.Millisecond
	p := pipeline.New(cfg, hs, nil)
	if err := p.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	consumer := uniq(t)
	var wg sync.WaitGroup
	var mu sync.Mutex
	committed := 0
	for range 10 {
		wg.Go(func() {
			res, err := p.Ingest(context.Background(), chatEvents(consumer, 2), nil)
			if err == nil {
				mu.Lock()
				committed += res.Accepted
				mu.Unlock()
			} else if !errors.Is(err, pipeline.ErrClosed) {
				t.Errorf("Ingest: %v", err)
			}
		})
	}
	<-hs.Entered // at least one batch is being written
	closed := make(chan error, 1)
	go func() { closed <- p.Close(context.Background()) }()
	select {
	case err := <-closed:
		t.Fatalf("Close returned %v while a write was in flight", err)
	case <-time.After(50 * time.Millisecond):
	}
	hs.Release()
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if committed == 0 {
		t.Error("nothing committed")
	}
	if n := consumerRows(t, b, consumer); n != int64(committed) {
		t.Errorf("rows = %d, callers told %d committed", n, committed)
	}
	// Close with an expired context reports it.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	hs2 := pipelinetest.NewHold(openStore(t, b.DSN))
	p2 := pipeline.New(cfg, hs2, nil)
	if err := p2.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	go func() { _, _ = p2.Ingest(context.Background(), chatEvents(consumer, 1), nil) }()
	<-hs2.Entered
	if err := p2.Close(ctx); err == nil {
		t.Error("Close with a held write and a cancelled ctx = nil, want ctx error")
	}
	hs2.Release()
	if err := p2.Close(context.Background()); err != nil {
		t.Errorf("second Close after release: %v", err)
	}
}

// BenchmarkPipeline measures decode + group commit into each store with
// 8×GOMAXPROCS concurrent callers of 100 realistic events (70 % streamed, 2–8 KB
// bodies; no HTTP).
func BenchmarkPipeline(b *testing.B) {
	if testing.Short() {
		b.Skip("needs stores")
	}
	for _, be := range backends {
		b.Run(be.Name, func(b *testing.B) {
			p := start(b, pipeline.DefaultConfig(), openStore(b, be.DSN))
			template := make([]event.Event, 100)
			for i := range template {
				template[i] = pipelinetest.RealisticEvent("bench", i)
			}
			b.ReportAllocs()
			b.SetParallelism(8) // 8 × GOMAXPROCS callers, like many HTTP posts
			b.ResetTimer()
			start := time.Now()
			var total int64
			var mu sync.Mutex
			b.RunParallel(func(pb *testing.PB) {
				evs := make([]event.Event, len(template))
				for pb.Next() {
					copy(evs, template)
					for i := range evs {
						evs[i].ID = uuid.Must(uuid.NewV7()).String()
						evs[i].Time = time.Now().UTC()
					}
					if _, err := p.Ingest(context.Background(), evs, nil); err != nil {
						b.Error(err)
						return
					}
					mu.Lock()
					total += int64(len(evs))
					mu.Unlock()
				}
			})
			b.ReportMetric(float64(total)/time.Since(start).Seconds(), "events/s")
		})
	}
}

// refuseStore wraps a real store and refuses, like a constraint violation
// would (an error that is not store.ErrUnavailable), every write holding a
// record of consumer "poison" — or every write at all when all is set.
type refuseStore struct {
	store.Store
	all    bool
	writes atomic.Int64
}

func (s *refuseStore) Write(ctx context.Context, recs []record.Record, rejects []record.Reject) error {
	s.writes.Add(1)
	if s.all && len(recs) > 0 {
		return errors.New("refuseStore: column type mismatch")
	}
	for i := range recs {
		if strings.HasPrefix(recs[i].Consumer, "poison") {
			return fmt.Errorf("refuseStore: record %s violates a constraint", recs[i].EventID)
		}
	}
	return s.Store.Write(ctx, recs, rejects)
}

// TestRefusedRecordsBecomeRejects: a record the store refuses for good
// fails neither its own caller's other records nor the other callers in
// its batch; it is kept as a reject.
func TestRefusedRecordsBecomeRejects(t *testing.T) {
	needStores(t)
	for _, b := range backends {
		t.Run(b.Name, func(t *testing.T) {
			rs := &refuseStore{Store: openStore(t, b.DSN)}
			cfg := fastConfig()
			cfg.BatchAge = 50 * time.Millisecond
			cfg.Writers = 1
			p := start(t, cfg, rs)
			consumer := uniq(t)
			poison := pipelinetest.ChatEvent("poison-"+consumer, 0)
			poison.Source = "refuse-" + consumer // unique per run
			mixed := append(chatEvents(consumer, 6), poison)
			mixed = append(mixed, chatEvents(consumer, 3)...)

			var wg sync.WaitGroup
			results := make([]pipeline.Result, 4)
			errs := make([]error, 4)
			for i := range 4 {
				wg.Go(func() {
					evs := chatEvents(consumer, 5)
					if i == 0 {
						evs = mixed
					}
					results[i], errs[i] = p.Ingest(context.Background(), evs, nil)
				})
			}
			wg.Wait()
			for i, err := range errs {
				if err != nil {
					t.Fatalf("caller %d: %v", i, err)
				}
			}
			if r := results[0]; r.Accepted != 9 || r.Rejected != 1 || !strings.Contains(r.Errors[0], "store refused") {
				t.Errorf("poisoned caller's result = %+v, want 9 accepted, 1 rejected by the store", r)
			}
			for i := 1; i < 4; i++ {
				if r := results[i]; r.Accepted != 5 || r.Rejected != 0 {
					t.Errorf("caller %d result = %+v, want 5 accepted", i, r)
				}
			}
			if n := consumerRows(t, b, consumer); n != 9+3*5 {
				t.Errorf("rows = %d, want %d", n, 9+3*5)
			}
			rows, err := pipelinetest.Rejects(context.Background(), b.DSN, poison.Source)
			if err != nil {
				t.Fatal(err)
			}
			if len(rows) != 1 || !strings.Contains(string(rows[0].Payload), poison.ID) {
				t.Errorf("rejects = %+v, want the poisoned record", rows)
			}
		})
	}
}

// TestSystemicRefusal: when the store refuses everything, callers get the
// error (not a pile of rejects), after a bounded number of attempts.
func TestSystemicRefusal(t *testing.T) {
	needStores(t)
	rs := &refuseStore{Store: openStore(t, backends[0].DSN), all: true}
	p := start(t, fastConfig(), rs)
	consumer := uniq(t)
	res, err := p.Ingest(context.Background(), chatEvents(consumer, 200), nil)
	if err == nil || errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("Ingest = %+v, %v; want the store's permanent error", res, err)
	}
	if w := rs.writes.Load(); w > 200 {
		t.Errorf("%d writes for a systemic failure, want a bounded number", w)
	}
	if n := consumerRows(t, backends[0], consumer); n != 0 {
		t.Errorf("rows = %d, want 0", n)
	}
	t.Logf("%d writes before giving up", rs.writes.Load())
}

// TestServeInProcess wires the proxy's shipper straight to the pipeline,
// as `llmtap serve` does: events emitted while the store is down wait in
// the shipper's spool (Consume did not return nil) and arrive once it is
// back, each once.
func TestServeInProcess(t *testing.T) {
	needStores(t)
	for _, b := range backends {
		t.Run(b.Name, func(t *testing.T) {
			target := pipelinetest.PGAddr
			if b.Name == "clickhouse" {
				target = pipelinetest.CHAddr
			}
			fw, err := pipelinetest.NewForwarder(target)
			if err != nil {
				t.Fatal(err)
			}
			defer fw.Close()
			cfg := fastConfig()
			cfg.WriteTimeout = 2 * time.Second
			p := start(t, cfg, openStore(t, b.At(fw.Addr())))

			scfg := ship.DefaultConfig()
			scfg.SpoolDir = t.TempDir()
			scfg.BatchAge = 20 * time.Millisecond
			scfg.RetryInitial = 50 * time.Millisecond
			scfg.RetryMax = 200 * time.Millisecond
			sh, err := ship.New(scfg, p, pipelinetest.Logger(true))
			if err != nil {
				t.Fatal(err)
			}
			if err := sh.Start(context.Background()); err != nil {
				t.Fatal(err)
			}
			defer sh.Close(context.Background())

			consumer := uniq(t)
			waitRows := func(want int64) {
				t.Helper()
				deadline := time.Now().Add(30 * time.Second)
				for {
					n := consumerRows(t, b, consumer)
					if n == want {
						return
					}
					if n > want || time.Now().After(deadline) {
						t.Fatalf("rows = %d, want %d (shipper stats %+v)", n, want, sh.Stats())
					}
					time.Sleep(50 * time.Millisecond)
				}
			}
			for _, ev := range chatEvents(consumer, 30) {
				sh.Emit(ev)
			}
			waitRows(30)

			fw.Down()
			for _, ev := range chatEvents(consumer, 40) {
				sh.Emit(ev)
			}
			deadline := time.Now().Add(20 * time.Second)
			for sh.Stats().Spooled == 0 && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
			if sh.Stats().Spooled == 0 {
				t.Fatalf("nothing spooled while the store was down: %+v", sh.Stats())
			}
			if err := fw.Up(); err != nil {
				t.Fatal(err)
			}
			waitRows(70)
			if err := sh.Close(context.Background()); err != nil {
				t.Fatal(err)
			}
			if n := consumerRows(t, b, consumer); n != 70 {
				t.Errorf("rows after the shipper closed = %d, want 70", n)
			}
			if d := sh.Stats().Dropped; len(d) != 0 {
				t.Errorf("shipper dropped events: %v", d)
			}
		})
	}
}

// TestRejectFunc checks that WithRejectFunc sees every reject before it is
// stored (the caller's and the decoder's) and never the caller's slice.
func TestRejectFunc(t *testing.T) {
	needStores(t)
	b := backends[0]
	src := "reject-func-" + uniq(t)
	fn := func(r *record.Reject) { r.Payload = []byte(strings.ReplaceAll(string(r.Payload), "CANARY", "[X]")) }
	p := start(t, fastConfig(), openStore(t, b.DSN), pipeline.WithRejectFunc(fn))
	bad := pipelinetest.ChatEvent("rf", 0)
	bad.ID, bad.Source, bad.Path = "not-a-uuid", src, "/v1/CANARY"
	mine := []record.Reject{{ReceivedAt: time.Now(), Source: src, Reason: "bad line", Payload: []byte("{CANARY")}}
	if _, err := p.Ingest(context.Background(), []event.Event{bad}, mine); err != nil {
		t.Fatal(err)
	}
	if string(mine[0].Payload) != "{CANARY" {
		t.Errorf("the caller's reject was modified: %q", mine[0].Payload)
	}
	rows, err := pipelinetest.Rejects(context.Background(), b.DSN, src)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 2 {
		t.Fatalf("reject rows = %d, want 2", len(rows))
	}
	for _, r := range rows {
		if strings.Contains(string(r.Payload), "CANARY") {
			t.Errorf("stored reject still holds the canary: %.200s", r.Payload)
		}
	}
}
