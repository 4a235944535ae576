package query

import (
	"bufio"
	"encoding/csv"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/llmtap/llmtap/internal/jsonstr"
)

// Output formats of Result.Write.
const (
	FormatTable = "table"
	FormatJSON  = "json"
	FormatCSV   = "csv"
)

// Formats lists the formats Result.Write accepts.
func Formats() []string { return []string{FormatTable, FormatJSON, FormatCSV} }

// MaxTableCell is the widest cell the table format prints; longer text is cut
// and ends in "…" (json and csv never cut).
const MaxTableCell = 60

// Write writes r to w as:
//   - table: aligned columns for a terminal, a header and a rule; NULL as
//     NULL; newlines and tabs in text shown as \n and \t; cells longer than
//     MaxTableCell characters are cut. An empty result prints "(no rows)".
//   - json: one JSON array of objects with the columns as keys in column
//     order; NULL as null; an empty result is [].
//   - csv: RFC 4180 with a header row; NULL as an empty field.
//
// An empty format means table.
func (r *Result) Write(w io.Writer, format string) error {
	bw := bufio.NewWriter(w)
	var err error
	switch format {
	case FormatTable, "":
		err = r.writeTable(bw)
	case FormatJSON:
		err = r.writeJSON(bw)
	case FormatCSV:
		err = r.writeCSV(bw)
	default:
		return fmt.Errorf("query: unknown format %q (want table, json or csv)", format)
	}
	if err != nil {
		return fmt.Errorf("query: write %s: %w", format, err)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("query: write %s: %w", format, err)
	}
	return nil
}

// text renders a cell for csv and table (not for json).
func text(v any) string {
	switch v := v.(type) {
	case nil:
		return ""
	case string:
		return v
	case int64:
		return strconv.FormatInt(v, 10)
	case float64:
		return formatFloat(v)
	case bool:
		return strconv.FormatBool(v)
	}
	return fmt.Sprint(v)
}

func formatFloat(f float64) string {
	if math.IsInf(f, 0) || math.IsNaN(f) {
		return strconv.FormatFloat(f, 'g', -1, 64)
	}
	return strconv.FormatFloat(f, 'f', -1, 64)
}

var tableEscaper = strings.NewReplacer("\r", `\r`, "\n", `\n`, "\t", `\t`)

func tableCell(v any) string {
	if v == nil {
		return "NULL"
	}
	s := tableEscaper.Replace(text(v))
	cut := utf8.RuneCountInString(s) > MaxTableCell
	var b strings.Builder
	n := 0
	for _, r := range s {
		if cut && n == MaxTableCell-1 {
			b.WriteRune('…')
			return b.String()
		}
		if unsafeForTerminal(r) {
			r = '?'
		}
		b.WriteRune(r)
		n++
	}
	return b.String()
}

// unsafeForTerminal reports runes that would garble a terminal or reorder
// what the auditor sees: control characters, line and paragraph separators,
// and bidirectional overrides.
func unsafeForTerminal(r rune) bool {
	return unicode.IsControl(r) || r == '\u2028' || r == '\u2029' ||
		(r >= '\u202a' && r <= '\u202e') || (r >= '\u2066' && r <= '\u2069')
}

func isNumeric(v any) bool {
	switch v.(type) {
	case int64, float64:
		return true
	}
	return false
}

func (r *Result) writeTable(w *bufio.Writer) error {
	if len(r.Rows) == 0 {
		_, err := w.WriteString("(no rows)\n")
		return err
	}
	cells := make([][]string, len(r.Rows))
	width := make([]int, len(r.Columns))
	right := make([]bool, len(r.Columns)) // numbers align right
	for c, name := range r.Columns {
		width[c] = utf8.RuneCountInString(name)
		right[c] = true
	}
	for i, row := range r.Rows {
		cells[i] = make([]string, len(r.Columns))
		for c := range r.Columns {
			var v any
			if c < len(row) {
				v = row[c]
			}
			cells[i][c] = tableCell(v)
			width[c] = max(width[c], utf8.RuneCountInString(cells[i][c]))
			if v != nil && !isNumeric(v) {
				right[c] = false
			}
		}
	}
	line := func(vals []string) {
		for c, s := range vals {
			pad := strings.Repeat(" ", width[c]-utf8.RuneCountInString(s))
			if c > 0 {
				w.WriteString("  ")
			}
			if right[c] {
				w.WriteString(pad + s)
			} else if c < len(vals)-1 {
				w.WriteString(s + pad)
			} else {
				w.WriteString(s)
			}
		}
		w.WriteByte('\n')
	}
	line(r.Columns)
	rule := make([]string, len(r.Columns))
	for c := range rule {
		rule[c] = strings.Repeat("-", width[c])
	}
	line(rule)
	for _, row := range cells {
		line(row)
	}
	_, err := fmt.Fprintf(w, "(%d %s)\n", len(r.Rows), plural(len(r.Rows), "row", "rows"))
	return err
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

func (r *Result) writeJSON(w *bufio.Writer) error {
	buf := make([]byte, 0, 1024)
	w.WriteByte('[')
	for i, row := range r.Rows {
		buf = buf[:0]
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = append(buf, "\n  {"...)
		for c, name := range r.Columns {
			if c > 0 {
				buf = append(buf, ',')
			}
			buf = jsonstr.Append(buf, name)
			buf = append(buf, ':')
			var v any
			if c < len(row) {
				v = row[c]
			}
			buf = appendJSONValue(buf, v)
		}
		buf = append(buf, '}')
		if _, err := w.Write(buf); err != nil {
			return err
		}
	}
	if len(r.Rows) > 0 {
		w.WriteByte('\n')
	}
	_, err := w.WriteString("]\n")
	return err
}

func appendJSONValue(buf []byte, v any) []byte {
	switch v := v.(type) {
	case nil:
		return append(buf, "null"...)
	case string:
		return jsonstr.Append(buf, v)
	case int64:
		return strconv.AppendInt(buf, v, 10)
	case float64:
		if math.IsInf(v, 0) || math.IsNaN(v) {
			return append(buf, "null"...) // JSON has no such numbers
		}
		return strconv.AppendFloat(buf, v, 'f', -1, 64)
	case bool:
		return strconv.AppendBool(buf, v)
	}
	return jsonstr.Append(buf, fmt.Sprint(v))
}

func (r *Result) writeCSV(w *bufio.Writer) error {
	cw := csv.NewWriter(w)
	if err := cw.Write(r.Columns); err != nil {
		return err
	}
	rec := make([]string, len(r.Columns))
	for _, row := range r.Rows {
		for c := range rec {
			rec[c] = ""
			if c < len(row) {
				rec[c] = text(row[c])
			}
		}
		if err := cw.Write(rec); err != nil {
			return err
		}
	}
	cw.Flush()
	return cw.Error()
}
