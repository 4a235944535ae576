package proxy

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"regexp"
	"strings"
	"testing"
	"testing/iotest"
)

// referenceStrip is the non-incremental definition of what usageStripper
// must produce: the input with every complete usage event removed.
var boundary = regexp.MustCompile(`\n\r?\n`)

func referenceStrip(in []byte) (out []byte, stripped int) {
	for {
		loc := boundary.FindIndex(in)
		if loc == nil {
			return append(out, in...), stripped
		}
		ev := in[:loc[1]]
		if isUsageEvent(ev) {
			stripped++
		} else {
			out = append(out, ev...)
		}
		in = in[loc[1]:]
	}
}

// splitReader returns the input in pieces of the given sizes (cycled).
type splitReader struct {
	b     []byte
	sizes []int
	i     int
}

func (r *splitReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	n := 1
	if len(r.sizes) > 0 {
		n = r.sizes[r.i%len(r.sizes)]
		r.i++
	}
	if n <= 0 {
		n = 1
	}
	n = min(n, len(p), len(r.b))
	copy(p, r.b[:n])
	r.b = r.b[n:]
	return n, nil
}

func stripAll(t testing.TB, src io.Reader) ([]byte, int) {
	s := newUsageStripper(src)
	out, err := io.ReadAll(s)
	if err != nil {
		t.Fatal(err)
	}
	return out, s.stripped
}

const usageEvent = `data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[],"usage":{"prompt_tokens":13,"total_tokens":16,"completion_tokens":3}}` + "\n\n"

func TestStripUsageSample(t *testing.T) {
	in, err := os.ReadFile("../testdata/samples/vllm-chat-stream-usage.sse")
	if err != nil {
		t.Fatal(err)
	}
	want, n := referenceStrip(in)
	if n != 1 {
		t.Fatalf("reference stripped %d events from the sample, want 1", n)
	}
	if bytes.Contains(want, []byte(`"choices":[]`)) || !bytes.HasSuffix(want, []byte("data: [DONE]\n\n")) {
		t.Fatalf("reference output wrong:\n%s", want)
	}
	for size := 1; size <= len(in); size += 7 {
		got, k := stripAll(t, &splitReader{b: in, sizes: []int{size}})
		if !bytes.Equal(got, want) || k != 1 {
			t.Fatalf("split %d: got %d stripped\n%s", size, k, got)
		}
	}
	got, _ := stripAll(t, iotest.OneByteReader(bytes.NewReader(in)))
	if !bytes.Equal(got, want) {
		t.Fatal("one-byte reads differ")
	}
}

func TestIsUsageEvent(t *testing.T) {
	cases := []struct {
		ev   string
		want bool
	}{
		{usageEvent, true},
		{strings.ReplaceAll(usageEvent, "\n", "\r\n"), true},
		{"event: message\n" + usageEvent, true},
		{`data:{"choices":[],"usage":{"total_tokens":1}}` + "\n\n", true},
		{`data: {"choices":[ ],"usage":{}}` + "\n\n", true},
		{`data: {"choices":[],"usage":null}` + "\n\n", false},
		{`data: {"choices":[{"index":0}],"usage":{"total_tokens":1}}` + "\n\n", false}, // continuous usage stats
		{`data: {"usage":{"total_tokens":1}}` + "\n\n", false},                         // no choices
		{`data: {"choices":[]}` + "\n\n", false},
		{`data: {"choices":[],"usage":{"total_tokens":1}` + "\n\n", false}, // broken JSON
		{`: {"choices":[],"usage":{"total_tokens":1}}` + "\n\n", false},    // comment
		{"data: [DONE]\n\n", false},
		{"data: {\"choices\":[],\ndata: \"usage\":{\"a\":1}}\n\n", true},     // multi-line data
		{"data: {\"choices\":\ndata: [],\"usage\":{\"a\":1}}\n\n", true},     // value on the next data line
		{"data: {\"choices\" :\t[ \n ] , \"usage\" : {\"a\":1}}\n\n", false}, // newline splits the event's line
		{`data: {"choices" : [ ] , "usage" :  {"a":1}}` + "\n\n", true},
		{`data: {"choices":[{"delta":{"content":"\"choices\":[]"}}],"usage":{"a":1}}` + "\n\n", false},
		{`data: {"x":"choices","choices":[],"usage":{"a":1}}` + "\n\n", true},
		{`data: {"choices":[],"usage":null,"u":{"usage":{"a":1}}}` + "\n\n", false}, // nested usage only
	}
	for _, tc := range cases {
		if got := isUsageEvent([]byte(tc.ev)); got != tc.want {
			t.Errorf("isUsageEvent(%q) = %v, want %v", tc.ev, got, tc.want)
		}
		if got := isUsageEventFull([]byte(tc.ev)); got != tc.want {
			t.Errorf("isUsageEventFull(%q) = %v, want %v", tc.ev, got, tc.want)
		}
	}
}

// isUsageEventFull is isUsageEvent without the fast rejection: it always
// decodes the event's data.
func isUsageEventFull(ev []byte) bool {
	var data []byte
	n := 0
	for _, line := range strings.Split(strings.TrimRight(string(ev), "\r\n"), "\n") {
		line = strings.TrimSuffix(line, "\r")
		v, ok := strings.CutPrefix(line, "data:")
		if !ok {
			continue
		}
		if n > 0 {
			data = append(data, '\n')
		}
		data = append(data, strings.TrimPrefix(v, " ")...)
		n++
	}
	var chunk struct {
		Choices *[]json.RawMessage `json:"choices"`
		Usage   json.RawMessage    `json:"usage"`
	}
	if n == 0 || json.Unmarshal(data, &chunk) != nil {
		return false
	}
	return chunk.Choices != nil && len(*chunk.Choices) == 0 && len(chunk.Usage) > 0 && string(chunk.Usage) != "null"
}

