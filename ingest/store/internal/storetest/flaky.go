package storetest

import (
	"io"
	"net"
	"sync"
	"testing"
)

// Forwarder is a loopback TCP forwarder to a real server that can be taken
// down (listener closed, open connections reset) and brought back on the
// same address: a database restart as the client sees it, without touching
// the shared server.
type Forwarder struct {
	t      testing.TB
	target string
	Addr   string // host:port to connect to

	mu    sync.Mutex
	ln    net.Listener
	conns map[net.Conn]bool
}

// NewForwarder listens on a free loopback port and forwards to target.
func NewForwarder(t testing.TB, target string) *Forwarder {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &Forwarder{t: t, target: target, Addr: ln.Addr().String(), conns: map[net.Conn]bool{}}
	f.serve(ln)
	t.Cleanup(f.Down)
	return f
}

func (f *Forwarder) serve(ln net.Listener) {
	f.mu.Lock()
	f.ln = ln
	f.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", f.target)
			if err != nil {
				c.Close()
				continue
			}
			f.mu.Lock()
			f.conns[c], f.conns[u] = true, true
			f.mu.Unlock()
			go func() { io.Copy(u, c); u.Close(); c.Close() }()
			go func() { io.Copy(c, u); u.Close(); c.Close() }()
		}
	}()
}

// Down closes the listener (new connections are refused) and resets every
// open connection.
func (f *Forwarder) Down() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.ln != nil {
		f.ln.Close()
		f.ln = nil
	}
	for c := range f.conns {
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetLinger(0) // RST, as a killed server gives
		}
		c.Close()
		delete(f.conns, c)
	}
}

// Up listens again on the same address.
func (f *Forwarder) Up() {
	ln, err := net.Listen("tcp", f.Addr)
	if err != nil {
		f.t.Fatalf("forwarder up: %v", err)
	}
	f.serve(ln)
}
