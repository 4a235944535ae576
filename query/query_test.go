package query

import (
	"context"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"

	"github.com/llmtap/llmtap/ingest/record"
	"github.com/llmtap/llmtap/schema"
)

var base = time.Date(2026, 3, 10, 10, 0, 0, 0, time.UTC)

// window is the fixture's main window: [10:00, 11:00).
var window = Params{From: base, To: base.Add(time.Hour)}

func at(d time.Duration) time.Time { return base.Add(d) }

// fixture returns requests with hand-checked figures (see TestQueries).
func fixture() []record.Record {
	n := 0
	r := func(consumer, key string, ts time.Time, status int, latency float64, pt, ct, tt *int64, prompt, response string) record.Record {
		n++
		return record.Record{
			EventID: uuidN(n), TS: ts, Source: "proxy", Consumer: consumer, KeyID: key,
			KeyPrefix: "sk-" + key, ClientIP: "10.0.0.1", Method: "POST", Path: "/v1/chat/completions",
			RequestID: fmt.Sprintf("req-%d", n), Endpoint: "chat", Model: "m1", Status: status,
			Stream: n%2 == 0, LatencyMs: latency, TTFTMs: f64(latency / 2),
			PromptTokens: pt, CompletionTokens: ct, TotalTokens: tt, UsageSource: "response",
			Prompt: prompt, Response: response, FinishReason: "stop",
			RequestHeaders: `{"content-type":"application/json"}`, RequestBody: `{"model":"m1"}`,
			IngestedAt: ts.Add(2 * time.Second).Truncate(time.Second),
		}
	}
	recs := []record.Record{
		r("alice", "k_a1", at(0), 200, 100, i64(10), i64(20), i64(30), "Hello world", "Hi there"),                                 // 1
		r("alice", "k_a1", at(30*time.Second), 200, 200, i64(5), i64(5), i64(10), "What is an Invoice?", "An invoice is a bill."), // 2
		r("alice", "k_a1", at(65*time.Second), 500, 300, nil, nil, nil, "fail me", ""),                                            // 3
		r("alice", "k_a2", at(90*time.Second+123456*time.Microsecond), 429, 10, nil, nil, nil, "", ""),                            // 4
		r("alice", "k_a1", at(150*time.Second), 200, 400, i64(1), i64(2), i64(3), "multi\nline\ttab \"quoted\" ,comma", "ok"),     // 5
		r("bob", "k_b", at(5*time.Second), 200, 1000, i64(100), i64(200), i64(300), "translate INVOICE", "Rechnung"),              // 6
		r("bob", "k_b", at(6*time.Second), 499, 1500, i64(7), nil, nil, "long story", "once upon"),                                // 7
		r("bob", "k_b", at(70*time.Second), 200, 250.5, i64(0), i64(0), i64(0), "ÄÖÜ straße", "ok 100%"),                          // 8
		r("", "", at(40*time.Second), 401, 1, nil, nil, nil, "", ""),                                                              // 9
		r("Zed", "k_z", at(20*time.Second), 200, 42.25, i64(3), i64(4), i64(7), "zzz", "ZZZ"),                                     // 10
		r("émile", "k_e", at(time.Hour-time.Microsecond), 200, 5, i64(1), i64(1), i64(2), "bonjour", "salut"),                     // 11
		// outside the main window
		r("alice", "k_a1", at(-time.Microsecond), 200, 7, i64(1), i64(1), i64(2), "before", "x"), // 12
		r("alice", "k_a1", at(time.Hour), 200, 7, i64(1), i64(1), i64(2), "at the end", "x"),     // 13
		r("bob", "k_b", at(24*time.Hour+10*time.Second), 503, 9, nil, nil, nil, "next day", "x"), // 14
	}
	recs[4].Error = ""
	recs[2].Error = "upstream exploded"
	recs[6].Error = "client closed"
	recs[6].FinishReason = ""
	recs[8].KeyPrefix = "sk-bad"
	return recs
}

func row(vals ...any) []any { return vals }