// FuzzIsUsageEvent checks the fast rejection never changes the answer.
func FuzzIsUsageEvent(f *testing.F) {
	f.Add([]byte(usageEvent))
	f.Add([]byte(`data: {"choices" : [ ] , "usage" :  {"a":1}}` + "\n\n"))
	f.Add([]byte("data: {\"choices\":\ndata: [],\"usage\":{\"a\":1}}\n\n"))
	f.Add([]byte(`data: {"choices":[{"index":0}],"usage":null}` + "\n\n"))
	f.Fuzz(func(t *testing.T, ev []byte) {
		// One event: no blank line inside.
		if bytes.Contains(ev, []byte("\n\n")) || bytes.Contains(ev, []byte("\n\r\n")) {
			return
		}
		ev = append(ev, '\n', '\n')
		if got, want := isUsageEvent(ev), isUsageEventFull(ev); got != want {
			t.Fatalf("isUsageEvent(%q) = %v, full decode says %v", ev, got, want)
		}
	})
}

// TestStripDoesNotDelay checks that each complete event is returned by the
// Read that completes it, without waiting for further input.
func TestStripDoesNotDelay(t *testing.T) {
	pr, pw := io.Pipe()
	s := newUsageStripper(pr)
	buf := make([]byte, 4096)
	go pw.Write([]byte("data: {\"a\":1}\n\ndata: {\"b\""))
	n, err := s.Read(buf)
	if err != nil || string(buf[:n]) != "data: {\"a\":1}\n\n" {
		t.Fatalf("first read %q %v", buf[:n], err)
	}
	go func() {
		// The rest of the boundary arrives later; the event must wait for it.
		pw.Write([]byte(":2}\n"))
		pw.Write([]byte("\n" + usageEvent + "data: [DONE]\n\n"))
		pw.Close()
	}()
	got, err := io.ReadAll(s)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "data: {\"b\":2}\n\ndata: [DONE]\n\n" {
		t.Fatalf("rest %q", got)
	}
}

func TestStripOversizeEventPassesThrough(t *testing.T) {
	big := "data: " + strings.Repeat("x", 3000) + "\n\n"
	in := big + usageEvent + big + "tail"
	s := newUsageStripper(&splitReader{b: []byte(in), sizes: []int{100, 1, 37}})
	s.limit = 500
	got, err := io.ReadAll(s)
	if err != nil {
		t.Fatal(err)
	}
	if want := big + big + "tail"; string(got) != want {
		t.Fatalf("got %d bytes, want %d", len(got), len(want))
	}
	if len(s.pend) > 600 {
		t.Fatalf("pending grew to %d", cap(s.pend))
	}
}

func FuzzStripUsage(f *testing.F) {
	sample, _ := os.ReadFile("../testdata/samples/vllm-chat-stream-usage.sse")
	f.Add(sample, []byte{3, 1, 200})
	f.Add([]byte(usageEvent+usageEvent), []byte{1})
	f.Add([]byte(strings.ReplaceAll(string(sample), "\n", "\r\n")), []byte{5, 2})
	f.Add([]byte("data: a\n\r\n\n"+usageEvent+"\r\n\n"), []byte{2})
	f.Add([]byte("data: {\"choices\":[],\"usage\":{}}\n"), []byte{1})
	f.Fuzz(func(t *testing.T, in []byte, sizes []byte) {
		want, wantN := referenceStrip(in)
		sz := make([]int, len(sizes))
		for i, b := range sizes {
			sz[i] = int(b)
		}
		got, n := stripAll(t, &splitReader{b: in, sizes: sz})
		if !bytes.Equal(got, want) || n != wantN {
			t.Fatalf("split %v:\n got %q (%d)\nwant %q (%d)", sz, got, n, want, wantN)
		}
		// The caller's buffer size matters too (in-place vs. slow path).
		bufSize := 1
		if len(sizes) > 0 {
			bufSize = 1 + int(sizes[0])%64
		}
		s := newUsageStripper(&splitReader{b: in, sizes: sz})
		var out []byte
		p := make([]byte, bufSize)
		for {
			k, err := s.Read(p)
			out = append(out, p[:k]...)
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		if !bytes.Equal(out, want) || s.stripped != wantN {
			t.Fatalf("buffer %d, split %v:\n got %q (%d)\nwant %q (%d)", bufSize, sz, out, s.stripped, want, wantN)
		}
	})
}

func BenchmarkStripUsage(b *testing.B) {
	sample, err := os.ReadFile("../testdata/samples/vllm-chat-stream-usage.sse")
	if err != nil {
		b.Fatal(err)
	}
	// A longer stream: many content chunks, then the usage chunk.
	lines := bytes.SplitAfter(sample, []byte("\n\n"))
	var in []byte
	for i := 0; i < 200; i++ {
		in = append(in, lines[1]...)
	}
	in = append(in, sample...)
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	for b.Loop() {
		s := newUsageStripper(&splitReader{b: in, sizes: []int{len(lines[1])}})
		if _, err := io.Copy(io.Discard, s); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkIsUsageEventNull: a content chunk of a server that sends
// "usage":null in every chunk (the fast rejection's case), next to the
// full decode it avoids.
func BenchmarkIsUsageEventNull(b *testing.B) {
	ev := []byte(`data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":" word"},"finish_reason":null}],"usage":null}` + "\n\n")
	for _, bc := range []struct {
		name string
		fn   func([]byte) bool
	}{{"fast", isUsageEvent}, {"full", isUsageEventFull}} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if bc.fn(ev) {
					b.Fatal("usage event")
				}
			}
		})
	}
}
