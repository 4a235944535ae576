// Package clienttest provides a loopback stand-in for ingest's POST
// /v1/events receiver, for tests of producers (the proxy, the shipper, the
// client). It really listens on 127.0.0.1 (httptest.Server), decodes gzip or
// plain NDJSON into event.Event values, records them, and can be told to
// fail (any status, with Retry-After) or to stall.
//
// It is not a mock of the store: it commits nothing. Use it where the
// receiver's wire behaviour is what matters.
package clienttest

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/llmtap/llmtap/ingest/event"
)

// Receiver is a loopback ingest receiver. Methods are goroutine-safe.
type Receiver struct {
	// Server is the underlying server; Server.URL is the base URL.
	Server     *httptest.Server
	mu         sync.Mutex
	token      string
	refuse     func(event.Event) bool
	events     []event.Event
	counts     map[string]int
	requests   int
	status     int           // when != 0, answer this instead of accepting
	retryAfter string        // Retry-After for failures
	delay      time.Duration // stall before answering
	headers    []http.Header
}

// New starts a Receiver. Close it when done.
func New() *Receiver {
	r := &Receiver{counts: map[string]int{}}
	r.Server = httptest.NewServer(http.HandlerFunc(r.serve))
	return r
}

// URL is the base URL (without /v1/events).
func (r *Receiver) URL() string { return r.Server.URL }

// Close shuts the server down.
func (r *Receiver) Close() { r.Server.Close() }

// SetToken makes the receiver require Authorization: Bearer token (empty:
// no check).
func (r *Receiver) SetToken(token string) {
	r.mu.Lock()
	r.token = token
	r.mu.Unlock()
}

// Refuse makes the receiver answer 400 to any request holding an event for
// which f returns true (nil: refuse nothing), like a permanent rejection.
func (r *Receiver) Refuse(f func(event.Event) bool) {
	r.mu.Lock()
	r.refuse = f
	r.mu.Unlock()
}

// Fail makes every following request answer status (0 restores success)
// with the given Retry-After header value (empty for none). Status -1
// closes the connection without an answer (a network error).
func (r *Receiver) Fail(status int, retryAfter string) {
	r.mu.Lock()
	r.status, r.retryAfter = status, retryAfter
	r.mu.Unlock()
}

// Delay makes every following request wait d before answering.
func (r *Receiver) Delay(d time.Duration) {
	r.mu.Lock()
	r.delay = d
	r.mu.Unlock()
}

// Events returns a copy of every accepted event, in arrival order.
func (r *Receiver) Events() []event.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]event.Event(nil), r.events...)
}

// Counts returns how often each event id was accepted.
func (r *Receiver) Counts() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := make(map[string]int, len(r.counts))
	for k, v := range r.counts {
		m[k] = v
	}
	return m
}

// Unique returns the number of distinct ids accepted and the number of
// duplicate deliveries.
func (r *Receiver) Unique() (unique, duplicates int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range r.counts {
		unique++
		duplicates += c - 1
	}
	return unique, duplicates
}

// Requests returns the number of requests seen, including failed ones.
func (r *Receiver) Requests() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.requests
}

// Headers returns the headers of every request seen.
func (r *Receiver) Headers() []http.Header {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]http.Header(nil), r.headers...)
}

func (r *Receiver) serve(w http.ResponseWriter, req *http.Request) {
	r.mu.Lock()
	r.requests++
	r.headers = append(r.headers, req.Header.Clone())
	status, retryAfter, delay, token, refuse := r.status, r.retryAfter, r.delay, r.token, r.refuse
	r.mu.Unlock()
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-req.Context().Done():
			return
		}
	}
	if req.Method != http.MethodPost || req.URL.Path != "/v1/events" {
		http.Error(w, "not found", http.StatusNotFound)
		return
	}
	if token != "" && req.Header.Get("Authorization") != "Bearer "+token {
		http.Error(w, `{"error":"unauthorized"}`, http.StatusUnauthorized)
		return
	}
	if status < 0 {
		if hj, ok := w.(http.Hijacker); ok {
			if conn, _, err := hj.Hijack(); err == nil {
				conn.Close()
				return
			}
		}
		panic(http.ErrAbortHandler)
	}
	if status != 0 {
		if retryAfter != "" {
			w.Header().Set("Retry-After", retryAfter)
		}
		http.Error(w, `{"error":"failing on purpose"}`, status)
		return
	}
	var body io.Reader = http.MaxBytesReader(w, req.Body, 256<<20)
	if req.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(body)
		if err != nil {
			http.Error(w, "bad gzip: "+err.Error(), http.StatusBadRequest)
			return
		}
		defer zr.Close()
		body = zr
	}
	var got []event.Event
	dec := json.NewDecoder(bufio.NewReader(body))
	for dec.More() {
		var ev event.Event
		if err := dec.Decode(&ev); err != nil {
			http.Error(w, "bad ndjson: "+err.Error(), http.StatusBadRequest)
			return
		}
		got = append(got, ev)
	}
	if refuse != nil {
		for _, ev := range got {
			if refuse(ev) {
				http.Error(w, `{"error":"refused on purpose"}`, http.StatusBadRequest)
				return
			}
		}
	}
	r.mu.Lock()
	for _, ev := range got {
		r.events = append(r.events, ev)
		r.counts[ev.ID]++
	}
	r.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"accepted":%s,"rejected":0,"errors":[]}`, strconv.Itoa(len(got)))
}
