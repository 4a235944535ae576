package jsonscan

import "testing"

func TestSkipValue(t *testing.T) {
	for _, tc := range []struct {
		in  string
		end int // -1: not ok
	}{
		{`{"a":1} tail`, 7},
		{`{"s":"}\"{","n":[1,{"x":"]"}]}x`, 30},
		{`["a\\"]`, 7},
		{`"x\\\"y"z`, 8},
		{`123,`, 3},
		{`true}`, 4},
		{`{"a":1`, -1},
		{`"open`, -1},
		{``, -1},
		{`:`, -1},
	} {
		end, ok := SkipValue([]byte(tc.in), 0)
		if tc.end < 0 {
			if ok {
				t.Errorf("SkipValue(%q) = %d, true; want not ok", tc.in, end)
			}
			continue
		}
		if !ok || end != tc.end {
			t.Errorf("SkipValue(%q) = %d, %v; want %d (%q)", tc.in, end, ok, tc.end, tc.in[:tc.end])
		}
	}
}

func TestSkipWS(t *testing.T) {
	if got := SkipWS([]byte(" \t\r\n x "), 0); got != 5 {
		t.Errorf("SkipWS = %d, want 5", got)
	}
	if got := SkipWS([]byte("  "), 0); got != 2 {
		t.Errorf("SkipWS of blanks = %d, want 2", got)
	}
}
