package ship

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/llmtap/llmtap/ingest/client"
	"github.com/llmtap/llmtap/ingest/client/clienttest"
	"github.com/llmtap/llmtap/ingest/event"
)

func testConfig(dir string) Config {
	c := DefaultConfig()
	c.SpoolDir = dir
	c.BatchSize = 50
	c.BatchAge = 20 * time.Millisecond
	c.QueueSize = 20000
	c.SegmentBytes = 64 << 10
	c.SpoolMaxBytes = 64 << 20
	c.AttemptTimeout = 2 * time.Second
	c.RetryInitial = 10 * time.Millisecond
	c.RetryMax = 100 * time.Millisecond
	return c
}

func newClient(t testing.TB, url, token string) *client.Client {
	t.Helper()
	c, err := client.New(client.Config{URL: url, Token: token, Timeout: 2 * time.Second, MaxBatchBytes: 4 << 20})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func startShipper(t testing.TB, cfg Config, next event.Consumer) *Shipper {
	t.Helper()
	s, err := New(cfg, next, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(context.Background()) })
	return s
}

var idSeq atomic.Int64

// mkEvent returns an event with a unique id and bodyLen random
// (incompressible) body bytes.
func mkEvent(bodyLen int) event.Event {
	body := make([]byte, bodyLen)
	rand.Read(body)
	return event.Event{
		ID:           fmt.Sprintf("ev-%08d", idSeq.Add(1)),
		Time:         time.Now().UTC(),
		Source:       event.SourceProxy,
		Consumer:     "team-a",
		Method:       "POST",
		Path:         "/v1/chat/completions",
		Status:       200,
		RequestBody:  []byte(`{"model":"m","messages":[{"role":"user","content":"hi"}]}`),
		ResponseBody: body,
	}
}

func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// assertDelivered checks that every id in want arrived at least once and
// nothing else arrived.
func assertDelivered(t *testing.T, rcv *clienttest.Receiver, want map[string]bool) {
	t.Helper()
	counts := rcv.Counts()
	dups := 0
	for id, n := range counts {
		if !want[id] {
			t.Errorf("unexpected event %s arrived", id)
		}
		dups += n - 1
	}
	missing := 0
	for id := range want {
		if counts[id] == 0 {
			missing++
		}
	}
	if missing > 0 {
		t.Fatalf("%d of %d events never arrived", missing, len(want))
	}
	t.Logf("%d events delivered, %d duplicate deliveries", len(want), dups)
}

