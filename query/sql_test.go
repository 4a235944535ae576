package query

import (
	"bytes"
	"context"
	"encoding/csv"
	"os/exec"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"

	"github.com/llmtap/llmtap/schema"
)

// TestSQLFiles checks that every query file of both dialects parses, uses the
// parameters its query needs, and documents how to run it by hand.
func TestSQLFiles(t *testing.T) {
	for _, dialect := range []string{Postgres, ClickHouse} {
		for _, name := range append(Names(), "export", "export_plan") {
			t.Run(dialect+"/"+name, func(t *testing.T) {
				sql, err := SQL(dialect, name)
				if err != nil {
					t.Fatal(err)
				}
				tmpl, err := parse(dialect, sql)
				if err != nil {
					t.Fatal(err)
				}
				want := []string{"from", "to", "consumer", "key_id"}
				switch name {
				case "search":
					want = append(want, "text", "limit")
				case "conversations", "activity":
					want = append(want, "limit")
				}
				var got []string
				for _, p := range tmpl.params {
					if !slices.Contains(got, p) {
						got = append(got, p)
					}
				}
				if !reflect.DeepEqual(got, want) {
					t.Errorf("parameters %q, want %q", got, want)
				}
				tool := map[string]string{Postgres: "psql", ClickHouse: "clickhouse-client"}[dialect]
				if name != "export_plan" && !strings.Contains(sql, tool+" ") {
					t.Errorf("header does not show how to run it with %s", tool)
				}
				for _, p := range want {
					flag := map[string]string{Postgres: "-v " + p + "=", ClickHouse: "--param_" + p + "="}[dialect]
					if name != "export_plan" && !strings.Contains(sql, flag) {
						t.Errorf("header's command line lacks %s", flag)
					}
				}
			})
		}
	}
	if _, err := SQL("mysql", "usage"); err == nil {
		t.Error("unknown dialect accepted")
	}
	if _, err := SQL(Postgres, "../schema"); err == nil {
		t.Error("unknown name accepted")
	}
}

func TestParse(t *testing.T) {
	tests := []struct {
		name, dialect, sql string
		text               []string
		params             []string
		err                string
	}{
		{"pg simple", Postgres, "SELECT :'from'::timestamptz, x::int", []string{"SELECT ", "::timestamptz, x::int"}, []string{"from"}, ""},
		{"pg comment and literal", Postgres, "-- :'nope'\nSELECT ':''to''' /* :'x' */, :'to'", []string{"-- :'nope'\nSELECT ':''to''' /* :'x' */, ", ""}, []string{"to"}, ""},
		{"pg quoted identifier", Postgres, `SELECT 1 AS ":'from'", :'limit'`, []string{`SELECT 1 AS ":'from'", `, ""}, []string{"limit"}, ""},
		{"pg unknown", Postgres, "SELECT :'password'", nil, nil, "unknown parameter :'password'"},
		{"pg bare", Postgres, "SELECT :from", nil, nil, "bare psql variable"},
		{"pg unterminated", Postgres, "SELECT :'from", nil, nil, "unterminated"},
		{"pg unterminated literal", Postgres, "SELECT 'abc", nil, nil, "unterminated ' quote"},
		{"ch simple", ClickHouse, "SELECT {from:DateTime}, {consumer:String}", []string{"SELECT ", ", ", ""}, []string{"from", "consumer"}, ""},
		{"ch escaped literal", ClickHouse, `SELECT 'a\'{from:DateTime}', {limit:UInt32}`, []string{`SELECT 'a\'{from:DateTime}', `, ""}, []string{"limit"}, ""},
		{"ch comment", ClickHouse, "-- {x:y}\nSELECT {to:DateTime}", []string{"-- {x:y}\nSELECT ", ""}, []string{"to"}, ""},
		{"ch bad type", ClickHouse, "SELECT {from:Int8}", nil, nil, "type Int8 is not supported"},
		{"ch unknown", ClickHouse, "SELECT {nope:String}", nil, nil, "bad parameter"},
		{"ch unterminated", ClickHouse, "SELECT {from:String", nil, nil, "unterminated"},
		{"unterminated block comment", ClickHouse, "SELECT /* x", nil, nil, "unterminated /*"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tmpl, err := parse(tc.dialect, tc.sql)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(tmpl.text, tc.text) || !reflect.DeepEqual(tmpl.params, tc.params) {
				t.Fatalf("got %q %q, want %q %q", tmpl.text, tmpl.params, tc.text, tc.params)
			}
		})
	}
}

