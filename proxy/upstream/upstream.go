// Package upstream is the proxy's HTTP/1.1 client to the model server: a
// keep-alive connection pool whose round trips run entirely on the
// caller's goroutine.
//
// net/http.Transport runs two goroutines per connection (a reader and a
// writer) and passes every request and response between them and the
// caller over channels. For a proxy holding thousands of open streams that
// is two more goroutine stacks per stream and several goroutine switches
// per request (BENCHMARKS.md has the measurements). Here the caller writes
// the request and reads the response itself; the wire format is net/http's
// own (http.Request.Write, http.ReadResponse), so headers, chunked bodies,
// Content-Length and Connection: close behave exactly as in net/http.
//
// Contracts:
//   - Transport is safe for concurrent use; its exported fields must not
//     change after the first RoundTrip.
//   - RoundTrip returns a response whose Body must be read to EOF or
//     closed, by one goroutine. The connection returns to the pool only
//     when the body was read to EOF, neither side asked to close, and the
//     request's context was not cancelled.
//   - Cancelling the request's context interrupts a blocked dial, write or
//     read at once (the connection's deadline moves to the past) and the
//     connection is discarded; errors after cancellation are ctx.Err().
//   - A pooled connection is checked before reuse with a non-blocking peek
//     (Linux): one the server closed, or one with unexpected bytes waiting,
//     is discarded. A request that still fails on a reused connection
//     before any response byte arrived (the server closed it just as it was
//     reused) is sent once more on a new connection when its body can be
//     replayed (Request.GetBody, or no body).
//   - HTTP/1.1 over TCP (http) or TLS (https) only: no HTTP/2, no proxy
//     environment, no protocol upgrades (101 is an error); 1xx informational
//     responses before the final one are skipped.
package upstream

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"
)

// Transport is an http.RoundTripper with a connection pool per host.
type Transport struct {
	// DialTimeout bounds connecting (and the TLS handshake); 0 = 30 s.
	DialTimeout time.Duration
	// TLSConfig is used for https URLs (nil: defaults, ServerName from
	// the URL).
	TLSConfig *tls.Config
	// MaxIdleConnsPerHost bounds the idle connections kept per host;
	// 0 = 100.
	MaxIdleConnsPerHost int
	// MaxConnsPerHost, when > 0, bounds open connections per host; a
	// round trip beyond it waits for one to be released or its context.
	MaxConnsPerHost int
	// IdleConnTimeout discards connections idle for longer; 0 = 90 s.
	IdleConnTimeout time.Duration
	// ResponseHeaderTimeout, when > 0, bounds the wait for the response
	// head after the request was written.
	ResponseHeaderTimeout time.Duration
	// ReadBufferSize and WriteBufferSize size each connection's buffers;
	// 0 = 4 KiB. The write buffer is taken from a pool only while a
	// request is written.
	ReadBufferSize, WriteBufferSize int

	mu    sync.Mutex
	hosts map[string]*host
	wbufs sync.Pool // *bufio.Writer
}

// host is the pool of one scheme+address.
type host struct {
	idle    []*conn       // most recently used last
	sem     chan struct{} // MaxConnsPerHost tokens (nil: unbounded)
	handoff chan *conn    // a released connection, to a round trip waiting on sem
}

// conn is one upstream connection. Its fields are used by one round trip
// at a time, except mu/cancelled, which the context's AfterFunc also uses.
type conn struct {
	t      *Transport
	h      *host
	nc     net.Conn
	br     *bufio.Reader
	reused bool
	idleAt time.Time

	mu        sync.Mutex
	cancelled bool
}

// errNoResponse marks a failure before any response byte was read.
type errNoResponse struct{ err error }

func (e errNoResponse) Error() string { return e.err.Error() }
func (e errNoResponse) Unwrap() error { return e.err }

var errUpgrade = errors.New("upstream: protocol upgrades are not supported")

// RoundTrip implements http.RoundTripper.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL == nil || (req.URL.Scheme != "http" && req.URL.Scheme != "https") {
		return nil, fmt.Errorf("upstream: unsupported URL %v", req.URL)
	}
	ctx := req.Context()
	h := t.host(req.URL.Scheme + "://" + canonicalAddr(req))
	// net/http flushes the request head in a write of its own unless the
	// body is one of its known in-memory readers, which ReverseProxy's
	// no-op-Close wrapper hides. A replayable body is therefore written
	// from a fresh GetBody copy: head and a small body leave in one write
	// syscall instead of two (BenchmarkRoundTripBody).
	if req.GetBody != nil && req.Body != nil && req.Body != http.NoBody {
		if r2, ok := rewind(req); ok {
			req.Body.Close()
			req = r2
		}
	}
	for attempt := 0; ; attempt++ {
		c, err := t.get(ctx, h, req)
		if err != nil {
			return nil, err
		}
		res, err := c.roundTrip(req)
		if err == nil {
			return res, nil
		}
		var nr errNoResponse
		if attempt == 0 && c.reused && errors.As(err, &nr) && ctx.Err() == nil {
			if r2, ok := rewind(req); ok {
				req = r2
				continue
			}
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}
}

