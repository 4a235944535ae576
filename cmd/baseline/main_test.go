package main

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// Each stack must do the work the bench's nginx does (or the comparison is
// unfair one way or the other), and pass a stream through unbuffered.
func TestBaselineDoesNginxsWork(t *testing.T) {
	release := make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen := r.Header.Get("X-Consumer-Username") + "|" + r.Header.Get("Authorization")
		if r.URL.Path != "/stream" {
			io.WriteString(w, seen)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: "+seen+"\n\n")
		w.(http.Flusher).Flush()
		<-release // the second event waits until the client holds the first
		io.WriteString(w, "data: [DONE]\n\n")
	}))
	defer up.Close()
	defer close(release)

	for _, stack := range []string{"nethttp", "fasthttp"} {
		t.Run(stack, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			addr := ln.Addr().String()
			ln.Close()
			go run(stack, addr, up.URL, "sk-a,sk-b", "alice,bob")
			waitListening(t, addr)
			base := "http://" + addr

			for _, tc := range []struct {
				auth       string
				wantStatus int
				wantBody   string
			}{
				{"Bearer sk-b", 200, "bob|"},
				{"Bearer sk-a", 200, "alice|"},
				{"Bearer sk-c", 401, ""},
				{"", 401, ""},
			} {
				res := do(t, base+"/v1/chat/completions", tc.auth)
				body, _ := io.ReadAll(res.Body)
				res.Body.Close()
				if res.StatusCode != tc.wantStatus || (tc.wantStatus == 200 && string(body) != tc.wantBody) {
					t.Errorf("%q: %d %q, want %d %q", tc.auth, res.StatusCode, body, tc.wantStatus, tc.wantBody)
				}
			}

			res := do(t, base+"/stream", "Bearer sk-a")
			defer res.Body.Close()
			line, err := bufio.NewReader(res.Body).ReadString('\n')
			if err != nil || line != "data: alice|\n" {
				t.Fatalf("first event before the second was sent: %q, %v", line, err)
			}
			release <- struct{}{}
		})
	}
	if _, err := keyNames("sk-a", "alice,bob"); err == nil {
		t.Error("mismatched --keys/--consumers accepted")
	}
	if err := run("h2o", "127.0.0.1:0", up.URL, "sk-a", "alice"); err == nil || !strings.Contains(err.Error(), "h2o") {
		t.Errorf("unknown stack: %v", err)
	}
}

// do sends a request with a forged identity header, which must not reach
// the upstream.
func do(t *testing.T, target, auth string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest("POST", target, strings.NewReader(`{}`))
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	req.Header.Set("X-Consumer-Username", "mallory")
	// The timeout turns a buffered stream into a failure instead of a hang.
	res, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func waitListening(t *testing.T, addr string) {
	t.Helper()
	for range 100 {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s never listened", addr)
}
