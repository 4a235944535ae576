package query

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/jackc/pgx/v5"

	"github.com/llmtap/llmtap/ingest/record"
	"github.com/llmtap/llmtap/schema"
)

// expectedExport returns what an export of recs must hold: one map per row
// (JSON types), sorted by ts then event_id.
func expectedExport(recs []record.Record) []map[string]any {
	recs = append([]record.Record(nil), recs...)
	sort.Slice(recs, func(i, j int) bool {
		if !recs[i].TS.Equal(recs[j].TS) {
			return recs[i].TS.Before(recs[j].TS)
		}
		return recs[i].EventID < recs[j].EventID
	})
	nf := func(p *float64) any {
		if p == nil {
			return nil
		}
		return *p
	}
	ni := func(p *int64) any {
		if p == nil {
			return nil
		}
		return float64(*p)
	}
	out := make([]map[string]any, len(recs))
	for i, r := range recs {
		out[i] = map[string]any{
			"event_id": r.EventID, "ts": r.TS.UTC().Format(ExportTimeFormat), "source": r.Source,
			"consumer": r.Consumer, "key_id": r.KeyID, "key_prefix": r.KeyPrefix, "client_ip": r.ClientIP,
			"method": r.Method, "path": r.Path, "request_id": r.RequestID, "endpoint": r.Endpoint,
			"model": r.Model, "status": float64(r.Status), "stream": r.Stream, "latency_ms": r.LatencyMs,
			"ttfb_ms": nf(r.TTFBMs), "ttft_ms": nf(r.TTFTMs), "prompt_tokens": ni(r.PromptTokens),
			"completion_tokens": ni(r.CompletionTokens), "total_tokens": ni(r.TotalTokens),
			"usage_source": r.UsageSource, "prompt": r.Prompt, "response": r.Response,
			"reasoning": r.Reasoning, "tool_calls": r.ToolCalls, "finish_reason": r.FinishReason,
			"error": r.Error, "request_headers": r.RequestHeaders, "response_headers": r.ResponseHeaders,
			"request_body": r.RequestBody, "response_body": r.ResponseBody, "truncated": r.Truncated,
			"ingested_at": r.IngestedAt.UTC().Format(ExportTimeFormat),
			"chain_batch": float64(0), "text_hash": "", "body_hash": "",
		}
	}
	return out
}

func readJSONL(t *testing.T, path string) []map[string]any {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []map[string]any
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<24)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("line %d: %v: %s", len(out)+1, err, sc.Text())
		}
		out = append(out, m)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// csvAsJSON turns CSV cells back into the JSON types of expectedExport.
func csvAsJSON(t *testing.T, path string) []map[string]any {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	recs, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(recs[0], ExportColumns) {
		t.Fatalf("header %q", recs[0])
	}
	var out []map[string]any
	for _, rec := range recs[1:] {
		m := map[string]any{}
		for i, col := range ExportColumns {
			v := rec[i]
			switch i {
			case colStatus, colLatency, colTTFB, colTTFT, colPrompt, colCompletion, colTotal, colChainBatch:
				if v == "" && i != colStatus && i != colLatency && i != colChainBatch {
					m[col] = nil
					continue
				}
				f, err := strconv.ParseFloat(v, 64)
				if err != nil {
					t.Fatalf("%s: %q: %v", col, v, err)
				}
				m[col] = f
			case colStream, colTruncated:
				m[col] = v == "true"
			default:
				m[col] = v
			}
		}
		out = append(out, m)
	}
	return out
}

func exportWindow() Params {
	return Params{From: base.Add(-time.Hour), To: base.Add(48 * time.Hour)}
}

