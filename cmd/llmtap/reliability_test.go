package main

// Reliability harness (issue 7): real `llmtap proxy` and `llmtap ingest`
// child processes built from this tree, vllm-sim in-process, the real
// PostgreSQL and ClickHouse (optionally behind a TCP forwarder that the test
// cuts to simulate a store outage), a load generator that records what every
// client saw, and an oracle that compares that record with llm_requests.
//
// Short versions run in `go test`; LLMTAP_CHAOS=full (scripts/chaos.sh,
// `make chaos`) runs the long ones. LLMTAP_CHAOS_REPORT=FILE appends one
// JSON line of figures per scenario (RELIABILITY.md is written from them).

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"gopkg.in/yaml.v3"

	"github.com/llmtap/llmtap/proxy/keys"
	"github.com/llmtap/llmtap/schema"
)

// chaosFull reports whether the long versions run (LLMTAP_CHAOS=full).
func chaosFull() bool { return os.Getenv("LLMTAP_CHAOS") == "full" }

// pick returns short or full depending on the mode.
func pick[T any](short, full T) T {
	if chaosFull() {
		return full
	}
	return short
}

var (
	binOnce sync.Once
	binPath string
	binErr  error
	binDir  string
)

// TestMain runs the (mostly waiting) scenarios with more parallelism than
// GOMAXPROCS unless -test.parallel was given explicitly.
func TestMain(m *testing.M) {
	flag.Parse()
	explicit := false
	flag.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "test.parallel" })
	if !explicit {
		_ = flag.Set("test.parallel", "8")
	}
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// llmtapBin builds bin/llmtap from this tree once per test binary.
func llmtapBin(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		binDir, binErr = os.MkdirTemp("", "llmtap-rel-bin")
		if binErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "llmtap")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			binErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

func relSkipShort(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("reliability scenarios need PostgreSQL/ClickHouse and child processes")
	}
}

// ---------------------------------------------------------------- processes

// proc is one llmtap child process (proxy or ingest) that can be killed and
// restarted with the same config. Its stderr/stdout accumulate in logPath
// across restarts.
type proc struct {
	t       *testing.T
	mode    string
	cfg     Config
	cfgPath string
	logPath string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan error
	// restarts counts starts after the first.
	starts int
}

// yamlConfig renders cfg as the YAML config file the binary reads.
func yamlConfig(c Config) []byte { return yamlConfigExtra(c, nil) }

// yamlConfigExtra renders cfg plus extra top-level sections.
func yamlConfigExtra(c Config, extra map[string]any) []byte {
	m := map[string]any{
		"store": c.Store,
		"proxy": map[string]any{
			"listen": c.Proxy.Listen, "upstream": c.Proxy.Upstream, "upstream_api_key": c.Proxy.UpstreamAPIKey,
			"keys_file": c.Proxy.KeysFile, "stream_usage": c.Proxy.StreamUsage,
			"max_request_body": c.Proxy.MaxRequestBody, "capture_limit": c.Proxy.CaptureLimit,
			"redact_headers": c.Proxy.RedactHeaders, "shutdown_grace": c.Proxy.ShutdownGrace.String(),
			"ingest_url": c.Proxy.IngestURL, "ingest_token": c.Proxy.IngestToken,
			"spool_dir": c.Proxy.SpoolDir, "spool_max_bytes": c.Proxy.SpoolMaxBytes,
			"on_audit_failure":     c.Proxy.OnAuditFailure,
			"client_write_timeout": c.Proxy.ClientWriteTimeout.String(), "response_header_timeout": c.Proxy.ResponseHeaderTimeout.String(),
			"request_body_timeout": c.Proxy.RequestBodyTimeout.String(),
		},
		"ingest": map[string]any{"listen": c.Ingest.Listen, "token": c.Ingest.Token, "max_body_bytes": c.Ingest.MaxBodyBytes},
		"admin":  map[string]any{"listen": c.Admin.Listen},
		"log":    map[string]any{"level": c.Log.Level, "format": c.Log.Format},
	}
	for k, v := range extra {
		m[k] = v
	}
	b, err := yaml.Marshal(m)
	if err != nil {
		panic(err)
	}
	return b
}