func TestQueries(t *testing.T) {
	dsns := freshStores(t, "llmtap_test_query")
	seedBoth(t, dsns, fixture())
	// A replay that raced the pre-insert check: ClickHouse holds request 1
	// twice until a merge; no query may count it twice.
	seed(t, dsns[ClickHouse], fixture()[:1])
	assertCHDuplicate(t, dsns[ClickHouse], uuidN(1))

	ts := func(d time.Duration) string { return at(d).Format("2006-01-02T15:04:05.000000Z") }
	usageCols := []string{"consumer", "requests", "errors", "prompt_tokens", "completion_tokens", "total_tokens", "requests_without_usage", "p50_latency_ms", "p95_latency_ms"}
	convCols := []string{"time", "consumer", "model", "status", "prompt", "response", "latency_ms", "total_tokens", "event_id"}
	conv := func(i int) []any { // request i (1-based) of the fixture as a conversations row
		r := fixture()[i-1]
		var tt any
		if r.TotalTokens != nil {
			tt = *r.TotalTokens
		}
		return row(r.TS.Format("2006-01-02T15:04:05.000000Z"), r.Consumer, r.Model, int64(r.Status), r.Prompt, r.Response, r.LatencyMs, tt, r.EventID)
	}
	tests := []struct {
		name, query string
		p           Params
		cols        []string
		rows        [][]any
	}{
		{"usage", "usage", window, usageCols, [][]any{
			row("alice", int64(5), int64(2), int64(16), int64(27), int64(43), int64(2), 200.0, 380.0),
			row("bob", int64(3), int64(1), int64(107), int64(200), int64(300), int64(1), 1000.0, 1450.0),
			row("", int64(1), int64(1), int64(0), int64(0), int64(0), int64(1), 1.0, 1.0),
			row("Zed", int64(1), int64(0), int64(3), int64(4), int64(7), int64(0), 42.25, 42.25),
			row("émile", int64(1), int64(0), int64(1), int64(1), int64(2), int64(0), 5.0, 5.0),
		}},
		{"usage one consumer", "usage", Params{From: base, To: base.Add(time.Hour), Consumer: "bob"}, usageCols, [][]any{
			row("bob", int64(3), int64(1), int64(107), int64(200), int64(300), int64(1), 1000.0, 1450.0),
		}},
		{"usage one key", "usage", Params{From: base, To: base.Add(time.Hour), KeyID: "k_a2"}, usageCols, [][]any{
			row("alice", int64(1), int64(1), int64(0), int64(0), int64(0), int64(1), 10.0, 10.0),
		}},
		{"usage injection attempt matches nothing", "usage", Params{From: base, To: base.Add(time.Hour), Consumer: `x' OR '1'='1`}, usageCols, nil},
		{"usage backslash injection attempt", "usage", Params{From: base, To: base.Add(time.Hour), Consumer: `\' OR 1=1 --`}, usageCols, nil},
		{"usage empty window", "usage", Params{From: base.Add(-48 * time.Hour), To: base.Add(-47 * time.Hour)}, usageCols, nil},
		{"rpm", "rpm", window, []string{"minute", "consumer", "requests", "errors", "total_tokens"}, [][]any{
			row("2026-03-10T10:00:00Z", "", int64(1), int64(1), int64(0)),
			row("2026-03-10T10:00:00Z", "Zed", int64(1), int64(0), int64(7)),
			row("2026-03-10T10:00:00Z", "alice", int64(2), int64(0), int64(40)),
			row("2026-03-10T10:00:00Z", "bob", int64(2), int64(1), int64(300)),
			row("2026-03-10T10:01:00Z", "alice", int64(2), int64(2), int64(0)),
			row("2026-03-10T10:01:00Z", "bob", int64(1), int64(0), int64(0)),
			row("2026-03-10T10:02:00Z", "alice", int64(1), int64(0), int64(3)),
			row("2026-03-10T10:59:00Z", "émile", int64(1), int64(0), int64(2)),
		}},
		{"daily", "daily", Params{From: base.Add(-time.Hour), To: base.Add(48 * time.Hour)},
			[]string{"day", "consumer", "requests", "errors", "prompt_tokens", "completion_tokens", "total_tokens"}, [][]any{
				row("2026-03-10", "", int64(1), int64(1), int64(0), int64(0), int64(0)),
				row("2026-03-10", "Zed", int64(1), int64(0), int64(3), int64(4), int64(7)),
				row("2026-03-10", "alice", int64(7), int64(2), int64(18), int64(29), int64(47)),
				row("2026-03-10", "bob", int64(3), int64(1), int64(107), int64(200), int64(300)),
				row("2026-03-10", "émile", int64(1), int64(0), int64(1), int64(1), int64(2)),
				row("2026-03-11", "bob", int64(1), int64(1), int64(0), int64(0), int64(0)),
			}},
		{"errors", "errors", window, []string{"status", "consumer", "requests", "first_seen", "last_seen"}, [][]any{
			row(int64(401), "", int64(1), ts(40*time.Second), ts(40*time.Second)),
			row(int64(429), "alice", int64(1), ts(90*time.Second+123456*time.Microsecond), ts(90*time.Second+123456*time.Microsecond)),
			row(int64(499), "bob", int64(1), ts(6*time.Second), ts(6*time.Second)),
			row(int64(500), "alice", int64(1), ts(65*time.Second), ts(65*time.Second)),
		}},
		{"errors over two days", "errors", Params{From: base.Add(-time.Hour), To: base.Add(48 * time.Hour), Consumer: "bob"}, []string{"status", "consumer", "requests", "first_seen", "last_seen"}, [][]any{
			row(int64(499), "bob", int64(1), ts(6*time.Second), ts(6*time.Second)),
			row(int64(503), "bob", int64(1), ts(24*time.Hour+10*time.Second), ts(24*time.Hour+10*time.Second)),
		}},
		{"conversations", "conversations", window, convCols, [][]any{
			conv(11), conv(5), conv(8), conv(3), conv(2), conv(10), conv(7), conv(6), conv(1),
		}},
		{"conversations limited", "conversations", Params{From: base, To: base.Add(time.Hour), Limit: 3}, convCols, [][]any{
			conv(11), conv(5), conv(8),
		}},
		{"search any case", "search", Params{From: base, To: base.Add(time.Hour), Text: "invoice"}, convCols, [][]any{conv(2), conv(6)}},
		{"search unicode case", "search", Params{From: base, To: base.Add(time.Hour), Text: "äöü"}, convCols, [][]any{conv(8)}},
		{"search percent is literal", "search", Params{From: base, To: base.Add(time.Hour), Text: "%"}, convCols, [][]any{conv(8)}},
		{"search underscore is literal", "search", Params{From: base, To: base.Add(time.Hour), Text: "_"}, convCols, nil},
		{"search quote", "search", Params{From: base, To: base.Add(time.Hour), Text: `"quoted"`}, convCols, [][]any{conv(5)}},
		{"search one consumer", "search", Params{From: base, To: base.Add(time.Hour), Text: "invoice", Consumer: "bob"}, convCols, [][]any{conv(6)}},
		{"activity of a key", "activity", Params{From: base, To: base.Add(time.Hour), KeyID: "k_a2"}, nil, [][]any{
			activityRow(fixture()[3]),
		}},
		{"activity of a consumer", "activity", Params{From: base, To: base.Add(time.Hour), Consumer: "alice"}, nil, [][]any{
			activityRow(fixture()[0]), activityRow(fixture()[1]), activityRow(fixture()[2]), activityRow(fixture()[3]), activityRow(fixture()[4]),
		}},
		{"activity of a consumer and key, limited", "activity", Params{From: base, To: base.Add(time.Hour), Consumer: "alice", KeyID: "k_a1", Limit: 2}, nil, [][]any{
			activityRow(fixture()[0]), activityRow(fixture()[1]),
		}},
	}
	ctx := context.Background()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			results := map[string]*Result{}
			for _, dialect := range []string{Postgres, ClickHouse} {
				res, err := Run(ctx, dsns[dialect], tc.query, tc.p)
				if err != nil {
					t.Fatalf("%s: %v", dialect, err)
				}
				results[dialect] = res
				if tc.cols != nil && !reflect.DeepEqual(res.Columns, tc.cols) {
					t.Errorf("%s: columns\n got %q\nwant %q", dialect, res.Columns, tc.cols)
				}
				if !equalRows(res.Rows, tc.rows) {
					t.Errorf("%s: rows\n got %s\nwant %s", dialect, fmtRows(res.Rows), fmtRows(tc.rows))
				}
			}
			if !reflect.DeepEqual(results[Postgres], results[ClickHouse]) {
				t.Errorf("PostgreSQL and ClickHouse differ:\n pg %v %s\n ch %v %s", results[Postgres].Columns, fmtRows(results[Postgres].Rows),
					results[ClickHouse].Columns, fmtRows(results[ClickHouse].Rows))
			}
		})
	}
}

