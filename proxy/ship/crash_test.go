package ship

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/llmtap/llmtap/ingest/event"
)

// TestCrashHelper is the child process of TestKill9KeepsSpooledEvents; it
// does nothing in a normal run.
func TestCrashHelper(t *testing.T) {
	dir := os.Getenv("LLMTAP_SHIP_CRASH_DIR")
	if dir == "" {
		t.Skip("helper process only")
	}
	cfg := testConfig(dir)
	cfg.SegmentBytes = 256 << 10
	cfg.BatchSize = 10
	down := event.ConsumerFunc(func(context.Context, []event.Event) error { return errors.New("ingest down") })
	s, err := New(cfg, down, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	out := bufio.NewWriter(os.Stdout)
	for i := 0; ; i++ {
		var ids []string
		for j := range 10 {
			ev := mkEvent(2000)
			ev.ID = fmt.Sprintf("crash-%06d-%d", i, j)
			ids = append(ids, ev.ID)
			s.Emit(ev)
		}
		for s.Stats().Spooled < int64(10*(i+1)) {
			time.Sleep(100 * time.Microsecond)
		}
		// Spooled means fsync'ed: report these ids as durable.
		fmt.Fprintln(out, strings.Join(ids, " "))
		out.Flush()
	}
}

// TestKill9KeepsSpooledEvents kills a process that is spooling (ingest
// down) with SIGKILL, then checks that a new Shipper on the same directory
// delivers every event the dead one had reported as spooled.
func TestKill9KeepsSpooledEvents(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns a process")
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashHelper$", "-test.count=1")
	cmd.Env = append(os.Environ(), "LLMTAP_SHIP_CRASH_DIR="+dir)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	durable := map[string]bool{}
	sc := bufio.NewScanner(stdout)
	killed := false
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "crash-") {
			continue
		}
		for _, id := range strings.Fields(line) {
			durable[id] = true
		}
		if len(durable) >= 1500 && !killed {
			cmd.Process.Kill() // SIGKILL, mid-write most likely
			killed = true
		}
	}
	cmd.Wait()
	if !killed {
		t.Fatalf("child ended before the kill after %d events", len(durable))
	}

	var mu sync.Mutex
	got := map[string]int{}
	rec := event.ConsumerFunc(func(_ context.Context, evs []event.Event) error {
		mu.Lock()
		defer mu.Unlock()
		for _, e := range evs {
			got[e.ID]++
		}
		return nil
	})
	cfg := testConfig(dir)
	cfg.SegmentBytes = 256 << 10
	s := startShipper(t, cfg, rec)
	waitFor(t, "replay", 30*time.Second, func() bool { return s.Stats().SpoolBytes == 0 })
	mu.Lock()
	defer mu.Unlock()
	missing := 0
	for id := range durable {
		if got[id] == 0 {
			missing++
		}
	}
	if missing > 0 {
		t.Fatalf("%d of %d events reported as spooled were lost by kill -9", missing, len(durable))
	}
	t.Logf("%d durable events before kill -9, %d replayed after restart, corrupt %d", len(durable), len(got), s.Stats().Corrupt)
}
