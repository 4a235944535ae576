package redact

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzRedact checks the properties of the builtin rules on any input: no
// panic; valid UTF-8 in, valid UTF-8 out; redacting twice equals redacting
// once; valid JSON stays valid JSON; and a canary key planted in a JSON
// string never survives.
func FuzzRedact(f *testing.F) {
	seeds := []string{
		"", "plain", "a@b.com", `{"content":"mail me at a@b.com"}`, `"\na@b.com"`, `"\u00e9a@b.com"`,
		"4111 1111 1111 1111", "0.4111111111111111", `{"n":4111111111111111}`, "Bearer abcdefghijklmnop1234",
		"api_key=abcdefgh1234", `{\"api_key\":\"abcd1234efgh\"}`, "?key=abcdefgh123&x", llmtapKey, jwt, awsKey,
		"1 4111 1111 1111 1111 2", "x@y.z@w.com", "sk-" + strings.Repeat("a", 5000), strings.Repeat("1 ", 100),
		`"\\` + `\\"`, "\xff@a.com",
	}
	for _, s := range seeds {
		f.Add(s)
	}
	r := mustNew(f, DefaultConfig())
	f.Fuzz(func(t *testing.T, s string) {
		for _, jsonText := range []bool{false, true} {
			var cnt [nKinds]int
			once := r.redact(s, jsonText, &cnt)
			if utf8.ValidString(s) && !utf8.ValidString(once) {
				t.Fatalf("invalid UTF-8 out of %q: %q", s, once)
			}
			if twice := r.redact(once, jsonText, &cnt); twice != once {
				t.Fatalf("not idempotent (json %v):\n   in %q\n once %q\ntwice %q", jsonText, s, once, twice)
			}
		}
		if json.Valid([]byte(s)) {
			out := r.redact(s, true, new([nKinds]int))
			if !json.Valid([]byte(out)) {
				t.Fatalf("valid JSON became invalid:\n in %s\nout %s", s, out)
			}
		}
		// A canary inside a JSON string, next to arbitrary text, is found.
		if utf8.ValidString(s) {
			b, _ := json.Marshal(map[string]string{"content": s + " " + llmtapKey + " " + s})
			out := r.redact(string(b), true, new([nKinds]int))
			if strings.Contains(out, llmtapKey) {
				t.Fatalf("canary survived in %s", out)
			}
			if !json.Valid([]byte(out)) {
				t.Fatalf("valid JSON became invalid:\n in %s\nout %s", b, out)
			}
		}
	})
}