func TestBatchingBySize(t *testing.T) {
	rcv := clienttest.New()
	defer rcv.Close()
	cfg := testConfig(t.TempDir())
	cfg.BatchSize, cfg.BatchAge = 10, time.Hour
	s := startShipper(t, cfg, newClient(t, rcv.URL(), ""))
	for range 30 {
		s.Emit(mkEvent(10))
	}
	waitFor(t, "30 events", 5*time.Second, func() bool { return len(rcv.Events()) == 30 })
	if n := rcv.Requests(); n != 3 {
		t.Fatalf("%d requests, want 3 batches of 10", n)
	}
	// A partial batch waits for its age (an hour here) ...
	s.Emit(mkEvent(10))
	time.Sleep(100 * time.Millisecond)
	if n := len(rcv.Events()); n != 30 {
		t.Fatalf("partial batch sent early: %d events", n)
	}
	// ... or for Close, which delivers it.
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := len(rcv.Events()); n != 31 {
		t.Fatalf("after Close: %d events, want 31", n)
	}
	if st := s.Stats(); st.Shipped != 31 || st.Spooled != 0 || st.DroppedTotal() != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestBatchingByBytes(t *testing.T) {
	rcv := clienttest.New()
	defer rcv.Close()
	cfg := testConfig(t.TempDir())
	cfg.BatchSize, cfg.BatchAge, cfg.BatchBytes = 1000, time.Hour, 10<<10
	s := startShipper(t, cfg, newClient(t, rcv.URL(), ""))
	for range 8 {
		s.Emit(mkEvent(3 << 10)) // ~4.5 KB estimated each: 3 per batch
	}
	waitFor(t, "6 events", 5*time.Second, func() bool { return len(rcv.Events()) == 6 })
	if n := rcv.Requests(); n != 2 {
		t.Fatalf("%d requests, want 2", n)
	}
}

func TestBatchingByAge(t *testing.T) {
	rcv := clienttest.New()
	defer rcv.Close()
	cfg := testConfig(t.TempDir())
	cfg.BatchSize, cfg.BatchAge = 1000, 50*time.Millisecond
	s := startShipper(t, cfg, newClient(t, rcv.URL(), ""))
	for range 5 {
		s.Emit(mkEvent(10))
	}
	waitFor(t, "5 events", 5*time.Second, func() bool { return len(rcv.Events()) == 5 })
	if n := rcv.Requests(); n != 1 {
		t.Fatalf("%d requests, want 1", n)
	}
}

func TestReceiverDownUnderLoadThenUp(t *testing.T) {
	for _, mode := range []struct {
		name   string
		status int
	}{{"503", 503}, {"connection dropped", -1}} {
		t.Run(mode.name, func(t *testing.T) {
			rcv := clienttest.New()
			defer rcv.Close()
			s := startShipper(t, testConfig(t.TempDir()), newClient(t, rcv.URL(), ""))

			var mu sync.Mutex
			want := map[string]bool{}
			emit := func(n int) {
				var wg sync.WaitGroup
				for range 4 {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for range n / 4 {
							ev := mkEvent(200)
							mu.Lock()
							want[ev.ID] = true
							mu.Unlock()
							s.Emit(ev)
						}
					}()
				}
				wg.Wait()
			}
			emit(400)
			rcv.Fail(mode.status, "0")
			emit(2000)
			waitFor(t, "spooling", 5*time.Second, func() bool { return s.Stats().Spooled > 0 })
			emit(400)
			time.Sleep(50 * time.Millisecond)
			rcv.Fail(0, "")
			emit(400)
			waitFor(t, "all events", 20*time.Second, func() bool {
				u, _ := rcv.Unique()
				return u == len(want)
			})
			assertDelivered(t, rcv, want)
			st := s.Stats()
			if st.DroppedTotal() != 0 || st.Errors == 0 || st.Spooled == 0 {
				t.Fatalf("stats %+v", st)
			}
			waitFor(t, "spool drained", 5*time.Second, func() bool { return s.Stats().SpoolBytes == 0 })
		})
	}
}