func newProc(t *testing.T, mode string, cfg Config) *proc {
	return newProcExtra(t, mode, cfg, nil)
}

func newProcExtra(t *testing.T, mode string, cfg Config, extra map[string]any) *proc {
	t.Helper()
	if err := cfg.Validate(mode); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	p := &proc{t: t, mode: mode, cfg: cfg, cfgPath: filepath.Join(dir, mode+".yaml"), logPath: filepath.Join(dir, mode+".log")}
	if err := os.WriteFile(p.cfgPath, yamlConfigExtra(cfg, extra), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.mu.Lock()
		cmd, done := p.cmd, p.done
		p.mu.Unlock()
		if cmd != nil {
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			if b, err := os.ReadFile(p.logPath); err == nil {
				if len(b) > 4000 {
					b = b[len(b)-4000:]
				}
				t.Logf("%s log tail:\n%s", mode, b)
			}
		}
	})
	return p
}

// start launches the process and waits until its admin /readyz answers 200.
func (p *proc) start() {
	p.t.Helper()
	if err := p.startNoWait(); err != nil {
		p.t.Fatal(err)
	}
	if err := p.waitReady(20 * time.Second); err != nil {
		p.t.Fatal(err)
	}
}

func (p *proc) startNoWait() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		return fmt.Errorf("%s already running", p.mode)
	}
	logf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	cmd := exec.Command(llmtapBin(p.t), p.mode, "--config", p.cfgPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), "GOTRACEBACK=all")
	if err := cmd.Start(); err != nil {
		logf.Close()
		return err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait(); logf.Close() }()
	p.cmd, p.done = cmd, done
	p.starts++
	return nil
}

func (p *proc) waitReady(d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		p.mu.Lock()
		done := p.done
		p.mu.Unlock()
		select {
		case err := <-done:
			p.mu.Lock()
			p.cmd = nil
			p.mu.Unlock()
			return fmt.Errorf("%s exited during start: %v\n%s", p.mode, err, tail(p.logPath, 3000))
		default:
		}
		resp, err := http.Get("http://" + p.cfg.Admin.Listen + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %s: %v\n%s", p.mode, d, err, tail(p.logPath, 3000))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func tail(path string, n int) string {
	b, _ := os.ReadFile(path)
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// pid returns the running process id (0 when stopped).
func (p *proc) pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// signal sends sig and waits up to d for the exit; it returns the exit error.
func (p *proc) signal(sig syscall.Signal, d time.Duration) error {
	p.t.Helper()
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		p.t.Fatalf("%s is not running", p.mode)
	}
	_ = cmd.Process.Signal(sig)
	var err error
	select {
	case err = <-done:
	case <-time.After(d):
		_ = cmd.Process.Kill()
		err = <-done
		p.t.Errorf("%s did not exit within %s after %v", p.mode, d, sig)
	}
	p.mu.Lock()
	p.cmd = nil
	p.mu.Unlock()
	return err
}

func (p *proc) kill9() { p.signal(syscall.SIGKILL, 10*time.Second) }

// term sends SIGTERM and reports a non-clean exit as a test error.
func (p *proc) term() {
	p.t.Helper()
	if err := p.signal(syscall.SIGTERM, p.cfg.Proxy.ShutdownGrace+20*time.Second); err != nil {
		p.t.Errorf("%s: exit after SIGTERM: %v", p.mode, err)
	}
}

// peakRSS returns VmHWM of the running process in bytes (0 when unknown).
func (p *proc) peakRSS() int64 {
	pid := p.pid()
	if pid == 0 {
		return 0
	}
	return procStatusKB(pid, "VmHWM:") << 10
}

func procStatusKB(pid int, field string) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, field) {
			f := strings.Fields(line)
			if len(f) >= 2 {
				n, _ := strconv.ParseInt(f[1], 10, 64)
				return n
			}
		}
	}
	return 0
}

