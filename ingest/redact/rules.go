package redact

import (
	"regexp"
	"strings"
)

// span is one region of a string to replace.
type span struct {
	start, end int
	kind       int // index into kinds
}

// Kind indexes.
const (
	kAPIKey = iota
	kBearer
	kEmail
	kCard
	kCustom
	nKinds
)

var kinds = [nKinds]string{KindAPIKey, KindBearerToken, KindEmail, KindCardNumber, KindCustom}

// rule is one regexp-based detector.
//
// A rule with anchors runs only where one of its literal anchors occurs (the
// anchorIndex finds them for all rules in one pass): its regexp is tried
// anchored at the anchor (before == 0), at the start of the run of left
// bytes before it (left), or on a window of before/after bytes around it;
// the window grows while the match touches its edge, so long tokens are
// matched whole, and a match must contain the anchor. This is the
// prefilter: a body without "@" never runs the email regexp. A rule without
// anchors (custom patterns) runs on the whole string.
type rule struct {
	kind          int
	re            *regexp.Regexp
	atStart       *regexp.Regexp    // re anchored with ^ (rules with before == 0 or left)
	left          func(c byte) bool // when set, a match starts where a run of such bytes before the anchor starts
	group         int               // submatch to replace; 0 = the whole match
	anchors       []string          // literal anchors (case variants listed explicitly)
	before, after int               // initial window around an anchor
	wordStart     bool              // the match must not follow [A-Za-z0-9_] (a letter after a backslash is allowed: \n in JSON), unless it looks random
	wordEnd       bool              // the match must not be followed by [A-Za-z0-9_]
	skip          func(v string) bool
	// possible, when set, is a cheap necessary condition for a match that
	// contains the anchor at s[at:] and starts in s[lo:at+1]; where it is
	// false, around does not run the regexp. Rules that search a window
	// around a common anchor ("key" in English, "=" in URLs and code) spent
	// most of their time in the regexp failing (BenchmarkApplyProxy/chat2KB).
	possible func(s string, lo, at int) bool
}

func builtinRules(sets map[string]bool) []*rule {
	var rs []*rule
	if sets[BuiltinAPIKeys] {
		rs = append(rs,
			// OpenAI-style keys, Anthropic (sk-ant-…), llmtap's own (sk- + 48 URL-safe).
			&rule{kind: kAPIKey, re: regexp.MustCompile(`sk-[A-Za-z0-9_-]{20,}`),
				anchors: []string{"sk-"}, after: 128, wordStart: true},
			// AWS access key ids.
			&rule{kind: kAPIKey, re: regexp.MustCompile(`(?:AKIA|ASIA)[0-9A-Z]{16}`),
				anchors: []string{"AKIA", "ASIA"}, after: 24, wordStart: true, wordEnd: true},
			// Google API keys.
			&rule{kind: kAPIKey, re: regexp.MustCompile(`AIza[0-9A-Za-z_-]{35}`),
				anchors: []string{"AIza"}, after: 48, wordStart: true},
			// GitHub tokens.
			&rule{kind: kAPIKey, re: regexp.MustCompile(`gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,}`),
				anchors: []string{"ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"}, after: 128, wordStart: true},
			// Slack tokens.
			&rule{kind: kAPIKey, re: regexp.MustCompile(`xox[abprs]-[A-Za-z0-9-]{10,}`),
				anchors: []string{"xoxa-", "xoxb-", "xoxp-", "xoxr-", "xoxs-"}, after: 128, wordStart: true},
			// api_key: "…", apiKey=…, x-api-key: … (JSON, YAML, headers, env,
			// also inside JSON-escaped JSON): the value only.
			&rule{kind: kAPIKey, re: regexp.MustCompile(`(?i)(?:x-api-key|api[_-]?key)[ \t"':=\\]+([A-Za-z0-9._~+/=-]{8,})`),
				group: 1, anchors: []string{"key", "Key", "KEY"}, before: 8, after: 128,
				skip: alreadyRedacted, possible: apiBefore},
			// Keys in query strings (URLs in errors, logged requests).
			&rule{kind: kAPIKey, re: regexp.MustCompile(`(?i)[?&](?:key|token|access_token|auth)=([^&\s"'\\#<>]{8,})`),
				group: 1, anchors: []string{"="}, before: 16, after: 128, skip: alreadyRedacted, possible: queryBefore},
		)
	}
	if sets[BuiltinBearerTokens] {
		rs = append(rs,
			&rule{kind: kBearer, re: regexp.MustCompile(`(?i)bearer[ \t]+([A-Za-z0-9._~+/=-]{16,})`),
				group: 1, anchors: []string{"bearer", "Bearer", "BEARER"}, after: 256, wordStart: true,
				skip: alreadyRedacted},
			// JWTs wherever they appear.
			&rule{kind: kBearer, re: regexp.MustCompile(`eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}`),
				anchors: []string{"eyJ"}, after: 512, wordStart: true},
		)
	}
	if sets[BuiltinEmails] {
		rs = append(rs,
			&rule{kind: kEmail, re: regexp.MustCompile(`[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}`),
				anchors: []string{"@"}, left: isLocalPart, after: 128})
	}
	return finish(rs)
}

