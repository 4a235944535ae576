// Package redact removes secrets and personal data from records before they
// are stored: API keys, bearer tokens, emails and card numbers by default,
// plus configured regular expressions, replaced in the prompt, response,
// reasoning, tool calls, error, path, header values and bodies of a
// record.Record. It also drops the bodies of consumers configured with
// store_bodies: false.
//
// It works on records, after ingest/decode, so it applies to every producer
// alike (the proxy's events and Kong http-log entries) and at the storage
// boundary, where it cannot be bypassed by one component's logging. Compose
// it with the decoder:
//
//	r, err := redact.New(cfg)
//	p := pipeline.New(pcfg, st, logger, pipeline.WithDecoder(r.Decoder(decode.Decode)))
//
// # What is replaced
//
// Each match becomes Config.Replacement with {kind} expanded, by default
// "[REDACTED:api_key]", "[REDACTED:bearer_token]", "[REDACTED:email]",
// "[REDACTED:card_number]" or "[REDACTED:custom]". Where a rule has a
// name and a value (api_key: …, Bearer …, ?key=…) only the value is
// replaced, so the stored text still says what was there.
//
//   - api_keys: sk-… (20+ URL-safe characters: OpenAI, Anthropic, llmtap's
//     own keys), AWS access key ids (AKIA/ASIA + 16), Google (AIza + 35),
//     GitHub (ghp_…, github_pat_…), Slack (xoxb-…), the value after
//     api_key / api-key / apikey / x-api-key followed by any of ` "':=\`
//     (JSON, YAML, headers, env, escaped JSON), and ?key= / ?token= /
//     ?access_token= / ?auth= values in URLs.
//   - bearer_tokens: the token after "Bearer " (16+ characters) and JWTs.
//   - emails: local@domain.tld.
//   - card_numbers: 13–19 digits, as one run or as groups of 3+ digits
//     separated by single spaces or dashes, starting with 2–6 and passing
//     the Luhn check. Decimal fractions (after a '.') and numbers glued to
//     letters are not cards; long numbers failing Luhn are kept.
//
// # JSON
//
// Bodies, headers and tool calls are JSON text (or SSE lines of JSON). A
// match there never starts or ends inside an escape sequence (an email after
// \n is found without the n), and the replacement contains no quotes,
// backslashes or control characters, so valid JSON stays valid JSON; a card
// number that is a bare JSON number becomes the quoted replacement. A secret
// that a body hides from the patterns (split over SSE chunks by a streamed
// answer, or written with \u escapes) is still found in the extracted prompt
// or response, which are plain text; the body is then not stored at all (see
// Apply).
//
// # Rejects
//
// Entries that cannot be decoded are stored in llm_rejects as they arrived.
// The receiver should pass the rejects it makes (Kong entries, NDJSON
// lines) through ApplyReject before handing them to the pipeline. Events
// that fail decode.Decode itself (no identity) become rejects inside the
// pipeline, as event JSON with base64 bodies: their headers and error are
// searchable text, their bodies are not.
//
// # Guarantees
//
// Apply mutates the record in place and keeps every string valid UTF-8. With
// the builtin rules redacting twice equals redacting once. A Redactor is
// immutable after New and safe for concurrent use. Detection is pattern
// based: like every such scrubber it cannot promise to find every secret in
// free text.
//
// # Cost
//
// One pass over each field finds the literal anchors of all rules ("sk-",
// "@", "Bearer", "key", "=", "eyJ", …) with byte tables, and the runs of
// digits long enough to be a card number; a rule's regexp then runs only at
// its anchors (anchored there, or on a small window, after a cheap check
// that a match is possible there), and the card scanner only on fields with
// such a run, so text without anchors costs that pass, under 2 ns a byte. A
// rule with more than 64 anchors in one field runs its regexp once over the
// field instead, so text dense with anchors (a hostile body) stays linear.
// Custom patterns run on the whole text. See BenchmarkApply,
// BenchmarkApplyProxy and BenchmarkAdversarial.
package redact

import (
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/llmtap/llmtap/ingest/event"
	"github.com/llmtap/llmtap/ingest/record"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

var (
	redactionsTotal = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "llmtap_redactions_total",
		Help: "Secrets and personal data replaced in records before storage, by kind.",
	}, []string{"kind"})
	bodiesDroppedTotal = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "llmtap_redaction_bodies_dropped_total",
		Help: "Bodies not stored: reason store_bodies (the consumer has store_bodies: false; counted per record) " +
			"or unlocated_secret (a secret seen in the extracted text could not be found in the body; counted per body).",
	}, []string{"reason"})
	droppedStoreBodies = bodiesDroppedTotal.WithLabelValues("store_bodies")
	droppedUnlocated   = bodiesDroppedTotal.WithLabelValues("unlocated_secret")
	kindCounters       [nKinds]prometheus.Counter
)

func init() {
	for i, k := range kinds {
		kindCounters[i] = redactionsTotal.WithLabelValues(k)
	}
}

// Limits of one redact call: rules (builtins + custom patterns) and anchor
// hits remembered (beyond them a rule scans the whole string).
const (
	maxRules = 64
	maxHits  = 256
)

