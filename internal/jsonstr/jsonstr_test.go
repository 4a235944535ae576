package jsonstr

import (
	"encoding/json"
	"testing"
)

func TestAppend(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", `""`},
		{"plain", `"plain"`},
		{`"\`, `"\"\\"`},
		{"\x00\x1f\x7f", `"\u0000\u001f` + "\x7f" + `"`},
		{"\r\n\t", `"\r\n\t"`},
		{"<script>&", `"<script>&"`},
		{"é日本\u2028\u2029", `"é日本\u2028\u2029"`},
		{"bad \xff\xfe utf8", `"bad \ufffd\ufffd utf8"`},
	} {
		if got := string(Append([]byte("x"), tc.in)); got != "x"+tc.want {
			t.Errorf("Append(%q) = %s, want %s", tc.in, got[1:], tc.want)
		}
	}
}

// FuzzAppend: the output is valid JSON and decodes to what encoding/json
// makes of the same string.
func FuzzAppend(f *testing.F) {
	for _, s := range []string{"", "a\"b", "\xff", "\u2028", "日本", "\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b := Append(nil, s)
		var got string
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatalf("%q -> %s: %v", s, b, err)
		}
		want, _ := json.Marshal(s)
		var std string
		json.Unmarshal(want, &std)
		if got != std {
			t.Fatalf("%q: got %q, encoding/json gives %q", s, got, std)
		}
	})
}