func TestExportRoundTrip(t *testing.T) {
	dsns := freshStores(t, "llmtap_test_query_export")
	recs := fixture()
	recs[0].TTFBMs = f64(12.5)
	recs[1].Reasoning, recs[1].ToolCalls, recs[1].Truncated = "thinking…", `[{"id":"c1"}]`, true
	recs[2].ResponseBody = "{\"error\":\"x\"}\n\x01"
	recs[5].RequestHeaders = `{"authorization":"[redacted]"}`
	seedBoth(t, dsns, recs)
	seed(t, dsns[ClickHouse], recs[:2]) // replayed: stored twice until a merge
	want := expectedExport(recs)
	dir := t.TempDir()
	ctx := context.Background()
	sums := map[string]string{}
	for _, dialect := range []string{Postgres, ClickHouse} {
		for _, format := range []string{FormatJSONL, FormatCSV} {
			t.Run(dialect+"/"+format, func(t *testing.T) {
				out := filepath.Join(dir, dialect+"."+format)
				start := time.Now()
				m, err := Export(ctx, dsns[dialect], exportWindow(), format, out)
				if err != nil {
					t.Fatal(err)
				}
				var got []map[string]any
				if format == FormatJSONL {
					got = readJSONL(t, out)
				} else {
					got = csvAsJSON(t, out)
				}
				if len(got) != len(want) {
					t.Fatalf("%d rows, want %d", len(got), len(want))
				}
				for i := range want {
					if !reflect.DeepEqual(got[i], want[i]) {
						t.Fatalf("row %d:\n got %v\nwant %v", i, got[i], want[i])
					}
				}
				checkManifest(t, out, m, Manifest{
					File: filepath.Base(out), Format: format, Rows: int64(len(want)), Table: "llm_requests",
					Columns: ExportColumns, Order: "ts, event_id", From: exportWindow().From, To: exportWindow().To,
					Store: dsns[dialect], Dialect: dialect, Generator: "llmtap export",
				}, start)
				sums[format+"/"+dialect] = m.SHA256
			})
		}
	}
	// Both stores give the very same file.
	for _, format := range []string{FormatJSONL, FormatCSV} {
		if a, b := sums[format+"/"+Postgres], sums[format+"/"+ClickHouse]; a == "" || a != b {
			t.Errorf("%s: PostgreSQL sha256 %s, ClickHouse %s", format, a, b)
		}
	}
}

// checkManifest compares the manifest returned and the one on disk with
// want (GeneratedAt, SHA256 and Bytes are checked against the file).
func checkManifest(t *testing.T, out string, got Manifest, want Manifest, start time.Time) {
	t.Helper()
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	want.SHA256 = hex.EncodeToString(sum[:])
	want.Bytes = int64(len(data))
	if got.GeneratedAt.Before(start) || got.GeneratedAt.After(time.Now()) {
		t.Errorf("generated_at %v not during the export", got.GeneratedAt)
	}
	want.GeneratedAt = got.GeneratedAt
	if !reflect.DeepEqual(got, want) {
		t.Errorf("manifest\n got %+v\nwant %+v", got, want)
	}
	onDisk, err := VerifyExport(out)
	if err != nil {
		t.Fatalf("VerifyExport: %v", err)
	}
	onDisk.GeneratedAt = onDisk.GeneratedAt.Round(0)
	got.GeneratedAt = got.GeneratedAt.Round(0)
	if !reflect.DeepEqual(onDisk, got) {
		t.Errorf("manifest on disk\n %+v\nreturned\n %+v", onDisk, got)
	}
	if st, err := os.Stat(out); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("export file mode %v, %v; want 0600", st.Mode(), err)
	}
}

func TestExportFilters(t *testing.T) {
	dsns := freshStores(t, "llmtap_test_query_export")
	recs := fixture()
	seedBoth(t, dsns, recs)
	pick := func(f func(r record.Record) bool) []record.Record {
		var out []record.Record
		for _, r := range recs {
			if f(r) {
				out = append(out, r)
			}
		}
		return out
	}
	tests := []struct {
		name string
		p    Params
		want []record.Record
	}{
		{"consumer", Params{From: base.Add(-time.Hour), To: base.Add(48 * time.Hour), Consumer: "bob"}, pick(func(r record.Record) bool { return r.Consumer == "bob" })},
		{"key", Params{From: base.Add(-time.Hour), To: base.Add(48 * time.Hour), KeyID: "k_a2"}, pick(func(r record.Record) bool { return r.KeyID == "k_a2" })},
		{"window is [from, to)", window, pick(func(r record.Record) bool { return !r.TS.Before(base) && r.TS.Before(base.Add(time.Hour)) })},
		{"sub-second bounds are cut to the second", Params{From: base.Add(999 * time.Millisecond), To: base.Add(6*time.Second + 500*time.Millisecond)},
			pick(func(r record.Record) bool { return !r.TS.Before(base) && r.TS.Before(base.Add(6*time.Second)) })},
		{"nothing matches", Params{From: base.Add(-time.Hour), To: base.Add(48 * time.Hour), Consumer: "nobody' OR '1'='1"}, nil},
	}
	dir := t.TempDir()
	for _, tc := range tests {
		for _, dialect := range []string{Postgres, ClickHouse} {
			t.Run(tc.name+"/"+dialect, func(t *testing.T) {
				out := filepath.Join(dir, "f.jsonl")
				m, err := Export(context.Background(), dsns[dialect], tc.p, FormatJSONL, out)
				if err != nil {
					t.Fatal(err)
				}
				got := readJSONL(t, out)
				want := expectedExport(tc.want)
				if len(got) != len(want) || (len(want) > 0 && !reflect.DeepEqual(got, want)) {
					t.Fatalf("got %d rows %v\nwant %d rows %v", len(got), got, len(want), want)
				}
				if m.Rows != int64(len(want)) || m.Filters != (Filters{Consumer: tc.p.Consumer, KeyID: tc.p.KeyID}) {
					t.Errorf("manifest rows %d filters %+v", m.Rows, m.Filters)
				}
				if !m.From.Equal(tc.p.From.Truncate(time.Second)) || !m.To.Equal(tc.p.To.Truncate(time.Second)) {
					t.Errorf("manifest range %v..%v", m.From, m.To)
				}
			})
		}
	}
}