// rewind returns req with a fresh body, if it can be sent again.
func rewind(req *http.Request) (*http.Request, bool) {
	if req.Body == nil || req.Body == http.NoBody {
		return req, true
	}
	if req.GetBody == nil {
		return nil, false
	}
	body, err := req.GetBody()
	if err != nil {
		return nil, false
	}
	r2 := *req
	r2.Body = body
	return &r2, true
}

func canonicalAddr(req *http.Request) string {
	host, port := req.URL.Hostname(), req.URL.Port()
	if port == "" {
		port = "80"
		if req.URL.Scheme == "https" {
			port = "443"
		}
	}
	return net.JoinHostPort(host, port)
}

func (t *Transport) host(key string) *host {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.hosts == nil {
		t.hosts = map[string]*host{}
	}
	h := t.hosts[key]
	if h == nil {
		h = &host{}
		if t.MaxConnsPerHost > 0 {
			h.sem = make(chan struct{}, t.MaxConnsPerHost)
			h.handoff = make(chan *conn)
		}
		t.hosts[key] = h
	}
	return h
}

// get returns a live pooled connection or dials a new one. The liveness
// check (a syscall) runs outside the lock.
func (t *Transport) get(ctx context.Context, h *host, req *http.Request) (*conn, error) {
	now := time.Now()
	for {
		var c *conn
		var stale []*conn
		t.mu.Lock()
		if n := len(h.idle); n > 0 {
			c = h.idle[n-1]
			h.idle[n-1] = nil
			h.idle = h.idle[:n-1]
			if now.Sub(c.idleAt) > t.idleTimeout() {
				// Everything below is older still.
				stale = append(append(stale, c), h.idle...)
				clear(h.idle)
				h.idle, c = h.idle[:0], nil
			}
		}
		t.mu.Unlock()
		for _, s := range stale {
			s.close()
		}
		if c == nil {
			return t.dial(ctx, h, req)
		}
		if c.br.Buffered() == 0 && alive(c.nc) {
			c.reused = true
			return c, nil
		}
		c.close()
	}
}

func (t *Transport) idleTimeout() time.Duration {
	if t.IdleConnTimeout > 0 {
		return t.IdleConnTimeout
	}
	return 90 * time.Second
}

