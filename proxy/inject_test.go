package proxy

import (
	"encoding/json"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

func FuzzInjectUsage(f *testing.F) {
	for _, s := range []string{
		`{"stream":true,"model":"m"}`,
		` { "model":"m", "stream" : true }`,
		`{"stream":true,"stream_options":{"include_usage":false,"x":1}}`,
		`{"stream":true,"stream_options":null}`,
		`{"stream":true,"stream_options":{}}`,
		`{"messages":[{"role":"user","content":"a \"quoted\" {brace} [x] \\ \u00e9"}],"stream":true,"n":1.5e3,"x":[null,false,{"a":[]}]}`,
		`{"stream":false,"stream":true}`,
		`{"stream_options":{"include_usage":false},"stream":true,"stream_options":{"include_usage":true}}`,
		`{"\u0073tream":true}`,
		`{}`, `[]`, `"stream"`, `{"stream":true`, `{"stream":tru}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		fast, fok := injectUsage(in)
		if !json.Valid(in) {
			return // no promise beyond not panicking
		}
		slow, sok := injectUsageSlow(in)
		if fok != sok {
			t.Fatalf("injectUsage(%s) ok=%v, slow ok=%v", in, fok, sok)
		}
		if !fok {
			return
		}
		if !json.Valid(fast) {
			t.Fatalf("injectUsage(%s) = invalid JSON %s", in, fast)
		}
		var a, b any
		json.Unmarshal(fast, &a)
		json.Unmarshal(slow, &b)
		if !reflect.DeepEqual(a, b) {
			t.Fatalf("injectUsage(%s):\n fast %s\n slow %s", in, fast, slow)
		}
		so := a.(map[string]any)["stream_options"].(map[string]any)
		if so["include_usage"] != true {
			t.Fatalf("no include_usage in %s", fast)
		}
	})
}

func longChat(kb int) []byte {
	msg := strings.Repeat("The quick brown fox jumps over the lazy dog. ", 22) // ~1 KB
	var sb strings.Builder
	sb.WriteString(`{"model":"meta-llama/Llama-3.1-8B-Instruct","messages":[`)
	for i := range kb {
		if i > 0 {
			sb.WriteByte(',')
		}
		sb.WriteString(`{"role":"user","content":"` + msg + `"}`)
	}
	sb.WriteString(`],"temperature":0.2,"stream":true}`)
	return []byte(sb.String())
}

func BenchmarkInjectUsage(b *testing.B) {
	for _, kb := range []int{1, 100} {
		body := longChat(kb)
		for _, impl := range []struct {
			name string
			fn   func([]byte) ([]byte, bool)
		}{{"scan", injectUsage}, {"decode", injectUsageSlow}} {
			b.Run(impl.name+"/"+strconv.Itoa(kb)+"KB", func(b *testing.B) {
				b.SetBytes(int64(len(body)))
				b.ReportAllocs()
				for b.Loop() {
					if _, ok := impl.fn(body); !ok {
						b.Fatal("not injected")
					}
				}
			})
		}
	}
}