func TestExportManifestHasNoPassword(t *testing.T) {
	if testing.Short() {
		t.Skip("needs PostgreSQL")
	}
	freshStores(t, "llmtap_test_query_export")
	// The test server trusts local connections, so the password is not
	// checked but is part of the DSN.
	dsn := "postgres://postgres:s3cr3t-pw@127.0.0.1:5432/llmtap_test_query_export?sslmode=disable&password=other-s3cr3t"
	out := filepath.Join(t.TempDir(), "x.csv")
	m, err := Export(context.Background(), dsn, exportWindow(), FormatCSV, out)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(ManifestPath(out))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{m.Store, string(raw)} {
		if strings.Contains(s, "s3cr3t") {
			t.Fatalf("password in manifest: %s", s)
		}
	}
	if !strings.Contains(m.Store, "postgres@127.0.0.1:5432/llmtap_test_query_export") {
		t.Errorf("store %q lost the user, host or database", m.Store)
	}
	if m.Rows != 0 {
		t.Errorf("empty database exported %d rows", m.Rows)
	}
	if data, _ := os.ReadFile(out); string(data) != strings.Join(ExportColumns, ",")+"\n" {
		t.Errorf("empty CSV export is %q, want just the header", data)
	}
}

func TestExportErrors(t *testing.T) {
	dir := t.TempDir()
	from := base
	to := base.Add(time.Hour)
	ok := Params{From: from, To: to}
	tests := []struct {
		name, dsn, format, out string
		p                      Params
		err                    string
	}{
		{"from after to", pgDSN("x"), "jsonl", filepath.Join(dir, "a"), Params{From: to, To: from}, "must be before --to"},
		{"missing from", pgDSN("x"), "jsonl", filepath.Join(dir, "a"), Params{To: to}, "--from is required"},
		{"missing to", pgDSN("x"), "jsonl", filepath.Join(dir, "a"), Params{From: from}, "--to is required"},
		{"same second", pgDSN("x"), "jsonl", filepath.Join(dir, "a"), Params{From: from, To: from.Add(time.Millisecond)}, "same second"},
		{"bad format", pgDSN("x"), "xml", filepath.Join(dir, "a"), ok, `--format "xml": want jsonl or csv`},
		{"json is not jsonl", pgDSN("x"), "json", filepath.Join(dir, "a"), ok, `want jsonl or csv`},
		{"no out", pgDSN("x"), "jsonl", "", ok, "--out is required"},
		{"missing folder", pgDSN("x"), "jsonl", filepath.Join(dir, "nope", "a"), ok, "does not exist"},
		{"out is a folder", pgDSN("x"), "jsonl", dir, ok, "is a folder"},
		{"text filter", pgDSN("x"), "jsonl", filepath.Join(dir, "a"), Params{From: from, To: to, Text: "x"}, "does not filter by text"},
		{"limit", pgDSN("x"), "jsonl", filepath.Join(dir, "a"), Params{From: from, To: to, Limit: 5}, "no row limit"},
		{"bad consumer", pgDSN("x"), "jsonl", filepath.Join(dir, "a"), Params{From: from, To: to, Consumer: "\x00"}, "NUL"},
		{"unknown scheme", "mysql://u:pw@h/db", "jsonl", filepath.Join(dir, "a"), ok, "unsupported scheme"},
		{"unreachable store", "postgres://postgres:pw@127.0.0.1:1/x?sslmode=disable&connect_timeout=2", "csv", filepath.Join(dir, "a"), ok, "export from postgres://postgres@127.0.0.1:1/x"},
		{"unreachable clickhouse", "clickhouse://127.0.0.1:1/x?dial_timeout=2s", "csv", filepath.Join(dir, "a"), ok, "export from clickhouse://127.0.0.1:1/x"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Export(context.Background(), tc.dsn, tc.p, tc.format, tc.out)
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("error %v, want %q", err, tc.err)
			}
			if strings.Contains(err.Error(), "pw@") {
				t.Errorf("error shows the password: %v", err)
			}
			entries, _ := os.ReadDir(dir)
			if len(entries) != 0 {
				t.Errorf("left files behind: %v", entries)
			}
		})
	}
}