func finish(rs []*rule) []*rule {
	for _, r := range rs {
		if (r.before == 0 || r.left != nil) && len(r.anchors) > 0 {
			r.atStart = regexp.MustCompile(`^(?:` + r.re.String() + `)`)
		}
	}
	return rs
}

// apiBefore: every match of the api_key rule has "api" (any case) at its
// start or two bytes in ("x-api-key"), so at or before at+2.
func apiBefore(s string, lo, at int) bool {
	for p := lo; p <= at+2 && p+3 <= len(s); p++ {
		if s[p]|0x20 == 'a' && s[p+1]|0x20 == 'p' && s[p+2]|0x20 == 'i' {
			return true
		}
	}
	return false
}

// queryBefore: every match of the query-string rule starts with '?' or '&'.
func queryBefore(s string, lo, at int) bool {
	return strings.IndexAny(s[lo:at+1], "?&") >= 0
}

func alreadyRedacted(v string) bool {
	return strings.EqualFold(v, "REDACTED") || strings.HasPrefix(v, "REDACTED")
}

func customRules(res []*regexp.Regexp) []*rule {
	rs := make([]*rule, 0, len(res))
	for _, re := range res {
		r := &rule{kind: kCustom, re: re}
		if i := re.SubexpIndex("secret"); i > 0 {
			r.group = i
		}
		rs = append(rs, r)
	}
	return rs
}

// maxWindows bounds the anchor occurrences a rule examines one by one in a
// string; past it the rule's regexp runs once over the whole string.
// Text dense with anchors ("@@@@…") thus costs one linear pass, not one
// regexp run per anchor.
const maxWindows = 64

// hit is one occurrence of a rule's anchor.
type hit struct {
	at, alen int
	rule     int
}

// anchorIndex finds the anchors of all rules in one pass over a string, and
// tells whether the string can hold a card number at all.
//
// This pass is most of the cost of redacting ordinary text (every byte of
// every body goes through it), so it is a table lookup per byte: most bytes
// are neither a digit nor the first byte of an anchor. The first bytes of
// the builtin anchors include common letters (e, s, k, b, g), so a second
// table of the anchors' second bytes rejects "e" not followed by "y" before
// any literal is compared. Digits are consumed a run at a time until one
// holds 13 digits: findCards runs only then (BenchmarkApplyProxy); from
// there on digits are skipped like other bytes (text full of numbers,
// BenchmarkApply/embeddings1MB).
type anchorIndex struct {
	first   [256]uint8 // 1 + index into group of the anchors starting with this byte; 0 none; isDigitRun for digits
	anchors [256]uint8 // first without the digits
	group   []anchorGroup
}

// isDigitRun marks digits in anchorIndex.first (when card numbers are on).
const isDigitRun = 255

type anchorGroup struct {
	anchors []anchorRef
	second  [256]bool // second bytes of the group's anchors (all at least 2 bytes long)
	single  bool      // a one-byte anchor: no second byte to check
}

type anchorRef struct {
	lit  string
	rule int
}

func newAnchorIndex(rules []*rule, cards bool) *anchorIndex {
	x := &anchorIndex{}
	for ri, r := range rules {
		for _, a := range r.anchors {
			c := a[0]
			if x.first[c] == 0 {
				x.group = append(x.group, anchorGroup{})
				x.first[c] = uint8(len(x.group))
			}
			g := &x.group[x.first[c]-1]
			g.anchors = append(g.anchors, anchorRef{a, ri})
			if len(a) == 1 {
				g.single = true
			} else {
				g.second[a[1]] = true
			}
		}
	}
	if len(x.group) >= isDigitRun {
		panic("redact: too many anchor first bytes")
	}
	x.anchors = x.first
	if cards {
		for c := '0'; c <= '9'; c++ {
			if x.first[c] != 0 {
				panic("redact: an anchor starts with a digit")
			}
			x.first[c] = isDigitRun
		}
	}
	return x
}

