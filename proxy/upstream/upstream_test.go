package upstream

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// countingServer is a real loopback HTTP server that counts the TCP
// connections it accepted.
func countingServer(t *testing.T, h http.Handler, configure func(*http.Server)) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var conns atomic.Int64
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	if configure != nil {
		configure(srv.Config)
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return srv, &conns
}

func post(t *testing.T, tr *Transport, ctx context.Context, url, body string) (*http.Response, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	return tr.RoundTrip(req)
}

func readAll(t *testing.T, res *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("reading body: %v", err)
	}
	res.Body.Close()
	return string(b)
}

func echo(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	fmt.Fprintf(w, "%s %s %s", r.Method, r.URL.Path, b)
}

func TestReusesConnections(t *testing.T) {
	srv, conns := countingServer(t, http.HandlerFunc(echo), nil)
	tr := &Transport{}
	defer tr.CloseIdleConnections()
	for i := range 20 {
		res, err := post(t, tr, context.Background(), srv.URL+"/v1/x", fmt.Sprint(i))
		if err != nil {
			t.Fatal(err)
		}
		if got, want := readAll(t, res), fmt.Sprintf("POST /v1/x %d", i); got != want {
			t.Fatalf("body %q, want %q", got, want)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("%d connections for 20 sequential requests, want 1", n)
	}
}

func TestChunkedStreamAndEarlyClose(t *testing.T) {
	srv, conns := countingServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for i := range 3 {
			fmt.Fprintf(w, "data: %d\n\n", i)
			w.(http.Flusher).Flush()
		}
	}), nil)
	tr := &Transport{}
	defer tr.CloseIdleConnections()
	res, err := post(t, tr, context.Background(), srv.URL, "")
	if err != nil {
		t.Fatal(err)
	}
	if res.TransferEncoding == nil || res.TransferEncoding[0] != "chunked" {
		t.Fatalf("transfer encoding %v, want chunked", res.TransferEncoding)
	}
	if got := readAll(t, res); got != "data: 0\n\ndata: 1\n\ndata: 2\n\n" {
		t.Fatalf("stream %q", got)
	}
	// A body closed before EOF takes its connection with it.
	res, err = post(t, tr, context.Background(), srv.URL, "")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if _, err := res.Body.Read(make([]byte, 1)); err == nil {
		t.Error("read after Close succeeded")
	}
	res, err = post(t, tr, context.Background(), srv.URL, "")
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, res)
	if n := conns.Load(); n != 2 {
		t.Errorf("%d connections, want 2 (one reused, one discarded after an early close)", n)
	}
}

// The server closes idle connections after 50 ms; the next request must
// notice (peek) and dial afresh instead of failing.
func TestServerClosedIdleConnection(t *testing.T) {
	srv, conns := countingServer(t, http.HandlerFunc(echo), func(s *http.Server) { s.IdleTimeout = 50 * time.Millisecond })
	tr := &Transport{}
	defer tr.CloseIdleConnections()
	for i := range 3 {
		res, err := post(t, tr, context.Background(), srv.URL, "x")
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		readAll(t, res)
		time.Sleep(200 * time.Millisecond)
	}
	if n := conns.Load(); n != 3 {
		t.Errorf("%d connections, want 3 (each idle one was closed by the server)", n)
	}
}

// rawServer answers the first request on each connection and, on the
// second, reads it and closes without answering: the race of a server
// closing a keep-alive connection as the client reuses it.
func TestRetriesOnceWhenReusedConnectionDies(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var requests atomic.Int64
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for i := 0; ; i++ {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					b, _ := io.ReadAll(req.Body)
					requests.Add(1)
					if i == 1 {
						return // close without answering
					}
					fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(b), b)
				}
			}()
		}
	}()
	tr := &Transport{}
	defer tr.CloseIdleConnections()
	url := "http://" + ln.Addr().String()
	for _, body := range []string{"one", "two"} {
		req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body)) // sets GetBody
		res, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatalf("%s: %v", body, err)
		}
		if got := readAll(t, res); got != body {
			t.Fatalf("got %q, want %q", got, body)
		}
	}
	if n := requests.Load(); n != 3 {
		t.Errorf("server saw %d requests, want 3 (the second sent twice)", n)
	}

	// Without GetBody the request cannot be replayed: the error surfaces.
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader("three"))
	res, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, res)
	req, _ = http.NewRequest(http.MethodPost, url, io.NopCloser(strings.NewReader("four")))
	req.ContentLength = 4
	if _, err := tr.RoundTrip(req); err == nil {
		t.Error("a request without GetBody was retried")
	}
}

func TestCancelInterruptsStream(t *testing.T) {
	stopped := make(chan struct{})
	srv, _ := countingServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "data: first\n\n")
		w.(http.Flusher).Flush()
		<-r.Context().Done() // the client went away
		close(stopped)
	}), nil)
	tr := &Transport{}
	defer tr.CloseIdleConnections()
	ctx, cancel := context.WithCancel(context.Background())
	res, err := post(t, tr, ctx, srv.URL, "")
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(res.Body)
	if line, _ := br.ReadString('\n'); line != "data: first\n" {
		t.Fatalf("first line %q", line)
	}
	errc := make(chan error, 1)
	go func() { _, err := io.ReadAll(br); errc <- err }()
	time.Sleep(50 * time.Millisecond)
	cancel()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("read error %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("cancel did not interrupt the blocked read")
	}
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		t.Fatal("the server did not see the connection close")
	}
}

