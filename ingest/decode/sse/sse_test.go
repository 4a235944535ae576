package sse

import (
	"bytes"
	"reflect"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name       string
		in         string
		want       []Event
		incomplete bool
	}{
		{"lf", "data: a\n\ndata: b\n\n", []Event{{Data: "a"}, {Data: "b"}}, false},
		{"crlf", "data: a\r\n\r\ndata: b\r\n\r\n", []Event{{Data: "a"}, {Data: "b"}}, false},
		{"cr", "data: a\r\rdata: b\r\r", []Event{{Data: "a"}, {Data: "b"}}, false},
		{"mixed", "data: a\r\n\ndata: b\r\r\n", []Event{{Data: "a"}, {Data: "b"}}, false},
		{"comment", ": ping\n\n:keepalive\ndata: x\n\n", []Event{{Data: "x"}}, false},
		{"multiline data", "data: a\ndata: b\ndata\n\n", []Event{{Data: "a\nb\n"}}, false},
		{"one space removed", "data:  two\n\ndata:none\n\n", []Event{{Data: " two"}, {Data: "none"}}, false},
		{"event type", "event: response.created\ndata: {}\n\n", []Event{{Type: "response.created", Data: "{}"}}, false},
		{"type reset", "event: x\ndata: 1\n\ndata: 2\n\n", []Event{{Type: "x", Data: "1"}, {Data: "2"}}, false},
		{"no data no dispatch", "event: x\n\ndata: 2\n\n", []Event{{Data: "2"}}, false},
		{"field no colon", "data\n\n", []Event{{Data: ""}}, false},
		{"space before colon ignored", "data : x\n\ndata: y\n\n", []Event{{Data: "y"}}, false},
		{"id", "id: 7\ndata: a\n\ndata: b\n\n", []Event{{Data: "a", ID: "7"}, {Data: "b", ID: "7"}}, false},
		{"id with nul ignored", "id: 1\x002\ndata: a\n\n", []Event{{Data: "a"}}, false},
		{"bom", "\xEF\xBB\xBFdata: a\n\n", []Event{{Data: "a"}}, false},
		{"only one bom", "\xEF\xBB\xBF\xEF\xBB\xBFdata: a\n\n", nil, false},
		{"retry unknown ignored", "retry: 10\nfoo: bar\ndata: a\n\n", []Event{{Data: "a"}}, false},
		{"missing final blank line", "data: a\n\ndata: b\n", []Event{{Data: "a"}, {Data: "b"}}, true},
		{"missing final newline", "data: a\n\ndata: b", []Event{{Data: "a"}, {Data: "b"}}, true},
		{"cut in field name", "data: a\n\nda", []Event{{Data: "a"}}, true},
		{"done", "data: [DONE]\n\n", []Event{{Data: "[DONE]"}}, false},
		{"empty", "", nil, false},
		{"only blank lines", "\n\n\r\n", nil, false},
		{"json with colon", `data: {"a":"b: c"}` + "\n\n", []Event{{Data: `{"a":"b: c"}`}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, inc := Parse([]byte(tt.in))
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("events = %q, want %q", got, tt.want)
			}
			if inc != tt.incomplete {
				t.Errorf("incomplete = %v, want %v", inc, tt.incomplete)
			}
			// Split at every offset: same result.
			for i := 0; i <= len(tt.in); i++ {
				g, inc2 := parseSplit([]byte(tt.in), i)
				if !reflect.DeepEqual(g, got) || inc2 != inc {
					t.Fatalf("split at %d: %q %v, want %q %v", i, g, inc2, got, inc)
				}
			}
			// Byte by byte.
			if g, inc2 := parseBytewise([]byte(tt.in)); !reflect.DeepEqual(g, got) || inc2 != inc {
				t.Fatalf("bytewise: %q %v, want %q %v", g, inc2, got, inc)
			}
		})
	}
}

