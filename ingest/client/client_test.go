package client_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/llmtap/llmtap/ingest/client"
	"github.com/llmtap/llmtap/ingest/client/clienttest"
	"github.com/llmtap/llmtap/ingest/event"
)

func newClient(t *testing.T, url, token string, maxBatch int64) *client.Client {
	t.Helper()
	c, err := client.New(client.Config{URL: url, Token: token, Timeout: 5 * time.Second, MaxBatchBytes: maxBatch})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func randomEvents(n int, seed uint64) []event.Event {
	rng := rand.New(rand.NewPCG(seed, 1))
	evs := make([]event.Event, n)
	for i := range evs {
		req := make([]byte, rng.IntN(2048))
		for j := range req {
			req[j] = byte(rng.UintN(256)) // arbitrary bytes, invalid UTF-8 included
		}
		ttft := float64(i) / 3
		pt := int64(i)
		evs[i] = event.Event{
			ID:                fmt.Sprintf("ev-%d-%d", seed, i),
			Time:              time.Date(2026, 1, 2, 3, 4, 5, i*1000, time.UTC),
			Source:            event.SourceProxy,
			Consumer:          "team-a",
			Method:            "POST",
			Path:              "/v1/chat/completions",
			Status:            200,
			Stream:            i%2 == 0,
			LatencyMs:         12.5,
			TTFTMs:            &ttft,
			RequestHeaders:    map[string]string{"Content-Type": "application/json", "Authorization": "[redacted]"},
			RequestBody:       req,
			ResponseBody:      []byte("data: {\"x\":\"\u2028<>&\"}\n\n\x00\xff"),
			ResponseTruncated: i%3 == 0,
			Usage:             &event.Usage{PromptTokens: &pt},
		}
	}
	return evs
}

func TestConsumeRoundTripsArbitraryBytes(t *testing.T) {
	rcv := clienttest.New()
	defer rcv.Close()
	rcv.SetToken("s3cret-token")
	c := newClient(t, rcv.URL()+"/", "s3cret-token", 1<<20)

	evs := randomEvents(50, 7)
	if err := c.Consume(context.Background(), evs); err != nil {
		t.Fatal(err)
	}
	got := rcv.Events()
	if len(got) != len(evs) {
		t.Fatalf("received %d events, want %d", len(got), len(evs))
	}
	for i := range evs {
		w, g := evs[i], got[i]
		if g.ID != w.ID || !g.Time.Equal(w.Time) || g.Status != w.Status || g.Stream != w.Stream ||
			!bytes.Equal(g.RequestBody, w.RequestBody) || !bytes.Equal(g.ResponseBody, w.ResponseBody) ||
			g.ResponseTruncated != w.ResponseTruncated || *g.TTFTMs != *w.TTFTMs ||
			*g.Usage.PromptTokens != *w.Usage.PromptTokens || g.RequestHeaders["Content-Type"] != "application/json" {
			t.Fatalf("event %d did not round-trip:\n got %+v\nwant %+v", i, g, w)
		}
	}
	for _, h := range rcv.Headers() {
		if h.Get("Content-Type") != "application/x-ndjson" || h.Get("Content-Encoding") != "gzip" ||
			h.Get("Authorization") != "Bearer s3cret-token" {
			t.Fatalf("headers: %v", h)
		}
	}
}

func TestConsumeSplitsByMaxBatchBytes(t *testing.T) {
	rcv := clienttest.New()
	defer rcv.Close()
	c := newClient(t, rcv.URL(), "", 8<<10) // events are ~0-3 KB of base64
	evs := randomEvents(40, 9)
	res, err := c.Send(context.Background(), evs)
	if err != nil {
		t.Fatal(err)
	}
	if res.Accepted != 40 {
		t.Fatalf("accepted %d", res.Accepted)
	}
	if rcv.Requests() < 3 {
		t.Fatalf("expected the batch to be split, got %d requests", rcv.Requests())
	}
	counts := rcv.Counts()
	for _, ev := range evs {
		if counts[ev.ID] != 1 {
			t.Fatalf("event %s arrived %d times", ev.ID, counts[ev.ID])
		}
	}
	if h := rcv.Headers()[0]; h.Get("Authorization") != "" {
		t.Fatal("no token configured, but an Authorization header was sent")
	}
}

func TestConsumeErrorClasses(t *testing.T) {
	cases := []struct {
		name       string
		status     int
		retryAfter string
		permanent  bool
		unauth     bool
		wantAfter  time.Duration
		wantText   string
	}{
		{"503 retry-after", 503, "7", false, false, 7 * time.Second, "HTTP 503"},
		{"500", 500, "", false, false, 0, "HTTP 500"},
		{"429", 429, "2", false, false, 2 * time.Second, "HTTP 429"},
		{"408", 408, "", false, false, 0, "HTTP 408"},
		{"401", 401, "", true, true, 0, "ingest rejected the token"},
		{"403", 403, "", true, true, 0, "ingest rejected the token"},
		{"400", 400, "", true, false, 0, "HTTP 400"},
		{"413", 413, "", true, false, 0, "HTTP 413"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rcv := clienttest.New()
			defer rcv.Close()
			rcv.Fail(tc.status, tc.retryAfter)
			c := newClient(t, rcv.URL(), "tok-never-in-errors", 1<<20)
			err := c.Consume(context.Background(), randomEvents(3, 1))
			if err == nil {
				t.Fatal("want an error")
			}
			if client.IsPermanent(err) != tc.permanent || errors.Is(err, client.ErrPermanent) != tc.permanent {
				t.Errorf("permanent = %v, want %v (%v)", client.IsPermanent(err), tc.permanent, err)
			}
			if errors.Is(err, client.ErrUnauthorized) != tc.unauth {
				t.Errorf("unauthorized = %v, want %v", !tc.unauth, tc.unauth)
			}
			ra, ok := client.RetryAfter(err)
			if ra != tc.wantAfter || ok != (tc.wantAfter > 0) {
				t.Errorf("RetryAfter = %v %v, want %v", ra, ok, tc.wantAfter)
			}
			if !strings.Contains(err.Error(), tc.wantText) {
				t.Errorf("error %q lacks %q", err, tc.wantText)
			}
			if strings.Contains(err.Error(), "tok-never-in-errors") {
				t.Errorf("token leaked into error: %v", err)
			}
		})
	}
}