// scan appends the anchor hits in s to hits, at most maxWindows per rule
// and cap(hits) in all; a rule with more hits is flagged in over (its
// regexp then runs over the whole string instead). n counts the hits per
// rule. With stop set, scan gives up (full) instead when hits is full and
// another hit comes: the caller then scans again with a larger buffer.
// cards reports a run of at least 13 digits, alone or in groups separated
// by single spaces or dashes (what findCards looks for); it is false when
// the index was built without cards.
func (x *anchorIndex) scan(s string, hits []hit, over []bool, n []uint8, stop bool) (_ []hit, cards, full bool) {
	i := 0
	for ; i < len(s); i++ {
		g := x.first[s[i]]
		if g == 0 {
			continue
		}
		if g == isDigitRun {
			// Skip the run (no anchor starts with a digit, a space or a dash).
			digits, j := 0, i
			for {
				for j < len(s) && isDigit(s[j]) {
					j++
					digits++
				}
				if j+1 < len(s) && (s[j] == ' ' || s[j] == '-') && isDigit(s[j+1]) {
					j++
					continue
				}
				break
			}
			i = j - 1
			if digits >= 13 {
				cards = true
				break
			}
			continue
		}
		grp := &x.group[g-1]
		if !grp.single && (i+1 == len(s) || !grp.second[s[i+1]]) {
			continue
		}
		for _, a := range grp.anchors { // x.at, inline on this path ("@@@@…")
			if over[a.rule] || len(s)-i < len(a.lit) || s[i:i+len(a.lit)] != a.lit {
				continue
			}
			if stop && len(hits) == cap(hits) {
				return hits, cards, true
			}
			n[a.rule]++
			if n[a.rule] > maxWindows || len(hits) == cap(hits) {
				over[a.rule] = true
				continue
			}
			hits = append(hits, hit{i, len(a.lit), a.rule})
		}
	}
	// findCards will run: digits are nothing more now.
	for i++; ; i++ {
		if i = skipZero(&x.anchors, s, i); i >= len(s) {
			return hits, cards, false
		}
		grp := &x.group[x.anchors[s[i]]-1]
		if !grp.single && (i+1 == len(s) || !grp.second[s[i+1]]) {
			continue
		}
		if hits, full = x.at(s, i, grp, hits, over, n, stop); full {
			return hits, cards, true
		}
	}
}

// skipZero returns the index of the first byte of s at or after i that tab
// does not map to 0, or len(s). Not inlined: in its own function the loop
// is a few instructions a byte, in scan the compiler spills to the stack in
// it (a third slower).
//
//go:noinline
func skipZero(tab *[256]uint8, s string, i int) int {
	for uint(i) < uint(len(s)) && tab[s[i]] == 0 {
		i++
	}
	return i
}

// at appends the hits of the anchors of grp at s[i:].
func (x *anchorIndex) at(s string, i int, grp *anchorGroup, hits []hit, over []bool, n []uint8, stop bool) (_ []hit, full bool) {
	for _, a := range grp.anchors {
		if over[a.rule] || len(s)-i < len(a.lit) || s[i:i+len(a.lit)] != a.lit {
			continue
		}
		if stop && len(hits) == cap(hits) {
			return hits, true
		}
		n[a.rule]++
		if n[a.rule] > maxWindows || len(hits) == cap(hits) {
			over[a.rule] = true
			continue
		}
		hits = append(hits, hit{i, len(a.lit), a.rule})
	}
	return hits, false
}

// find appends the rule's matches in s to out, given the anchor hits of all
// rules (in order of position) and whether this rule had too many.
func (r *rule) find(s string, ri int, hits []hit, over bool, out []span) []span {
	if len(r.anchors) == 0 || over {
		return r.scan(s, 0, out)
	}
	cursor, pos := 0, 0
	for _, h := range hits {
		if h.rule != ri || h.at < pos {
			continue
		}
		at, alen := h.at, h.alen
		m0, m1, g0, g1, ok := r.around(s, at, alen, cursor)
		if !ok {
			pos = at + 1
			continue
		}
		if sp, keep := r.accept(s, m0, m1, g0, g1); keep {
			out = append(out, sp)
			cursor = m1
		}
		// Rejected or not, the token ends at m1: anchors inside it are
		// part of it (and skipping them keeps "ask-ask-ask-…" linear).
		pos = max(m1, at+1)
	}
	return out
}