func parseSplit(b []byte, i int) (events []Event, incomplete bool) {
	var p Parser
	add := func(e Event) { events = append(events, e) }
	p.Feed(b[:i], add)
	p.Feed(b[i:], add)
	return events, p.Close(add)
}

func parseBytewise(b []byte) (events []Event, incomplete bool) {
	var p Parser
	add := func(e Event) { events = append(events, e) }
	for i := range b {
		p.Feed(b[i:i+1], add)
	}
	return events, p.Close(add)
}

func TestFeedDoesNotRetainInput(t *testing.T) {
	var p Parser
	var got []Event
	buf := []byte("data: hel")
	p.Feed(buf, func(e Event) { got = append(got, e) })
	copy(buf, "XXXXXXXXX")
	p.Feed([]byte("lo\n\n"), func(e Event) { got = append(got, e) })
	if len(got) != 1 || got[0].Data != "hello" {
		t.Fatalf("got %q", got)
	}
}

func TestParserReusableAfterClose(t *testing.T) {
	var p Parser
	var got []Event
	add := func(e Event) { got = append(got, e) }
	p.Feed([]byte("event: x\ndata: 1"), add)
	if !p.Close(add) {
		t.Fatal("want incomplete")
	}
	p.Feed([]byte("data: 2\n\n"), add)
	if p.Close(add) {
		t.Fatal("want complete")
	}
	want := []Event{{Type: "x", Data: "1"}, {Data: "2"}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %q want %q", got, want)
	}
}

func TestLargeEvent(t *testing.T) {
	big := strings.Repeat("x", 1<<20)
	got, _ := Parse([]byte("data: " + big + "\n\n"))
	if len(got) != 1 || got[0].Data != big {
		t.Fatalf("large event lost")
	}
}

func FuzzSSE(f *testing.F) {
	for _, s := range []string{
		"data: a\n\n", "data: a\r\n\r\n", "data: a\r\r", ": c\ndata: x\ndata: y\n\n",
		"event: response.output_text.delta\ndata: {\"delta\":\"hi\"}\n\n", "\xEF\xBB\xBFdata: a", "data:[DONE]\n\n",
		"id: 1\nretry: 5\ndata\n\n\r\n\r",
	} {
		f.Add([]byte(s), uint16(3))
	}
	f.Fuzz(func(t *testing.T, b []byte, cut uint16) {
		whole, inc := Parse(b)
		i := int(cut) % (len(b) + 1)
		split, inc2 := parseSplit(b, i)
		if !reflect.DeepEqual(whole, split) || inc != inc2 {
			t.Fatalf("split at %d differs: %q %v vs %q %v", i, split, inc2, whole, inc)
		}
		if len(b) <= 256 {
			bw, inc3 := parseBytewise(b)
			if !reflect.DeepEqual(whole, bw) || inc != inc3 {
				t.Fatalf("bytewise differs: %q vs %q", bw, whole)
			}
		}
	})
}

func BenchmarkParse(b *testing.B) {
	chunk := `data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"hello"},"finish_reason":null}]}` + "\n\n"
	in := []byte(strings.Repeat(chunk, 30))
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	for b.Loop() {
		var p Parser
		n := 0
		p.Feed(in, func(Event) { n++ })
		p.Close(nil)
	}
}

// lineEnd finds what bytes.IndexAny(b, "\r\n") finds, at every position
// relative to its search windows.
func TestLineEnd(t *testing.T) {
	for _, n := range []int{0, 1, 255, 256, 257, 767, 768, 769, 5000} {
		for _, end := range []string{"", "\n", "\r", "\r\n", "\n\r", "\ntail\r", "\rtail\n"} {
			b := append(bytes.Repeat([]byte("x"), n), end...)
			if got, want := lineEnd(b), bytes.IndexAny(b, "\r\n"); got != want {
				t.Errorf("n=%d end=%q: %d, want %d", n, end, got, want)
			}
		}
	}
}