func TestResponseHeaderTimeout(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	srv, _ := countingServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}), nil)
	tr := &Transport{ResponseHeaderTimeout: 100 * time.Millisecond}
	start := time.Now()
	_, err := post(t, tr, context.Background(), srv.URL, "x")
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("error %v, want a timeout", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("timed out after %v", d)
	}
}

func TestMaxConnsPerHost(t *testing.T) {
	release := make(chan struct{})
	srv, conns := countingServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.(http.Flusher).Flush()
		<-release
	}), nil)
	tr := &Transport{MaxConnsPerHost: 1}
	defer tr.CloseIdleConnections()
	first, err := post(t, tr, context.Background(), srv.URL, "")
	if err != nil {
		t.Fatal(err)
	}
	// A second round trip waits for the only connection; its context ends the wait.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := post(t, tr, ctx, srv.URL, ""); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("second request: %v, want a context deadline while waiting", err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		res, err := post(t, tr, context.Background(), srv.URL, "")
		if err != nil {
			t.Error(err)
			return
		}
		readAll(t, res)
	}()
	time.Sleep(50 * time.Millisecond)
	close(release)
	readAll(t, first)
	wg.Wait()
	if n := conns.Load(); n != 1 {
		t.Errorf("%d connections, want 1", n)
	}
}

func TestInformationalAndConnectionClose(t *testing.T) {
	srv, conns := countingServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusEarlyHints) // 103, skipped
		w.Header().Set("Connection", "close")
		fmt.Fprint(w, "bye")
	}), nil)
	tr := &Transport{}
	defer tr.CloseIdleConnections()
	for range 2 {
		res, err := post(t, tr, context.Background(), srv.URL, "")
		if err != nil {
			t.Fatal(err)
		}
		if res.StatusCode != 200 || readAll(t, res) != "bye" {
			t.Fatalf("status %d", res.StatusCode)
		}
	}
	if n := conns.Load(); n != 2 {
		t.Errorf("%d connections, want 2 (Connection: close is honoured)", n)
	}
}

func TestUpstreamDown(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	tr := &Transport{DialTimeout: time.Second}
	if _, err := post(t, tr, context.Background(), "http://"+addr, "x"); err == nil {
		t.Fatal("no error from a closed port")
	}
}

// opaqueBody hides a reader's type from net/http (as ReverseProxy's
// no-op-Close wrapper does) and records Read and Close.
type opaqueBody struct {
	r            io.Reader
	read, closed atomic.Bool
}

func (b *opaqueBody) Read(p []byte) (int, error) { b.read.Store(true); return b.r.Read(p) }
func (b *opaqueBody) Close() error               { b.closed.Store(true); return nil }

// bodyRequest is a POST whose Body net/http cannot recognise as in-memory;
// with replayable, GetBody is set as httputil.ReverseProxy's clone keeps it.
func bodyRequest(t testing.TB, url, body string, replayable bool) (*http.Request, *opaqueBody) {
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	ob := &opaqueBody{r: strings.NewReader(body)}
	req.Body = ob
	if !replayable {
		req.GetBody = nil
	}
	return req, ob
}

// TestReplayableBodyWrittenFromCopy: a body with GetBody is sent from a
// fresh copy (so net/http writes head and body together) and the caller's
// Body is still closed, as the RoundTripper contract requires; a body
// without GetBody is sent as it is.
func TestReplayableBodyWrittenFromCopy(t *testing.T) {
	srv, _ := countingServer(t, http.HandlerFunc(echo), nil)
	tr := &Transport{}
	defer tr.CloseIdleConnections()
	for _, replayable := range []bool{true, false} {
		req, ob := bodyRequest(t, srv.URL+"/p", `{"model":"m"}`, replayable)
		res, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		if got := readAll(t, res); got != `POST /p {"model":"m"}` {
			t.Errorf("replayable=%v: upstream got %q", replayable, got)
		}
		if !ob.closed.Load() {
			t.Errorf("replayable=%v: the request's Body was not closed", replayable)
		}
		if ob.read.Load() == replayable {
			t.Errorf("replayable=%v: the request's own Body was read = %v, want %v", replayable, ob.read.Load(), !replayable)
		}
	}
}

// BenchmarkRoundTripBody: a 1 KiB POST whose body net/http cannot see as
// in-memory, with GetBody (written from a copy: one write syscall) and
// without (head flushed first: two).
func BenchmarkRoundTripBody(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Write([]byte("ok"))
	}))
	defer srv.Close()
	body := strings.Repeat("x", 1024)
	for _, replayable := range []bool{true, false} {
		b.Run(fmt.Sprintf("getbody=%v", replayable), func(b *testing.B) {
			tr := &Transport{}
			defer tr.CloseIdleConnections()
			b.ReportAllocs()
			for b.Loop() {
				req, _ := bodyRequest(b, srv.URL, body, replayable)
				res, err := tr.RoundTrip(req)
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, res.Body)
				res.Body.Close()
			}
		})
	}
}