// scan runs the rule's regexp over s[from:] in one pass.
func (r *rule) scan(s string, from int, out []span) []span {
	for _, m := range r.re.FindAllStringSubmatchIndex(s[from:], -1) {
		if m[2*r.group] < 0 {
			continue
		}
		if sp, keep := r.accept(s, from+m[0], from+m[1], from+m[2*r.group], from+m[2*r.group+1]); keep {
			out = append(out, sp)
		}
	}
	return out
}

// accept applies the rule's checks to a match m0:m1 whose group g0:g1 is to
// be replaced.
func (r *rule) accept(s string, m0, m1, g0, g1 int) (span, bool) {
	if g0 >= g1 ||
		(r.wordStart && !wordStartOK(s, m0) && !random(s[m0:m1])) ||
		(r.wordEnd && m1 < len(s) && isWord(s[m1])) ||
		(r.skip != nil && r.skip(s[g0:g1])) {
		return span{}, false
	}
	if r.group > 0 { // a value does not end with a sentence's full stop
		for g1 > g0+1 && s[g1-1] == '.' {
			g1--
		}
	}
	return span{g0, g1, r.kind}, true
}

// around runs the rule's regexp on a window around the anchor at s[at:at+alen]
// (never before cursor) and returns the match containing the anchor (m0:m1)
// and its replaced group (g0:g1). The window grows while the match touches
// one of its edges, so long tokens are matched whole. Rules whose matches
// start at the anchor (before == 0) try one match anchored there.
func (r *rule) around(s string, at, alen, cursor int) (m0, m1, g0, g1 int, ok bool) {
	before, after := r.before, r.after
	for {
		lo := max(cursor, at-before)
		switch {
		case r.left != nil:
			lo = at
			for lo > cursor && r.left(s[lo-1]) {
				lo--
			}
		case r.before == 0:
			lo = at
		}
		hi := min(len(s), at+alen+after)
		if r.possible != nil && !r.possible(s, lo, at) {
			return 0, 0, 0, 0, false
		}
		var m []int
		if r.atStart != nil {
			m = r.atStart.FindStringSubmatchIndex(s[lo:hi])
		} else {
			for _, c := range r.re.FindAllStringSubmatchIndex(s[lo:hi], -1) {
				if lo+c[0] <= at && lo+c[1] >= at+alen {
					m = c
					break
				}
			}
		}
		if m == nil || lo+m[1] < at+alen {
			return 0, 0, 0, 0, false
		}
		m0, m1 = lo+m[0], lo+m[1]
		g0, g1 = m[2*r.group], m[2*r.group+1]
		if g0 < 0 {
			return 0, 0, 0, 0, false
		}
		g0, g1 = lo+g0, lo+g1
		growL := r.before > 0 && m0 == lo && lo > cursor
		growR := m1 == hi && hi < len(s)
		if !growL && !growR {
			return m0, m1, g0, g1, true
		}
		if growL {
			before = 2*before + 64
		}
		if growR {
			after = 2*after + 64
		}
	}
}

func isWord(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_'
}

// random reports whether a token mixes upper case, lower case and digits,
// as generated keys do and hyphenated words ("multi-task-learning-2024")
// do not: such a token is a secret even glued to a preceding word.
func random(tok string) bool {
	var up, low, dig bool
	for i := 0; i < len(tok); i++ {
		c := tok[i]
		up = up || c >= 'A' && c <= 'Z'
		low = low || c >= 'a' && c <= 'z'
		dig = dig || isDigit(c)
	}
	return up && low && dig
}

