package dashboards

import (
	"context"
	"fmt"
	"math"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/llmtap/llmtap/dashboards/macro"
)

// t0 is the minute the seed data centres on.
var t0 = time.Date(2026, 1, 15, 10, 0, 0, 0, time.UTC)

func i64(v int64) *int64     { return &v }
func f64(v float64) *float64 { return &v }

// cNames are 11 one-request consumers that push carol (1 request, sorted
// after them) out of every top 10.
var cNames = func() []string {
	var out []string
	for i := 1; i <= 11; i++ {
		out = append(out, fmt.Sprintf("c%02d", i))
	}
	return out
}()

// longPrompt is cut by Recent conversations (multi-byte, so the cut must
// count characters).
var longPrompt = strings.Repeat("é", TextLimit+500)

// seedRows is the known data every assertion below is derived from.
//
//	T0 (10:00)   alice: 30 requests 2 s apart, latency 100..3000 ms;
//	             i%6==5 → 500 (5 rows), i==3,9 → 429 (2 rows), else 200 with
//	             10 prompt + 20 completion tokens; i<10 streamed, ttft 10..100 ms.
//	             carol: 1 request, 200, 5+5 tokens, 200 ms.
//	T0+1m        bob: 12 requests, 50 ms, 100+50 tokens with total NULL;
//	             the last is a 503 without usage.
//	T0+2m        3 unauthenticated 401s (consumer ""), 1 ms.
//	T0+3m        c01..c11: 1 request each, 1 token, 10 ms.
//	T0-1d        alice: 1 request, 200, 30 tokens (outside every range but
//	             Daily usage's two days).
func seedRows() []row {
	var rs []row
	for i := 0; i < 30; i++ {
		r := row{ts: t0.Add(time.Duration(2*i) * time.Second), consumer: "alice", model: "m1",
			prompt: fmt.Sprintf("question %d", i), response: fmt.Sprintf("answer %d", i),
			status: 200, latency: float64(100 * (i + 1))}
		switch {
		case i%6 == 5:
			r.status = 500
		case i == 3 || i == 9:
			r.status = 429
		default:
			r.promptTok, r.completionTok, r.totalTok = i64(10), i64(20), i64(30)
		}
		if i < 10 {
			r.stream, r.ttft = true, f64(float64(10*(i+1)))
		}
		if i == 29 {
			r.prompt = longPrompt
		}
		rs = append(rs, r)
	}
	rs = append(rs, row{ts: t0.Add(30 * time.Second), consumer: "carol", model: "m2", prompt: "hi", response: "hello",
		status: 200, latency: 200, promptTok: i64(5), completionTok: i64(5), totalTok: i64(10)})
	for i := 0; i < 12; i++ {
		r := row{ts: t0.Add(time.Minute + time.Duration(5*i)*time.Second), consumer: "bob", model: "m2",
			prompt: "p", response: "r", status: 200, latency: 50, promptTok: i64(100), completionTok: i64(50)}
		if i == 11 {
			r.status, r.promptTok, r.completionTok = 503, nil, nil
		}
		rs = append(rs, r)
	}
	for i := 0; i < 3; i++ {
		rs = append(rs, row{ts: t0.Add(2*time.Minute + time.Duration(i)*time.Second), status: 401, latency: 1})
	}
	for i, c := range cNames {
		rs = append(rs, row{ts: t0.Add(3*time.Minute + time.Duration(i)*time.Second), consumer: c, model: "m1",
			prompt: "x", response: "y", status: 200, latency: 10, promptTok: i64(1), completionTok: i64(0), totalTok: i64(1)})
	}
	rs = append(rs, row{ts: t0.Add(-24 * time.Hour), consumer: "alice", model: "m1", prompt: "old", response: "old",
		status: 200, latency: 100, promptTok: i64(10), completionTok: i64(20), totalTok: i64(30)})
	return rs
}

// selection is a state of the consumer variable.
type selection []string // nil = All

func (s selection) String() string {
	if s == nil {
		return "All"
	}
	return strings.Join(s, "+")
}

func (s selection) variable() macro.Variable {
	v := macro.Variable{Name: "consumer", Multi: true, IncludeAll: true, AllValue: AllValue,
		Options: append([]string{"alice", "bob", "carol"}, cNames...)}
	if s == nil {
		v.All = true
	} else {
		v.Values = s
	}
	return v
}

