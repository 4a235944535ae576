// Package macro expands a Grafana SQL panel query the way Grafana does before
// the database sees it, for the two datasources llmtap's dashboards target:
// Grafana's PostgreSQL datasource and the ClickHouse plugin
// (grafana-clickhouse-datasource v4). Tests and benchmarks use it to run every
// generated panel query against a real database.
//
// Expansion happens in Grafana's order:
//
//  1. frontend: ClickHouse only, $__conditionalAll(cond, $var) becomes cond,
//     or 1=1 when $var is All;
//  2. frontend: template variables ($var, ${var}, ${var:format}) and the
//     global $__interval / $__interval_ms are interpolated with the
//     datasource's own formatter;
//  3. backend: the datasource's macros ($__timeFilter(col) …) are expanded.
//
// Only the macros each datasource documents are implemented, with the exact
// output strings of their sources (Grafana's sqleng PostgreSQL macro engine;
// the ClickHouse plugin's pkg/macros with grafana-plugin-sdk-go's sqlutil
// matcher). An unknown PostgreSQL macro is an error, as in Grafana; anything
// that still looks like a variable or macro after expansion is an error too,
// so a typo in a panel query fails a test instead of reaching the database.
//
// Functions are pure and safe for concurrent use.
package macro

import (
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Variable is the current state of one dashboard template variable.
type Variable struct {
	Name string
	// Values are the selected values (ignored when All is set).
	Values []string
	// All is set when the "All" option is selected.
	All bool
	// AllValue is the variable's custom all value. Grafana inserts it as is,
	// without the datasource's quoting. Empty means All expands to Options.
	AllValue string
	// Options are every value the variable offers (used for All without a
	// custom all value).
	Options []string
	// Multi is the variable's multi-select setting; IncludeAll its "Include
	// All option". Grafana's PostgreSQL formatter quotes a single value only
	// when one of them is set.
	Multi, IncludeAll bool
}

// Query is what Grafana knows when it runs a panel query.
type Query struct {
	From, To time.Time
	// Interval is the panel's $__interval (already bounded by the panel's
	// min interval and rounded by Grafana).
	Interval time.Duration
	Vars     []Variable
}

func (q Query) variable(name string) (Variable, bool) {
	for _, v := range q.Vars {
		if v.Name == name {
			return v, true
		}
	}
	return Variable{}, false
}

// FormatInterval is Grafana's gtime.FormatInterval: the largest whole unit
// (y, d, h, m, s, ms), rounded down. $__interval is spelled this way.
func FormatInterval(d time.Duration) string {
	const day = 24 * time.Hour
	const year = 365 * day
	switch {
	case d >= year:
		return fmt.Sprintf("%dy", d/year)
	case d >= day:
		return fmt.Sprintf("%dd", d/day)
	case d >= time.Hour:
		return fmt.Sprintf("%dh", d/time.Hour)
	case d >= time.Minute:
		return fmt.Sprintf("%dm", d/time.Minute)
	case d >= time.Second:
		return fmt.Sprintf("%ds", d/time.Second)
	case d >= time.Millisecond:
		return fmt.Sprintf("%dms", d/time.Millisecond)
	}
	return "1ms"
}

// ParseInterval is Grafana's gtime.ParseInterval for the units a panel
// query uses: Go durations plus d, w, M, y.
func ParseInterval(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	for unit, d := range map[string]time.Duration{"d": 24 * time.Hour, "w": 7 * 24 * time.Hour, "y": 365 * 24 * time.Hour} {
		if n, ok := strings.CutSuffix(s, unit); ok {
			if v, err := strconv.Atoi(n); err == nil {
				return time.Duration(v) * d, nil
			}
		}
	}
	if n, ok := strings.CutSuffix(s, "M"); ok {
		if v, err := strconv.Atoi(n); err == nil {
			return time.Duration(v) * 30 * 24 * time.Hour, nil
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("macro: interval %q: %w", s, err)
	}
	return d, nil
}

// ---------------------------------------------------------------------------
// Template variables (Grafana frontend, TemplateSrv).

// Grafana's variable regex: $var, [[var]] / [[var:fmt]], ${var} / ${var.path} / ${var:fmt}.
var variableRE = regexp.MustCompile(`\$(\w+)|\[\[(\w+?)(?::(\w+))?\]\]|\$\{(\w+)(?:\.([^:^\}]+))?(?::([^\}]+))?\}`)

// formatter is a datasource's default interpolation of a variable value
// (value is one string or a list).
type formatter func(values []string, isList bool, v Variable) string

// interpolate replaces template variables in sql. Unknown names are left as
// they are (Grafana does the same), which is how $__timeFilter etc. survive.
func interpolate(sql string, q Query, def formatter) (string, error) {
	var firstErr error
	out := variableRE.ReplaceAllStringFunc(sql, func(m string) string {
		sub := variableRE.FindStringSubmatch(m)
		name, format := sub[1], ""
		switch {
		case sub[2] != "":
			name, format = sub[2], sub[3]
		case sub[4] != "":
			name, format = sub[4], sub[6]
			if sub[5] != "" && firstErr == nil {
				firstErr = fmt.Errorf("macro: field path in %s is not supported", m)
			}
		}
		switch name {
		case "__interval":
			return FormatInterval(q.Interval)
		case "__interval_ms":
			return strconv.FormatInt(q.Interval.Milliseconds(), 10)
		}
		v, ok := q.variable(name)
		if !ok {
			return m
		}
		values, isList := v.Values, v.Multi || len(v.Values) != 1
		if v.All {
			if v.AllValue != "" && format != "text" && format != "percentencode" {
				// Custom all values skip formatting (TemplateSrv).
				return v.AllValue
			}
			values, isList = v.Options, true
		}
		if format == "" {
			return def(values, isList, v)
		}
		s, err := applyFormat(format, values, isList, v)
		if err != nil && firstErr == nil {
			firstErr = err
		}
		return s
	})
	return out, firstErr
}

// applyFormat implements Grafana's named variable formats used with SQL.
func applyFormat(format string, values []string, isList bool, v Variable) (string, error) {
	quote := func(q, esc string) string {
		parts := make([]string, len(values))
		for i, s := range values {
			parts[i] = q + strings.ReplaceAll(s, q, esc) + q
		}
		return strings.Join(parts, ",")
	}
	switch format {
	case "raw", "csv":
		return strings.Join(values, ","), nil
	case "sqlstring":
		return quote("'", "''"), nil
	case "singlequote":
		return quote("'", `\'`), nil
	case "doublequote":
		return quote(`"`, `\"`), nil
	case "pipe":
		return strings.Join(values, "|"), nil
	case "text":
		if v.All {
			return "All", nil
		}
		return strings.Join(values, " + "), nil
	}
	return "", fmt.Errorf("macro: variable format %q is not supported", format)
}

// postgresFormat is the PostgreSQL datasource's interpolateVariable: values
// of multi-select or include-All variables are quoted as SQL literals and
// comma-joined; a single value of a plain variable only has quotes doubled.
func postgresFormat(values []string, isList bool, v Variable) string {
	lit := func(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
	if !isList {
		if v.Multi || v.IncludeAll {
			return lit(values[0])
		}
		return strings.ReplaceAll(values[0], "'", "''")
	}
	parts := make([]string, len(values))
	for i, s := range values {
		parts[i] = lit(s)
	}
	return strings.Join(parts, ",")
}

// clickHouseFormat is the ClickHouse plugin's format(): a list becomes
// 'a','b' (the plugin does not escape quotes inside values); a single value
// is inserted raw.
func clickHouseFormat(values []string, isList bool, _ Variable) string {
	if !isList {
		return values[0]
	}
	return "'" + strings.Join(values, "','") + "'"
}

// ---------------------------------------------------------------------------
// PostgreSQL (Grafana sqleng + postgres macro engine).

var pgMacroRE = regexp.MustCompile(`\$([_a-zA-Z0-9]+)\(([^\)]*)\)`)

// Postgres expands sql as Grafana's PostgreSQL datasource does.
func Postgres(sql string, q Query) (string, error) {
	sql, err := interpolate(sql, q, postgresFormat)
	if err != nil {
		return "", err
	}
	// sqleng.Interpolate.
	sql = strings.ReplaceAll(sql, "$__interval_ms", strconv.FormatInt(q.Interval.Milliseconds(), 10))
	sql = strings.ReplaceAll(sql, "$__interval", FormatInterval(q.Interval))
	sql = strings.ReplaceAll(sql, "$__unixEpochFrom()", strconv.FormatInt(q.From.UTC().Unix(), 10))
	sql = strings.ReplaceAll(sql, "$__unixEpochTo()", strconv.FormatInt(q.To.UTC().Unix(), 10))

	var firstErr error
	sql = pgMacroRE.ReplaceAllStringFunc(sql, func(m string) string {
		sub := pgMacroRE.FindStringSubmatch(m)
		var args []string
		for _, a := range strings.Split(sub[2], ",") {
			args = append(args, strings.TrimSpace(a))
		}
		s, err := postgresMacro(sub[1], args, q)
		if err != nil && firstErr == nil {
			firstErr = err
		}
		return s
	})
	if firstErr != nil {
		return "", firstErr
	}
	return sql, leftovers(sql)
}

func postgresMacro(name string, args []string, q Query) (string, error) {
	from, to := q.From.UTC(), q.To.UTC()
	need := func(n int) error {
		if len(args) < n || args[0] == "" {
			return fmt.Errorf("macro: $%s needs %d argument(s), got %q", name, n, strings.Join(args, ","))
		}
		return nil
	}
	group := func(seconds string) (string, error) {
		if len(args) < 2 {
			return "", fmt.Errorf("macro: $%s needs a column and an interval", name)
		}
		d, err := ParseInterval(strings.Trim(args[1], `'`))
		if err != nil {
			return "", err
		}
		if len(args) == 3 {
			switch f := args[2]; f {
			case "NULL", "previous", "0":
			default:
				if _, err := strconv.ParseFloat(f, 64); err != nil {
					return "", fmt.Errorf("macro: $%s fill %q", name, f)
				}
			}
		}
		return fmt.Sprintf(seconds, args[0], d.Seconds(), d.Seconds()), nil
	}
	switch name {
	case "__time":
		if err := need(1); err != nil {
			return "", err
		}
		return fmt.Sprintf(`%s AS "time"`, args[0]), nil
	case "__timeEpoch":
		if err := need(1); err != nil {
			return "", err
		}
		return fmt.Sprintf(`extract(epoch from %s) as "time"`, args[0]), nil
	case "__timeFilter":
		if err := need(1); err != nil {
			return "", err
		}
		return fmt.Sprintf("%s BETWEEN '%s' AND '%s'", args[0], from.Format(time.RFC3339Nano), to.Format(time.RFC3339Nano)), nil
	case "__timeFrom":
		return fmt.Sprintf("'%s'", from.Format(time.RFC3339Nano)), nil
	case "__timeTo":
		return fmt.Sprintf("'%s'", to.Format(time.RFC3339Nano)), nil
	case "__timeGroup":
		return group("floor(extract(epoch from %s)/%v)*%v")
	case "__timeGroupAlias":
		s, err := group("floor(extract(epoch from %s)/%v)*%v")
		if err != nil {
			return "", err
		}
		return s + ` AS "time"`, nil
	case "__unixEpochFilter":
		if err := need(1); err != nil {
			return "", err
		}
		return fmt.Sprintf("%s >= %d AND %s <= %d", args[0], from.Unix(), args[0], to.Unix()), nil
	case "__unixEpochNanoFilter":
		if err := need(1); err != nil {
			return "", err
		}
		return fmt.Sprintf("%s >= %d AND %s <= %d", args[0], from.UnixNano(), args[0], to.UnixNano()), nil
	case "__unixEpochNanoFrom":
		return strconv.FormatInt(from.UnixNano(), 10), nil
	case "__unixEpochNanoTo":
		return strconv.FormatInt(to.UnixNano(), 10), nil
	case "__unixEpochGroup":
		return group("floor((%s)/%v)*%v")
	case "__unixEpochGroupAlias":
		s, err := group("floor((%s)/%v)*%v")
		if err != nil {
			return "", err
		}
		return s + ` AS "time"`, nil
	}
	return "", fmt.Errorf("macro: unknown PostgreSQL macro %q", "$"+name)
}

// ---------------------------------------------------------------------------
// ClickHouse (plugin frontend + pkg/macros + sqlutil.Interpolate).

// ClickHouse expands sql as the ClickHouse plugin (v4) does. The plugin
// applies its macros in Go map order, which is random; ClickHouse expands in
// two opposite orders and returns an error when they disagree, because such
// a query breaks at random in Grafana.
func ClickHouse(sql string, q Query) (string, error) {
	a, err := clickHouse(sql, q, false)
	if err != nil {
		return "", err
	}
	b, err := clickHouse(sql, q, true)
	if err != nil {
		return "", err
	}
	if a != b {
		return "", fmt.Errorf("macro: ClickHouse expansion depends on macro order:\n%s\n--- vs ---\n%s", a, b)
	}
	return a, nil
}

// clickHouseMacroNames is the plugin's macro table (pkg/macros.Macros); dt is
// the plugin's alias of dateTimeFilter.
var clickHouseMacroNames = []string{
	"fromTime", "toTime", "fromTime_ms", "toTime_ms", "timeFilter", "timeFilter_ms",
	"dateFilter", "dateTimeFilter", "dt", "timeInterval", "timeInterval_ms", "interval_s",
}

// clickHouse expands with the macro table in sorted (or reverse sorted)
// order. Grafana walks a Go map, so the order is random; a query whose
// expansion depends on the order is broken in production, and tests compare
// both orders to catch it.
func clickHouse(sql string, q Query, reverse bool) (string, error) {
	sql, err := conditionalAll(sql, q)
	if err != nil {
		return "", err
	}
	sql, err = interpolate(sql, q, clickHouseFormat)
	if err != nil {
		return "", err
	}
	names := append([]string(nil), clickHouseMacroNames...)
	sort.Strings(names)
	if reverse {
		sort.Sort(sort.Reverse(sort.StringSlice(names)))
	}
	for _, name := range names {
		for _, m := range macroMatches(sql, name) {
			var args []string
			if m.hasParens {
				for _, a := range strings.Split(m.args, ",") {
					args = append(args, strings.TrimSpace(a))
				}
			}
			res, err := clickHouseMacro(name, args, q)
			if err != nil {
				return "", err
			}
			sql = strings.ReplaceAll(sql, m.text, res)
		}
	}
	return sql, leftovers(sql)
}

type macroMatch struct {
	text      string // what is replaced
	args      string
	hasParens bool
}

// macroMatches is sqlutil.getMacroMatches: after `$__name\b` it scans to the
// first '(' and its matching ')', stopping early only at an unmatched ')'.
// A macro without arguments (e.g. $__interval_s) that is followed by a '('
// before any ')' therefore swallows the text up to that parenthesis group:
// panel SQL must avoid that, and this function reproduces it faithfully.
func macroMatches(sql, name string) []macroMatch {
	re := regexp.MustCompile(`\$__` + regexp.QuoteMeta(name) + `\b`)
	var out []macroMatch
	for _, loc := range re.FindAllStringIndex(sql, -1) {
		rest := sql[loc[0]:]
		end, argStart, depth := 0, 0, 0
	scan:
		for i, r := range rest {
			if depth == 0 && end > 0 {
				break
			}
			switch r {
			case '(':
				depth++
				if argStart == 0 {
					argStart = i + 1
				}
			case ')':
				if depth == 0 {
					end = 0
					break scan
				}
				depth--
				end = i + 1
			}
		}
		if end == 0 {
			end = loc[1] - loc[0]
		}
		m := macroMatch{text: rest[:end]}
		if argStart > 0 && argStart <= end-1 {
			m.args, m.hasParens = rest[argStart:end-1], true
		}
		out = append(out, m)
	}
	return out
}

func clickHouseMacro(name string, args []string, q Query) (string, error) {
	from, to := q.From, q.To
	dt := func(t time.Time) string { return fmt.Sprintf("toDateTime(%d)", t.Unix()) }
	dt64 := func(t time.Time) string { return fmt.Sprintf("fromUnixTimestamp64Milli(%d)", t.UnixMilli()) }
	date := func(t time.Time) string { return fmt.Sprintf("toDate('%s')", t.Format("2006-01-02")) }
	need := func(n int) error {
		if len(args) != n {
			return fmt.Errorf("macro: $__%s: unexpected number of arguments: expected %d argument(s), received %d", name, n, len(args))
		}
		return nil
	}
	switch name {
	case "fromTime":
		return dt(from), nil
	case "toTime":
		return dt(to), nil
	case "fromTime_ms":
		return dt64(from), nil
	case "toTime_ms":
		return dt64(to), nil
	case "timeFilter":
		if err := need(1); err != nil {
			return "", err
		}
		return fmt.Sprintf("%s >= %s AND %s <= %s", args[0], dt(from), args[0], dt(to)), nil
	case "timeFilter_ms":
		if err := need(1); err != nil {
			return "", err
		}
		return fmt.Sprintf("%s >= %s AND %s <= %s", args[0], dt64(from), args[0], dt64(to)), nil
	case "dateFilter":
		if err := need(1); err != nil {
			return "", err
		}
		return fmt.Sprintf("%s >= %s AND %s <= %s", args[0], date(from), args[0], date(to)), nil
	case "dateTimeFilter", "dt":
		if err := need(2); err != nil {
			return "", err
		}
		return fmt.Sprintf("(%s >= %s AND %s <= %s) AND (%s >= %s AND %s <= %s)",
			args[0], date(from), args[0], date(to), args[1], dt(from), args[1], dt(to)), nil
	case "timeInterval":
		if err := need(1); err != nil {
			return "", err
		}
		return fmt.Sprintf("toStartOfInterval(toDateTime(%s), INTERVAL %d second)", args[0], intervalSeconds(q)), nil
	case "timeInterval_ms":
		if err := need(1); err != nil {
			return "", err
		}
		ms := max(q.Interval.Milliseconds(), 1)
		return fmt.Sprintf("toStartOfInterval(toDateTime64(%s, 3), INTERVAL %d millisecond)", args[0], ms), nil
	case "interval_s":
		return strconv.Itoa(intervalSeconds(q)), nil
	}
	return "", fmt.Errorf("macro: unknown ClickHouse macro $__%s", name)
}

func intervalSeconds(q Query) int { return max(int(q.Interval.Seconds()), 1) }

// conditionalAll is the plugin frontend's applyConditionalAll: it walks the
// query from the last $__conditionalAll( backwards, reading two balanced
// arguments, and keeps the condition unless the variable is All (or empty).
func conditionalAll(sql string, q Query) (string, error) {
	const macro = "$__conditionalAll("
	for i := strings.LastIndex(sql, macro); i >= 0; i = strings.LastIndex(sql, macro) {
		open := i + len(macro) - 1
		args, end, err := balancedArgs(sql, open)
		if err != nil {
			return "", err
		}
		if len(args) != 2 {
			return "", fmt.Errorf("macro: $__conditionalAll needs 2 arguments, got %d", len(args))
		}
		phrase := args[0]
		name := strings.Trim(strings.TrimSpace(args[1]), "${}")
		if v, ok := q.variable(name); ok && (v.All || len(v.Values) == 0 || len(v.Values) == 1 && v.Values[0] == "") {
			phrase = "1=1"
		}
		sql = sql[:i] + phrase + sql[end:]
	}
	return sql, nil
}

// balancedArgs splits the argument list that starts at the '(' at open into
// top-level comma-separated arguments; end is the index after the ')'.
func balancedArgs(s string, open int) (args []string, end int, err error) {
	depth, start := 0, open+1
	for i := open; i < len(s); i++ {
		switch s[i] {
		case '(':
			depth++
		case ')':
			depth--
			if depth == 0 {
				return append(args, s[start:i]), i + 1, nil
			}
		case ',':
			if depth == 1 {
				args = append(args, s[start:i])
				start = i + 1
			}
		}
	}
	return nil, 0, fmt.Errorf("macro: unbalanced parentheses after %q", s[max(open-20, 0):open+1])
}

// leftovers reports a variable or macro reference that survived expansion.
var leftoverRE = regexp.MustCompile(`\$\{?\w+|\[\[\w+`)

func leftovers(sql string) error {
	if m := leftoverRE.FindString(sql); m != "" {
		return fmt.Errorf("macro: %q is left unexpanded", m)
	}
	return nil
}