// Redactor applies a Config. It is immutable and safe for concurrent use.
type Redactor struct {
	rules    []*rule
	anchors  *anchorIndex
	cards    bool
	repl     [nKinds]string
	noBodies map[string]bool
}

// New validates cfg and returns its Redactor.
func New(cfg Config) (*Redactor, error) {
	c, err := cfg.compile()
	if err != nil {
		return nil, err
	}
	r := &Redactor{
		rules:    append(builtinRules(c.builtins), customRules(c.custom)...),
		cards:    c.builtins[BuiltinCardNumbers],
		noBodies: c.noBodies,
	}
	if len(r.rules) > maxRules {
		return nil, fmt.Errorf("redact config: %d patterns, at most %d", len(c.custom), maxRules-len(r.rules)+len(c.custom))
	}
	r.anchors = newAnchorIndex(r.rules, r.cards)
	for i, k := range kinds {
		r.repl[i] = strings.ReplaceAll(c.repl, "{kind}", k)
	}
	// Idempotence: a replacement must not be found again (builtins only;
	// custom patterns are the operator's business, but one that matches the
	// replacement is refused too, since it would redact forever).
	for i, rep := range r.repl {
		var cnt [nKinds]int
		if out := r.redact(rep, false, &cnt); out != rep {
			return nil, fmt.Errorf("redact config: replacement %q for kind %s is itself redacted (to %q)", c.repl, kinds[i], out)
		}
	}
	return r, nil
}

// Apply redacts rec in place: Prompt, Response, Reasoning, Error and Path
// as plain text; ToolCalls, RequestHeaders, ResponseHeaders, RequestBody and
// ResponseBody as JSON text (matches kept out of escape sequences). Other
// fields (ids, consumer, key prefix, model, numbers) are not touched. Safe
// for concurrent use on different records.
//
// Bodies are set to "" when rec.Consumer is in Config.NoBodies, and also
// when a secret found in the text extracted from a body cannot be found in
// the body itself: a streamed answer carries "alice@exa" and "mple.com" in
// two SSE chunks, which no pattern matches in the raw body, while the
// reassembled Response shows the email. The rule compares counts per kind:
// a response body is dropped when Response, Reasoning and ToolCalls had
// more redactions of a kind than ResponseBody; a request body when Prompt
// had more than RequestBody. Both drops are counted in
// llmtap_redaction_bodies_dropped_total{reason}.
func (r *Redactor) Apply(rec *record.Record) {
	if rec.Consumer != "" && r.noBodies[rec.Consumer] {
		if rec.RequestBody != "" || rec.ResponseBody != "" {
			droppedStoreBodies.Inc()
		}
		rec.RequestBody, rec.ResponseBody = "", ""
	}
	var cnt, prompt, text, reqBody, respBody [nKinds]int
	rec.Prompt = r.redact(rec.Prompt, false, &prompt)
	rec.Response = r.redact(rec.Response, false, &text)
	rec.Reasoning = r.redact(rec.Reasoning, false, &text)
	rec.ToolCalls = r.redact(rec.ToolCalls, true, &text)
	rec.Error = r.redact(rec.Error, false, &cnt)
	rec.Path = r.redact(rec.Path, false, &cnt)
	rec.RequestHeaders = r.redact(rec.RequestHeaders, true, &cnt)
	rec.ResponseHeaders = r.redact(rec.ResponseHeaders, true, &cnt)
	rec.RequestBody = r.redact(rec.RequestBody, true, &reqBody)
	rec.ResponseBody = r.redact(rec.ResponseBody, true, &respBody)
	if rec.RequestBody != "" && fewer(&reqBody, &prompt) {
		rec.RequestBody = ""
		droppedUnlocated.Inc()
	}
	if rec.ResponseBody != "" && fewer(&respBody, &text) {
		rec.ResponseBody = ""
		droppedUnlocated.Inc()
	}
	for i := range cnt {
		cnt[i] += prompt[i] + text[i] + reqBody[i] + respBody[i]
	}
	count(&cnt)
}

// fewer reports whether body has fewer redactions than text of some kind.
func fewer(body, text *[nKinds]int) bool {
	for i := range body {
		if body[i] < text[i] {
			return true
		}
	}
	return false
}

// ApplyReject redacts a reject's payload (the raw entry as it arrived,
// treated as JSON text) and reason in place. Invalid UTF-8 in the payload is
// kept byte for byte outside the replaced regions. Payloads whose bodies are
// base64 (proxy events) cannot be searched; their secrets stay encoded.
func (r *Redactor) ApplyReject(rej *record.Reject) {
	var cnt [nKinds]int
	rej.Reason = r.redact(rej.Reason, false, &cnt)
	if len(rej.Payload) > 0 {
		s := string(rej.Payload)
		if out := r.redact(s, true, &cnt); out != s {
			rej.Payload = []byte(out)
		}
	}
	count(&cnt)
}

// String returns s redacted as plain text (for logs and messages).
func (r *Redactor) String(s string) string {
	var cnt [nKinds]int
	out := r.redact(s, false, &cnt)
	count(&cnt)
	return out
}