// TestExportLarge exports 50k generated rows in many slices from both stores
// and checks count, order, manifest and that both files are identical.
func TestExportLarge(t *testing.T) {
	dsns := freshStores(t, "llmtap_test_query_export")
	const n = 50000
	generateRows(t, dsns, n, 0)
	old := exportSliceRows
	exportSliceRows = 4000
	defer func() { exportSliceRows = old }()

	p := Params{From: base, To: base.Add(n * 5 * time.Second)}
	dir := t.TempDir()
	var sums []string
	for _, dialect := range []string{Postgres, ClickHouse} {
		out := filepath.Join(dir, dialect+".jsonl")
		m, err := Export(context.Background(), dsns[dialect], p, FormatJSONL, out)
		if err != nil {
			t.Fatal(err)
		}
		if m.Rows != n {
			t.Fatalf("%s: %d rows, want %d", dialect, m.Rows, n)
		}
		if _, err := VerifyExport(out); err != nil {
			t.Fatal(err)
		}
		rows := readJSONL(t, out)
		for i := 1; i < len(rows); i++ {
			if rows[i]["ts"].(string) < rows[i-1]["ts"].(string) {
				t.Fatalf("%s: row %d out of order", dialect, i)
			}
		}
		if rows[0]["event_id"] != "01900000-0000-7000-8000-100000000000" || rows[n-1]["prompt"] != fmt.Sprintf("prompt %d", n-1) {
			t.Fatalf("%s: first/last rows %v %v", dialect, rows[0], rows[n-1])
		}
		sums = append(sums, m.SHA256)

		// A changed byte no longer verifies.
		data, _ := os.ReadFile(out)
		data[len(data)/2] ^= 1
		os.WriteFile(out, data, 0o600)
		if _, err := VerifyExport(out); err == nil || !strings.Contains(err.Error(), "sha256") {
			t.Fatalf("tampered file verifies: %v", err)
		}
	}
	if sums[0] != sums[1] {
		t.Errorf("PostgreSQL and ClickHouse files differ: %s vs %s", sums[0], sums[1])
	}
}

