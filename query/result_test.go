package query

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

func sampleResult() *Result {
	return &Result{
		Columns: []string{"time", "consumer", "requests", "p95_latency_ms", "stream", "total_tokens", "prompt"},
		Rows: [][]any{
			{"2026-03-10T10:00:00.000000Z", "alice", int64(5), 380.0, true, int64(43), "Hello world"},
			{"2026-03-10T10:00:05.250000Z", "émile", int64(12345), 0.125, false, nil, "multi\nline\ttab \"quoted\", comma"},
			{"2026-03-10T10:01:00.000000Z", "", int64(0), 1e-7, false, int64(0), strings.Repeat("long ", 30)},
			{"2026-03-10T10:02:00.000000Z", "bob", int64(-1), 1450.0, true, int64(1), "ctl\x01\u2028 <&> \xff"},
		},
	}
}

func TestWriteGolden(t *testing.T) {
	for _, format := range Formats() {
		t.Run(format, func(t *testing.T) {
			var buf bytes.Buffer
			if err := sampleResult().Write(&buf, format); err != nil {
				t.Fatal(err)
			}
			golden := filepath.Join("testdata", "result."+format+".golden")
			if *update {
				if err := os.WriteFile(golden, buf.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -update)", err)
			}
			if !bytes.Equal(buf.Bytes(), want) {
				t.Fatalf("output differs from %s:\n%s", golden, buf.String())
			}
		})
	}
}

func TestWriteJSON(t *testing.T) {
	r := sampleResult()
	var buf bytes.Buffer
	if err := r.Write(&buf, "json"); err != nil {
		t.Fatal(err)
	}
	var got []map[string]any
	if err := json.Unmarshal(buf.Bytes(), &got); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, buf.String())
	}
	if len(got) != len(r.Rows) {
		t.Fatalf("%d objects, want %d", len(got), len(r.Rows))
	}
	for i, row := range r.Rows {
		for c, col := range r.Columns {
			want := row[c]
			switch v := want.(type) {
			case int64:
				want = float64(v)
			case string:
				if !utf8.ValidString(v) {
					want = strings.ToValidUTF8(v, "\ufffd")
				}
			}
			if !reflect.DeepEqual(got[i][col], want) {
				t.Errorf("row %d %s = %#v, want %#v", i, col, got[i][col], want)
			}
		}
	}
	// Keys keep the column order.
	if first := strings.Index(buf.String(), `"time"`); first < 0 || first > strings.Index(buf.String(), `"consumer"`) {
		t.Errorf("keys out of column order:\n%s", buf.String())
	}

	buf.Reset()
	if err := (&Result{Columns: []string{"a"}}).Write(&buf, "json"); err != nil || buf.String() != "[]\n" {
		t.Errorf("empty result: %q, %v", buf.String(), err)
	}
}

func TestWriteCSV(t *testing.T) {
	r := sampleResult()
	var buf bytes.Buffer
	if err := r.Write(&buf, "csv"); err != nil {
		t.Fatal(err)
	}
	recs, err := csv.NewReader(&buf).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(recs[0], r.Columns) || len(recs) != len(r.Rows)+1 {
		t.Fatalf("header/rows wrong: %q", recs)
	}
	if got := recs[2][6]; got != "multi\nline\ttab \"quoted\", comma" {
		t.Errorf("text cell %q", got)
	}
	if got := recs[2][5]; got != "" {
		t.Errorf("NULL as %q, want empty", got)
	}
	if got := recs[3][3]; got != "0.0000001" {
		t.Errorf("small float %q, want plain decimal", got)
	}
}

func TestWriteTable(t *testing.T) {
	var buf bytes.Buffer
	if err := sampleResult().Write(&buf, ""); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	if len(lines) != 2+4+1 {
		t.Fatalf("%d lines:\n%s", len(lines), buf.String())
	}
	// Every line of the grid has the same width in runes (the last column
	// is text, padded only by the cut), and newlines are escaped.
	if strings.Contains(lines[3], "\n") || !strings.Contains(lines[3], `multi\nline\ttab`) {
		t.Errorf("text not escaped: %q", lines[3])
	}
	if !strings.Contains(lines[4], "…") {
		t.Errorf("long cell not cut: %q", lines[4])
	}
	if !strings.Contains(lines[3], "NULL") {
		t.Errorf("NULL not shown: %q", lines[3])
	}
	if strings.ContainsRune(lines[5], 1) {
		t.Errorf("control byte reaches the terminal: %q", lines[5])
	}
	if lines[6] != "(4 rows)" {
		t.Errorf("footer %q", lines[6])
	}
	buf.Reset()
	if err := (&Result{Columns: []string{"a"}}).Write(&buf, "table"); err != nil || buf.String() != "(no rows)\n" {
		t.Errorf("empty table %q, %v", buf.String(), err)
	}
}

func TestWriteUnknownFormat(t *testing.T) {
	err := sampleResult().Write(&bytes.Buffer{}, "xml")
	if err == nil || !strings.Contains(err.Error(), `unknown format "xml"`) {
		t.Fatalf("error %v", err)
	}
}
