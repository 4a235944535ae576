package query

import (
	"strings"
	"testing"
	"time"
)

var now = time.Date(2026, 5, 1, 12, 30, 45, 123456789, time.UTC)

func TestParseTime(t *testing.T) {
	tests := []struct {
		in   string
		want time.Time
		err  string // substring of the error; empty: no error
	}{
		{in: "now", want: now},
		{in: "NOW", want: now},
		{in: " now ", want: now},
		{in: "now-24h", want: now.Add(-24 * time.Hour)},
		{in: "now-7d", want: now.Add(-7 * 24 * time.Hour)},
		{in: "now-30m", want: now.Add(-30 * time.Minute)},
		{in: "now-90s", want: now.Add(-90 * time.Second)},
		{in: "now-2w", want: now.Add(-14 * 24 * time.Hour)},
		{in: "now-1h30m", want: now.Add(-90 * time.Minute)},
		{in: "now+1h", want: now.Add(time.Hour)},
		{in: "now-0s", want: now},
		{in: "2026-05-01T00:00:00Z", want: time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)},
		{in: "2026-05-01T02:00:00+02:00", want: time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)},
		{in: "2026-05-01T00:00:00.250Z", want: time.Date(2026, 5, 1, 0, 0, 0, 250e6, time.UTC)},
		{in: "2026-05-01", want: time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)},
		{in: "", err: "empty time"},
		{in: "yesterday", err: "want RFC 3339"},
		{in: "now-", err: "missing duration"},
		{in: "now-24", err: "no unit"},
		{in: "now-24x", err: "unknown unit"},
		{in: "now-h", err: "want a number"},
		{in: "now*2h", err: "want + or -"},
		{in: "now-1.5h", err: "unknown unit"},
		{in: "now-9999999999h", err: "too large"},
		{in: "now-999999999w", err: "too large"},
		{in: "2026-05-01 00:00:00", err: "want RFC 3339"},
		{in: "2026-13-01", err: "want RFC 3339"},
		{in: "1714521600", err: "want RFC 3339"},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseTime(tc.in, now)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("ParseTime(%q) = %v, %v; want error containing %q", tc.in, got, err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseTime(%q): %v", tc.in, err)
			}
			if !got.Equal(tc.want) || got.Location() != time.UTC {
				t.Fatalf("ParseTime(%q) = %v, want %v (UTC)", tc.in, got, tc.want)
			}
		})
	}
}

func FuzzParseTime(f *testing.F) {
	for _, s := range []string{"now", "now-24h", "now+1w2d3h4m5s", "2026-05-01T00:00:00Z", "2026-05-01", "now-", "now-99999999999999999999d"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := ParseTime(s, now)
		if err != nil {
			if got != (time.Time{}) {
				t.Fatalf("error with a non-zero time %v", got)
			}
			return
		}
		if got.Location() != time.UTC {
			t.Fatalf("%q: not UTC: %v", s, got)
		}
		// Relative times stay within maxRelative of now.
		if strings.HasPrefix(strings.ToLower(strings.TrimSpace(s)), "now") {
			if d := got.Sub(now); d > maxRelative || d < -maxRelative {
				t.Fatalf("%q: %v is too far from now", s, d)
			}
		}
	})
}

func TestNormalize(t *testing.T) {
	p := Params{}.Normalize(now)
	if !p.To.Equal(now.Truncate(time.Second)) || !p.From.Equal(now.Add(-DefaultWindow).Truncate(time.Second)) {
		t.Fatalf("defaults: %v .. %v", p.From, p.To)
	}
	loc := time.FixedZone("x", 3600)
	p = Params{From: time.Date(2026, 1, 1, 1, 0, 0, 999, loc), To: time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC)}.Normalize(now)
	if p.From != time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC) || p.From.Location() != time.UTC {
		t.Fatalf("From = %v, want 2026-01-01T00:00:00Z", p.From)
	}
	p = Params{To: time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC)}.Normalize(now)
	if p.From != time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC) {
		t.Fatalf("From defaults to To-24h: %v", p.From)
	}
}

func TestValidate(t *testing.T) {
	from := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	to := from.Add(time.Hour)
	ok := Params{From: from, To: to}
	tests := []struct {
		name, query string
		p           Params
		err         string
	}{
		{"ok", "usage", ok, ""},
		{"unknown query", "nope", ok, `unknown query "nope"`},
		{"missing from", "usage", Params{To: to}, "--from is required"},
		{"missing to", "usage", Params{From: from}, "--to is required"},
		{"from after to", "usage", Params{From: to, To: from}, "must be before --to"},
		{"empty window", "usage", Params{From: from, To: from}, "must be before --to"},
		{"before 1970", "usage", Params{From: time.Date(1960, 1, 1, 0, 0, 0, 0, time.UTC), To: to}, "out of range"},
		{"negative limit", "conversations", Params{From: from, To: to, Limit: -1}, "--limit -1"},
		{"huge limit", "conversations", Params{From: from, To: to, Limit: MaxLimit + 1}, "--limit"},
		{"max limit", "conversations", Params{From: from, To: to, Limit: MaxLimit}, ""},
		{"long consumer", "usage", Params{From: from, To: to, Consumer: strings.Repeat("x", MaxFilterLen+1)}, "--consumer is 513 bytes"},
		{"NUL in key", "usage", Params{From: from, To: to, KeyID: "a\x00b"}, "--key contains a NUL"},
		{"bad UTF-8", "usage", Params{From: from, To: to, Consumer: "\xff"}, "not valid UTF-8"},
		{"search without text", "search", ok, "search needs the text"},
		{"search blank text", "search", Params{From: from, To: to, Text: "  "}, "search needs the text"},
		{"search", "search", Params{From: from, To: to, Text: "x"}, ""},
		{"text elsewhere", "usage", Params{From: from, To: to, Text: "x"}, "usage does not filter by text"},
		{"activity without who", "activity", ok, "activity needs --consumer or --key"},
		{"activity by key", "activity", Params{From: from, To: to, KeyID: "k"}, ""},
		{"several problems at once", "usage", Params{From: to, To: from, Limit: -5}, "--limit -5"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.p.ValidateFor(tc.query)
			if tc.err == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("error %v, want it to contain %q", err, tc.err)
			}
		})
	}
}

func TestLimitFor(t *testing.T) {
	if got := (Params{}).limitFor("conversations"); got != DefaultLimit {
		t.Errorf("conversations default %d", got)
	}
	if got := (Params{}).limitFor("activity"); got != DefaultActivityLimit {
		t.Errorf("activity default %d", got)
	}
	if got := (Params{Limit: 7}).limitFor("activity"); got != 7 {
		t.Errorf("explicit limit %d", got)
	}
}