// generateRows inserts n synthetic rows (numbers first..first+n-1) into both
// stores with server-side SQL, identical on both: every 5 s from base, about
// bodyBytes of body text per row.
func generateRows(t testing.TB, dsns map[string]string, n, bodyBytes int) {
	t.Helper()
	ctx := context.Background()
	b := base.Unix()
	pgSQL := fmt.Sprintf(`INSERT INTO llm_requests (event_id, ts, source, consumer, key_id, key_prefix, client_ip, method, path,
  request_id, endpoint, model, status, stream, latency_ms, ttfb_ms, ttft_ms, prompt_tokens, completion_tokens, total_tokens,
  usage_source, prompt, response, request_headers, request_body, response_body, truncated, ingested_at)
SELECT ('01900000-0000-7000-8000-' || (100000000000 + i)::text)::uuid,
  to_timestamp(%[1]d + i * 5) + (i %% 1000) * interval '1 microsecond',
  'proxy', 'c' || (i %% 7), 'k' || (i %% 3), 'sk-abcd', '10.1.2.3', 'POST', '/v1/chat/completions',
  'req-' || i, 'chat', 'model-' || (i %% 2), CASE WHEN i %% 10 = 0 THEN 500 ELSE 200 END, i %% 2 = 0,
  (i %% 1000) + 0.5, NULL, CASE WHEN i %% 2 = 0 THEN (i %% 100) + 0.25 END,
  CASE WHEN i %% 5 = 0 THEN NULL ELSE i %% 100 END, CASE WHEN i %% 5 = 0 THEN NULL ELSE i %% 50 END,
  CASE WHEN i %% 5 = 0 THEN NULL ELSE i %% 100 + i %% 50 END,
  'response', 'prompt ' || i, repeat('r', i %% 50), '{"content-type":"application/json"}',
  repeat('b', %[2]d), repeat('q', %[2]d / 2), i %% 97 = 0, to_timestamp(%[1]d + i * 5 + 2)
FROM generate_series(0, %[3]d - 1) AS i`, b, bodyBytes, n)
	chSQL := fmt.Sprintf(`INSERT INTO llm_requests (event_id, ts, ts_us, source, consumer, key_id, key_prefix, client_ip, method, path,
  request_id, endpoint, model, status, stream, latency_ms, ttfb_ms, ttft_ms, prompt_tokens, completion_tokens, total_tokens,
  usage_source, prompt, response, reasoning, tool_calls, finish_reason, error, request_headers, response_headers,
  request_body, response_body, truncated, ingested_at)
SELECT toUUID(concat('01900000-0000-7000-8000-', toString(100000000000 + number))),
  toDateTime(%[1]d + number * 5, 'UTC'), toUInt32(number %% 1000),
  'proxy', concat('c', toString(number %% 7)), concat('k', toString(number %% 3)), 'sk-abcd', '10.1.2.3', 'POST', '/v1/chat/completions',
  concat('req-', toString(number)), 'chat', concat('model-', toString(number %% 2)), toInt32(if(number %% 10 = 0, 500, 200)), toUInt8(number %% 2 = 0),
  toFloat64(number %% 1000) + 0.5, CAST(NULL AS Nullable(Float64)), if(number %% 2 = 0, toNullable(toFloat64(number %% 100) + 0.25), CAST(NULL AS Nullable(Float64))),
  if(number %% 5 = 0, CAST(NULL AS Nullable(Int64)), toNullable(toInt64(number %% 100))),
  if(number %% 5 = 0, CAST(NULL AS Nullable(Int64)), toNullable(toInt64(number %% 50))),
  if(number %% 5 = 0, CAST(NULL AS Nullable(Int64)), toNullable(toInt64(number %% 100 + number %% 50))),
  'response', concat('prompt ', toString(number)), substring('%[4]s', 1, number %% 50), '', '', '', '',
  '{"content-type":"application/json"}', '',
  substring('%[5]s', 1, %[2]d), substring('%[6]s', 1, intDiv(%[2]d, 2)),
  toUInt8(number %% 97 = 0), toDateTime(%[1]d + number * 5 + 2, 'UTC')
FROM system.numbers LIMIT %[3]d`, b, bodyBytes, n,
		strings.Repeat("r", 50), strings.Repeat("b", max(bodyBytes, 1)), strings.Repeat("q", max(bodyBytes/2, 1)))

	conn, err := pgx.Connect(ctx, dsns[Postgres])
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, pgSQL); err != nil {
		t.Fatalf("generate postgres: %v", err)
	}
	if _, err := conn.Exec(ctx, "ANALYZE llm_requests"); err != nil {
		t.Fatalf("analyze postgres: %v", err)
	}
	opts, err := schema.CHOptions(dsns[ClickHouse])
	if err != nil {
		t.Fatal(err)
	}
	ch, err := clickhouse.Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	if err := ch.Exec(ctx, chSQL); err != nil {
		t.Fatalf("generate clickhouse: %v", err)
	}
}

// TestExportColumnsAreTheTable guards "every column of llm_requests": the
// export's columns must be exactly the table's (ClickHouse's ts_us is folded
// into ts). A column added to the schema must be added to the export.
func TestExportColumnsAreTheTable(t *testing.T) {
	dsns := freshStores(t, "llmtap_test_query_export")
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsns[Postgres])
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, "SELECT column_name FROM information_schema.columns WHERE table_name = 'llm_requests' AND table_schema = current_schema() ORDER BY ordinal_position")
	if err != nil {
		t.Fatal(err)
	}
	pgCols, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	opts, err := schema.CHOptions(dsns[ClickHouse])
	if err != nil {
		t.Fatal(err)
	}
	ch, err := clickhouse.Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	crows, err := ch.Query(ctx, "SELECT name FROM system.columns WHERE database = currentDatabase() AND table = 'llm_requests'")
	if err != nil {
		t.Fatal(err)
	}
	var chCols []string
	for crows.Next() {
		var name string
		if err := crows.Scan(&name); err != nil {
			t.Fatal(err)
		}
		if name != "ts_us" {
			chCols = append(chCols, name)
		}
	}
	crows.Close()
	want := append([]string(nil), ExportColumns...)
	sort.Strings(want)
	for dialect, got := range map[string][]string{Postgres: pgCols, ClickHouse: chCols} {
		sort.Strings(got)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s llm_requests has columns %q; the export writes %q", dialect, got, want)
		}
	}
}