var (
	minuteRange = [2]time.Time{t0.Add(-30 * time.Minute), t0.Add(30 * time.Minute)}
	dayRange    = [2]time.Time{t0.Add(-23 * time.Hour), t0.Add(time.Hour)}
	twoDays     = [2]time.Time{time.Date(2026, 1, 14, 0, 0, 0, 0, time.UTC), time.Date(2026, 1, 15, 23, 59, 59, 0, time.UTC)}
)

func mq(r [2]time.Time, interval time.Duration, sel selection) macro.Query {
	return macro.Query{From: r[0], To: r[1], Interval: interval, Vars: []macro.Variable{sel.variable()}}
}

// run expands and executes one target of a panel.
func (db *database) run(t *testing.T, title, refID string, q macro.Query) result {
	t.Helper()
	sql := db.target(t, title, refID)
	expanded, err := db.expand(sql, q)
	if err != nil {
		t.Fatalf("%s %s/%s: expand: %v", db.kind, title, refID, err)
	}
	res, err := db.query(context.Background(), expanded)
	if err != nil {
		t.Fatalf("%s %s/%s: %v\n%s", db.kind, title, refID, err, expanded)
	}
	return res
}

func (db *database) target(t *testing.T, title, refID string) string {
	t.Helper()
	panels, err := Panels(db.kind)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range panels {
		if p.Title != title {
			continue
		}
		for _, tg := range p.Targets {
			if tg.RefID == refID {
				return tg.SQL
			}
		}
	}
	t.Fatalf("%s: no panel %q target %s", db.kind, title, refID)
	return ""
}

func TestPanelsOnRealDatabases(t *testing.T) {
	if testing.Short() {
		t.Skip("needs PostgreSQL and ClickHouse")
	}
	for _, open := range []func(context.Context, testing.TB) *database{openPostgres, openClickHouse} {
		ctx := context.Background()
		db := open(ctx, t)
		t.Cleanup(db.close)
		t.Run(db.kind, func(t *testing.T) {
			t.Parallel()
			if err := db.seed(ctx, seedRows(), true); err != nil {
				t.Fatalf("seed: %v", err)
			}
			t.Run("every panel runs", db.testEveryPanelRuns)
			t.Run("consumer variable", db.testConsumerVariable)
			t.Run("requests per minute", db.testRequestsPerMinute)
			t.Run("tokens per minute", db.testTokensPerMinute)
			t.Run("error codes", db.testErrorCodes)
			t.Run("latency", db.testLatency)
			t.Run("time to first token", db.testTTFT)
			t.Run("daily usage", db.testDailyUsage)
			t.Run("usage table", db.testUsageTable)
			t.Run("recent conversations", db.testRecent)
			t.Run("rollups equal the raw rows", db.testRollupsEqualRaw)
			// Adds rows: keep it last.
			t.Run("recent conversations over the limit", db.testRecentOverLimit)
		})
	}
}

// selections are the consumer variable's values every panel is run with;
// o'neil checks the quoting (no such consumer is seeded: no rows).
var selections = []selection{nil, {"alice"}, {"alice", "bob"}, {"nobody"}, {"o'neil"}}

func (db *database) testEveryPanelRuns(t *testing.T) {
	panels, err := Panels(db.kind)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range panels {
		for _, tg := range p.Targets {
			for _, sel := range selections {
				for _, iv := range []time.Duration{time.Minute, 5 * time.Minute, time.Hour} {
					res := db.run(t, p.Title, tg.RefID, mq(dayRange, iv, sel))
					if (sel.String() == "nobody" || sel.String() == "o'neil") && len(res.rows) != 0 {
						t.Errorf("%s/%s with consumer nobody: %d rows, want 0", p.Title, tg.RefID, len(res.rows))
					}
					if tg.Format.String() == "time_series" && res.col("time") != 0 {
						t.Errorf("%s/%s: columns %v, want time first", p.Title, tg.RefID, res.cols)
					}
				}
			}
		}
	}
}

func (db *database) testConsumerVariable(t *testing.T) {
	sql, err := ConsumerVariableSQL(db.kind)
	if err != nil {
		t.Fatal(err)
	}
	expanded, err := db.expand(sql, mq(minuteRange, time.Minute, nil))
	if err != nil {
		t.Fatal(err)
	}
	res, err := db.query(context.Background(), expanded)
	if err != nil {
		t.Fatalf("%v\n%s", err, expanded)
	}
	var got []string
	for _, r := range res.rows {
		got = append(got, r[0].(string))
	}
	want := append(append([]string{"alice", "bob"}, cNames...), "carol")
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("options = %v, want %v", got, want)
	}
}