func TestConsumeWrongTokenIs401(t *testing.T) {
	rcv := clienttest.New()
	defer rcv.Close()
	rcv.SetToken("right")
	err := newClient(t, rcv.URL(), "wrong", 1<<20).Consume(context.Background(), randomEvents(1, 2))
	if !errors.Is(err, client.ErrUnauthorized) || !client.IsPermanent(err) {
		t.Fatalf("want ErrUnauthorized, got %v", err)
	}
	if len(rcv.Events()) != 0 {
		t.Fatal("events accepted with a wrong token")
	}
}

func TestConsumeNetworkErrorIsRetryable(t *testing.T) {
	rcv := clienttest.New()
	url := rcv.URL()
	rcv.Close()
	err := newClient(t, url, "", 1<<20).Consume(context.Background(), randomEvents(1, 3))
	if err == nil || client.IsPermanent(err) {
		t.Fatalf("want a retryable error, got %v", err)
	}
}

func TestConsumeTimeoutIsRetryable(t *testing.T) {
	rcv := clienttest.New()
	defer rcv.Close()
	rcv.Delay(2 * time.Second)
	c, err := client.New(client.Config{URL: rcv.URL(), Timeout: 100 * time.Millisecond, MaxBatchBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	err = c.Consume(context.Background(), randomEvents(1, 4))
	if err == nil || client.IsPermanent(err) {
		t.Fatalf("want a retryable timeout, got %v", err)
	}
}

func TestRejectedEntriesCountAsDelivered(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"accepted":1,"rejected":2,"errors":["line 2: bad"]}`))
	}))
	defer srv.Close()
	res, err := newClient(t, srv.URL, "", 1<<20).Send(context.Background(), randomEvents(3, 5))
	if err != nil || res.Accepted != 1 || res.Rejected != 2 {
		t.Fatalf("res %+v err %v", res, err)
	}
}

func TestNoRedirectFollowing(t *testing.T) {
	var leaked bool
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { leaked = true }))
	defer other.Close()
	srv := httptest.NewServer(http.RedirectHandler(other.URL+"/v1/events", http.StatusTemporaryRedirect))
	defer srv.Close()
	err := newClient(t, srv.URL, "tok", 1<<20).Consume(context.Background(), randomEvents(1, 6))
	if err == nil || leaked {
		t.Fatalf("redirect followed (leaked=%v) or accepted (err=%v)", leaked, err)
	}
}

func TestConfigValidate(t *testing.T) {
	cases := []struct {
		cfg client.Config
		ok  bool
	}{
		{client.Config{URL: "http://127.0.0.1:8002", Timeout: time.Second, MaxBatchBytes: 1}, true},
		{client.Config{URL: "", Timeout: time.Second, MaxBatchBytes: 1}, false},
		{client.Config{URL: "ftp://x", Timeout: time.Second, MaxBatchBytes: 1}, false},
		{client.Config{URL: "http://", Timeout: time.Second, MaxBatchBytes: 1}, false},
		{client.Config{URL: "http://x", Timeout: 0, MaxBatchBytes: 1}, false},
		{client.Config{URL: "http://x", Timeout: time.Second, MaxBatchBytes: 1, Token: "a\nb"}, false},
	}
	for i, tc := range cases {
		if err := tc.cfg.Validate(); (err == nil) != tc.ok {
			t.Errorf("case %d: Validate() = %v, want ok=%v", i, err, tc.ok)
		}
	}
}

func BenchmarkConsume(b *testing.B) {
	rcv := clienttest.New()
	defer rcv.Close()
	c, _ := client.New(client.Config{URL: rcv.URL(), Timeout: 5 * time.Second, MaxBatchBytes: 16 << 20})
	evs := randomEvents(100, 8)
	var size int64
	for _, e := range evs {
		size += int64(len(e.RequestBody) + len(e.ResponseBody))
	}
	b.SetBytes(size)
	b.ReportAllocs()
	for b.Loop() {
		if err := c.Consume(context.Background(), evs); err != nil {
			b.Fatal(err)
		}
	}
}
