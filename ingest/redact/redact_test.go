package redact

import (
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"

	"github.com/llmtap/llmtap/ingest/decode"
	"github.com/llmtap/llmtap/ingest/event"
	"github.com/llmtap/llmtap/ingest/pipeline"
	"github.com/llmtap/llmtap/ingest/record"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

const (
	llmtapKey = "sk-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789_-AbCdEfGhIj" // sk- + 48 URL-safe
	openaiKey = "sk-proj-T3BlbkFJabcdefghijklmnop1234567890"
	awsKey    = "AKIAIOSFODNN7EXAMPLE"
	jwt       = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
)

func mustNew(t testing.TB, cfg Config) *Redactor {
	t.Helper()
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestBuiltins(t *testing.T) {
	r := mustNew(t, DefaultConfig())
	tests := []struct {
		name, in, want string
	}{
		// api_keys
		{"llmtap key", "my key is " + llmtapKey + " ok", "my key is [REDACTED:api_key] ok"},
		{"openai project key", "OPENAI_API_KEY=" + openaiKey, "OPENAI_API_KEY=[REDACTED:api_key]"},
		{"anthropic key", "sk-ant-api03-abcdefghijklmnopqrstuvwxyz", "[REDACTED:api_key]"},
		{"sk key after JSON-looking escape", `\nsk-abcdefghijklmnopqrstuvwxyz`, `\n[REDACTED:api_key]`},
		{"sk too short", "sk-abc123", "sk-abc123"},
		{"sk inside a word", "multi-task-learning-approaches-for-all", "multi-task-learning-approaches-for-all"},
		{"sk after a letter", "risk-assessment-framework-2024-final", "risk-assessment-framework-2024-final"},
		{"sk glued to a word but random", "key0" + llmtapKey, "key0[REDACTED:api_key]"},
		{"aws", "aws " + awsKey + ".", "aws [REDACTED:api_key]."},
		{"aws too long", "AKIAIOSFODNN7EXAMPLEXX", "AKIAIOSFODNN7EXAMPLEXX"},
		{"aws lower", "akiaiosfodnn7example", "akiaiosfodnn7example"},
		{"google", "AIzaSyA-1234567890abcdefghijklmnopqrstu", "[REDACTED:api_key]"},
		{"github", "ghp_abcdefghijklmnopqrstuvwxyz0123456789", "[REDACTED:api_key]"},
		{"slack", "xoxb-1234567890-abcdefghij", "[REDACTED:api_key]"},
		{"api_key json", `{"api_key": "abcd1234efgh5678"}`, `{"api_key": "[REDACTED:api_key]"}`},
		{"apiKey yaml", "apiKey: zzzz9999yyyy", "apiKey: [REDACTED:api_key]"},
		{"x-api-key header", "X-Api-Key: secretvalue123", "X-Api-Key: [REDACTED:api_key]"},
		{"API-KEY env", "API-KEY=abcdefgh12", "API-KEY=[REDACTED:api_key]"},
		{"api_key escaped json", `{\"api_key\":\"abcd1234efgh5678\"}`, `{\"api_key\":\"[REDACTED:api_key]\"}`},
		{"api_key value too short", "api_key=abc", "api_key=abc"},
		{"api key prose", "the api key is stored in the vault", "the api key is stored in the vault"},
		{"api_key already redacted", `"x-api-key":"REDACTED"`, `"x-api-key":"REDACTED"`},
		{"query key", "GET https://x.example/v1?key=AbCdEf123456&alt=json", "GET https://x.example/v1?key=[REDACTED:api_key]&alt=json"},
		{"query token", "/cb?a=1&access_token=tok_0123456789", "/cb?a=1&access_token=[REDACTED:api_key]"},
		{"query key short", "?key=abc&x=1", "?key=abc&x=1"},
		{"monkey is not a key", "monkey=bananas12345", "monkey=bananas12345"},
		// bearer_tokens
		{"bearer", "Authorization: Bearer abcdef0123456789xyz", "Authorization: Bearer [REDACTED:bearer_token]"},
		{"bearer lower", "bearer abcdef0123456789xyz.", "bearer [REDACTED:bearer_token]."},
		{"bearer jwt", "Bearer " + jwt, "Bearer [REDACTED:bearer_token]"},
		{"jwt alone", "token " + jwt + " end", "token [REDACTED:bearer_token] end"},
		{"bearer prose", "the bearer of bad news", "the bearer of bad news"},
		{"bearer short word", "Bearer instruments", "Bearer instruments"},
		{"bearer already redacted", "Bearer REDACTEDREDACTEDXX", "Bearer REDACTEDREDACTEDXX"},
		// emails
		{"email", "mail me at alice.smith+llm@example.co.uk please", "mail me at [REDACTED:email] please"},
		{"email in json", `{"content":"mail me at a@b.com"}`, `{"content":"mail me at [REDACTED:email]"}`},
		{"two emails", "a@b.io,c@d.io", "[REDACTED:email],[REDACTED:email]"},
		{"long local part", strings.Repeat("x", 300) + "@example.com", "[REDACTED:email]"},
		{"no tld", "user@localhost", "user@localhost"},
		{"at sign alone", "meet @ noon, @handle", "meet @ noon, @handle"},
		// card_numbers
		{"visa", "card 4111111111111111 exp", "card [REDACTED:card_number] exp"},
		{"visa spaced", "card 4111 1111 1111 1111.", "card [REDACTED:card_number]."},
		{"visa dashed", "4111-1111-1111-1111", "[REDACTED:card_number]"},
		{"amex 4-6-5", "378282246310005 and 3782 822463 10005", "[REDACTED:card_number] and [REDACTED:card_number]"},
		{"mastercard", "5555555555554444", "[REDACTED:card_number]"},
		{"card in longer grouped run", "order 1 4111 1111 1111 1111", "order 1 [REDACTED:card_number]"},
		{"luhn fails", "4111111111111112", "4111111111111112"},
		{"random long number", "id 4839201938475610", "id 4839201938475610"},
		{"too long run", "41111111111111111111111", "41111111111111111111111"},
		{"decimal fraction", "0.4111111111111111", "0.4111111111111111"},
		{"glued to letters", "x4111111111111111", "x4111111111111111"},
		{"issuer digit 1 (ns timestamp)", "1726783839539000003", "1726783839539000003"},
		{"small groups", "4 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1", "4 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1"},
		{"date", "2024-01-15 12:30", "2024-01-15 12:30"},
		// none
		{"clean", "Hello, how are you? 42 apples.", "Hello, how are you? 42 apples."},
		{"utf8 around", "é " + llmtapKey + " ü", "é [REDACTED:api_key] ü"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := r.String(tc.in); got != tc.want {
				t.Errorf("String(%q)\n got %q\nwant %q", tc.in, got, tc.want)
			}
		})
	}
}

// The 19-digit case above must be a real Luhn pass, or the test would not
// show that the issuer rule is what keeps it.
func TestLuhn(t *testing.T) {
	tests := []struct {
		in   string
		want bool
	}{
		{"4111111111111111", true},
		{"4111 1111 1111 1111", true},
		{"5555555555554444", true},
		{"378282246310005", true},
		{"6011111111111117", true},
		{"1726783839539000003", true},
		{"4111111111111112", false},
		{"4839201938475610", false},
		{"0", true},
		{"79927398713", true},
		{"79927398710", false},
	}
	for _, tc := range tests {
		if got := luhn(tc.in); got != tc.want {
			t.Errorf("luhn(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestBuiltinSelection(t *testing.T) {
	in := "k=" + llmtapKey + " Bearer abcdef0123456789xyz a@b.com 4111111111111111"
	tests := []struct {
		builtins []string
		gone     []string
		kept     []string
	}{
		{nil, []string{llmtapKey, "abcdef0123456789xyz", "a@b.com", "4111111111111111"}, nil},
		{[]string{}, []string{llmtapKey, "abcdef0123456789xyz", "a@b.com", "4111111111111111"}, nil},
		{[]string{"none"}, nil, []string{llmtapKey, "abcdef0123456789xyz", "a@b.com", "4111111111111111"}},
		{[]string{"emails"}, []string{"a@b.com"}, []string{llmtapKey, "abcdef0123456789xyz", "4111111111111111"}},
		{[]string{"API_KEYS", " card_numbers"}, []string{llmtapKey, "4111111111111111"}, []string{"abcdef0123456789xyz", "a@b.com"}},
	}
	for _, tc := range tests {
		r := mustNew(t, Config{Builtins: tc.builtins})
		out := r.String(in)
		for _, g := range tc.gone {
			if strings.Contains(out, g) {
				t.Errorf("builtins %q: %q survived: %q", tc.builtins, g, out)
			}
		}
		for _, k := range tc.kept {
			if !strings.Contains(out, k) {
				t.Errorf("builtins %q: %q was redacted: %q", tc.builtins, k, out)
			}
		}
	}
}

func TestCustomPatterns(t *testing.T) {
	r := mustNew(t, Config{
		Builtins: []string{"none"},
		Patterns: []string{`(?i)password=(?P<secret>[^&\s"]+)`, `EMP-\d{6}`},
	})
	tests := []struct{ in, want string }{
		{"login?user=bob&password=hunter2&x=1", "login?user=bob&password=[REDACTED:custom]&x=1"},
		{"employee EMP-123456 and EMP-654321", "employee [REDACTED:custom] and [REDACTED:custom]"},
		{"EMP-12345 too short", "EMP-12345 too short"},
		{"a@b.com stays without builtins", "a@b.com stays without builtins"},
	}
	for _, tc := range tests {
		if got := r.String(tc.in); got != tc.want {
			t.Errorf("String(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestReplacement(t *testing.T) {
	r := mustNew(t, Config{Replacement: "***"})
	if got := r.String("x a@b.com " + llmtapKey); got != "x *** ***" {
		t.Errorf("got %q", got)
	}
	r = mustNew(t, Config{Replacement: "<{kind}>"})
	if got := r.String("a@b.com"); got != "<email>" {
		t.Errorf("got %q", got)
	}
}

func TestValidate(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("default config: %v", err)
	}
	tests := []struct {
		name string
		cfg  Config
		want []string // substrings of the error
	}{
		{"bad regexp", Config{Patterns: []string{`ok\d+`, `broken(`}}, []string{"pattern 1", `"broken("`, "missing closing )"}},
		{"empty match", Config{Patterns: []string{`x*`}}, []string{`pattern 0 "x*"`, "empty string"}},
		{"unknown builtin", Config{Builtins: []string{"emails", "phones"}}, []string{`"phones"`, "unknown"}},
		{"none combined", Config{Builtins: []string{"none", "emails"}}, []string{"cannot be combined"}},
		{"quote in replacement", Config{Replacement: `"X"`}, []string{"quotes"}},
		{"backslash in replacement", Config{Replacement: `\X`}, []string{"backslashes"}},
		{"newline in replacement", Config{Replacement: "X\n"}, []string{"control"}},
		{"empty consumer", Config{NoBodies: []string{""}}, []string{"empty consumer"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if err == nil {
				t.Fatal("Validate: no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if _, err := New(tc.cfg); err == nil {
				t.Error("New: no error")
			}
		})
	}
}

func TestReplacementRedactedItself(t *testing.T) {
	_, err := New(Config{Replacement: "{kind}@redacted.example"})
	if err == nil || !strings.Contains(err.Error(), "itself redacted") {
		t.Fatalf("err = %v", err)
	}
	_, err = New(Config{Patterns: []string{`REDACTED`}})
	if err == nil || !strings.Contains(err.Error(), "itself redacted") {
		t.Fatalf("err = %v", err)
	}
}

func TestJSONStaysValid(t *testing.T) {
	r := mustNew(t, DefaultConfig())
	docs := []string{
		`{"messages":[{"role":"user","content":"mail me at a@b.com"}]}`,
		`{"content":"line1\na@b.com\tb@c.org"}`,
		`{"content":"\u00e9a@b.com and \\a@b.com and \\\na@b.com"}`,
		`{"content":"key:\"` + llmtapKey + `\""}`,
		`{"content":"\"api_key\": \"abcdefgh12345678\""}`,
		`{"api_key":"abcdefgh12345678","Authorization":"Bearer abcdefghijklmnop1234","n":4111111111111111,"s":"4111 1111 1111 1111"}`,
		`{"tool":"{\"email\":\"x.y@example.com\",\"card\":\"5555-5555-5555-4444\"}"}`,
		`{"url":"https:\/\/x.example\/v1?key=AbCdEf123456\u0026y=1"}`,
		`{"content":"\n4111111111111111\n` + jwt + `\n"}`,
		"data: {\"choices\":[{\"delta\":{\"content\":\"reach me: bob@corp.io\"}}]}\n\ndata: [DONE]\n\n",
	}
	for _, d := range docs {
		out := r.redact(d, true, new([nKinds]int))
		if out == d {
			t.Errorf("nothing redacted in %s", d)
		}
		for _, line := range strings.Split(out, "\n") {
			line = strings.TrimPrefix(line, "data: ")
			if line == "" || line == "[DONE]" {
				continue
			}
			if !json.Valid([]byte(line)) {
				t.Errorf("redacted JSON is invalid:\n in %s\nout %s", d, out)
			}
		}
		for _, secret := range []string{"a@b.com", llmtapKey, "abcdefgh12345678", "abcdefghijklmnop1234",
			"4111111111111111", "4111 1111 1111 1111", "x.y@example.com", "5555-5555-5555-4444", "AbCdEf123456", jwt, "bob@corp.io"} {
			if strings.Contains(out, secret) {
				t.Errorf("%q survived in %s", secret, out)
			}
		}
	}
	// The email after \n is found without the n.
	if got := r.redact(`"x\na@b.com"`, true, new([nKinds]int)); got != `"x\n[REDACTED:email]"` {
		t.Errorf("got %s", got)
	}
}

func TestEscapeAt(t *testing.T) {
	s := `a\nb\u00e9c\\d`
	tests := []struct {
		x        int
		esc, end int
		inside   bool
	}{
		{1, 0, 0, false}, // at the backslash: not strictly inside
		{2, 1, 3, true},  // the n
		{3, 0, 0, false},
		{5, 4, 10, true}, // u
		{9, 4, 10, true}, // last hex digit
		{10, 0, 0, false},
		{12, 11, 13, true}, // second backslash of \\
		{13, 0, 0, false},  // d after \\ is not escaped
	}
	for _, tc := range tests {
		esc, end, ok := escapeAt(s, tc.x)
		if ok != tc.inside || (ok && (esc != tc.esc || end != tc.end)) {
			t.Errorf("escapeAt(%q, %d) = %d, %d, %v; want %d, %d, %v", s, tc.x, esc, end, ok, tc.esc, tc.end, tc.inside)
		}
	}
}

func TestApplyFieldsAndNoBodies(t *testing.T) {
	r := mustNew(t, Config{NoBodies: []string{"alice"}})
	mk := func(consumer string) record.Record {
		return record.Record{
			EventID:         "0190f5a0-0000-7000-8000-000000000001",
			Consumer:        consumer,
			KeyPrefix:       "sk-AbCdEfG",
			Path:            "/v1/chat/completions",
			Prompt:          "my key " + llmtapKey,
			Response:        "write to help@example.com",
			Reasoning:       "the user gave card 4111111111111111",
			ToolCalls:       `[{"function":{"name":"mail","arguments":"{\"to\":\"bob@example.com\"}"}}]`,
			Error:           "upstream said: invalid key " + openaiKey,
			RequestHeaders:  `{"authorization":"REDACTED","x-forwarded-for":"a@b.com"}`,
			ResponseHeaders: `{"x-debug":"Bearer abcdefghijklmnop1234"}`,
			RequestBody:     `{"messages":[{"role":"user","content":"my key ` + llmtapKey + `"}]}`,
			ResponseBody: `{"choices":[{"message":{"content":"write to help@example.com","reasoning_content":"the user gave card 4111111111111111",` +
				`"tool_calls":[{"function":{"name":"mail","arguments":"{\"to\":\"bob@example.com\"}"}}]}}]}`,
		}
	}
	secrets := []string{llmtapKey, "help@example.com", "4111111111111111", "bob@example.com", openaiKey, "a@b.com", "abcdefghijklmnop1234"}

	bob := mk("bob")
	r.Apply(&bob)
	assertNoSecrets(t, bob, secrets)
	if bob.RequestBody == "" || bob.ResponseBody == "" {
		t.Error("bob's bodies were dropped")
	}
	if bob.KeyPrefix != "sk-AbCdEfG" || bob.EventID != "0190f5a0-0000-7000-8000-000000000001" {
		t.Errorf("metadata changed: %+v", bob)
	}
	for _, f := range []string{bob.ToolCalls, bob.RequestHeaders, bob.ResponseHeaders, bob.RequestBody, bob.ResponseBody} {
		if !json.Valid([]byte(f)) {
			t.Errorf("invalid JSON after redaction: %s", f)
		}
	}

	before := testutil.ToFloat64(droppedStoreBodies)
	alice := mk("alice")
	r.Apply(&alice)
	assertNoSecrets(t, alice, secrets)
	if alice.RequestBody != "" || alice.ResponseBody != "" {
		t.Errorf("alice's bodies stored: %q %q", alice.RequestBody, alice.ResponseBody)
	}
	if alice.Prompt != "my key [REDACTED:api_key]" || alice.Response != "write to [REDACTED:email]" {
		t.Errorf("alice's prompt/response: %q / %q", alice.Prompt, alice.Response)
	}
	if got := testutil.ToFloat64(droppedStoreBodies) - before; got != 1 {
		t.Errorf("bodies dropped counter +%v, want +1", got)
	}
}

func TestMetrics(t *testing.T) {
	r := mustNew(t, DefaultConfig())
	get := func(k string) float64 { return testutil.ToFloat64(redactionsTotal.WithLabelValues(k)) }
	e0, c0, a0 := get(KindEmail), get(KindCardNumber), get(KindAPIKey)
	rec := record.Record{Prompt: "a@b.com c@d.com 4111111111111111", Response: "nothing"}
	r.Apply(&rec)
	if d := get(KindEmail) - e0; d != 2 {
		t.Errorf("email +%v, want +2", d)
	}
	if d := get(KindCardNumber) - c0; d != 1 {
		t.Errorf("card +%v, want +1", d)
	}
	if d := get(KindAPIKey) - a0; d != 0 {
		t.Errorf("api_key +%v, want +0", d)
	}
}

func TestApplyReject(t *testing.T) {
	r := mustNew(t, DefaultConfig())
	rej := record.Reject{Reason: "kong: entry 0: bad " + llmtapKey,
		Payload: []byte(`{"request":{"body":"a@b.com"},"x":"` + "\xff" + `"}`)}
	r.ApplyReject(&rej)
	if strings.Contains(rej.Reason, llmtapKey) || strings.Contains(string(rej.Payload), "a@b.com") {
		t.Errorf("secrets survived: %+v", rej)
	}
	if !strings.Contains(string(rej.Payload), "\xff") {
		t.Error("invalid byte outside the match was not kept")
	}
}

func TestIdempotent(t *testing.T) {
	r := mustNew(t, DefaultConfig())
	in := "k " + llmtapKey + " Bearer " + jwt + " a@b.com api_key=abcdefgh123 4111 1111 1111 1111 ?key=abcdefgh12345"
	once := r.String(in)
	if twice := r.String(once); twice != once {
		t.Errorf("not idempotent:\n once %q\ntwice %q", once, twice)
	}
}

func TestConcurrent(t *testing.T) {
	r := mustNew(t, DefaultConfig())
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				rec := record.Record{Prompt: "a@b.com " + llmtapKey, RequestBody: `{"x":"4111111111111111 a@b.com ` + llmtapKey + `"}`}
				r.Apply(&rec)
				if rec.Prompt != "[REDACTED:email] [REDACTED:api_key]" || rec.RequestBody != `{"x":"[REDACTED:card_number] [REDACTED:email] [REDACTED:api_key]"}` {
					t.Errorf("got %q %q", rec.Prompt, rec.RequestBody)
					return
				}
			}
		}()
	}
	wg.Wait()
}

func TestNoChangeNoAlloc(t *testing.T) {
	r := mustNew(t, DefaultConfig())
	s := strings.Repeat("plain words and 12 numbers, nothing secret here. ", 40)
	allocs := testing.AllocsPerRun(50, func() { _ = r.redact(s, true, new([nKinds]int)) })
	if allocs != 0 {
		t.Errorf("allocs = %v, want 0", allocs)
	}
}

func assertNoSecrets(t *testing.T, rec record.Record, secrets []string) {
	t.Helper()
	b, err := json.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	all := string(b)
	for _, s := range secrets {
		if strings.Contains(all, s) {
			t.Errorf("secret %q survived in record %s", s, all)
		}
	}
	for _, f := range []string{rec.Prompt, rec.Response, rec.Reasoning, rec.ToolCalls, rec.Error,
		rec.RequestHeaders, rec.ResponseHeaders, rec.RequestBody, rec.ResponseBody} {
		if !utf8.ValidString(f) {
			t.Errorf("invalid UTF-8: %q", f)
		}
	}
}

// A streamed answer splits an email over SSE chunks: no pattern matches the
// raw body, so the body is dropped, while the reassembled text is redacted.
func TestSplitSecretDropsBody(t *testing.T) {
	r := mustNew(t, DefaultConfig())
	body := "data: {\"choices\":[{\"delta\":{\"content\":\"write to alice.w@exa\"}}]}\n\n" +
		"data: {\"choices\":[{\"delta\":{\"content\":\"mple.com now\"}}]}\n\ndata: [DONE]\n\n"
	reqBody := `{"messages":[{"role":"user","content":"hello"}],"stream":true}`
	before := testutil.ToFloat64(droppedUnlocated)
	rec := record.Record{Stream: true, Prompt: "hello", Response: "write to alice.w@example.com now",
		RequestBody: reqBody, ResponseBody: body}
	r.Apply(&rec)
	if rec.Response != "write to [REDACTED:email] now" {
		t.Errorf("response %q", rec.Response)
	}
	if rec.ResponseBody != "" {
		t.Errorf("response body kept: %q", rec.ResponseBody)
	}
	if rec.RequestBody != reqBody {
		t.Errorf("request body changed: %q", rec.RequestBody)
	}
	if d := testutil.ToFloat64(droppedUnlocated) - before; d != 1 {
		t.Errorf("unlocated drops +%v, want +1", d)
	}

	// The same secret whole in one chunk: the body is redacted and kept.
	whole := "data: {\"choices\":[{\"delta\":{\"content\":\"write to alice.w@example.com now\"}}]}\n\n"
	rec = record.Record{Stream: true, Response: "write to alice.w@example.com now", ResponseBody: whole}
	r.Apply(&rec)
	if rec.ResponseBody == "" || strings.Contains(rec.ResponseBody, "alice") {
		t.Errorf("response body %q", rec.ResponseBody)
	}
}

// A body that hides an email behind a \u escape is dropped: the extracted
// response (plain text) shows the email, the body pass cannot find it.
func TestEscapedSecretDropsBody(t *testing.T) {
	r := mustNew(t, DefaultConfig())
	rec := record.Record{Response: "mail bob@example.com",
		ResponseBody: `{"choices":[{"message":{"content":"mail bob\u0040example.com"}}]}`}
	r.Apply(&rec)
	if rec.ResponseBody != "" || rec.Response != "mail [REDACTED:email]" {
		t.Errorf("got %+v", rec)
	}
}

func TestDecoderPassesErrors(t *testing.T) {
	r := mustNew(t, DefaultConfig())
	boom := errors.New("no identity")
	dec := r.Decoder(func(ev event.Event) (record.Record, error) {
		if ev.ID == "bad" {
			return record.Record{}, boom
		}
		return record.Record{EventID: ev.ID, Prompt: "a@b.com"}, nil
	})
	if _, err := dec(event.Event{ID: "bad"}); !errors.Is(err, boom) {
		t.Errorf("err = %v", err)
	}
	rec, err := dec(event.Event{ID: "good"})
	if err != nil || rec.EventID != "good" || rec.Prompt != "[REDACTED:email]" {
		t.Errorf("rec %+v, err %v", rec, err)
	}
	// Assignable to the pipeline's decoder type.
	var _ pipeline.DecodeFunc = r.Decoder(decode.Decode)
}

// Long base64 payloads in JSON text are not scanned (a chance "AIza…" in
// image data must not corrupt it); text around them still is.
func TestBase64PayloadSkipped(t *testing.T) {
	r := mustNew(t, DefaultConfig())
	chance := "AIzaSyA1234567890abcdefghijklmnopqrstuv" // looks like a Google key
	payload := strings.Repeat("QUJD", 100) + chance + strings.Repeat("REVG", 100) + "=="
	body := `{"messages":[{"role":"user","content":[{"type":"text","text":"mail a@b.com"},` +
		`{"type":"image_url","image_url":{"url":"data:image/png;base64,` + payload + `"}},` +
		`{"type":"text","text":"key ` + llmtapKey + `"}]}]}`
	out := r.redact(body, true, new([nKinds]int))
	if !strings.Contains(out, payload) {
		t.Errorf("base64 payload changed")
	}
	if strings.Contains(out, "a@b.com") || strings.Contains(out, llmtapKey) {
		t.Errorf("secrets around the payload survived: %s", out)
	}
	// A short payload is ordinary text, and plain-text fields are never skipped.
	short := `{"u":"data:text/plain;base64,` + chance + `"}`
	if out := r.redact(short, true, new([nKinds]int)); strings.Contains(out, chance) {
		t.Errorf("short payload skipped: %s", out)
	}
	if out := r.String("data:x;base64," + payload); strings.Contains(out, chance) {
		t.Errorf("plain text skipped: %s", out)
	}
	// JSON's \/ escape is part of the payload.
	esc := `{"u":"data:image/png;base64,` + strings.Repeat(`ab\/`, 100) + chance + `"}`
	if out := r.redact(esc, true, new([nKinds]int)); !strings.Contains(out, chance) {
		t.Errorf("escaped payload not skipped: %s", out)
	}
}