func (t *Transport) dial(ctx context.Context, h *host, req *http.Request) (*conn, error) {
	if h.sem != nil {
		// Wait for a free slot, or for a connection another round trip
		// releases (put hands it over instead of pooling it).
		select {
		case h.sem <- struct{}{}:
		case c := <-h.handoff:
			c.reused = true
			return c, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	timeout := t.DialTimeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	dctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	d := net.Dialer{KeepAlive: 30 * time.Second}
	nc, err := d.DialContext(dctx, "tcp", canonicalAddr(req))
	if err == nil && req.URL.Scheme == "https" {
		cfg := t.TLSConfig.Clone()
		if cfg == nil {
			cfg = &tls.Config{}
		}
		if cfg.ServerName == "" {
			cfg.ServerName = req.URL.Hostname()
		}
		cfg.NextProtos = []string{"http/1.1"}
		tc := tls.Client(nc, cfg)
		if err = tc.HandshakeContext(dctx); err != nil {
			nc.Close()
		}
		nc = tc
	}
	if err != nil {
		if h.sem != nil {
			<-h.sem
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}
	return &conn{t: t, h: h, nc: nc, br: bufio.NewReaderSize(nc, bufSize(t.ReadBufferSize))}, nil
}

func bufSize(n int) int {
	if n > 0 {
		return n
	}
	return 4 << 10
}

// put returns c to its host's idle pool, or closes it when the pool is
// full.
func (t *Transport) put(c *conn) {
	c.idleAt = time.Now()
	if c.h.handoff != nil {
		select {
		case c.h.handoff <- c:
			return
		default:
		}
	}
	maxIdle := t.MaxIdleConnsPerHost
	if maxIdle <= 0 {
		maxIdle = 100
	}
	t.mu.Lock()
	if len(c.h.idle) < maxIdle {
		c.h.idle = append(c.h.idle, c)
		t.mu.Unlock()
		return
	}
	t.mu.Unlock()
	c.close()
}

// CloseIdleConnections closes every idle connection.
func (t *Transport) CloseIdleConnections() {
	var idle []*conn
	t.mu.Lock()
	for _, h := range t.hosts {
		idle = append(idle, h.idle...)
		clear(h.idle)
		h.idle = h.idle[:0]
	}
	t.mu.Unlock()
	for _, c := range idle {
		c.close()
	}
}

func (c *conn) close() {
	c.nc.Close()
	if c.h.sem != nil {
		<-c.h.sem
	}
}

// aLongTimeAgo is a deadline in the past: every blocked I/O returns.
var aLongTimeAgo = time.Unix(1, 0)

// cancel is the context's AfterFunc: it interrupts any I/O on c for good.
func (c *conn) cancel() {
	c.mu.Lock()
	c.cancelled = true
	_ = c.nc.SetDeadline(aLongTimeAgo)
	c.mu.Unlock()
}

// setReadDeadline sets the read deadline unless the round trip was
// cancelled (whose deadline must stay in the past).
func (c *conn) setReadDeadline(d time.Time) {
	c.mu.Lock()
	if !c.cancelled {
		_ = c.nc.SetReadDeadline(d)
	}
	c.mu.Unlock()
}

// roundTrip writes req and reads the response head on c. On error c is
// closed. Errors before any response byte was read are errNoResponse.
func (c *conn) roundTrip(req *http.Request) (*http.Response, error) {
	stop := context.AfterFunc(req.Context(), c.cancel)
	bw := c.t.writer(c.nc)
	werr := req.Write(bw)
	if werr == nil {
		werr = bw.Flush()
	}
	c.t.putWriter(bw)
	if werr != nil && c.br.Buffered() == 0 {
		// The server may have answered early and closed (e.g. a 413
		// before reading the whole body): read what it said, briefly.
		c.setReadDeadline(time.Now().Add(time.Second))
		if _, err := c.br.Peek(1); err != nil {
			stop()
			c.close()
			return nil, errNoResponse{fmt.Errorf("writing request: %w", werr)}
		}
	}
	if d := c.t.ResponseHeaderTimeout; d > 0 && werr == nil {
		c.setReadDeadline(time.Now().Add(d))
	}
	res, err := c.readResponse(req)
	if err != nil {
		stop()
		c.close()
		return nil, err
	}
	if c.t.ResponseHeaderTimeout > 0 || werr != nil {
		c.setReadDeadline(time.Time{})
	}
	res.Body = &body{c: c, rc: res.Body, stop: stop, ctx: req.Context(),
		reuse: werr == nil && !res.Close && !req.Close}
	return res, nil
}

// readResponse reads the final response head, skipping 1xx.
func (c *conn) readResponse(req *http.Request) (*http.Response, error) {
	for range 5 {
		if _, err := c.br.Peek(1); err != nil {
			return nil, errNoResponse{fmt.Errorf("reading response: %w", err)}
		}
		res, err := http.ReadResponse(c.br, req)
		if err != nil {
			return nil, fmt.Errorf("reading response: %w", err)
		}
		switch {
		case res.StatusCode == http.StatusSwitchingProtocols:
			return nil, errUpgrade
		case res.StatusCode >= 100 && res.StatusCode < 200:
			continue
		}
		return res, nil
	}
	return nil, errors.New("reading response: too many 1xx responses")
}

func (t *Transport) writer(w io.Writer) *bufio.Writer {
	if bw, ok := t.wbufs.Get().(*bufio.Writer); ok {
		bw.Reset(w)
		return bw
	}
	return bufio.NewWriterSize(w, bufSize(t.WriteBufferSize))
}

func (t *Transport) putWriter(bw *bufio.Writer) {
	bw.Reset(nil)
	t.wbufs.Put(bw)
}

// body is the response body: it returns the connection to the pool on
// EOF and closes it otherwise. Used by one goroutine.
type body struct {
	c     *conn
	rc    io.ReadCloser
	stop  func() bool
	ctx   context.Context
	reuse bool
	done  bool
	err   error
}

func (b *body) Read(p []byte) (int, error) {
	if b.done {
		return 0, b.err
	}
	n, err := b.rc.Read(p)
	switch {
	case err == io.EOF:
		b.finish(io.EOF, b.reuse)
	case err != nil:
		if b.ctx.Err() != nil {
			err = b.ctx.Err()
		}
		b.finish(err, false)
	}
	return n, err
}

// Close discards the rest of the body (and the connection with it).
func (b *body) Close() error {
	if !b.done && b.rc == http.NoBody {
		b.finish(io.EOF, b.reuse)
	} else if !b.done {
		b.finish(errors.New("upstream: read on closed body"), false)
	}
	return nil
}

func (b *body) finish(err error, reuse bool) {
	b.done, b.err = true, err
	if !b.stop() {
		reuse = false // the context's cancel ran: the deadline is in the past
	}
	if reuse && b.c.br.Buffered() == 0 {
		b.c.t.put(b.c)
		return
	}
	b.c.close()
}
