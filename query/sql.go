package query

import (
	"embed"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Dialects of the SQL files (the same names as package schema uses).
const (
	Postgres   = "postgres"
	ClickHouse = "clickhouse"
)

//go:embed sql/postgres/*.sql sql/clickhouse/*.sql
var sqlFiles embed.FS

var names = []string{"usage", "rpm", "daily", "errors", "conversations", "search", "activity"}

// Names returns the named queries in a stable order.
func Names() []string { return slices.Clone(names) }

func isName(name string) bool { return slices.Contains(names, name) }

// SQL returns the text of a query file, exactly as embedded:
// query/sql/<dialect>/<name>.sql. name is one of Names or "export".
func SQL(dialect, name string) (string, error) {
	if dialect != Postgres && dialect != ClickHouse {
		return "", fmt.Errorf("query: unknown dialect %q (want %s or %s)", dialect, Postgres, ClickHouse)
	}
	if !isName(name) && name != "export" && name != "export_plan" {
		return "", fmt.Errorf("query: unknown query %q (want one of %s)", name, strings.Join(Names(), ", "))
	}
	b, err := sqlFiles.ReadFile("sql/" + dialect + "/" + name + ".sql")
	if err != nil {
		return "", fmt.Errorf("query: %s/%s.sql: %w", dialect, name, err)
	}
	return string(b), nil
}

// Parameter names that the SQL files may use, and the Go value each takes.
var paramNames = []string{"from", "to", "consumer", "key_id", "text", "limit"}

// paramValue returns the value of a placeholder name.
func paramValue(p Params, queryName, param string) (any, error) {
	switch param {
	case "from":
		return p.From.UTC(), nil
	case "to":
		return p.To.UTC(), nil
	case "consumer":
		return p.Consumer, nil
	case "key_id":
		return p.KeyID, nil
	case "text":
		return p.Text, nil
	case "limit":
		return int64(p.limitFor(queryName)), nil
	}
	return nil, fmt.Errorf("unknown parameter %q (known: %s)", param, strings.Join(paramNames, ", "))
}

// template is a query file split at its placeholders: text[0] param[0]
// text[1] … param[n-1] text[n]. For ClickHouse, types[i] is the declared
// type of param[i].
type template struct {
	text   []string
	params []string
	types  []string
}

// parse splits sql at its placeholders: psql variables :'name' for
// PostgreSQL, {name:Type} for ClickHouse. Placeholders inside string
// literals, quoted identifiers and comments are left alone (the header
// comments show them as examples).
func parse(dialect, sql string) (*template, error) {
	t := &template{}
	last := 0
	i := 0
	for i < len(sql) {
		c := sql[i]
		switch {
		case c == '-' && strings.HasPrefix(sql[i:], "--"):
			j := strings.IndexByte(sql[i:], '\n')
			if j < 0 {
				i = len(sql)
			} else {
				i += j + 1
			}
			continue
		case c == '/' && strings.HasPrefix(sql[i:], "/*"):
			j := strings.Index(sql[i+2:], "*/")
			if j < 0 {
				return nil, fmt.Errorf("unterminated /* comment at byte %d", i)
			}
			i += 2 + j + 2
			continue
		case c == '\'' || c == '"' || (c == '`' && dialect == ClickHouse):
			j, err := skipQuoted(dialect, sql, i)
			if err != nil {
				return nil, err
			}
			i = j
			continue
		case dialect == Postgres && c == ':' && strings.HasPrefix(sql[i:], "::"):
			i += 2
			continue
		case dialect == Postgres && c == ':' && strings.HasPrefix(sql[i:], ":'"):
			end := strings.IndexByte(sql[i+2:], '\'')
			if end < 0 {
				return nil, fmt.Errorf("unterminated :'variable' at byte %d", i)
			}
			name := sql[i+2 : i+2+end]
			if !slices.Contains(paramNames, name) {
				return nil, fmt.Errorf("unknown parameter :'%s' at byte %d (known: %s)", name, i, strings.Join(paramNames, ", "))
			}
			t.text = append(t.text, sql[last:i])
			t.params = append(t.params, name)
			t.types = append(t.types, "")
			i += 2 + end + 1
			last = i
			continue
		case dialect == Postgres && c == ':' && i+1 < len(sql) && isIdentByte(sql[i+1]):
			return nil, fmt.Errorf("bare psql variable at byte %d: write :'name' so that psql quotes it", i)
		case dialect == ClickHouse && c == '{':
			end := strings.IndexByte(sql[i:], '}')
			if end < 0 {
				return nil, fmt.Errorf("unterminated {name:Type} at byte %d", i)
			}
			name, typ, ok := strings.Cut(sql[i+1:i+end], ":")
			if !ok || !slices.Contains(paramNames, name) {
				return nil, fmt.Errorf("bad parameter %q at byte %d (want {name:Type}, names %s)", sql[i:i+end+1], i, strings.Join(paramNames, ", "))
			}
			switch typ {
			case "DateTime", "String", "UInt32":
			default:
				return nil, fmt.Errorf("parameter %q at byte %d: type %s is not supported (DateTime, String, UInt32)", sql[i:i+end+1], i, typ)
			}
			t.text = append(t.text, sql[last:i])
			t.params = append(t.params, name)
			t.types = append(t.types, typ)
			i += end + 1
			last = i
			continue
		}
		i++
	}
	t.text = append(t.text, sql[last:])
	return t, nil
}

func isIdentByte(c byte) bool {
	return c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
}

// skipQuoted returns the index after the quoted token starting at sql[i].
// A doubled quote continues the token; in ClickHouse a backslash escapes the
// next byte.
func skipQuoted(dialect, sql string, i int) (int, error) {
	q := sql[i]
	for j := i + 1; j < len(sql); j++ {
		switch {
		case dialect == ClickHouse && sql[j] == '\\':
			j++
		case sql[j] == q:
			if j+1 < len(sql) && sql[j+1] == q {
				j++
				continue
			}
			return j + 1, nil
		}
	}
	return 0, fmt.Errorf("unterminated %c quote at byte %d", q, i)
}

// postgres returns the statement with $1..$n and the arguments. A name that
// occurs several times takes one parameter number.
func (t *template) postgres(p Params, queryName string) (string, []any, error) {
	var b strings.Builder
	var args []any
	index := map[string]int{}
	for i, name := range t.params {
		b.WriteString(t.text[i])
		n, ok := index[name]
		if !ok {
			v, err := paramValue(p, queryName, name)
			if err != nil {
				return "", nil, err
			}
			args = append(args, v)
			n = len(args)
			index[name] = n
		}
		b.WriteString("$" + strconv.Itoa(n))
	}
	b.WriteString(t.text[len(t.text)-1])
	return b.String(), args, nil
}

// clickhouse returns the statement with every {name:Type} replaced by a
// literal of that type (see chLiteral).
func (t *template) clickhouse(p Params, queryName string) (string, error) {
	var b strings.Builder
	for i, name := range t.params {
		b.WriteString(t.text[i])
		v, err := paramValue(p, queryName, name)
		if err != nil {
			return "", err
		}
		lit, err := chLiteral(t.types[i], v)
		if err != nil {
			return "", fmt.Errorf("parameter %s: %w", name, err)
		}
		b.WriteString(lit)
	}
	b.WriteString(t.text[len(t.text)-1])
	return b.String(), nil
}

// chQuote escapes a string for a ClickHouse single-quoted literal: backslash
// and quote get a backslash, and control bytes are written as escapes, so
// the literal always ends where the quoting says. (The same rules as
// clickhouse-go's client-side binding, plus escapes for control bytes.)
var chQuote = strings.NewReplacer(`\`, `\\`, `'`, `\'`, "\x00", `\0`, "\n", `\n`, "\r", `\r`, "\t", `\t`)

// chLiteral renders v as a ClickHouse literal of type typ.
func chLiteral(typ string, v any) (string, error) {
	switch typ {
	case "DateTime":
		t, ok := v.(time.Time)
		if !ok {
			return "", fmt.Errorf("DateTime needs a time, got %T", v)
		}
		t = t.UTC()
		if t.Year() < 1970 || t.Year() > 2105 {
			return "", fmt.Errorf("time %s is outside ClickHouse DateTime's range (1970 to 2105)", t.Format(time.RFC3339))
		}
		return "toDateTime('" + t.Format("2006-01-02 15:04:05") + "', 'UTC')", nil
	case "String":
		s, ok := v.(string)
		if !ok {
			return "", fmt.Errorf("String needs a string, got %T", v)
		}
		return "'" + chQuote.Replace(s) + "'", nil
	case "UInt32":
		n, ok := v.(int64)
		if !ok || n < 0 || n > 1<<32-1 {
			return "", fmt.Errorf("UInt32 needs 0 to 4294967295, got %v", v)
		}
		return strconv.FormatInt(n, 10), nil
	}
	return "", fmt.Errorf("unsupported type %s", typ)
}

// pgLiteral renders v as a PostgreSQL literal (for Render only; Run binds).
func pgLiteral(v any) string {
	switch v := v.(type) {
	case time.Time:
		return "'" + v.UTC().Format(time.RFC3339Nano) + "'"
	case int64:
		return "'" + strconv.FormatInt(v, 10) + "'"
	case string:
		// standard_conforming_strings is on (the default since 9.1): only
		// the quote needs doubling. E'' strings are not used.
		return "'" + strings.ReplaceAll(v, "'", "''") + "'"
	}
	panic(fmt.Sprintf("query: pgLiteral: unexpected %T", v))
}

// Render returns the named query of a dialect with the normalized params
// filled in as literals, ready to paste into psql or clickhouse-client (for
// clients without query parameters, such as clickhouse-client 18.16). Run
// does not use it for PostgreSQL, which gets bind parameters instead.
func Render(dialect, name string, p Params) (string, error) {
	p = p.Normalize(time.Now())
	if err := p.ValidateFor(name); err != nil {
		return "", err
	}
	t, err := load(dialect, name)
	if err != nil {
		return "", err
	}
	if dialect == ClickHouse {
		s, err := t.clickhouse(p, name)
		if err != nil {
			return "", fmt.Errorf("query: %s: %w", name, err)
		}
		return s, nil
	}
	var b strings.Builder
	for i, param := range t.params {
		b.WriteString(t.text[i])
		v, err := paramValue(p, name, param)
		if err != nil {
			return "", err
		}
		b.WriteString(pgLiteral(v))
	}
	b.WriteString(t.text[len(t.text)-1])
	return b.String(), nil
}

// load reads and parses a query file.
func load(dialect, name string) (*template, error) {
	sql, err := SQL(dialect, name)
	if err != nil {
		return nil, err
	}
	t, err := parse(dialect, sql)
	if err != nil {
		return nil, fmt.Errorf("query: %s/%s.sql: %w", dialect, name, err)
	}
	return t, nil
}