func TestRunTooManyRows(t *testing.T) {
	dsns := freshStores(t, "llmtap_test_query")
	seedBoth(t, dsns, fixture())
	old := MaxResultRows
	MaxResultRows = 3
	defer func() { MaxResultRows = old }()
	for _, dialect := range []string{Postgres, ClickHouse} {
		// rpm has 8 rows in the window; usage has 5; errors has 4.
		for name, fails := range map[string]bool{"rpm": true, "usage": true, "errors": true} {
			_, err := Run(context.Background(), dsns[dialect], name, window)
			if fails && (err == nil || !strings.Contains(err.Error(), "more than 3 result rows")) {
				t.Errorf("%s %s: error %v, want the row cap", dialect, name, err)
			}
		}
		if res, err := Run(context.Background(), dsns[dialect], "daily", Params{From: base.Add(24 * time.Hour), To: base.Add(48 * time.Hour)}); err != nil || len(res.Rows) != 1 {
			t.Errorf("%s daily under the cap: %v, %v", dialect, res, err)
		}
	}
}

var activityCols = []string{"time", "event_id", "source", "consumer", "key_id", "key_prefix", "client_ip", "method", "path", "model", "status", "stream", "latency_ms", "ttft_ms", "prompt_tokens", "completion_tokens", "total_tokens", "finish_reason", "error", "prompt", "response"}