func TestRestartReplaysSpool(t *testing.T) {
	dir := t.TempDir()
	down := clienttest.New()
	downURL := down.URL()
	down.Close() // connection refused

	cfg := testConfig(dir)
	s1 := startShipper(t, cfg, newClient(t, downURL, ""))
	want := map[string]bool{}
	for range 1000 {
		ev := mkEvent(300)
		want[ev.ID] = true
		s1.Emit(ev)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := s1.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s1.Close(ctx); err != nil { // idempotent
		t.Fatal(err)
	}
	st := s1.Stats()
	if st.Spooled != 1000 || st.Shipped != 0 || st.DroppedTotal() != 0 {
		t.Fatalf("after close: %+v", st)
	}
	if len(segFiles(t, dir, segSuffix)) == 0 {
		t.Fatal("no spool segments on disk")
	}

	rcv := clienttest.New()
	defer rcv.Close()
	s2 := startShipper(t, cfg, newClient(t, rcv.URL(), ""))
	waitFor(t, "replay", 20*time.Second, func() bool {
		u, _ := rcv.Unique()
		return u == len(want)
	})
	assertDelivered(t, rcv, want)
	waitFor(t, "spool empty", 5*time.Second, func() bool { return s2.Stats().SpoolBytes == 0 })
	if f := segFiles(t, dir, segSuffix); len(f) != 0 {
		t.Fatalf("segments left after replay: %v", f)
	}
	// Order: the replay delivers oldest first.
	evs := rcv.Events()
	for i := 1; i < len(evs); i++ {
		if evs[i].ID < evs[i-1].ID {
			t.Fatalf("replay out of order at %d: %s after %s", i, evs[i].ID, evs[i-1].ID)
		}
	}
}

func TestRestartWithDamagedSpool(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(dir)
	cfg.BatchSize = 10
	cfg.SegmentBytes = 8 << 10
	down := clienttest.New()
	down.Close()
	s1 := startShipper(t, cfg, newClient(t, down.URL(), ""))
	for range 300 {
		s1.Emit(mkEvent(200))
	}
	if err := s1.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	segs := segFiles(t, dir, segSuffix)
	if len(segs) < 4 {
		t.Fatalf("want several segments, got %d", len(segs))
	}
	// What is in each record, before the damage.
	type rec struct {
		off int64
		ids []string
	}
	records := map[string][]rec{}
	for _, p := range segs {
		data, _ := os.ReadFile(p)
		var off int64
		for {
			payload, next, st, err := readRecord(strings.NewReader(string(data)), off, int64(len(data)), nil)
			if err != nil || st != recOK {
				break
			}
			evs, err := decodeBatch(payload)
			if err != nil {
				t.Fatal(err)
			}
			var ids []string
			for _, e := range evs {
				ids = append(ids, e.ID)
			}
			records[p] = append(records[p], rec{off, ids})
			off = next
		}
	}
	first, last := segs[0], segs[len(segs)-1]
	if len(records[first]) < 3 {
		t.Fatalf("first segment has %d records", len(records[first]))
	}
	// Bit flip inside the second record of the first segment: only that
	// record is quarantined; the intact records after it are replayed.
	flip(t, first, records[first][1].off+recordHeaderLen+10)
	// Torn tail: cut the newest segment in the middle of its last record.
	lr := records[last][len(records[last])-1]
	if err := os.Truncate(last, lr.off+recordHeaderLen+3); err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{}
	for _, p := range segs {
		for i, r := range records[p] {
			if p == first && i == 1 || p == last && i == len(records[p])-1 {
				continue
			}
			for _, id := range r.ids {
				want[id] = true
			}
		}
	}

	rcv := clienttest.New()
	defer rcv.Close()
	before := testutil.ToFloat64(spoolCorrupt)
	s2 := startShipper(t, cfg, newClient(t, rcv.URL(), ""))
	waitFor(t, "replay", 20*time.Second, func() bool { u, _ := rcv.Unique(); return u >= len(want) })
	waitFor(t, "spool empty", 5*time.Second, func() bool { return s2.Stats().SpoolBytes == 0 })
	assertDelivered(t, rcv, want)
	if c := s2.Stats().Corrupt; c != 1 {
		t.Fatalf("corrupt records %d, want 1", c)
	}
	if d := testutil.ToFloat64(spoolCorrupt) - before; d != 1 {
		t.Fatalf("llmtap_spool_corrupt_records_total grew by %v", d)
	}
	if len(segFiles(t, dir, corruptSuffix)) != 1 {
		t.Fatal("no quarantine file")
	}
}

func TestSpoolFullPassCountsEveryDrop(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(dir)
	cfg.SpoolMaxBytes = 256 << 10
	cfg.SegmentBytes = 32 << 10
	rcv := clienttest.New()
	defer rcv.Close()
	rcv.Fail(503, "")
	droppedBefore := testutil.ToFloat64(eventsDropped.WithLabelValues(DropSpoolFull))

	s1 := startShipper(t, cfg, newClient(t, rcv.URL(), ""))
	const n = 2000
	want := map[string]bool{}
	for i := range n {
		ev := mkEvent(500)
		want[ev.ID] = true
		s1.Emit(ev)
		if i%100 == 0 {
			time.Sleep(time.Millisecond)
		}
	}
	if err := s1.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	st1 := s1.Stats()
	dropped := st1.Dropped[DropSpoolFull]
	if dropped == 0 || dropped != st1.DroppedTotal() {
		t.Fatalf("want drops for a full spool only: %+v", st1)
	}
	if d := testutil.ToFloat64(eventsDropped.WithLabelValues(DropSpoolFull)) - droppedBefore; int64(d) != dropped {
		t.Fatalf("metric says %v dropped, stats %d", d, dropped)
	}
	if !s1.Accepting() {
		t.Fatal("policy pass must keep accepting")
	}

	rcv.Fail(0, "")
	s2 := startShipper(t, cfg, newClient(t, rcv.URL(), ""))
	waitFor(t, "spool drained", 20*time.Second, func() bool { return s2.Stats().SpoolBytes == 0 })
	if err := s2.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	u, _ := rcv.Unique()
	if int64(u) != n-dropped {
		t.Fatalf("received %d distinct events; sent %d, dropped %d: %d unaccounted", u, n, dropped, int64(n)-dropped-int64(u))
	}
	for id := range rcv.Counts() {
		if !want[id] {
			t.Fatalf("unknown event %s", id)
		}
	}
}

func TestSpoolFullRejectFailsClosed(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.OnAuditFailure = PolicyReject
	cfg.SpoolMaxBytes = 128 << 10
	cfg.SegmentBytes = 16 << 10
	cfg.BatchSize = 5
	cfg.BatchAge = time.Millisecond
	rcv := clienttest.New()
	defer rcv.Close()
	rcv.Fail(503, "")
	s := startShipper(t, cfg, newClient(t, rcv.URL(), ""))

	want := map[string]bool{}
	// Like the proxy: serve (and emit) only while Accepting.
	for i := 0; s.Accepting(); i++ {
		if i > 10000 {
			t.Fatal("never stopped accepting")
		}
		ev := mkEvent(1000)
		want[ev.ID] = true
		s.Emit(ev)
		waitFor(t, "event handled", 5*time.Second, func() bool {
			st := s.Stats()
			return st.Spooled+st.Shipped+st.DroppedTotal() == int64(len(want))
		})
	}
	st := s.Stats()
	if st.DroppedTotal() != 0 {
		t.Fatalf("reject mode dropped events: %+v", st)
	}
	if st.SpoolBytes < s.highWater() {
		t.Fatalf("stopped accepting below the high-water mark: %+v", st)
	}
	rcv.Fail(0, "")
	waitFor(t, "accepting again", 10*time.Second, s.Accepting)
	waitFor(t, "delivery", 10*time.Second, func() bool { u, _ := rcv.Unique(); return u == len(want) })
	assertDelivered(t, rcv, want)
}

func TestCloseDeadlineSpoolsPending(t *testing.T) {
	dir := t.TempDir()
	rcv := clienttest.New()
	defer rcv.Close()
	rcv.Delay(1500 * time.Millisecond) // a hanging ingest
	cfg := testConfig(dir)
	cfg.BatchAge = time.Hour
	cfg.AttemptTimeout = 10 * time.Second
	s := startShipper(t, cfg, newClient(t, rcv.URL(), ""))
	for range 120 {
		s.Emit(mkEvent(100))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); el > time.Second {
		t.Fatalf("Close took %v despite a 200ms deadline", el)
	}
	st := s.Stats()
	if st.Spooled+st.Shipped != 120 || st.DroppedTotal() != 0 {
		t.Fatalf("stats after close: %+v", st)
	}
	if st.SpoolBytes == 0 {
		t.Fatal("nothing on disk")
	}
}

func TestQueueOverflowGoesToSpool(t *testing.T) {
	rcv := clienttest.New()
	defer rcv.Close()
	rcv.Delay(200 * time.Millisecond) // slow but working
	cfg := testConfig(t.TempDir())
	cfg.QueueSize = 20
	cfg.BatchSize = 10
	s := startShipper(t, cfg, newClient(t, rcv.URL(), ""))
	const n = 500
	for i := range n {
		s.Emit(mkEvent(50))
		if i%10 == 0 {
			time.Sleep(time.Millisecond) // Emit itself never waits
		}
	}
	rcv.Delay(0)
	st := s.Stats()
	waitFor(t, "delivery", 20*time.Second, func() bool {
		u, _ := rcv.Unique()
		return int64(u)+s.Stats().DroppedTotal() == n
	})
	st = s.Stats()
	if st.Spooled == 0 {
		t.Fatalf("overflow never reached the spool: %+v", st)
	}
	if st.DroppedTotal() != st.Dropped[DropQueueFull] {
		t.Fatalf("unexpected drop reasons: %+v", st.Dropped)
	}
	t.Logf("stats %+v", st)
}

func TestPermanentRefusalIsolatesTheEvent(t *testing.T) {
	dir := t.TempDir()
	rcv := clienttest.New()
	defer rcv.Close()
	rcv.Refuse(func(ev event.Event) bool { return ev.Path == "/poison" })
	cfg := testConfig(dir)
	cfg.BatchSize = 20
	s := startShipper(t, cfg, newClient(t, rcv.URL(), ""))
	want := map[string]bool{}
	var poison string
	for i := range 40 {
		ev := mkEvent(10)
		if i == 13 {
			ev.Path, poison = "/poison", ev.ID
		} else {
			want[ev.ID] = true
		}
		s.Emit(ev)
	}
	waitFor(t, "delivery", 10*time.Second, func() bool { u, _ := rcv.Unique(); return u == 39 })
	assertDelivered(t, rcv, want)
	waitFor(t, "drop counted", 5*time.Second, func() bool { return s.Stats().Dropped[DropRejected] == 1 })
	data, err := os.ReadFile(filepath.Join(dir, "rejected.seg"))
	if err != nil {
		t.Fatal(err)
	}
	p, _, st, _ := readRecord(strings.NewReader(string(data)), 0, int64(len(data)), nil)
	evs, err := decodeBatch(p)
	if st != recOK || err != nil || len(evs) != 1 || evs[0].ID != poison {
		t.Fatalf("rejected.seg does not hold the refused event: %v %v", st, err)
	}
}

func TestWrongTokenKeepsEventsSpooled(t *testing.T) {
	rcv := clienttest.New()
	defer rcv.Close()
	rcv.SetToken("right")
	cfg := testConfig(t.TempDir())
	s := startShipper(t, cfg, newClient(t, rcv.URL(), "wrong"))
	for range 30 {
		s.Emit(mkEvent(10))
	}
	waitFor(t, "spooled", 5*time.Second, func() bool { return s.Stats().Spooled == 30 })
	time.Sleep(300 * time.Millisecond) // several retry rounds
	st := s.Stats()
	if st.Shipped != 0 || st.DroppedTotal() != 0 || st.SpoolBytes == 0 {
		t.Fatalf("events must stay spooled while the token is refused: %+v", st)
	}
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Fixed token, restart: everything arrives.
	s2 := startShipper(t, cfg, newClient(t, rcv.URL(), "right"))
	waitFor(t, "delivery", 10*time.Second, func() bool { u, _ := rcv.Unique(); return u == 30 })
	_ = s2
}

func TestEmitAfterCloseIsCounted(t *testing.T) {
	rcv := clienttest.New()
	defer rcv.Close()
	s := startShipper(t, testConfig(t.TempDir()), newClient(t, rcv.URL(), ""))
	s.Close(context.Background())
	s.Emit(mkEvent(1))
	if d := s.Stats().Dropped[DropClosed]; d != 1 {
		t.Fatalf("dropped[closed] = %d", d)
	}
}

func TestEmitBeforeStartIsSpooledByClose(t *testing.T) {
	dir := t.TempDir()
	s, err := New(testConfig(dir), event.ConsumerFunc(func(context.Context, []event.Event) error {
		return errors.New("down")
	}), testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	for range 7 {
		s.Emit(mkEvent(1))
	}
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.Spooled != 7 {
		t.Fatalf("stats %+v", st)
	}
}

func TestInProcessConsumer(t *testing.T) {
	// `llmtap serve` hands events to the ingest pipeline in-process; any
	// event.Consumer works, and its failures are spooled like HTTP ones.
	var mu sync.Mutex
	got := map[string]int{}
	var fail atomic.Bool
	fail.Store(true)
	next := event.ConsumerFunc(func(ctx context.Context, evs []event.Event) error {
		if fail.Load() {
			return errors.New("store unavailable")
		}
		mu.Lock()
		defer mu.Unlock()
		for _, e := range evs {
			got[e.ID]++
		}
		return nil
	})
	s := startShipper(t, testConfig(t.TempDir()), next)
	for range 100 {
		s.Emit(mkEvent(10))
	}
	waitFor(t, "spooled", 5*time.Second, func() bool { return s.Stats().Spooled == 100 })
	fail.Store(false)
	waitFor(t, "delivered", 5*time.Second, func() bool { mu.Lock(); defer mu.Unlock(); return len(got) == 100 })
}

func TestConfigValidate(t *testing.T) {
	ok := DefaultConfig()
	cases := []struct {
		name string
		mut  func(*Config)
		ok   bool
	}{
		{"default", func(*Config) {}, true},
		{"reject", func(c *Config) { c.OnAuditFailure = PolicyReject }, true},
		{"bad policy", func(c *Config) { c.OnAuditFailure = "drop" }, false},
		{"no dir", func(c *Config) { c.SpoolDir = "" }, false},
		{"zero batch", func(c *Config) { c.BatchSize = 0 }, false},
		{"zero age", func(c *Config) { c.BatchAge = 0 }, false},
		{"zero queue", func(c *Config) { c.QueueSize = 0 }, false},
		{"spool < segment", func(c *Config) { c.SpoolMaxBytes = c.SegmentBytes - 1 }, true},
		{"no spool bytes", func(c *Config) { c.SpoolMaxBytes = 0 }, false},
		{"retry order", func(c *Config) { c.RetryMax = c.RetryInitial / 2 }, false},
	}
	for _, tc := range cases {
		c := ok
		tc.mut(&c)
		if err := c.Validate(); (err == nil) != tc.ok {
			t.Errorf("%s: Validate() = %v", tc.name, err)
		}
	}
	if _, err := New(ok, nil, nil); err == nil {
		t.Error("New accepted a nil consumer")
	}
}

// BenchmarkEmit measures the cost of Emit for parallel producers while the
// sender drains to a next hop that returns at once. Events that find both
// queues full are dropped (reported), which is what Emit does instead of
// blocking.
func BenchmarkEmit(b *testing.B) {
	next := event.ConsumerFunc(func(context.Context, []event.Event) error { return nil })
	cfg := testConfig(b.TempDir())
	cfg.QueueSize = 1 << 14
	cfg.BatchSize = 500
	s := startShipper(b, cfg, next)
	ev := mkEvent(1024)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			s.Emit(ev)
		}
	})
	b.StopTimer()
	s.Close(context.Background())
	st := s.Stats()
	b.ReportMetric(float64(st.DroppedTotal())/float64(b.N), "dropped/op")
}

