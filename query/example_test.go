package query_test

import (
	"fmt"
	"strings"
	"time"

	"github.com/llmtap/llmtap/query"
)

func ExampleParseTime() {
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	for _, s := range []string{"now-24h", "now-1h30m", "2026-04-01", "2026-04-01T08:00:00+02:00"} {
		t, _ := query.ParseTime(s, now)
		fmt.Println(t.Format(time.RFC3339))
	}
	// Output:
	// 2026-04-30T12:00:00Z
	// 2026-05-01T10:30:00Z
	// 2026-04-01T00:00:00Z
	// 2026-04-01T06:00:00Z
}

func ExampleRender() {
	p := query.Params{
		From:     time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC),
		To:       time.Date(2026, 5, 2, 0, 0, 0, 0, time.UTC),
		Consumer: "o'brien",
	}
	sql, _ := query.Render(query.ClickHouse, "usage", p)
	for _, line := range strings.Split(sql, "\n") {
		if strings.Contains(line, "WHERE") || strings.Contains(line, "consumer =") {
			fmt.Println(strings.TrimSpace(line))
		}
	}
	// Output:
	// WHERE ts >= toDateTime('2026-05-01 00:00:00', 'UTC')
	// AND ('o\'brien' = '' OR consumer = 'o\'brien')
}