// Decoder returns a decoder that runs next and redacts its record. Errors
// from next are returned unchanged (the record is then not used). The
// result is assignable to pipeline.DecodeFunc.
func (r *Redactor) Decoder(next func(event.Event) (record.Record, error)) func(event.Event) (record.Record, error) {
	return func(ev event.Event) (record.Record, error) {
		rec, err := next(ev)
		if err != nil {
			return rec, err
		}
		r.Apply(&rec)
		return rec, nil
	}
}

// detect appends the matches in seg, whose offset in the whole string is
// off, to spans (positions in the whole string).
func (r *Redactor) detect(seg string, off int, spans []span) []span {
	if seg == "" {
		return spans
	}
	from := len(spans)
	// Most fields have no anchor at all: a small buffer of hits, and the
	// full one (which costs zeroing 6 KB per field) only when it overflows.
	var small [16]hit
	var over [maxRules]bool
	var n [maxRules]uint8
	hits, cards, full := r.anchors.scan(seg, small[:0], over[:], n[:], true)
	if full {
		var hbuf [maxHits]hit
		over, n = [maxRules]bool{}, [maxRules]uint8{}
		hits, cards, _ = r.anchors.scan(seg, hbuf[:0], over[:], n[:], false)
	}
	for i, rl := range r.rules {
		spans = rl.find(seg, i, hits, over[i], spans)
	}
	if r.cards && cards {
		spans = findCards(seg, spans)
	}
	if off != 0 {
		for i := from; i < len(spans); i++ {
			spans[i].start += off
			spans[i].end += off
		}
	}
	return spans
}

var isBase64 = func() (t [256]bool) {
	for _, c := range []byte("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=") {
		t[c] = true
	}
	return t
}()

// minBase64 is the shortest base64 payload that nextBase64 skips.
const minBase64 = 256

// nextBase64 returns the next base64 payload of at least minBase64 bytes
// after a ";base64," marker at or after from: the text to scan ends at
// start, and scanning resumes at end. Without one it returns len(s), len(s).
// JSON's \/ escape counts as part of the payload.
func nextBase64(s string, from int) (start, end int) {
	const marker = ";base64,"
	for {
		i := strings.Index(s[from:], marker)
		if i < 0 {
			return len(s), len(s)
		}
		start = from + i + len(marker)
		end = start
		for end < len(s) {
			if isBase64[s[end]] {
				end++
			} else if s[end] == '\\' && end+1 < len(s) && s[end+1] == '/' {
				end += 2
			} else {
				break
			}
		}
		if end-start >= minBase64 {
			return start, end
		}
		from = end
	}
}

func count(cnt *[nKinds]int) {
	for i, n := range cnt {
		if n > 0 {
			kindCounters[i].Add(float64(n))
		}
	}
}

// redact returns s with every match replaced, counting replacements by kind.
// It returns s itself (no allocation) when nothing matched.
func (r *Redactor) redact(s string, jsonText bool, cnt *[nKinds]int) string {
	if s == "" {
		return s
	}
	var buf [8]span
	spans := buf[:0]
	// In JSON text, long base64 payloads (data:…;base64,… images and
	// files) are skipped: they hide nothing a pattern can read, cost most of
	// the scan, and a chance match ("AIza" + 35 characters occurs about
	// once in 50 MB of random base64) would corrupt the payload.
	for a := 0; a < len(s); {
		b, next := len(s), len(s)
		if jsonText {
			b, next = nextBase64(s, a)
		}
		spans = r.detect(s[a:b], a, spans)
		a = next
	}
	if len(spans) == 0 {
		return s
	}
	if jsonText {
		k := 0
		for _, sp := range spans {
			if sp, ok := jsonSafe(s, sp); ok {
				spans[k] = sp
				k++
			}
		}
		spans = spans[:k]
		if len(spans) == 0 {
			return s
		}
	}
	// Merge overlaps; the earliest span names the kind.
	slices.SortFunc(spans, func(a, b span) int {
		if a.start != b.start {
			return a.start - b.start
		}
		return b.end - a.end
	})
	var sb strings.Builder
	sb.Grow(len(s))
	last := 0
	var sc strScan
	for i := 0; i < len(spans); {
		cur := spans[i]
		i++
		for i < len(spans) && spans[i].start < cur.end {
			cur.end = max(cur.end, spans[i].end)
			i++
		}
		sb.WriteString(s[last:cur.start])
		if jsonText && cur.kind == kCard && !sc.inString(s, cur.start) {
			// A bare JSON number: quote the replacement so the JSON stays valid.
			sb.WriteByte('"')
			sb.WriteString(r.repl[cur.kind])
			sb.WriteByte('"')
		} else {
			sb.WriteString(r.repl[cur.kind])
		}
		cnt[cur.kind]++
		last = cur.end
	}
	sb.WriteString(s[last:])
	out := sb.String()
	if !utf8.ValidString(out) && utf8.ValidString(s) { // only a custom pattern cutting a rune
		out = strings.ToValidUTF8(out, "\uFFFD")
	}
	return out
}
