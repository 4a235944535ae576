package query

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/jackc/pgx/v5"

	"github.com/llmtap/llmtap/schema"
)

// Export benchmark. It runs only when LLMTAP_BENCH_EXPORT_ROWS is set, e.g.
//
//	LLMTAP_BENCH_EXPORT_ROWS=10000000 go test -run '^$' -bench BenchmarkExport -benchtime 1x -timeout 2h ./query
//
// It generates that many rows once (about LLMTAP_BENCH_EXPORT_BODY bytes of
// body each, default 600) in llmtap_bench_query on both stores, then exports
// them in a child process (this test binary running TestExportChild) and
// reports rows/s and the child's peak RSS (VmHWM), which includes the Go
// runtime and the drivers.
func BenchmarkExport(b *testing.B) {
	n, _ := strconv.Atoi(os.Getenv("LLMTAP_BENCH_EXPORT_ROWS"))
	if n <= 0 {
		b.Skip("set LLMTAP_BENCH_EXPORT_ROWS (e.g. 10000000) to run the export benchmark")
	}
	body := 600
	if s := os.Getenv("LLMTAP_BENCH_EXPORT_BODY"); s != "" {
		body, _ = strconv.Atoi(s)
	}
	const db = "llmtap_bench_query"
	dsns := map[string]string{Postgres: pgDSN(db), ClickHouse: chDSN(db)}
	if !benchDataReady(b, dsns, n) {
		start := time.Now()
		dsns = freshStores(b, db)
		generateRows(b, dsns, n, body)
		b.Logf("generated %d rows of ~%d body bytes in both stores in %v", n, body, time.Since(start).Round(time.Second))
	}
	p := Params{From: base, To: base.Add(time.Duration(n) * 5 * time.Second)}
	formats := []string{FormatJSONL, FormatCSV}
	if f := os.Getenv("LLMTAP_BENCH_EXPORT_FORMAT"); f != "" {
		formats = []string{f}
	}
	for _, dialect := range []string{Postgres, ClickHouse} {
		for _, format := range formats {
			b.Run(dialect+"/"+format, func(b *testing.B) {
				out := filepath.Join(b.TempDir(), "export."+format)
				var res childResult
				for i := 0; i < b.N; i++ {
					res = runExportChild(b, dsns[dialect], p, format, out)
				}
				if res.Rows != int64(n) {
					b.Fatalf("exported %d rows, want %d", res.Rows, n)
				}
				b.ReportMetric(float64(res.Rows)/res.Seconds, "rows/s")
				b.ReportMetric(float64(res.VmHWMKB)/1024, "MB-peak-RSS")
				b.ReportMetric(float64(res.Bytes)/res.Seconds/1e6, "MB/s")
				b.ReportMetric(float64(res.Rows)/res.CPU, "rows/client-CPU-s")
				b.Logf("%s %s: %d rows, %d MB, %.1f s, %.0f rows/s, peak RSS %.1f MB, client CPU %.1f s (%.0f rows per CPU second)",
					dialect, format, res.Rows, res.Bytes>>20, res.Seconds, float64(res.Rows)/res.Seconds, float64(res.VmHWMKB)/1024,
					res.CPU, float64(res.Rows)/res.CPU)
			})
		}
	}
}

func benchDataReady(b *testing.B, dsns map[string]string, n int) bool {
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsns[Postgres])
	if err != nil {
		return false
	}
	defer conn.Close(ctx)
	var pg int64
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM llm_requests").Scan(&pg); err != nil || pg != int64(n) {
		return false
	}
	opts, err := schema.CHOptions(dsns[ClickHouse])
	if err != nil {
		return false
	}
	ch, err := clickhouse.Open(opts)
	if err != nil {
		return false
	}
	defer ch.Close()
	var c uint64
	if err := ch.QueryRow(ctx, "SELECT count() FROM llm_requests").Scan(&c); err != nil || c != uint64(n) {
		return false
	}
	return true
}

type childResult struct {
	Rows    int64   `json:"rows"`
	Bytes   int64   `json:"bytes"`
	Seconds float64 `json:"seconds"`
	VmHWMKB int64   `json:"vmhwm_kb"`
	CPU     float64 `json:"cpu_seconds"` // the child's user + system time
}