// BenchmarkShipThroughput measures sustained events per second from Emit
// to a next hop that returns at once (the producer yields while the queue
// is more than half full, so nothing is spooled or dropped).
func BenchmarkShipThroughput(b *testing.B) {
	var n atomic.Int64
	next := event.ConsumerFunc(func(_ context.Context, evs []event.Event) error {
		n.Add(int64(len(evs)))
		return nil
	})
	cfg := testConfig(b.TempDir())
	cfg.QueueSize = 1 << 14
	cfg.BatchSize = 500
	cfg.BatchAge = time.Millisecond
	s := startShipper(b, cfg, next)
	ev := mkEvent(1024)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		for len(s.queue) > cap(s.queue)/2 {
			runtime.Gosched()
		}
		s.Emit(ev)
		i++
	}
	for n.Load()+s.Stats().Spooled+s.Stats().DroppedTotal() < int64(i) {
		runtime.Gosched()
	}
	b.ReportMetric(float64(i)/b.Elapsed().Seconds(), "events/s")
	if st := s.Stats(); st.DroppedTotal() != 0 {
		b.Fatalf("dropped %d", st.DroppedTotal())
	}
}

func TestOddValuesDoNotPoisonABatch(t *testing.T) {
	rcv := clienttest.New()
	defer rcv.Close()
	s := startShipper(t, testConfig(t.TempDir()), newClient(t, rcv.URL(), ""))
	nan, inf := math.NaN(), math.Inf(1)
	odd := mkEvent(10)
	odd.LatencyMs, odd.TTFTMs, odd.TTFBMs = nan, &inf, &nan
	odd.Time = time.Date(12000, 1, 1, 0, 0, 0, 0, time.UTC)
	odd.RequestBody = []byte{0xff, 0xfe, 0x00}
	odd.Consumer = "bad utf8 \xff"
	want := map[string]bool{odd.ID: true}
	s.Emit(odd)
	for range 9 {
		ev := mkEvent(10)
		want[ev.ID] = true
		s.Emit(ev)
	}
	waitFor(t, "delivery", 5*time.Second, func() bool { u, _ := rcv.Unique(); return u == 10 })
	assertDelivered(t, rcv, want)
	if st := s.Stats(); st.DroppedTotal() != 0 || st.Errors != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestSpoolDirIsLocked(t *testing.T) {
	dir := t.TempDir()
	noop := event.ConsumerFunc(func(context.Context, []event.Event) error { return nil })
	s1 := startShipper(t, testConfig(dir), noop)
	s2, err := New(testConfig(dir), noop, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := s2.Start(context.Background()); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second shipper on the same spool dir: %v", err)
	}
	s1.Close(context.Background())
	startShipper(t, testConfig(dir), noop)
}

// TestSpoolFullRejectNeverDropsAnswered drives the shipper like the proxy
// under policy reject with the next hop down: concurrent "requests" check
// Accepting, take a while (in flight), and emit a 200 event when admitted
// or a 503 event when refused. Events wait in memory (long BatchAge) so
// that only the reservation keeps admission honest. No admitted event may
// be dropped, and every one must be delivered once the next hop is back.
func TestSpoolFullRejectNeverDropsAnswered(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.OnAuditFailure = PolicyReject
	cfg.SpoolMaxBytes = 256 << 10
	cfg.SegmentBytes = 16 << 10
	cfg.BatchSize = 50
	cfg.BatchAge = 300 * time.Millisecond
	rcv := clienttest.New()
	defer rcv.Close()
	rcv.Fail(503, "")
	s := startShipper(t, cfg, newClient(t, rcv.URL(), ""))

	var mu sync.Mutex
	admitted := map[string]bool{}
	var refused atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 150; i++ {
				ev := mkEvent(1000)
				if !s.Accepting() {
					ev.Status = 503
					refused.Add(1)
					s.Emit(ev)
					time.Sleep(time.Millisecond)
					continue
				}
				time.Sleep(2 * time.Millisecond) // the request is in flight
				mu.Lock()
				admitted[ev.ID] = true
				mu.Unlock()
				s.Emit(ev)
			}
		}()
	}
	wg.Wait()
	waitFor(t, "events handled", 10*time.Second, func() bool {
		st := s.Stats()
		return st.Spooled+st.Shipped+st.DroppedTotal() == 16*150
	})
	st := s.Stats()
	t.Logf("admitted %d, refused %d, stats %+v", len(admitted), refused.Load(), st)
	if refused.Load() == 0 {
		t.Fatal("the spool never filled: the test proves nothing")
	}
	if st.DroppedTotal() > refused.Load() {
		t.Fatalf("%d events dropped but only %d requests were refused: answered requests lost their record", st.DroppedTotal(), refused.Load())
	}
	if st.SpoolBytes > cfg.SpoolMaxBytes {
		t.Fatalf("spool %d bytes > bound %d", st.SpoolBytes, cfg.SpoolMaxBytes)
	}
	rcv.Fail(0, "")
	waitFor(t, "admitted events delivered", 20*time.Second, func() bool {
		c := rcv.Counts()
		for id := range admitted {
			if c[id] == 0 {
				return false
			}
		}
		return true
	})
	if got := s.reserved.Load(); got != 0 {
		t.Fatalf("reserved bytes leaked: %d", got)
	}
}