func TestPostgresBinding(t *testing.T) {
	tmpl, err := parse(Postgres, "WHERE ts >= :'from' AND (:'consumer' = '' OR consumer = :'consumer') AND ts < :'to' LIMIT :'limit'")
	if err != nil {
		t.Fatal(err)
	}
	from := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	sql, args, err := tmpl.postgres(Params{From: from, To: from.Add(time.Hour), Consumer: "o'brien"}, "conversations")
	if err != nil {
		t.Fatal(err)
	}
	if want := "WHERE ts >= $1 AND ($2 = '' OR consumer = $2) AND ts < $3 LIMIT $4"; sql != want {
		t.Fatalf("sql %q, want %q", sql, want)
	}
	if want := []any{from, "o'brien", from.Add(time.Hour), int64(DefaultLimit)}; !reflect.DeepEqual(args, want) {
		t.Fatalf("args %v, want %v", args, want)
	}
}

func TestCHLiteral(t *testing.T) {
	tests := []struct {
		typ  string
		v    any
		want string
		err  string
	}{
		{"DateTime", time.Date(2026, 1, 2, 3, 4, 5, 0, time.FixedZone("x", 3600)), "toDateTime('2026-01-02 02:04:05', 'UTC')", ""},
		{"DateTime", time.Date(1960, 1, 1, 0, 0, 0, 0, time.UTC), "", "outside ClickHouse DateTime's range"},
		{"DateTime", "2026-01-01", "", "needs a time"},
		{"String", "plain", "'plain'", ""},
		{"String", `o'brien`, `'o\'brien'`, ""},
		{"String", `\' OR 1=1 --`, `'\\\' OR 1=1 --'`, ""},
		{"String", "a\nb\tc\rd\x00e", `'a\nb\tc\rd\0e'`, ""},
		{"UInt32", int64(100), "100", ""},
		{"UInt32", int64(-1), "", "UInt32 needs"},
		{"String", int64(1), "", "needs a string"},
	}
	for _, tc := range tests {
		got, err := chLiteral(tc.typ, tc.v)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("chLiteral(%s, %#v) = %q, %v; want error %q", tc.typ, tc.v, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("chLiteral(%s, %#v) = %q, %v; want %q", tc.typ, tc.v, got, err, tc.want)
		}
	}
}

// chUnquote reads a ClickHouse single-quoted literal at the start of s and
// returns its value and the rest of s (a model of the server's lexer for the
// escapes chQuote writes).
func chUnquote(s string) (val, rest string, ok bool) {
	if !strings.HasPrefix(s, "'") {
		return "", s, false
	}
	var b strings.Builder
	for i := 1; i < len(s); i++ {
		switch c := s[i]; c {
		case '\\':
			if i+1 >= len(s) {
				return "", s, false
			}
			i++
			switch s[i] {
			case 'n':
				b.WriteByte('\n')
			case 't':
				b.WriteByte('\t')
			case 'r':
				b.WriteByte('\r')
			case '0':
				b.WriteByte(0)
			default:
				b.WriteByte(s[i])
			}
		case '\'':
			return b.String(), s[i+1:], true
		default:
			b.WriteByte(c)
		}
	}
	return "", s, false
}

func FuzzCHQuote(f *testing.F) {
	for _, s := range []string{"", "a", `'`, `\`, `\'`, `''`, "\x00", "x' OR '1'='1", `\\'; DROP TABLE llm_requests; --`, "日本語\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		lit, err := chLiteral("String", s)
		if err != nil {
			t.Fatal(err)
		}
		val, rest, ok := chUnquote(lit)
		if !ok || rest != "" || val != s {
			t.Fatalf("literal %q of %q reads back as %q (rest %q, ok %v)", lit, s, val, rest, ok)
		}
	})
}

// TestCHLiteralOnServer sends hostile strings through chLiteral to the real
// ClickHouse and requires them back unchanged.
func TestCHLiteralOnServer(t *testing.T) {
	if testing.Short() {
		t.Skip("needs ClickHouse")
	}
	opts, err := schema.CHOptions(chDSN("default"))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := clickhouse.Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	tmpl, err := parse(ClickHouse, "SELECT {consumer:String}, {from:DateTime}")
	if err != nil {
		t.Fatal(err)
	}
	from := time.Date(2026, 2, 3, 4, 5, 6, 0, time.UTC)
	for _, s := range []string{"", "plain", `o'brien`, `\`, `\'`, `'; SELECT 1; --`, `\\'`, "a\nb\tc\r\x00d", "日本語 émile", "{consumer:String}", "?", "@consumer", "$1"} {
		sql, err := tmpl.clickhouse(Params{From: from, To: from.Add(time.Hour), Consumer: s}, "usage")
		if err != nil {
			t.Fatal(err)
		}
		var got string
		var gotTime time.Time
		if err := conn.QueryRow(context.Background(), sql).Scan(&got, &gotTime); err != nil {
			t.Fatalf("%q: %v (sql %s)", s, err, sql)
		}
		if got != s || !gotTime.Equal(from) {
			t.Errorf("sent %q and %v, got %q and %v", s, from, got, gotTime)
		}
	}
}

