package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/llmtap/llmtap/cmd/vllm-sim/sim"
)

func TestReadChunks(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB, several chunks
	cases := []struct {
		name  string
		in    []byte
		limit int64
		err   error
	}{
		{"empty", nil, 10, nil},
		{"small", []byte("hello"), 10, nil},
		{"at limit", []byte("0123456789"), 10, nil},
		{"over limit", []byte("0123456789x"), 10, errTooLarge},
		{"many chunks", big, int64(len(big)), nil},
		{"many chunks over", big, int64(len(big)) - 1, errTooLarge},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// One byte per read: chunk boundaries never line up with reads.
			for _, rd := range []io.Reader{bytes.NewReader(tc.in), iotest.HalfReader(bytes.NewReader(tc.in))} {
				got, err := readChunks(rd, tc.limit)
				if !errors.Is(err, tc.err) {
					t.Fatalf("err %v, want %v", err, tc.err)
				}
				if err == nil && !bytes.Equal(got, tc.in) {
					t.Fatalf("got %d bytes, want %d", len(got), len(tc.in))
				}
			}
		})
	}
	if _, err := readChunks(iotest.ErrReader(io.ErrClosedPipe), 10); !errors.Is(err, io.ErrClosedPipe) {
		t.Fatalf("read error: %v", err)
	}
	// A cut body (the chunked reader's io.ErrUnexpectedEOF) is an error,
	// not a short body.
	cut := io.MultiReader(strings.NewReader("partial"), iotest.ErrReader(io.ErrUnexpectedEOF))
	if b, err := readChunks(cut, 100); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("cut body: %q, %v", b, err)
	}
}

// TestLargeDeclaredBody: a body over 1 MiB with a Content-Length (read in
// chunks) arrives intact; one shorter than declared is a 400.
func TestLargeDeclaredBody(t *testing.T) {
	h := newHarness(t, sim.Config{Tokens: 1}, nil)
	body := `{"model":"meta-llama/Llama-3.1-8B-Instruct","prompt":"` + strings.Repeat("word ", 500_000) + `"}`
	res, b, ev := h.do(t, h.req(t, "POST", "/v1/completions", body, bearer(h.alice)))
	if res.StatusCode != 200 || string(ev.RequestBody) != body {
		t.Fatalf("status %d, captured %d of %d bytes: %.200s", res.StatusCode, len(ev.RequestBody), len(body), b)
	}
	if _, up := h.spy.last(t); string(up) != body {
		t.Fatalf("upstream got %d of %d bytes", len(up), len(body))
	}
}

// TestRequestBodyTimeout: a client trickling its body is answered 408 and
// audited when RequestBodyTimeout has passed; upstream never sees it; the
// next request on a new connection is fine.
func TestRequestBodyTimeout(t *testing.T) {
	h := newHarness(t, sim.Config{Tokens: 1}, func(c *Config) { c.RequestBodyTimeout = 300 * time.Millisecond })
	conn, err := net.Dial("tcp", strings.TrimPrefix(h.srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"+
		"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n{", h.alice, 30<<20)
	done := make(chan struct{})
	go func() { // trickle
		defer close(done)
		for i := 0; i < 40; i++ {
			if _, err := conn.Write([]byte(" ")); err != nil {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer to a trickled body: %v", err)
	}
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusRequestTimeout {
		ev := h.rec.next(t)
		t.Fatalf("status %d: %s %v; event %d %q", res.StatusCode, b, res.Header, ev.Status, ev.Error)
	}
	checkOpenAIError(t, b, "invalid_request_error", "request_timeout")
	ev := h.rec.next(t)
	if ev.Status != 408 || ev.Consumer != "alice" || ev.Error != "reading request body: timeout" {
		t.Fatalf("event %d %q %q", ev.Status, ev.Consumer, ev.Error)
	}
	if h.spy.count() != 0 {
		t.Fatal("trickled body reached upstream")
	}
	conn.Close()
	<-done
	// A normal request with a body after the deadline machinery ran.
	if res, b, _ := h.do(t, h.req(t, "POST", "/v1/chat/completions", chatBody, bearer(h.alice))); res.StatusCode != 200 {
		t.Fatalf("next request: %d %s", res.StatusCode, b)
	}
}

// TestBodyTimeoutKeepsDisconnectDetection: after the body was read in
// time, the cleared deadline does not cut a long stream, and a client
// leaving is still noticed (the upstream generation is cancelled).
func TestBodyTimeoutKeepsDisconnectDetection(t *testing.T) {
	h := newHarness(t, sim.Config{}, func(c *Config) { c.RequestBodyTimeout = 200 * time.Millisecond })
	r := h.req(t, "POST", "/v1/chat/completions", streamBody, map[string]string{"Authorization": "Bearer " + h.alice, "X-Sim-Tokens": "8", "X-Sim-Token-Interval": "60ms"})
	res, err := http.DefaultClient.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil || !bytes.HasSuffix(b, []byte("data: [DONE]\n\n")) {
		t.Fatalf("stream longer than the body timeout was cut: %v %q", err, b)
	}
	h.rec.next(t)
}

// TestClientAddressHeadersStripped: client-address headers a client could
// forge never reach upstream.
func TestClientAddressHeadersStripped(t *testing.T) {
	h := newHarness(t, sim.Config{Tokens: 1}, nil)
	hdr := bearer(h.alice)
	for _, name := range append([]string{"X-Forwarded-For", "Forwarded", "X-Forwarded-Host"}, clientAddrHeaders...) {
		hdr[name] = "6.6.6.6"
	}
	if res, b, _ := h.do(t, h.req(t, "POST", "/v1/chat/completions", chatBody, hdr)); res.StatusCode != 200 {
		t.Fatalf("%d %s", res.StatusCode, b)
	}
	up, _ := h.spy.last(t)
	for name, vals := range up {
		for _, v := range vals {
			if strings.Contains(v, "6.6.6.6") {
				t.Errorf("forged %s: %s reached upstream", name, v)
			}
		}
	}
	if up.Get("X-Forwarded-For") != "127.0.0.1" {
		t.Errorf("X-Forwarded-For %q", up.Get("X-Forwarded-For"))
	}
}

// TestCutChunkedBodyNotForwarded: a chunked body that ends without its
// last chunk is never forwarded as if complete.
func TestCutChunkedBodyNotForwarded(t *testing.T) {
	h := newHarness(t, sim.Config{Tokens: 1}, nil)
	conn, err := net.Dial("tcp", strings.TrimPrefix(h.srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	part := chatBody[:20]
	fmt.Fprintf(conn, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"+
		"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n", h.alice, len(part), part)
	conn.(*net.TCPConn).CloseWrite()
	ev := h.rec.next(t)
	if ev.Status != 400 && ev.Status != 499 {
		t.Fatalf("cut body: event %d %q", ev.Status, ev.Error)
	}
	if h.spy.count() != 0 {
		t.Fatal("a cut body reached upstream")
	}
}
