package macro

import (
	"strings"
	"testing"
	"time"
)

// FuzzExpand checks that neither expander panics, and that SQL without any
// '$' or '[[' passes through unchanged (nothing to expand).
func FuzzExpand(f *testing.F) {
	for _, s := range []string{
		`SELECT $__timeGroupAlias(ts, $__interval), count(*) FROM t WHERE $__timeFilter(ts) AND c IN ($consumer)`,
		`SELECT toDateTime(intDiv(toUInt32(ts), $__interval_s) * $__interval_s) AS time FROM t WHERE $__timeFilter(ts)`,
		`WHERE $__conditionalAll(c IN (${consumer:singlequote}), $consumer)`,
		`$__conditionalAll((, $x)`, `${consumer:bogus}`, `[[consumer:csv]]`, `$__timeGroup(ts, '1d', NULL)`,
		`SELECT 1`, `$__dt(a, b)`, `$__interval_s ( (`, `)))$__fromTime(((`,
	} {
		f.Add(s)
	}
	q := Query{
		From: time.Unix(1700000000, 0), To: time.Unix(1700086400, 0), Interval: time.Minute,
		Vars: []Variable{{Name: "consumer", Multi: true, IncludeAll: true, Values: []string{"a", "b'c"}}},
	}
	f.Fuzz(func(t *testing.T, sql string) {
		pg, pgErr := Postgres(sql, q)
		ch, chErr := ClickHouse(sql, q)
		if !strings.Contains(sql, "$") && !strings.Contains(sql, "[[") {
			if pgErr != nil || pg != sql {
				t.Errorf("Postgres changed plain SQL %q: %q, %v", sql, pg, pgErr)
			}
			if chErr != nil || ch != sql {
				t.Errorf("ClickHouse changed plain SQL %q: %q, %v", sql, ch, chErr)
			}
		}
	})
}