// wantPoints asserts a series map equals want exactly (names, times, values).
func wantPoints(t *testing.T, what string, got map[string]map[time.Time]float64, want map[string]map[time.Time]float64) {
	t.Helper()
	if g, w := sortedKeys(got), sortedKeys(want); strings.Join(g, ",") != strings.Join(w, ",") {
		t.Errorf("%s: series %v, want %v", what, g, w)
	}
	for name, pts := range want {
		for ts, v := range pts {
			if g, ok := got[name][ts]; !ok || !approx(g, v) {
				t.Errorf("%s: %s at %s = %v (present %v), want %v", what, name, ts.Format("15:04"), g, ok, v)
			}
		}
		if len(got[name]) != len(pts) {
			t.Errorf("%s: %s has %d points, want %d: %v", what, name, len(got[name]), len(pts), got[name])
		}
	}
}

func at(d time.Duration) time.Time { return t0.Add(d) }

func (db *database) testRequestsPerMinute(t *testing.T) {
	all := map[string]map[time.Time]float64{
		"alice": {at(0): 30}, "bob": {at(time.Minute): 12}, "(none)": {at(2 * time.Minute): 3},
	}
	for _, c := range cNames[:7] {
		all[c] = map[time.Time]float64{at(3 * time.Minute): 1}
	}
	for _, tc := range []struct {
		sel      selection
		interval time.Duration
		want     map[string]map[time.Time]float64
	}{
		{nil, time.Minute, all},
		{selection{"alice"}, time.Minute, map[string]map[time.Time]float64{"alice": {at(0): 30}}},
		{selection{"alice", "carol"}, time.Minute, map[string]map[time.Time]float64{"alice": {at(0): 30}, "carol": {at(0): 1}}},
		// A 2-minute bucket holds alice's 30 requests: 15 per minute.
		{selection{"alice", "bob"}, 2 * time.Minute, map[string]map[time.Time]float64{"alice": {at(0): 15}, "bob": {at(0): 6}}},
	} {
		res := db.run(t, TitleRequestsPerMinute, "A", mq(minuteRange, tc.interval, tc.sel))
		wantPoints(t, fmt.Sprintf("RPM %s/%v", tc.sel, tc.interval), seriesPoints(t, res, "rpm"), tc.want)
	}
}

func (db *database) testTokensPerMinute(t *testing.T) {
	all := map[string]map[time.Time]float64{
		"alice": {at(0): 690}, "bob": {at(time.Minute): 1650}, "carol": {at(0): 10},
	}
	for _, c := range cNames[:7] {
		all[c] = map[time.Time]float64{at(3 * time.Minute): 1}
	}
	res := db.run(t, TitleTokensPerMinute, "A", mq(minuteRange, time.Minute, nil))
	wantPoints(t, "TPM All", seriesPoints(t, res, "tpm"), all)
	res = db.run(t, TitleTokensPerMinute, "A", mq(minuteRange, time.Minute, selection{"bob"}))
	wantPoints(t, "TPM bob", seriesPoints(t, res, "tpm"), map[string]map[time.Time]float64{"bob": {at(time.Minute): 1650}})
}

func (db *database) testErrorCodes(t *testing.T) {
	type pts = map[string]map[time.Time]float64
	for _, tc := range []struct {
		sel    selection
		a4, b5 pts
	}{
		{nil, pts{"429": {at(0): 2}, "401": {at(2 * time.Minute): 3}}, pts{"500": {at(0): 5}, "503": {at(time.Minute): 1}}},
		{selection{"alice"}, pts{"429": {at(0): 2}}, pts{"500": {at(0): 5}}},
		{selection{"bob"}, pts{}, pts{"503": {at(time.Minute): 1}}},
		{selection{"alice", "bob"}, pts{"429": {at(0): 2}}, pts{"500": {at(0): 5}, "503": {at(time.Minute): 1}}},
	} {
		q := mq(minuteRange, time.Minute, tc.sel)
		wantPoints(t, "4xx "+tc.sel.String(), seriesPoints(t, db.run(t, TitleErrorCodes, "A", q), "responses"), tc.a4)
		wantPoints(t, "5xx "+tc.sel.String(), seriesPoints(t, db.run(t, TitleErrorCodes, "B", q), "responses"), tc.b5)
	}
}

