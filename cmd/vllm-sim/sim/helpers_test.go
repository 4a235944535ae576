package sim

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"
)

func newSim(t testing.TB, cfg Config) (*Server, *httptest.Server) {
	t.Helper()
	s := New(cfg)
	ts := httptest.NewServer(s)
	t.Cleanup(ts.Close)
	return s, ts
}

func do(t testing.TB, ctx context.Context, method, url, body string, hdr map[string]string) *http.Response {
	t.Helper()
	if ctx == nil {
		ctx = context.Background()
	}
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	return resp
}

func post(t testing.TB, url, body string, hdr map[string]string) *http.Response {
	return do(t, nil, "POST", url, body, hdr)
}

func readAll(t testing.TB, resp *http.Response) []byte {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return b
}

func decode(t testing.TB, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("decode %q: %v", b, err)
	}
	return m
}

type sseEvent struct {
	Event string
	Data  string
	Raw   string // the exact bytes of the event, blank line included
}

// parseSSE splits a complete stream into events. It insists on vLLM's exact
// framing: LF line ends, optional "event: " line, one "data: " line, a blank
// line.
func parseSSE(t testing.TB, body []byte) []sseEvent {
	t.Helper()
	var out []sseEvent
	rest := string(body)
	for rest != "" {
		i := strings.Index(rest, "\n\n")
		if i < 0 {
			t.Fatalf("trailing bytes without event terminator: %q", rest)
		}
		raw := rest[:i+2]
		rest = rest[i+2:]
		ev := sseEvent{Raw: raw}
		for _, line := range strings.Split(raw[:i], "\n") {
			switch {
			case strings.HasPrefix(line, "event: "):
				ev.Event = line[len("event: "):]
			case strings.HasPrefix(line, "data: "):
				if ev.Data != "" {
					t.Fatalf("more than one data line in %q", raw)
				}
				ev.Data = line[len("data: "):]
			default:
				t.Fatalf("unexpected line %q in event %q", line, raw)
			}
		}
		out = append(out, ev)
	}
	return out
}

// readEvent reads one event (up to the blank line) from a live stream.
func readEvent(t testing.TB, br *bufio.Reader) string {
	t.Helper()
	var b strings.Builder
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("read event: %v (so far %q)", err, b.String()+line)
		}
		b.WriteString(line)
		if line == "\n" {
			return b.String()
		}
	}
}

func isCompact(s string) bool {
	var buf bytes.Buffer
	if err := json.Compact(&buf, []byte(s)); err != nil {
		return false
	}
	return buf.String() == s
}

// shape describes a JSON value's structure without its values: objects map
// to their keys' shapes, arrays to their first element's shape.
func shape(v any) any {
	switch x := v.(type) {
	case map[string]any:
		m := map[string]any{}
		for k, e := range x {
			m[k] = shape(e)
		}
		return m
	case []any:
		if len(x) == 0 {
			return "[]"
		}
		return []any{shape(x[0])}
	case string:
		return "string"
	case float64:
		return "number"
	case bool:
		return "bool"
	case nil:
		return "null"
	}
	return fmt.Sprintf("%T", v)
}

func shapeOf(t testing.TB, s string) any {
	t.Helper()
	var v any
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatalf("json %q: %v", s, err)
	}
	return shape(v)
}

func keys(m map[string]any) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

func sample(t testing.TB, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "..", "testdata", "samples", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func sampleEvents(t testing.TB, name string) []sseEvent {
	return parseSSE(t, []byte(sample(t, name)))
}

func assertShape(t testing.TB, what, got, want string) {
	t.Helper()
	g, w := shapeOf(t, got), shapeOf(t, want)
	if !reflect.DeepEqual(g, w) {
		t.Errorf("%s: shape differs from the vLLM sample\n got: %v\nwant: %v\n(got %s)", what, g, w, got)
	}
}

// waitFor polls cond until it holds or 5 s pass.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// settle waits until no generation runs and checks the counters add up.
func settle(t testing.TB, s *Server) {
	t.Helper()
	waitFor(t, "InFlight == 0", func() bool { return s.InFlight() == 0 })
	if got := s.Completed() + s.Cancelled() + s.Faulted(); got != s.Started() {
		t.Errorf("Completed+Cancelled+Faulted = %d, Started = %d", got, s.Started())
	}
}

func chatBody(user string, extra string) string {
	b := fmt.Sprintf(`{"model":%q,"messages":[{"role":"system","content":"be brief"},{"role":"user","content":%q}]`, DefaultModel, user)
	if extra != "" {
		b += "," + extra
	}
	return b + "}"
}

func newReq(url, body string, hdr map[string]string) (*http.Request, error) {
	req, err := http.NewRequest("POST", url, strings.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	return req, nil
}

func newReqMust(t testing.TB) *http.Request {
	req, err := newReq("http://x/v1/chat/completions", "{}", nil)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

func httpClient() *http.Client { return http.DefaultClient }