// TestRunByHand runs the query files the way their headers say: psql with -v
// variables, and clickhouse-client (18.16 here, without --param_) with the
// text from Render, and requires the same rows as Run.
func TestRunByHand(t *testing.T) {
	if testing.Short() {
		t.Skip("needs the stores")
	}
	for _, tool := range []string{"psql", "clickhouse-client"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	dsns := freshStores(t, "llmtap_test_query_hand")
	seedBoth(t, dsns, fixture())
	p := Params{From: base, To: base.Add(time.Hour), Text: "invoice"}
	ctx := context.Background()
	for _, name := range []string{"usage", "rpm", "errors", "search"} {
		p := p
		if name != "search" {
			p.Text = ""
		}
		want, err := Run(ctx, dsns[Postgres], name, p)
		if err != nil {
			t.Fatal(err)
		}
		path := "sql/postgres/" + name + ".sql"
		out, err := exec.Command("psql", dsns[Postgres], "--csv", "-v", "ON_ERROR_STOP=1",
			"-v", "from="+p.From.Format(time.RFC3339), "-v", "to="+p.To.Format(time.RFC3339),
			"-v", "consumer=", "-v", "key_id=", "-v", "text="+p.Text, "-v", "limit=100", "-f", path).CombinedOutput()
		if err != nil {
			t.Fatalf("psql %s: %v\n%s", path, err, out)
		}
		compareCSV(t, "psql "+name, out, want, true)

		sql, err := Render(ClickHouse, name, p)
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("clickhouse-client", "--database", "llmtap_test_query_hand", "--format", "CSV", "--multiquery")
		cmd.Stdin = strings.NewReader(sql)
		out, err = cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("clickhouse-client %s: %v\n%s", name, err, out)
		}
		compareCSV(t, "clickhouse-client "+name, out, want, false)

		// Render for PostgreSQL gives plain SQL too.
		pgsql, err := Render(Postgres, name, p)
		if err != nil {
			t.Fatal(err)
		}
		cmd = exec.Command("psql", dsns[Postgres], "--csv", "-v", "ON_ERROR_STOP=1")
		cmd.Stdin = strings.NewReader(pgsql)
		if out, err = cmd.CombinedOutput(); err != nil {
			t.Fatalf("psql rendered %s: %v\n%s", name, err, out)
		}
		compareCSV(t, "psql rendered "+name, out, want, true)
	}
}

// compareCSV compares a client's CSV with a Result: same number of rows, and
// the same text in every cell that is text or an integer.
func compareCSV(t *testing.T, what string, out []byte, want *Result, header bool) {
	t.Helper()
	recs, err := csv.NewReader(bytes.NewReader(out)).ReadAll()
	if err != nil {
		t.Fatalf("%s: %v\n%s", what, err, out)
	}
	if header {
		if len(recs) == 0 || !reflect.DeepEqual(recs[0], want.Columns) {
			t.Fatalf("%s: header %q, want %q", what, recs, want.Columns)
		}
		recs = recs[1:]
	}
	if len(recs) != len(want.Rows) || len(want.Rows) == 0 {
		t.Fatalf("%s: %d rows, want %d (non-zero)", what, len(recs), len(want.Rows))
	}
	for i, row := range want.Rows {
		for c, v := range row {
			switch v := v.(type) {
			case string, int64:
				if got := text(v); recs[i][c] != got {
					t.Errorf("%s: row %d column %s = %q, want %q", what, i, want.Columns[c], recs[i][c], got)
				}
			}
		}
	}
}

// FuzzParse checks that the placeholder parser never panics and that a
// template always joins back to its input when every placeholder is put back.
func FuzzParse(f *testing.F) {
	for _, name := range Names() {
		for _, d := range []string{Postgres, ClickHouse} {
			s, _ := SQL(d, name)
			f.Add(d == Postgres, s)
		}
	}
	f.Add(true, "SELECT :'from' -- :'x'\n /* :'y' */ ':''z'")
	f.Add(false, `SELECT '\'{from:DateTime}' {to:DateTime}`)
	f.Fuzz(func(t *testing.T, pg bool, sql string) {
		dialect := ClickHouse
		if pg {
			dialect = Postgres
		}
		tmpl, err := parse(dialect, sql)
		if err != nil {
			return
		}
		if len(tmpl.text) != len(tmpl.params)+1 || len(tmpl.types) != len(tmpl.params) {
			t.Fatalf("malformed template %+v", tmpl)
		}
		var b strings.Builder
		for i, p := range tmpl.params {
			b.WriteString(tmpl.text[i])
			if pg {
				b.WriteString(":'" + p + "'")
			} else {
				b.WriteString("{" + p + ":" + tmpl.types[i] + "}")
			}
		}
		b.WriteString(tmpl.text[len(tmpl.text)-1])
		if b.String() != sql {
			t.Fatalf("template does not join back:\n%q\n%q", b.String(), sql)
		}
	})
}
