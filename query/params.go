package query

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Limits on Params.
const (
	DefaultLimit         = 100     // conversations and search, when Limit is 0
	DefaultActivityLimit = 1000    // activity, when Limit is 0
	MaxLimit             = 1000000 // largest accepted Limit
	MaxFilterLen         = 512     // longest Consumer, KeyID or Text in bytes
	DefaultWindow        = 24 * time.Hour
)

// Params are the filters of a query or an export.
type Params struct {
	From, To time.Time // window [From, To) on ts; see Normalize for zero values
	Consumer string    // exact consumer name; empty means all
	KeyID    string    // exact key id; empty means all
	Text     string    // search: substring of prompt or response, any case
	Limit    int       // row limit of conversations, search and activity; 0 means the default
}

// Normalize fills in defaults and returns the result: a zero To becomes now,
// a zero From becomes To minus DefaultWindow; both are converted to UTC and
// truncated to whole seconds (the resolution of ClickHouse's ts). It does not
// validate.
func (p Params) Normalize(now time.Time) Params {
	if p.To.IsZero() {
		p.To = now
	}
	if p.From.IsZero() {
		p.From = p.To.Add(-DefaultWindow)
	}
	p.From = p.From.UTC().Truncate(time.Second)
	p.To = p.To.UTC().Truncate(time.Second)
	return p
}

// Validate checks the filters that every query and export shares: a non-empty
// window with From before To, a limit within [0, MaxLimit], and filter
// strings of sane length without NUL bytes or invalid UTF-8. Per-query
// requirements (search needs Text, activity needs Consumer or KeyID) are
// checked by ValidateFor.
func (p Params) Validate() error {
	var errs []error
	switch {
	case p.From.IsZero():
		errs = append(errs, errors.New("--from is required"))
	case p.To.IsZero():
		errs = append(errs, errors.New("--to is required"))
	case !p.From.Before(p.To):
		errs = append(errs, fmt.Errorf("--from (%s) must be before --to (%s)",
			p.From.UTC().Format(time.RFC3339), p.To.UTC().Format(time.RFC3339)))
	}
	if y := p.From.Year(); !p.From.IsZero() && (y < 1970 || y > 9999) {
		errs = append(errs, fmt.Errorf("--from %s is out of range (years 1970 to 9999)", p.From.Format(time.RFC3339)))
	}
	if y := p.To.Year(); !p.To.IsZero() && (y < 1970 || y > 9999) {
		errs = append(errs, fmt.Errorf("--to %s is out of range (years 1970 to 9999)", p.To.Format(time.RFC3339)))
	}
	if p.Limit < 0 || p.Limit > MaxLimit {
		errs = append(errs, fmt.Errorf("--limit %d: want 1 to %d (0 for the default)", p.Limit, MaxLimit))
	}
	for _, f := range []struct{ flag, v string }{{"--consumer", p.Consumer}, {"--key", p.KeyID}, {"--text", p.Text}} {
		if err := checkFilter(f.flag, f.v); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("query: %w", errors.Join(errs...))
	}
	return nil
}

func checkFilter(flag, v string) error {
	switch {
	case len(v) > MaxFilterLen:
		return fmt.Errorf("%s is %d bytes long; the limit is %d", flag, len(v), MaxFilterLen)
	case !utf8.ValidString(v):
		return fmt.Errorf("%s is not valid UTF-8", flag)
	case strings.ContainsRune(v, 0):
		return fmt.Errorf("%s contains a NUL byte", flag)
	}
	return nil
}

// ValidateFor runs Validate and the requirements of the named query: name
// must be one of Names, search needs Text, activity needs Consumer or KeyID,
// and Text is accepted only by search (elsewhere it would be silently
// ignored).
func (p Params) ValidateFor(name string) error {
	if !isName(name) {
		return fmt.Errorf("query: unknown query %q (want one of %s)", name, strings.Join(Names(), ", "))
	}
	if err := p.Validate(); err != nil {
		return err
	}
	switch {
	case name == "search" && strings.TrimSpace(p.Text) == "":
		return errors.New("query: search needs the text to look for (--text)")
	case name != "search" && p.Text != "":
		return fmt.Errorf("query: %s does not filter by text; --text is for search", name)
	case name == "activity" && p.Consumer == "" && p.KeyID == "":
		return errors.New("query: activity needs --consumer or --key (whose activity?)")
	}
	return nil
}