// metrics scrapes the admin /metrics of p and returns "name{labels}" → value.
func (p *proc) metrics() map[string]float64 {
	return scrape("http://" + p.cfg.Admin.Listen + "/metrics")
}

func scrape(url string) map[string]float64 {
	out := map[string]float64{}
	resp, err := http.Get(url)
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err == nil {
			out[line[:i]] = v
		}
	}
	return out
}

// sumMetric sums every series of a metric name.
func sumMetric(m map[string]float64, name string) float64 {
	var s float64
	for k, v := range m {
		if k == name || strings.HasPrefix(k, name+"{") {
			s += v
		}
	}
	return s
}

func metricsText(url string) string {
	resp, err := http.Get(url)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// ---------------------------------------------------------------- topology

// rig is one scenario's deployment: ingest and proxy processes, keys, and
// the store (possibly behind a forwarder).
type rig struct {
	t        *testing.T
	store    string // DSN ingest uses (maybe via fwd)
	direct   string // DSN the oracle uses
	kind     string // postgres | clickhouse
	fwd      *forwarder
	ifwd     *forwarder // proxy → ingest, when rigOpts.ingestViaForwarder
	ingest   *proc
	proxy    *proc
	keys     []clientKey
	token    string
	upstream string
}

type clientKey struct{ consumer, plain string }

type rigOpts struct {
	kind               string // "postgres" (default) or "clickhouse"
	db                 string // database name suffix
	viaForwarder       bool
	spoolMaxBytes      int64
	onAuditFailure     string
	captureLimit       int64
	maxRequestBody     int64
	consumers          int
	token              string // ingest token ("" → generated)
	noIngest           bool   // do not start ingest yet
	clientWriteTimeout time.Duration
	requestBodyTimeout time.Duration
	redactionBuiltins  []string // written as redaction.builtins when set
	// ingestViaForwarder puts a forwarder between proxy and ingest (rig.ifwd).
	ingestViaForwarder bool
}

func newRig(t *testing.T, upstream string, o rigOpts) *rig {
	t.Helper()
	if o.kind == "" {
		o.kind = "postgres"
	}
	if o.consumers == 0 {
		o.consumers = 3
	}
	r := &rig{t: t, kind: o.kind, upstream: upstream}
	// Per-process names: several `go test` runs of this package may run at
	// once on a shared machine; each drops its databases when done.
	db := fmt.Sprintf("llmtap_test_rel_%s_%d", o.db, os.Getpid())
	var host string
	switch o.kind {
	case "postgres":
		r.direct = freshPostgres(t, db)
		host = "127.0.0.1:5432"
		t.Cleanup(func() { dropPostgres(db) })
	case "clickhouse":
		r.direct = freshClickHouse(t, db)
		host = "127.0.0.1:9000"
		t.Cleanup(func() { exec.Command("clickhouse-client", "-q", "DROP DATABASE IF EXISTS "+db).Run() })
	}
	r.store = r.direct
	if o.viaForwarder {
		r.fwd = newForwarder(t, host)
		r.store = strings.Replace(r.direct, host, r.fwd.addr, 1)
	}
	r.token = o.token
	if r.token == "" {
		r.token = "ingest-token-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	}

	icfg := defaultConfig()
	icfg.Store = r.store
	icfg.Ingest.Listen = freeAddr(t)
	icfg.Ingest.Token = r.token
	icfg.Admin.Listen = freeAddr(t)
	var iextra map[string]any
	if o.redactionBuiltins != nil {
		iextra = map[string]any{"redaction": map[string]any{"builtins": o.redactionBuiltins}}
	}
	r.ingest = newProcExtra(t, "ingest", icfg, iextra)

	dir := t.TempDir()
	pcfg := defaultConfig()
	pcfg.Proxy.Listen = freeAddr(t)
	pcfg.Proxy.Upstream = upstream
	pcfg.Proxy.KeysFile = filepath.Join(dir, "keys.yaml")
	pcfg.Proxy.SpoolDir = filepath.Join(dir, "spool")
	pcfg.Proxy.ShutdownGrace = 5 * time.Second
	pcfg.Proxy.IngestURL = "http://" + icfg.Ingest.Listen
	if o.ingestViaForwarder {
		r.ifwd = newForwarder(t, icfg.Ingest.Listen)
		pcfg.Proxy.IngestURL = "http://" + r.ifwd.addr
	}
	pcfg.Proxy.IngestToken = r.token
	if o.spoolMaxBytes > 0 {
		pcfg.Proxy.SpoolMaxBytes = o.spoolMaxBytes
	}
	if o.onAuditFailure != "" {
		pcfg.Proxy.OnAuditFailure = o.onAuditFailure
	}
	if o.captureLimit > 0 {
		pcfg.Proxy.CaptureLimit = o.captureLimit
	}
	if o.requestBodyTimeout > 0 {
		pcfg.Proxy.RequestBodyTimeout = o.requestBodyTimeout
	}
	if o.clientWriteTimeout > 0 {
		pcfg.Proxy.ClientWriteTimeout = o.clientWriteTimeout
	}
	if o.maxRequestBody > 0 {
		pcfg.Proxy.MaxRequestBody = o.maxRequestBody
	}
	pcfg.Admin.Listen = freeAddr(t)
	for i := 0; i < o.consumers; i++ {
		name := fmt.Sprintf("team-%c", 'a'+i)
		_, plain, err := keys.Create(pcfg.Proxy.KeysFile, keys.CreateOptions{Consumer: name})
		if err != nil {
			t.Fatal(err)
		}
		r.keys = append(r.keys, clientKey{name, plain})
	}
	r.proxy = newProc(t, "proxy", pcfg)
	if !o.noIngest {
		r.ingest.start()
	}
	r.proxy.start()
	return r
}

func (r *rig) proxyURL() string  { return "http://" + r.proxy.cfg.Proxy.Listen }
func (r *rig) ingestURL() string { return "http://" + r.ingest.cfg.Ingest.Listen }
func (r *rig) spoolDir() string  { return r.proxy.cfg.Proxy.SpoolDir }

func dropPostgres(name string) {
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable")
	if err != nil {
		return
	}
	defer admin.Close(ctx)
	_, _ = admin.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
}

// freshClickHouse (re)creates a migrated ClickHouse database.
func freshClickHouse(t *testing.T, name string) string {
	t.Helper()
	chQuery(t, "DROP DATABASE IF EXISTS "+name)
	chQuery(t, "CREATE DATABASE "+name)
	dsn := "clickhouse://127.0.0.1:9000/" + name
	if err := schema.Migrate(context.Background(), dsn, nil); err != nil {
		t.Fatal(err)
	}
	return dsn
}

func chQuery(t *testing.T, q string) string {
	t.Helper()
	out, err := exec.Command("clickhouse-client", "--host", "127.0.0.1", "--port", "9000", "-q", q).CombinedOutput()
	if err != nil {
		t.Fatalf("clickhouse-client %q: %v\n%s", q, err, out)
	}
	return string(out)
}

// ---------------------------------------------------------------- forwarder

// forwarder is a TCP relay between llmtap and a database. cut closes every
// relayed connection and refuses new ones (accept + close), which is what a
// stopped or unreachable database looks like to a client; restore undoes it.
type forwarder struct {
	addr   string
	target string
	ln     net.Listener
	down   atomic.Bool
	// dropReplies > 0: that many server→client reads are swallowed and the
	// connection reset (the request was delivered, its answer is lost: an
	// ambiguous acknowledgement).
	dropReplies atomic.Int64
	dropped     atomic.Int64 // answers actually swallowed
	mu          sync.Mutex
	conns       map[net.Conn]struct{}
}

func newForwarder(t *testing.T, target string) *forwarder {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &forwarder{addr: ln.Addr().String(), target: target, ln: ln, conns: map[net.Conn]struct{}{}}
	go f.serve()
	t.Cleanup(func() { ln.Close(); f.cut() })
	return f
}

func (f *forwarder) serve() {
	for {
		c, err := f.ln.Accept()
		if err != nil {
			return
		}
		if f.down.Load() {
			c.Close()
			continue
		}
		go f.relay(c)
	}
}

func (f *forwarder) track(c net.Conn, add bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if add {
		f.conns[c] = struct{}{}
	} else {
		delete(f.conns, c)
	}
}

func (f *forwarder) relay(c net.Conn) {
	u, err := net.Dial("tcp", f.target)
	if err != nil {
		c.Close()
		return
	}
	f.track(c, true)
	f.track(u, true)
	done := make(chan struct{}, 2)
	go func() { io.Copy(u, c); done <- struct{}{} }()
	go func() {
		buf := make([]byte, 32<<10)
		for {
			n, err := u.Read(buf)
			if n > 0 {
				if f.takeDrop() {
					c.Close()
					u.Close()
					break
				}
				if _, werr := c.Write(buf[:n]); werr != nil {
					break
				}
			}
			if err != nil {
				break
			}
		}
		done <- struct{}{}
	}()
	<-done
	c.Close()
	u.Close()
	<-done
	f.track(c, false)
	f.track(u, false)
}

func (f *forwarder) takeDrop() bool {
	for {
		d := f.dropReplies.Load()
		if d <= 0 {
			return false
		}
		if f.dropReplies.CompareAndSwap(d, d-1) {
			f.dropped.Add(1)
			return true
		}
	}
}

func (f *forwarder) cut() {
	f.down.Store(true)
	f.mu.Lock()
	for c := range f.conns {
		c.Close()
	}
	f.mu.Unlock()
}

func (f *forwarder) restore() { f.down.Store(false) }

// ---------------------------------------------------------------- load

// sent is one request as its client saw it.
type sent struct {
	Seq      int
	Consumer string
	Stream   bool
	Injected bool // stream without include_usage: the proxy injects it, the stored body has one more chunk
	Fault    string
	Status   int
	EventID  string
	SHA      string
	Bytes    int
	Err      string
	Done     time.Time     // when the client finished reading
	Took     time.Duration // request start to end of body
}

// acked: the client received a complete response carrying an event id.
func (s sent) acked() bool { return s.Err == "" && s.EventID != "" }

type loadOpts struct {
	n, conc  int
	seqBase  int
	tokens   int    // X-Sim-Tokens (default 16)
	interval string // X-Sim-Token-Interval (default 1ms)
	noFaults bool
	tag      string
}

// loader runs numbered requests: 70 % streamed, consumers in rotation, an
// injected upstream error every 25 requests and a mid-stream error every 25
// streams. completed counts finished requests so scenarios can inject faults
// at a given point.
type loadRun struct {
	completed atomic.Int64
	results   []sent
	done      chan struct{}
}

func startLoad(t *testing.T, base string, ks []clientKey, o loadOpts) *loadRun {
	t.Helper()
	if o.conc == 0 {
		o.conc = 8
	}
	if o.tokens == 0 {
		o.tokens = 16
	}
	if o.interval == "" {
		o.interval = "1ms"
	}
	lr := &loadRun{results: make([]sent, o.n), done: make(chan struct{})}
	tr := &http.Transport{MaxIdleConnsPerHost: o.conc, DisableCompression: true}
	hc := &http.Client{Transport: tr, Timeout: 60 * time.Second}
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < o.conc; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= o.n {
					return
				}
				lr.results[i] = doRequest(hc, base, ks, o, o.seqBase+i)
				lr.completed.Add(1)
			}
		}()
	}
	go func() { wg.Wait(); tr.CloseIdleConnections(); close(lr.done) }()
	return lr
}

