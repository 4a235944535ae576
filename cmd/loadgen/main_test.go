package main

import (
	"crypto/sha256"
	"encoding/json"
	"io"
	"os"
	"runtime"
	"testing"
	"time"
)

// burn uses CPU on this goroutine for at least d of wall time.
func burn(d time.Duration) {
	h := sha256.New()
	buf := make([]byte, 64<<10)
	for end := time.Now().Add(d); time.Now().Before(end); {
		h.Write(buf)
	}
}

func TestCPUSecondsCountsThisProcess(t *testing.T) {
	if runtime.GOOS == "windows" || runtime.GOOS == "plan9" {
		t.Skip("getrusage is unix-only")
	}
	before := cpuSeconds()
	if before < 0 {
		t.Fatalf("cpuSeconds() = %v before any work", before)
	}
	burn(300 * time.Millisecond)
	after := cpuSeconds()
	// The busy loop ran on one thread for 300 ms of wall time; on a loaded
	// machine it may get less than all of it, but it gets some.
	if after <= before {
		t.Fatalf("cpuSeconds() did not grow across a busy loop: %v -> %v", before, after)
	}
}

func TestJSONSummaryHasCPUSeconds(t *testing.T) {
	rs := []Result{
		{Status: 200, TotalMs: 2, TTFBMs: 1},
		{Status: 502, TotalMs: 4, TTFBMs: 3},
		{Err: "connection refused"},
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout := os.Stdout
	os.Stdout = w
	printSummary("x", rs, time.Second, true)
	os.Stdout = stdout
	w.Close()
	out, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(out, &m); err != nil {
		t.Fatalf("summary is not JSON: %v: %s", err, out)
	}
	for _, k := range []string{"label", "requests", "errors", "statuses", "seconds", "rps", "p50_ms", "p99_ms", "ttfb_p50_ms", "ttfb_p99_ms", "cpu_seconds"} {
		if _, ok := m[k]; !ok {
			t.Errorf("summary lacks %q: %s", k, out)
		}
	}
	if m["requests"].(float64) != 3 || m["errors"].(float64) != 1 || m["rps"].(float64) != 2 {
		t.Errorf("requests/errors/rps = %v/%v/%v, want 3/1/2", m["requests"], m["errors"], m["rps"])
	}
	if c := m["cpu_seconds"].(float64); runtime.GOOS != "windows" && runtime.GOOS != "plan9" && c <= 0 {
		t.Errorf("cpu_seconds = %v, want > 0 for a running test binary", c)
	}
}
