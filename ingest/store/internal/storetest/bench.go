package storetest

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/llmtap/llmtap/ingest/record"
)

// Batches yields fresh batches for write benchmarks: the same realistic
// bodies each time, new event ids, and timestamps that advance by the
// batch's duration at rate events/s (so a table grows as in production:
// a batch spans the last 60 s of request starts).
type Batches struct {
	tmpl  []record.Record
	buf   []record.Record
	base  time.Time
	step  time.Duration
	Bytes int64 // body bytes per batch, for b.SetBytes
}

// NewBatches prepares batches of n records.
func NewBatches(n int, rate float64) *Batches {
	base := time.Now().UTC().Add(-24 * time.Hour)
	tmpl := Realistic(n, 42, base)
	return &Batches{
		tmpl:  tmpl,
		buf:   make([]record.Record, n),
		base:  base,
		step:  time.Duration(float64(n) / rate * float64(time.Second)),
		Bytes: Bytes(tmpl),
	}
}

// Next returns the next batch; it is reused by the following call.
func (g *Batches) Next() []record.Record {
	g.base = g.base.Add(g.step)
	shift := g.base.Sub(g.tmpl[0].IngestedAt)
	for i := range g.tmpl {
		r := g.tmpl[i]
		r.EventID = uuid.Must(uuid.NewV7()).String()
		r.TS = r.TS.Add(shift)
		r.IngestedAt = g.base
		g.buf[i] = r
	}
	return g.buf
}

// Variant is one way of writing a batch in an interleaved benchmark.
type Variant struct {
	Name  string
	Write func(recs []record.Record) error
}

// ServerPIDs, when set, lists the database server's processes whose CPU
// time Interleave adds to the benchmark process's own.
var ServerPIDs func() []int

// cpuNow returns this process's CPU time plus the servers'.
func cpuNow(pids []int) time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	d := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		// Fields after the parenthesised command: state is field 3,
		// utime and stime are fields 14 and 15 (clock ticks, 100 Hz).
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
		if len(f) > 12 {
			u, _ := strconv.ParseInt(f[11], 10, 64)
			k, _ := strconv.ParseInt(f[12], 10, 64)
			d += time.Duration(u+k) * 10 * time.Millisecond
		}
	}
	return d
}

// PIDsOf returns the pids of processes whose command name is comm.
func PIDsOf(comm string) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/comm")
		if err == nil && strings.TrimSpace(string(b)) == comm {
			out = append(out, pid)
		}
	}
	return out
}

// Interleave runs b.N rounds; each round writes one fresh batch with every
// variant, rotating their order, and times each write. Machine load (other
// processes on a shared box) then hits all variants alike, so their ratio
// is meaningful even when absolute rates are not. It reports events/s per
// variant, each variant's ratio to the first (the ceiling), and, when
// ServerPIDs is set, "cpu-events/s": events per CPU-second of this process
// plus the database server, which is what one writer would reach on an
// otherwise idle machine (client and server alternate) and does not depend
// on other load. Background work of the server (merges, checkpoints) is
// counted against whichever write is running.
func Interleave(b *testing.B, size int, rate float64, vs []Variant) {
	gens := make([]*Batches, len(vs))
	for i := range gens {
		gens[i] = NewBatches(size, rate)
	}
	b.SetBytes(gens[0].Bytes * int64(len(vs)))
	b.ReportAllocs()
	took := make([]time.Duration, len(vs))
	cpu := make([]time.Duration, len(vs))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for k := range vs {
			j := (i + k) % len(vs)
			b.StopTimer()
			recs := gens[j].Next()
			var pids []int
			if ServerPIDs != nil {
				pids = ServerPIDs()
			}
			b.StartTimer()
			c0 := cpuNow(pids)
			start := time.Now()
			if err := vs[j].Write(recs); err != nil {
				b.Fatalf("%s: %v", vs[j].Name, err)
			}
			took[j] += time.Since(start)
			cpu[j] += cpuNow(pids) - c0
		}
	}
	b.StopTimer()
	events := float64(b.N * size)
	for j, v := range vs {
		b.ReportMetric(events/took[j].Seconds(), v.Name+"-events/s")
		if ServerPIDs != nil && cpu[j] > 0 {
			b.ReportMetric(events/cpu[j].Seconds(), v.Name+"-cpu-events/s")
		}
		if j > 0 {
			b.ReportMetric(took[0].Seconds()/took[j].Seconds(), fmt.Sprintf("%s/%s", v.Name, vs[0].Name))
		}
	}
}