func (lr *loadRun) wait() []sent { <-lr.done; return lr.results }

func (lr *loadRun) waitCompleted(n int64, d time.Duration) {
	deadline := time.Now().Add(d)
	for lr.completed.Load() < n && time.Now().Before(deadline) {
		select {
		case <-lr.done:
			return
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func runLoad(t *testing.T, base string, ks []clientKey, o loadOpts) []sent {
	return startLoad(t, base, ks, o).wait()
}

func doRequest(hc *http.Client, base string, ks []clientKey, o loadOpts, seq int) (s sent) {
	k := ks[seq%len(ks)]
	s = sent{Seq: seq, Consumer: k.consumer, Stream: seq%10 < 7}
	body := map[string]any{
		"model":      "meta-llama/Llama-3.1-8B-Instruct",
		"messages":   []map[string]string{{"role": "user", "content": fmt.Sprintf("reliability %s seq=%d", o.tag, seq)}},
		"max_tokens": o.tokens + 8,
	}
	if s.Stream {
		body["stream"] = true
		if seq%10 == 3 {
			s.Injected = true
		} else {
			body["stream_options"] = map[string]any{"include_usage": true}
		}
	}
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest("POST", base+"/v1/chat/completions", bytes.NewReader(b))
	req.Header.Set("Authorization", "Bearer "+k.plain)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Sim-Tokens", strconv.Itoa(o.tokens))
	req.Header.Set("X-Sim-Token-Interval", o.interval)
	switch {
	case o.noFaults:
		req.Header.Set("X-Sim-Fault", "none")
	case seq%25 == 11:
		s.Fault = "error"
	case seq%25 == 17 && s.Stream:
		s.Fault = "midstream-error"
	default:
		req.Header.Set("X-Sim-Fault", "none")
	}
	if s.Fault != "" {
		req.Header.Set("X-Sim-Fault", s.Fault)
	}
	start := time.Now()
	defer func() { s.Done = time.Now(); s.Took = s.Done.Sub(start) }()
	resp, err := hc.Do(req)
	if err != nil {
		s.Err = err.Error()
		return s
	}
	defer resp.Body.Close()
	s.Status = resp.StatusCode
	s.EventID = resp.Header.Get("X-Llmtap-Event-Id")
	h := sha256.New()
	n, err := io.Copy(h, resp.Body)
	s.Bytes = int(n)
	if err != nil {
		s.Err = err.Error()
	}
	s.SHA = hex.EncodeToString(h.Sum(nil))
	return s
}

// ---------------------------------------------------------------- oracle

// storedRow is what the oracle reads back per event.
type storedEvent struct {
	sha       string // sha256 of response_body
	truncated bool
	status    int
	consumer  string
}

// storeRows returns event_id → row for every llm_requests row (last wins)
// and the raw row count.
func (r *rig) storeRows() (map[string]storedEvent, int) {
	r.t.Helper()
	rows := map[string]storedEvent{}
	total := 0
	switch r.kind {
	case "postgres":
		ctx := context.Background()
		conn, err := pgx.Connect(ctx, r.direct)
		if err != nil {
			r.t.Fatal(err)
		}
		defer conn.Close(ctx)
		rs, err := conn.Query(ctx, `SELECT event_id::text, encode(sha256(convert_to(response_body,'UTF8')),'hex'), truncated, status, consumer FROM llm_requests`)
		if err != nil {
			r.t.Fatal(err)
		}
		for rs.Next() {
			var id string
			var e storedEvent
			if err := rs.Scan(&id, &e.sha, &e.truncated, &e.status, &e.consumer); err != nil {
				r.t.Fatal(err)
			}
			rows[id] = e
			total++
		}
		if err := rs.Err(); err != nil {
			r.t.Fatal(err)
		}
	case "clickhouse":
		db := strings.TrimPrefix(r.direct[strings.LastIndexByte(r.direct, '/'):], "/")
		// No FINAL: the store documents that queries need none.
		out := chQuery(r.t, "SELECT toString(event_id), lower(hex(SHA256(response_body))), truncated, status, consumer FROM "+db+".llm_requests FORMAT TabSeparated")
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			if line == "" {
				continue
			}
			f := strings.Split(line, "\t")
			if len(f) < 5 {
				r.t.Fatalf("clickhouse row %q", line)
			}
			st, _ := strconv.Atoi(f[3])
			rows[f[0]] = storedEvent{sha: f[1], truncated: f[2] == "1", status: st, consumer: f[4]}
			total++
		}
	}
	return rows, total
}

// verdict is the oracle's result for one scenario.
type verdict struct {
	Scenario   string `json:"scenario"`
	Store      string `json:"store"`
	Sent       int    `json:"sent"`
	Acked      int    `json:"acked"`
	Lost       int    `json:"lost"`
	Duplicates int    `json:"duplicates"`
	Corrupt    int    `json:"corrupt"`
	Compared   int    `json:"compared"`
	// BodyNotKept counts proxy-generated answers (401/413/503…) whose
	// body the client got but the record does not hold (a product gap
	// reported separately; upstream-originated bodies must always match).
	BodyNotKept int     `json:"body_not_kept,omitempty"`
	Dropped     float64 `json:"drop_counter"`
	Spooled     float64 `json:"spooled"`
	ShipErrors  float64 `json:"ship_errors"`
	RecoveryS   float64 `json:"recovery_s"`
	PeakRSSMB   float64 `json:"peak_rss_mb,omitempty"`
	ClientP99   float64 `json:"client_p99_ms,omitempty"` // client latency p99 over the run
	ClientMax   float64 `json:"client_max_ms,omitempty"`
	Note        string  `json:"note,omitempty"`
	lostIDs     []string
}

// reconcile waits until every acked event is stored or the stored set and
// the spool stop changing, then computes lost, duplicates and corrupt.
func (r *rig) reconcile(name string, all []sent, timeout time.Duration) verdict {
	r.t.Helper()
	start := time.Now()
	acked := map[string]sent{}
	for _, s := range all {
		if s.acked() {
			acked[s.EventID] = s
		}
	}
	var rows map[string]storedEvent
	var total, found, lastFound int
	lastChange := time.Now()
	for {
		rows, total = r.storeRows()
		found = 0
		for id := range acked {
			if _, ok := rows[id]; ok {
				found++
			}
		}
		if found != lastFound {
			lastFound, lastChange = found, time.Now()
		}
		spool := -1.0
		if r.proxy.pid() != 0 {
			if m := r.proxy.metrics(); m != nil {
				spool = sumMetric(m, "llmtap_spool_bytes")
			}
		}
		if found == len(acked) {
			break
		}
		if spool == 0 && time.Since(lastChange) > 3*time.Second {
			break
		}
		if time.Since(start) > timeout {
			r.t.Logf("%s: reconcile gave up after %s (found %d of %d, spool %v bytes)", name, timeout, found, len(acked), spool)
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	v := verdict{Scenario: name, Store: r.kind, Sent: len(all), Acked: len(acked), RecoveryS: time.Since(start).Seconds()}
	var lat []float64
	for _, s := range all {
		if s.Took > 0 {
			lat = append(lat, float64(s.Took.Microseconds())/1000)
		}
	}
	if len(lat) > 0 {
		sort.Float64s(lat)
		v.ClientP99 = lat[len(lat)*99/100]
		v.ClientMax = lat[len(lat)-1]
	}
	distinct := len(rows)
	v.Duplicates = total - distinct
	for id, s := range acked {
		row, ok := rows[id]
		if !ok {
			v.Lost++
			v.lostIDs = append(v.lostIDs, fmt.Sprintf("%s(seq %d status %d)", id, s.Seq, s.Status))
			continue
		}
		if row.consumer != s.Consumer && s.Status != 401 {
			v.Corrupt++
			r.t.Errorf("%s: event %s stored for consumer %q, client was %q", name, id, row.consumer, s.Consumer)
		}
		if row.truncated || s.Injected || row.status != s.Status {
			if row.status != s.Status {
				v.Corrupt++
				r.t.Errorf("%s: event %s stored status %d, client saw %d", name, id, row.status, s.Status)
			}
			continue
		}
		v.Compared++
		if row.sha != s.SHA && row.sha == emptySHA && proxyAnswered(s.Status) {
			v.BodyNotKept++
			continue
		}
		if row.sha != s.SHA {
			v.Corrupt++
			if v.Corrupt <= 3 {
				r.t.Errorf("%s: event %s (seq %d) stored response_body sha %s, client received %s", name, id, s.Seq, row.sha, s.SHA)
			}
		}
	}
	if m := r.proxy.metrics(); m != nil {
		v.Dropped = sumMetric(m, "llmtap_events_dropped_total")
		v.Spooled = sumMetric(m, "llmtap_events_spooled_total")
		v.ShipErrors = sumMetric(m, "llmtap_ship_errors_total")
	}
	return v
}

// dupesPG and dupesCH are the raw "queries users run" check.
func (r *rig) dupes() int {
	_, total := r.storeRows()
	rows, _ := r.storeRows()
	return total - len(rows)
}

var reportMu sync.Mutex

// report logs v and appends it to LLMTAP_CHAOS_REPORT when set.
func report(t *testing.T, v verdict) {
	t.Helper()
	b, _ := json.Marshal(v)
	t.Logf("figures: %s", b)
	if len(v.lostIDs) > 0 {
		n := min(len(v.lostIDs), 10)
		t.Logf("lost (first %d): %s", n, strings.Join(v.lostIDs[:n], ", "))
	}
	if path := os.Getenv("LLMTAP_CHAOS_REPORT"); path != "" {
		reportMu.Lock()
		defer reportMu.Unlock()
		f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err == nil {
			f.Write(append(b, '\n'))
			f.Close()
		}
	}
}

// assertClean fails on lost, duplicate or corrupt events.
func assertClean(t *testing.T, v verdict) {
	t.Helper()
	if v.Acked == 0 {
		t.Errorf("%s: no request was acknowledged; the scenario tested nothing", v.Scenario)
	}
	if v.Lost != 0 || v.Duplicates != 0 || v.Corrupt != 0 {
		t.Errorf("%s: lost %d, duplicates %d, corrupt %d (of %d acked)", v.Scenario, v.Lost, v.Duplicates, v.Corrupt, v.Acked)
	}
	if v.Compared == 0 {
		t.Errorf("%s: no response body was compared", v.Scenario)
	}
}

// statuses summarises client outcomes for logs.
func statuses(all []sent) string {
	m := map[string]int{}
	for _, s := range all {
		k := strconv.Itoa(s.Status)
		if s.Err != "" {
			k += "+err"
		}
		m[k]++
	}
	b, _ := json.Marshal(m)
	return string(b)
}

const emptySHA = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

// proxyAnswered: statuses the proxy itself answers (not upstream's).
func proxyAnswered(status int) bool {
	return status == 401 || status == 413 || status == 503 || status == 502 || status == 504 || status == 429
}

// lostByStatus counts lost events per client status.
func lostByStatus(v verdict, all []sent) map[int]int {
	ids := map[string]bool{}
	for _, l := range v.lostIDs {
		ids[l[:36]] = true
	}
	m := map[int]int{}
	for _, s := range all {
		if ids[s.EventID] {
			m[s.Status]++
		}
	}
	return m
}

var uuidRe = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}$`)
