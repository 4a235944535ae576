package query

import (
	"context"
	"errors"
	"fmt"
	"math"
	"reflect"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	chdriver "github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/jackc/pgx/v5"

	"github.com/llmtap/llmtap/schema"
)

// Result is the outcome of a named query: column names and rows in the
// query's order. Cell values are nil (SQL NULL), int64, float64, bool or
// string; times are strings (UTC RFC 3339).
type Result struct {
	Columns []string
	Rows    [][]any
}

// MaxResultRows bounds the rows Run keeps in memory; a query that returns
// more (rpm over months, say) fails with an error that suggests a narrower
// window or an export.
var MaxResultRows = 1000000

func tooMany(n int) error {
	return fmt.Errorf("more than %d result rows: narrow --from/--to or filter by --consumer (or use llmtap export for raw rows)", n)
}

// boolColumns are returned as bool on both dialects (ClickHouse stores them as
// UInt8).
var boolColumns = map[string]bool{"stream": true, "truncated": true}

// Run runs the named query against the store at dsn and returns all its rows
// (the row-returning queries are bounded by Params.Limit; the aggregates by
// the number of consumers, minutes or days in the window, and all of them by
// MaxResultRows, beyond which Run fails rather than fill the memory). p is
// normalized (Params.Normalize with the current time) and validated
// (Params.ValidateFor) first. Run opens and closes its own connection.
func Run(ctx context.Context, dsn, name string, p Params) (*Result, error) {
	p = p.Normalize(time.Now())
	if err := p.ValidateFor(name); err != nil {
		return nil, err
	}
	dialect, err := schema.Dialect(dsn)
	if err != nil {
		return nil, fmt.Errorf("query: %w", err)
	}
	t, err := load(dialect, name)
	if err != nil {
		return nil, err
	}
	var res *Result
	switch dialect {
	case Postgres:
		res, err = runPostgres(ctx, dsn, t, name, p)
	case ClickHouse:
		res, err = runClickHouse(ctx, dsn, t, name, p)
	default:
		err = fmt.Errorf("unsupported dialect %q", dialect)
	}
	if err != nil {
		return nil, fmt.Errorf("query %s on %s: %w", name, schema.Redact(dsn), err)
	}
	for c, col := range res.Columns {
		if !boolColumns[col] {
			continue
		}
		for _, row := range res.Rows {
			if n, ok := row[c].(int64); ok {
				row[c] = n != 0
			}
		}
	}
	return res, nil
}

func connectPostgres(ctx context.Context, dsn string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("parse dsn: %w", err)
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = 10 * time.Second
	}
	if cfg.RuntimeParams == nil {
		cfg.RuntimeParams = map[string]string{}
	}
	// Audit queries read only; the session is made read-only so that no
	// query file can change data, whatever it contains.
	cfg.RuntimeParams["default_transaction_read_only"] = "on"
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	return conn, nil
}

func runPostgres(ctx context.Context, dsn string, t *template, name string, p Params) (*Result, error) {
	sql, args, err := t.postgres(p, name)
	if err != nil {
		return nil, err
	}
	conn, err := connectPostgres(ctx, dsn)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctx, sql, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	res := &Result{}
	for _, f := range rows.FieldDescriptions() {
		res.Columns = append(res.Columns, f.Name)
	}
	for rows.Next() {
		vals, err := rows.Values()
		if err != nil {
			return nil, err
		}
		row := make([]any, len(vals))
		for i, v := range vals {
			if row[i], err = normalize(v); err != nil {
				return nil, fmt.Errorf("column %s: %w", res.Columns[i], err)
			}
		}
		if len(res.Rows) == MaxResultRows {
			return nil, tooMany(MaxResultRows)
		}
		res.Rows = append(res.Rows, row)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return res, nil
}

func connectClickHouse(ctx context.Context, dsn string) (chdriver.Conn, error) {
	opts, err := schema.CHOptions(dsn)
	if err != nil {
		return nil, err
	}
	conn, err := clickhouse.Open(opts)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	if err := conn.Ping(ctx); err != nil {
		conn.Close()
		return nil, fmt.Errorf("connect: %w", err)
	}
	return conn, nil
}

// chReadOnly makes a ClickHouse query read-only (readonly=2 still allows
// per-query settings such as max_block_size).
func chReadOnly(ctx context.Context, settings clickhouse.Settings, opts ...clickhouse.QueryOption) context.Context {
	s := clickhouse.Settings{"readonly": 2}
	for k, v := range settings {
		s[k] = v
	}
	return clickhouse.Context(ctx, append(opts, clickhouse.WithSettings(s))...)
}

func runClickHouse(ctx context.Context, dsn string, t *template, name string, p Params) (*Result, error) {
	sql, err := t.clickhouse(p, name)
	if err != nil {
		return nil, err
	}
	conn, err := connectClickHouse(ctx, dsn)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	rows, err := conn.Query(chReadOnly(ctx, nil), sql)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	res := &Result{Columns: rows.Columns()}
	types := rows.ColumnTypes()
	dest := make([]any, len(types))
	for i, ct := range types {
		dest[i] = reflect.New(ct.ScanType()).Interface()
	}
	for rows.Next() {
		if err := rows.Scan(dest...); err != nil {
			return nil, err
		}
		row := make([]any, len(dest))
		for i, d := range dest {
			if row[i], err = normalize(reflect.ValueOf(d).Elem().Interface()); err != nil {
				return nil, fmt.Errorf("column %s: %w", res.Columns[i], err)
			}
		}
		if len(res.Rows) == MaxResultRows {
			return nil, tooMany(MaxResultRows)
		}
		res.Rows = append(res.Rows, row)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return res, nil
}

// normalize maps a driver value to nil, int64, float64, bool or string.
func normalize(v any) (any, error) {
	if v == nil {
		return nil, nil
	}
	rv := reflect.ValueOf(v)
	for rv.Kind() == reflect.Pointer {
		if rv.IsNil() {
			return nil, nil
		}
		rv = rv.Elem()
	}
	switch x := rv.Interface().(type) {
	case time.Time:
		return x.UTC().Format(time.RFC3339Nano), nil
	case fmt.Stringer:
		if rv.Kind() == reflect.Array { // UUIDs
			return x.String(), nil
		}
	case [16]byte: // pgx uuid
		return fmt.Sprintf("%x-%x-%x-%x-%x", x[0:4], x[4:6], x[6:8], x[8:10], x[10:16]), nil
	}
	switch rv.Kind() {
	case reflect.Bool:
		return rv.Bool(), nil
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return rv.Int(), nil
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		u := rv.Uint()
		if u > math.MaxInt64 {
			return nil, fmt.Errorf("value %d overflows int64", u)
		}
		return int64(u), nil
	case reflect.Float32, reflect.Float64:
		return rv.Float(), nil
	case reflect.String:
		return rv.String(), nil
	case reflect.Slice:
		if rv.Type().Elem().Kind() == reflect.Uint8 {
			return string(rv.Bytes()), nil
		}
	}
	return nil, errors.New("unsupported value type " + rv.Type().String())
}