// limitFor returns the effective row limit of the named query.
func (p Params) limitFor(name string) int {
	if p.Limit > 0 {
		return p.Limit
	}
	if name == "activity" {
		return DefaultActivityLimit
	}
	return DefaultLimit
}

// ParseTime parses a time flag: RFC 3339 (2026-05-01T12:00:00Z, with or
// without fractions, any offset), a date (2026-05-01, midnight UTC), "now",
// or now plus or minus a duration made of integer-and-unit parts with the
// units s, m, h, d (24 h) and w (7 d), e.g. "now-24h", "now-7d",
// "now-1h30m". The result is in UTC.
func ParseTime(s string, now time.Time) (time.Time, error) {
	in := strings.TrimSpace(s)
	if in == "" {
		return time.Time{}, errors.New("empty time: want RFC 3339 (2026-05-01T00:00:00Z), a date (2026-05-01), now, or now-24h")
	}
	if rest, ok := cutPrefixFold(in, "now"); ok {
		if rest == "" {
			return now.UTC(), nil
		}
		sign := time.Duration(1)
		switch rest[0] {
		case '-':
			sign = -1
		case '+':
		default:
			return time.Time{}, fmt.Errorf("time %q: after now want + or -, e.g. now-24h", s)
		}
		d, err := parseRelative(rest[1:])
		if err != nil {
			return time.Time{}, fmt.Errorf("time %q: %w", s, err)
		}
		return now.UTC().Add(sign * d), nil
	}
	if t, err := time.Parse(time.RFC3339Nano, in); err == nil {
		return t.UTC(), nil
	}
	if t, err := time.Parse("2006-01-02", in); err == nil {
		return t.UTC(), nil
	}
	return time.Time{}, fmt.Errorf("time %q: want RFC 3339 (2026-05-01T00:00:00Z), a date (2026-05-01), now, or now-24h (units s, m, h, d, w)", s)
}

func cutPrefixFold(s, prefix string) (string, bool) {
	if len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix) {
		return s[len(prefix):], true
	}
	return s, false
}

// maxRelative bounds relative times (about 200 years) so that sums cannot
// overflow time.Duration.
const maxRelative = 200 * 365 * 24 * time.Hour

// parseRelative parses "24h", "7d", "1h30m", "2w".
func parseRelative(s string) (time.Duration, error) {
	if s == "" {
		return 0, errors.New("missing duration after the sign, e.g. now-24h")
	}
	var total time.Duration
	for s != "" {
		i := 0
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
		if i == 0 {
			return 0, fmt.Errorf("want a number at %q (units s, m, h, d, w)", s)
		}
		if i > 9 {
			return 0, fmt.Errorf("number %q is too large", s[:i])
		}
		n, _ := strconv.ParseInt(s[:i], 10, 64)
		if i == len(s) {
			return 0, fmt.Errorf("number %s has no unit (s, m, h, d, w)", s[:i])
		}
		var unit time.Duration
		switch s[i] {
		case 's':
			unit = time.Second
		case 'm':
			unit = time.Minute
		case 'h':
			unit = time.Hour
		case 'd':
			unit = 24 * time.Hour
		case 'w':
			unit = 7 * 24 * time.Hour
		default:
			return 0, fmt.Errorf("unknown unit %q (want s, m, h, d or w)", s[i:i+1])
		}
		if time.Duration(n) > maxRelative/unit {
			return 0, errors.New("duration is too large")
		}
		total += time.Duration(n) * unit
		if total > maxRelative {
			return 0, errors.New("duration is too large")
		}
		s = s[i+1:]
	}
	return total, nil
}