func runExportChild(b *testing.B, dsn string, p Params, format, out string) childResult {
	b.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestExportChild$", "-test.count=1")
	cmd.Env = append(os.Environ(),
		"LLMTAP_EXPORT_CHILD_DSN="+dsn,
		"LLMTAP_EXPORT_CHILD_FROM="+p.From.Format(time.RFC3339),
		"LLMTAP_EXPORT_CHILD_TO="+p.To.Format(time.RFC3339),
		"LLMTAP_EXPORT_CHILD_FORMAT="+format,
		"LLMTAP_EXPORT_CHILD_OUT="+out)
	outb, err := cmd.CombinedOutput()
	if err != nil {
		b.Fatalf("child: %v\n%s", err, outb)
	}
	for _, line := range strings.Split(string(outb), "\n") {
		if j, ok := strings.CutPrefix(line, "EXPORT-RESULT "); ok {
			var r childResult
			if err := json.Unmarshal([]byte(j), &r); err != nil {
				b.Fatal(err)
			}
			return r
		}
	}
	b.Fatalf("child printed no result:\n%s", outb)
	return childResult{}
}

// TestExportChild is the benchmark's child process; it skips unless
// BenchmarkExport started it.
func TestExportChild(t *testing.T) {
	dsn := os.Getenv("LLMTAP_EXPORT_CHILD_DSN")
	if dsn == "" {
		t.Skip("run by BenchmarkExport only")
	}
	from, err := time.Parse(time.RFC3339, os.Getenv("LLMTAP_EXPORT_CHILD_FROM"))
	if err != nil {
		t.Fatal(err)
	}
	to, err := time.Parse(time.RFC3339, os.Getenv("LLMTAP_EXPORT_CHILD_TO"))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	m, err := Export(context.Background(), dsn, Params{From: from, To: to}, os.Getenv("LLMTAP_EXPORT_CHILD_FORMAT"), os.Getenv("LLMTAP_EXPORT_CHILD_OUT"))
	if err != nil {
		t.Fatal(err)
	}
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
	res := childResult{Rows: m.Rows, Bytes: m.Bytes, Seconds: time.Since(start).Seconds(), VmHWMKB: vmHWM(), CPU: cpu}
	j, _ := json.Marshal(res)
	fmt.Printf("EXPORT-RESULT %s\n", j)
	os.Remove(os.Getenv("LLMTAP_EXPORT_CHILD_OUT"))
}

// vmHWM returns this process's peak resident set size in kB.
func vmHWM() int64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return -1
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb
		}
	}
	return -1
}

func benchRow() *exportRow {
	r := &exportRow{
		ts: base.Add(123456 * time.Microsecond), status: 200, stream: true, latency: 1234.5,
		ttft: f64(120.25), tokens: [3]*int64{i64(120), i64(300), i64(420)}, ingestedAt: base.Add(2 * time.Second),
	}
	for i := range r.text {
		r.text[i] = "value"
	}
	r.text[0] = uuidN(1)
	r.text[21] = strings.Repeat("Explain the invoice \"A-17\" line by line.\n", 5)
	r.text[22] = strings.Repeat("Sure. The invoice lists… ", 12)
	r.text[29] = strings.Repeat("{\"model\":\"m\",\"messages\":[]}", 20)
	return r
}

func benchmarkEncoder(b *testing.B, format string) {
	r := benchRow()
	var cw countWriter
	cw.w = io.Discard
	bw := bufio.NewWriterSize(&cw, 256<<10)
	var enc rowEncoder = &jsonlEncoder{w: bw}
	if format == FormatCSV {
		enc = newCSVEncoder(bw)
	}
	if err := enc.row(r); err != nil {
		b.Fatal(err)
	}
	enc.flush()
	bw.Flush()
	b.SetBytes(cw.n)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := enc.row(r); err != nil {
			b.Fatal(err)
		}
	}
	enc.flush()
	bw.Flush()
}

// BenchmarkEncodeJSONL and BenchmarkEncodeCSV measure the export's row
// encoding alone (no database), per row of about 1.6 kB.
func BenchmarkEncodeJSONL(b *testing.B) { benchmarkEncoder(b, FormatJSONL) }
func BenchmarkEncodeCSV(b *testing.B)   { benchmarkEncoder(b, FormatCSV) }