// percentileCont is PostgreSQL's percentile_cont (linear interpolation
// between closest ranks), the reference for both databases.
func percentileCont(vals []float64, p float64) float64 {
	s := append([]float64(nil), vals...)
	sort.Float64s(s)
	pos := p * float64(len(s)-1)
	lo, hi := int(math.Floor(pos)), int(math.Ceil(pos))
	return s[lo] + (pos-float64(lo))*(s[hi]-s[lo])
}

// percentiles computes per-minute p50/p95 of a field of the seed rows in
// minuteRange for the selection.
func percentiles(sel selection, field func(row) *float64) (p50, p95 map[time.Time]float64) {
	by := map[time.Time][]float64{}
	for _, r := range seedRows() {
		if r.ts.Before(minuteRange[0]) || r.ts.After(minuteRange[1]) {
			continue
		}
		if sel != nil && !contains(sel, r.consumer) {
			continue
		}
		if v := field(r); v != nil {
			m := r.ts.Truncate(time.Minute)
			by[m] = append(by[m], *v)
		}
	}
	p50, p95 = map[time.Time]float64{}, map[time.Time]float64{}
	for m, vs := range by {
		p50[m], p95[m] = percentileCont(vs, 0.5), percentileCont(vs, 0.95)
	}
	return p50, p95
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// pctTolerance is how far a panel's percentile may be from the exact
// percentile_cont of the seed rows: the panels estimate from per-minute
// histograms (PostgreSQL: 9 %-wide log buckets, interpolated and clamped to
// the min/max) or t-digests (ClickHouse); see ROLLUPS.md for the bounds.
const pctTolerance = 0.05

// wantApprox is wantPoints with a relative tolerance.
func wantApprox(t *testing.T, what string, got map[string]map[time.Time]float64, want map[string]map[time.Time]float64, tol float64) {
	t.Helper()
	if g, w := sortedKeys(got), sortedKeys(want); strings.Join(g, ",") != strings.Join(w, ",") {
		t.Errorf("%s: series %v, want %v", what, g, w)
	}
	for name, pts := range want {
		for ts, v := range pts {
			if g, ok := got[name][ts]; !ok || math.Abs(g-v) > tol*math.Abs(v) {
				t.Errorf("%s: %s at %s = %v (present %v), want %v ± %.0f %%", what, name, ts.Format("15:04"), g, ok, v, 100*tol)
			}
		}
		if len(got[name]) != len(pts) {
			t.Errorf("%s: %s has %d points, want %d: %v", what, name, len(got[name]), len(pts), got[name])
		}
	}
}

func (db *database) testLatency(t *testing.T) {
	latency := func(r row) *float64 { return f64(r.latency) }
	// Hand-checked: alice's 100..3000 ms → p50 1550, p95 2855.
	res := db.run(t, TitleLatency, "A", mq(minuteRange, time.Minute, selection{"alice"}))
	wantApprox(t, "p50 alice", seriesPoints(t, res, "p50"), map[string]map[time.Time]float64{"": {at(0): 1550}}, pctTolerance)
	wantApprox(t, "p95 alice", seriesPoints(t, res, "p95"), map[string]map[time.Time]float64{"": {at(0): 2855}}, pctTolerance)
	// bob's 12 requests all took 50 ms: a single value comes out exactly.
	res = db.run(t, TitleLatency, "A", mq(minuteRange, time.Minute, selection{"bob"}))
	wantPoints(t, "p50 bob", seriesPoints(t, res, "p50"), map[string]map[time.Time]float64{"": {at(time.Minute): 50}})
	wantPoints(t, "p95 bob", seriesPoints(t, res, "p95"), map[string]map[time.Time]float64{"": {at(time.Minute): 50}})
	for _, sel := range []selection{nil, {"alice", "bob"}} {
		p50, p95 := percentiles(sel, latency)
		res := db.run(t, TitleLatency, "A", mq(minuteRange, time.Minute, sel))
		wantApprox(t, "p50 "+sel.String(), seriesPoints(t, res, "p50"), map[string]map[time.Time]float64{"": p50}, pctTolerance)
		wantApprox(t, "p95 "+sel.String(), seriesPoints(t, res, "p95"), map[string]map[time.Time]float64{"": p95}, pctTolerance)
	}
}

func (db *database) testTTFT(t *testing.T) {
	// alice's streams: ttft 10..100 ms → p50 55, p95 95.5; nobody else streams.
	want50 := map[string]map[time.Time]float64{"": {at(0): 55}}
	want95 := map[string]map[time.Time]float64{"": {at(0): 95.5}}
	for _, sel := range []selection{nil, {"alice"}} {
		res := db.run(t, TitleTTFT, "A", mq(minuteRange, time.Minute, sel))
		wantApprox(t, "ttft p50 "+sel.String(), seriesPoints(t, res, "p50"), want50, pctTolerance)
		wantApprox(t, "ttft p95 "+sel.String(), seriesPoints(t, res, "p95"), want95, pctTolerance)
	}
	if res := db.run(t, TitleTTFT, "A", mq(minuteRange, time.Minute, selection{"bob"})); len(res.rows) != 0 {
		t.Errorf("ttft for bob (no streams): %d rows, want 0", len(res.rows))
	}
}

func (db *database) testDailyUsage(t *testing.T) {
	jan14, jan15 := twoDays[0], twoDays[0].Add(24*time.Hour)
	type pts = map[string]map[time.Time]float64
	reqs := pts{"alice": {jan14: 1, jan15: 30}, "bob": {jan15: 12}, "(none)": {jan15: 3}}
	toks := pts{"alice": {jan14: 30, jan15: 690}, "bob": {jan15: 1650}, "(none)": {jan15: 0}}
	for _, c := range cNames[:7] {
		reqs[c] = map[time.Time]float64{jan15: 1}
		toks[c] = map[time.Time]float64{jan15: 1}
	}
	// The panel's min interval is 1d, but the bucket is fixed at one day.
	for _, iv := range []time.Duration{24 * time.Hour, time.Hour} {
		res := db.run(t, TitleDailyUsage, "A", mq(twoDays, iv, nil))
		wantPoints(t, "daily requests", seriesPoints(t, res, "requests"), reqs)
		wantPoints(t, "daily tokens", seriesPoints(t, res, "tokens"), toks)
	}
	res := db.run(t, TitleDailyUsage, "A", mq(twoDays, 24*time.Hour, selection{"bob", "carol"}))
	wantPoints(t, "daily requests bob+carol", seriesPoints(t, res, "requests"), pts{"bob": {jan15: 12}, "carol": {jan15: 1}})
	wantPoints(t, "daily tokens bob+carol", seriesPoints(t, res, "tokens"), pts{"bob": {jan15: 1650}, "carol": {jan15: 10}})
}

func (db *database) testUsageTable(t *testing.T) {
	cols := []string{"Consumer", "Requests", "Prompt tokens", "Completion tokens", "Errors", "p50 latency", "p95 latency"}
	want := map[string][]float64{
		"alice":  {30, 230, 460, 7, 1550, 2855},
		"bob":    {12, 1100, 550, 1, 50, 50},
		"(none)": {3, 0, 0, 3, 1, 1},
		"carol":  {1, 5, 5, 0, 200, 200},
	}
	for _, c := range cNames {
		want[c] = []float64{1, 1, 0, 0, 10, 10}
	}
	check := func(sel selection, names []string) {
		t.Helper()
		res := db.run(t, TitleUsageTable, "A", mq(dayRange, time.Minute, sel))
		if strings.Join(res.cols, "|") != strings.Join(cols, "|") {
			t.Fatalf("columns %v, want %v", res.cols, cols)
		}
		var got []string
		for _, r := range res.rows {
			name := r[0].(string)
			got = append(got, name)
			w, ok := want[name]
			if !ok {
				t.Errorf("unexpected row %v", r)
				continue
			}
			for i, v := range w {
				g, _ := r[i+1].(float64)
				ok := r[i+1] != nil && approx(g, v)
				if strings.HasPrefix(cols[i+1], "p") { // p50/p95 latency: estimates
					ok = r[i+1] != nil && math.Abs(g-v) <= pctTolerance*v
				}
				if !ok {
					t.Errorf("%s %s: %s = %v, want %v", sel, name, cols[i+1], r[i+1], v)
				}
			}
		}
		if len(got) < len(names) || strings.Join(got[:len(names)], ",") != strings.Join(names, ",") {
			t.Errorf("%s: rows %v, want them to start with %v", sel, got, names)
		}
		if sel != nil && len(got) != len(names) {
			t.Errorf("%s: %d rows, want %d", sel, len(got), len(names))
		}
	}
	check(nil, []string{"alice", "bob", "(none)"})
	check(selection{"alice", "bob"}, []string{"alice", "bob"})
	check(selection{"carol"}, []string{"carol"})
	res := db.run(t, TitleUsageTable, "A", mq(dayRange, time.Minute, nil))
	if len(res.rows) != 4+len(cNames) {
		t.Errorf("All: %d rows, want %d", len(res.rows), 4+len(cNames))
	}
}

func (db *database) testRecent(t *testing.T) {
	cols := []string{"Time", "Consumer", "Model", "Prompt", "Response", "Status"}
	res := db.run(t, TitleRecent, "A", mq(minuteRange, time.Minute, nil))
	if strings.Join(res.cols, "|") != strings.Join(cols, "|") {
		t.Fatalf("columns %v, want %v", res.cols, cols)
	}
	if len(res.rows) != 30+1+12+3+11 {
		t.Errorf("All: %d rows, want 57", len(res.rows))
	}
	for i := 1; i < len(res.rows); i++ {
		if asTime(t, res.rows[i][0]).After(asTime(t, res.rows[i-1][0])) {
			t.Fatalf("rows not newest first at %d", i)
		}
	}
	if got := res.rows[0][1]; got != "c11" {
		t.Errorf("newest row consumer = %v, want c11", got)
	}

	res = db.run(t, TitleRecent, "A", mq(minuteRange, time.Minute, selection{"alice"}))
	if len(res.rows) != 30 {
		t.Fatalf("alice: %d rows, want 30", len(res.rows))
	}
	first := res.rows[0]
	if ts := asTime(t, first[0]); !ts.Equal(t0.Add(58 * time.Second)) {
		t.Errorf("newest alice row at %v, want %v", ts, t0.Add(58*time.Second))
	}
	wantPrompt := strings.Repeat("é", TextLimit)
	if first[1] != "alice" || first[2] != "m1" || first[3] != wantPrompt || first[4] != "answer 29" || first[5] != 500.0 {
		t.Errorf("newest alice row = %v, %v, %q, %q, %v", first[1], first[2], truncate(fmt.Sprint(first[3]), 20), first[4], first[5])
	}
	last := res.rows[29]
	if last[3] != "question 0" || last[5] != 200.0 {
		t.Errorf("oldest alice row = %v", last)
	}

	// More rows than the limit: only the newest RecentLimit come back.
	res = db.run(t, TitleRecent, "A", mq(dayRange, time.Minute, nil))
	if len(res.rows) > RecentLimit {
		t.Errorf("%d rows, want at most %d", len(res.rows), RecentLimit)
	}
}

// testRecentOverLimit adds 150 rows for zed (T0+20m, one per second, the
// last 10 sharing one timestamp) and checks that exactly the newest 100 come
// back, newest first.
func (db *database) testRecentOverLimit(t *testing.T) {
	var rs []row
	for i := 0; i < 150; i++ {
		ts := t0.Add(20*time.Minute + time.Duration(min(i, 140))*time.Second)
		rs = append(rs, row{ts: ts, consumer: "zed", model: "m3", prompt: fmt.Sprintf("z%d", i), response: "r", status: 200, latency: 5})
	}
	if err := db.seed(context.Background(), rs, false); err != nil {
		t.Fatal(err)
	}
	for _, sel := range []selection{nil, {"zed"}, {"zed", "alice"}} {
		res := db.run(t, TitleRecent, "A", mq(minuteRange, time.Minute, sel))
		if len(res.rows) != RecentLimit {
			t.Fatalf("%s: %d rows, want %d", sel, len(res.rows), RecentLimit)
		}
		seen := map[string]bool{}
		for i, r := range res.rows {
			ts := asTime(t, r[0])
			if r[1] != "zed" || seen[r[3].(string)] {
				t.Fatalf("%s: row %d = %v", sel, i, r)
			}
			seen[r[3].(string)] = true
			// The 100 newest: z50…z149 (z140…z149 share the newest second).
			if ts.Before(t0.Add(20*time.Minute + 50*time.Second)) {
				t.Errorf("%s: row %d at %v is older than the 100 newest", sel, i, ts)
			}
			if i > 0 && ts.After(asTime(t, res.rows[i-1][0])) {
				t.Errorf("%s: not newest first at %d", sel, i)
			}
		}
	}
}