func activityRow(r record.Record) []any {
	np := func(p *int64) any {
		if p == nil {
			return nil
		}
		return *p
	}
	nf := func(p *float64) any {
		if p == nil {
			return nil
		}
		return *p
	}
	return row(r.TS.Format("2006-01-02T15:04:05.000000Z"), r.EventID, r.Source, r.Consumer, r.KeyID, r.KeyPrefix,
		r.ClientIP, r.Method, r.Path, r.Model, int64(r.Status), r.Stream, r.LatencyMs, nf(r.TTFTMs),
		np(r.PromptTokens), np(r.CompletionTokens), np(r.TotalTokens), r.FinishReason, r.Error, r.Prompt, r.Response)
}

func equalRows(got, want [][]any) bool {
	if len(got) == 0 && len(want) == 0 {
		return true
	}
	return reflect.DeepEqual(got, want)
}

func fmtRows(rows [][]any) string {
	var b strings.Builder
	for _, r := range rows {
		b.WriteString("\n   ")
		for i, v := range r {
			if i > 0 {
				b.WriteString(" | ")
			}
			fmt.Fprintf(&b, "%#v", v)
		}
	}
	if len(rows) == 0 {
		b.WriteString("(none)")
	}
	return b.String()
}

// assertCHDuplicate fails unless ClickHouse physically holds event id twice
// (so that the test of FINAL means something).
func assertCHDuplicate(t *testing.T, dsn, id string) {
	t.Helper()
	opts, err := schema.CHOptions(dsn)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := clickhouse.Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var n uint64
	if err := conn.QueryRow(context.Background(), "SELECT count() FROM llm_requests WHERE event_id = toUUID('"+id+"')").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 2 {
		t.Fatalf("ClickHouse holds %s %d times, want 2 physical copies for the dedupe test", id, n)
	}
}