func isLocalPart(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		c == '.' || c == '_' || c == '%' || c == '+' || c == '-'
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// wordStartOK reports whether a token may start at s[i]: it does not follow a
// word character, except a letter right after a backslash (an escape such as
// \n in JSON text).
func wordStartOK(s string, i int) bool {
	if i == 0 || !isWord(s[i-1]) {
		return true
	}
	return i >= 2 && s[i-2] == '\\'
}

// findCards appends Luhn-valid card numbers in s to out: 13–19 digits, first
// digit 2–6 (the issuer ranges of payment cards: Visa, Mastercard, Amex,
// Discover, JCB, UnionPay, Maestro), either one run of digits or groups of at
// least 3 digits separated by single spaces or dashes. A run that follows a
// '.' (a decimal fraction) or a word character (except a letter after a
// backslash), or is followed by a word character or ".<digit>", is not a
// card. Longer runs of grouped digits are searched for a card inside.
func findCards(s string, out []span) []span {
	var gbuf [24][2]int
	n := len(s)
	i := 0
	for i < n {
		// Skip to the next digit.
		for i < n && !isDigit(s[i]) {
			i++
		}
		if i >= n {
			break
		}
		// Collect the groups of this run.
		groups := gbuf[:0]
		total := 0
		j := i
		for {
			k := j
			for k < n && isDigit(s[k]) {
				k++
			}
			if len(groups) < cap(gbuf) {
				groups = append(groups, [2]int{j, k})
			}
			total += k - j
			if k+1 < n && (s[k] == ' ' || s[k] == '-') && isDigit(s[k+1]) && len(groups) < cap(gbuf) {
				j = k + 1
				continue
			}
			j = k
			break
		}
		runEnd := j
		i = runEnd
		if total < 13 {
			continue
		}
		for a := 0; a < len(groups); {
			found := false
			// Longest candidate first.
			digits, b := 0, a
			for b < len(groups) && digits+groups[b][1]-groups[b][0] <= 19 {
				digits += groups[b][1] - groups[b][0]
				b++
			}
			for b--; b >= a; b-- {
				if digits >= 13 && cardOK(s, groups, a, b, runEnd) {
					out = append(out, span{groups[a][0], groups[b][1], kCard})
					a = b + 1
					found = true
					break
				}
				digits -= groups[b][1] - groups[b][0]
			}
			if !found {
				a++
			}
		}
	}
	return out
}

func cardOK(s string, groups [][2]int, a, b, runEnd int) bool {
	start, end := groups[a][0], groups[b][1]
	if c := s[start]; c < '2' || c > '6' {
		return false
	}
	if a < b {
		for g := a; g <= b; g++ {
			if groups[g][1]-groups[g][0] < 3 {
				return false
			}
		}
	}
	if a == 0 && start > 0 {
		p := s[start-1]
		if p == '.' || (isWord(p) && !(start >= 2 && s[start-2] == '\\')) {
			return false
		}
	}
	if end == runEnd && end < len(s) {
		c := s[end]
		if isWord(c) || (c == '.' && end+1 < len(s) && isDigit(s[end+1])) {
			return false
		}
	}
	return luhn(s[start:end])
}

// luhn reports whether the digits of s (other bytes ignored) pass the Luhn
// check.
func luhn(s string) bool {
	sum, double := 0, false
	for i := len(s) - 1; i >= 0; i-- {
		c := s[i]
		if !isDigit(c) {
			continue
		}
		d := int(c - '0')
		if double {
			d *= 2
			if d > 9 {
				d -= 9
			}
		}
		sum += d
		double = !double
	}
	return sum%10 == 0
}

// escapeAt reports the JSON escape sequence (\x or \uXXXX) that strictly
// contains position x (esc < x < escEnd), if any.
func escapeAt(s string, x int) (esc, escEnd int, ok bool) {
	for p := x - 1; p >= 0 && p >= x-5; p-- {
		if s[p] != '\\' {
			continue
		}
		// Is s[p] an escape's backslash? It is when the run of backslashes
		// ending at p has odd length.
		q := p
		for q > 0 && s[q-1] == '\\' {
			q--
		}
		if (p-q)%2 != 0 {
			continue
		}
		l := 2
		if p+1 < len(s) && s[p+1] == 'u' {
			l = 6
		}
		if x < p+l {
			return p, min(p+l, len(s)), true
		}
	}
	return 0, 0, false
}

// jsonSafe moves a span's edges out of JSON escape sequences: a start inside
// an escape moves past it (the escape's letter is not part of the secret: the
// n of \n before an email), an end inside one moves past it (the escape is
// replaced whole). It returns ok=false when nothing is left.
func jsonSafe(s string, sp span) (span, bool) {
	if _, e, ok := escapeAt(s, sp.start); ok {
		sp.start = e
	}
	if _, e, ok := escapeAt(s, sp.end); ok {
		sp.end = e
	}
	return sp, sp.start < sp.end
}

// strScan tells, moving forward only, whether a position of JSON text is
// inside a string.
type strScan struct {
	pos int
	in  bool
}

// inString reports whether s[to] is inside a JSON string. to must not
// decrease between calls.
func (sc *strScan) inString(s string, to int) bool {
	for sc.pos < to {
		if sc.in {
			j := strings.IndexAny(s[sc.pos:to], `"\`)
			if j < 0 {
				sc.pos = to
				break
			}
			p := sc.pos + j
			if s[p] == '\\' {
				sc.pos = p + 2
				continue
			}
			sc.in, sc.pos = false, p+1
		} else {
			j := strings.IndexByte(s[sc.pos:to], '"')
			if j < 0 {
				sc.pos = to
				break
			}
			sc.in, sc.pos = true, sc.pos+j+1
		}
	}
	return sc.in
}