// TestQueriesAgree runs every query with several filters on a larger random
// data set (second-granular times, so ties are frequent) on both stores and
// requires identical results.
func TestQueriesAgree(t *testing.T) {
	dsns := freshStores(t, "llmtap_test_query_agree")
	recs := randomRecords(rand.New(rand.NewPCG(1, 2)), 3000, base, 72*time.Hour)
	seedBoth(t, dsns, recs)
	seed(t, dsns[ClickHouse], recs[:300]) // replays
	params := []Params{
		{From: base, To: base.Add(72 * time.Hour)},
		{From: base.Add(time.Hour), To: base.Add(30 * time.Hour), Consumer: "team-a"},
		{From: base, To: base.Add(72 * time.Hour), KeyID: "k3"},
		{From: base.Add(90 * time.Minute), To: base.Add(91 * time.Minute)},
		{From: base, To: base.Add(72 * time.Hour), Consumer: ""},
	}
	ctx := context.Background()
	for _, name := range Names() {
		for i, p := range params {
			switch name {
			case "search":
				p.Text = "InVoIcE"
				p.Limit = 500
			case "activity":
				if p.Consumer == "" && p.KeyID == "" {
					p.Consumer = "émile"
				}
				p.Limit = 5000
			case "conversations":
				p.Limit = 5000
			}
			t.Run(fmt.Sprintf("%s/%d", name, i), func(t *testing.T) {
				pg, err := Run(ctx, dsns[Postgres], name, p)
				if err != nil {
					t.Fatal(err)
				}
				ch, err := Run(ctx, dsns[ClickHouse], name, p)
				if err != nil {
					t.Fatal(err)
				}
				if len(pg.Rows) == 0 && i != 3 {
					t.Fatalf("no rows: the data set does not exercise %s", name)
				}
				if !reflect.DeepEqual(pg.Columns, ch.Columns) {
					t.Fatalf("columns differ: pg %q ch %q", pg.Columns, ch.Columns)
				}
				if len(pg.Rows) != len(ch.Rows) {
					t.Fatalf("pg %d rows, ch %d rows", len(pg.Rows), len(ch.Rows))
				}
				for r := range pg.Rows {
					if !reflect.DeepEqual(pg.Rows[r], ch.Rows[r]) {
						t.Fatalf("row %d differs:\n pg %s\n ch %s", r, fmtRows(pg.Rows[r:r+1]), fmtRows(ch.Rows[r:r+1]))
					}
				}
			})
		}
	}
}

var words = []string{"invoice", "INVOICE", "Invoice", "hello", "straße", "ÄÖÜ", "résumé", "100%", "a_b", "'quote'", `back\slash`, "日本語", "line\nbreak", "tab\there"}

// randomRecords makes n requests spread over span from start, with times on
// whole seconds (many ties) or with microseconds.
func randomRecords(rng *rand.Rand, n int, start time.Time, span time.Duration) []record.Record {
	consumers := []string{"team-a", "team-b", "Zed", "émile", "", "ops"}
	statuses := []int{200, 200, 200, 200, 201, 400, 401, 429, 499, 500, 503}
	out := make([]record.Record, n)
	for i := range out {
		ts := start.Add(time.Duration(rng.Int64N(int64(span/time.Second))) * time.Second)
		if rng.IntN(2) == 0 {
			ts = ts.Add(time.Duration(rng.IntN(1000000)) * time.Microsecond)
		}
		var pt, ct, tt *int64
		if rng.IntN(5) > 0 {
			pt, ct = i64(rng.Int64N(2000)), i64(rng.Int64N(1000))
			tt = i64(*pt + *ct)
		}
		var ttft *float64
		if rng.IntN(2) == 0 {
			ttft = f64(float64(rng.IntN(100000)) / 1000)
		}
		prompt := words[rng.IntN(len(words))] + " " + words[rng.IntN(len(words))]
		response := words[rng.IntN(len(words))]
		if rng.IntN(10) == 0 {
			prompt, response = "", ""
		}
		out[i] = record.Record{
			EventID: fmt.Sprintf("%08x-%04x-7%03x-8%03x-%012x", rng.Uint32(), rng.IntN(1<<16), rng.IntN(1<<12), rng.IntN(1<<12), rng.Int64N(1<<48)),
			TS:      ts, Source: "proxy", Consumer: consumers[rng.IntN(len(consumers))],
			KeyID: fmt.Sprintf("k%d", rng.IntN(5)), KeyPrefix: "sk-xx", ClientIP: "127.0.0.1",
			Method: "POST", Path: "/v1/chat/completions", Endpoint: "chat", Model: []string{"m1", "m2"}[rng.IntN(2)],
			Status: statuses[rng.IntN(len(statuses))], Stream: rng.IntN(2) == 0,
			LatencyMs: float64(rng.IntN(5000000)) / 1000, TTFTMs: ttft,
			PromptTokens: pt, CompletionTokens: ct, TotalTokens: tt, UsageSource: "response",
			Prompt: prompt, Response: response, IngestedAt: ts.Truncate(time.Second),
		}
	}
	return out
}
