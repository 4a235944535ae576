// Package schema holds llmtap's tables for PostgreSQL and ClickHouse as
// numbered, embedded SQL migrations (postgres/NNNN_name.sql,
// clickhouse/NNNN_name.sql) and applies them.
//
// Each database records what it has applied in schema_migrations (version,
// name, applied_at). Migrate brings a store to the latest version and is safe
// to run again; Check tells whether a store is at the latest version, with an
// error that says which command to run when it is not.
//
// The tables are llm_requests (one row per request; the columns are
// ingest/record.Record in snake_case) and llm_rejects (entries that could not
// be decoded). The SQL files document the column types and the dedupe design
// of each dialect.
package schema

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/url"
	"path"
	"sort"
	"strconv"
	"strings"
)

// Dialects returned by Dialect.
const (
	Postgres   = "postgres"
	ClickHouse = "clickhouse"
)

//go:embed postgres/*.sql clickhouse/*.sql
var files embed.FS

// Migration is one numbered SQL file.
type Migration struct {
	Version int
	Name    string // file name without directory, e.g. 0001_init.sql
	SQL     string
}

// Migrations returns the dialect's migrations in version order.
func Migrations(dialect string) ([]Migration, error) {
	entries, err := fs.ReadDir(files, dialect)
	if err != nil {
		return nil, fmt.Errorf("schema: unknown dialect %q", dialect)
	}
	var out []Migration
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || !strings.HasSuffix(name, ".sql") {
			continue
		}
		num, _, ok := strings.Cut(name, "_")
		if !ok {
			return nil, fmt.Errorf("schema: migration %s/%s: name must be NNNN_name.sql", dialect, name)
		}
		v, err := strconv.Atoi(num)
		if err != nil || v <= 0 {
			return nil, fmt.Errorf("schema: migration %s/%s: bad version %q", dialect, name, num)
		}
		b, err := files.ReadFile(path.Join(dialect, name))
		if err != nil {
			return nil, fmt.Errorf("schema: read %s/%s: %w", dialect, name, err)
		}
		out = append(out, Migration{Version: v, Name: name, SQL: string(b)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version < out[j].Version })
	for i := 1; i < len(out); i++ {
		if out[i].Version == out[i-1].Version {
			return nil, fmt.Errorf("schema: %s: two migrations with version %d", dialect, out[i].Version)
		}
	}
	return out, nil
}

// Latest returns the highest migration version of the dialect.
func Latest(dialect string) int {
	ms, err := Migrations(dialect)
	if err != nil || len(ms) == 0 {
		return 0
	}
	return ms[len(ms)-1].Version
}

// Dialect returns Postgres for postgres:// and postgresql:// DSNs and
// ClickHouse for clickhouse:// and tcp:// (native protocol) DSNs.
func Dialect(dsn string) (string, error) {
	scheme, _, ok := strings.Cut(dsn, "://")
	if !ok {
		return "", fmt.Errorf("store %q: want a URL such as postgres://user@host:5432/db or clickhouse://host:9000/db", Redact(dsn))
	}
	switch strings.ToLower(scheme) {
	case "postgres", "postgresql":
		return Postgres, nil
	case "clickhouse", "tcp":
		return ClickHouse, nil
	}
	return "", fmt.Errorf("store %s: unsupported scheme %q (want postgres:// or clickhouse://)", Redact(dsn), scheme)
}

// Redact returns dsn without its password (user info keeps the user name;
// password= query parameters are dropped). Use it wherever a DSN is logged
// or shown.
func Redact(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil {
		// Unparseable: show only the scheme, which cannot hold a secret.
		if scheme, _, ok := strings.Cut(dsn, "://"); ok {
			return scheme + "://…"
		}
		return "…"
	}
	if u.User != nil {
		u.User = url.User(u.User.Username())
	}
	if q := u.Query(); q.Has("password") {
		q.Del("password")
		u.RawQuery = q.Encode()
	}
	return u.String()
}

// NotMigratedError reports a store below the latest schema version.
type NotMigratedError struct {
	DSN     string // redacted
	Current int
	Latest  int
}

func (e *NotMigratedError) Error() string {
	return fmt.Sprintf("store %s is not migrated (at version %d, need %d): run `llmtap migrate --store %s`",
		e.DSN, e.Current, e.Latest, e.DSN)
}

// ErrNotMigrated matches every *NotMigratedError with errors.Is.
var ErrNotMigrated = errors.New("store is not migrated")

// Is makes errors.Is(err, ErrNotMigrated) true.
func (e *NotMigratedError) Is(target error) bool { return target == ErrNotMigrated }

// Migrate creates or upgrades the store's tables to the latest version. It is
// idempotent; on PostgreSQL concurrent runs serialize on an advisory lock, on
// ClickHouse every statement is CREATE … IF NOT EXISTS (or otherwise
// re-runnable). A missing database is created first. logger may be nil.
func Migrate(ctx context.Context, dsn string, logger *slog.Logger) error {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	d, err := Dialect(dsn)
	if err != nil {
		return err
	}
	switch d {
	case Postgres:
		return migratePostgres(ctx, dsn, logger)
	default:
		return migrateClickHouse(ctx, dsn, logger)
	}
}

// Check returns nil if the store is migrated to the latest version, a
// *NotMigratedError (errors.Is ErrNotMigrated) if it is behind, and another
// error (wrapping store.ErrUnavailable when a retry may cure it) if it cannot
// tell.
func Check(ctx context.Context, dsn string) error {
	d, err := Dialect(dsn)
	if err != nil {
		return err
	}
	switch d {
	case Postgres:
		return checkPostgres(ctx, dsn)
	default:
		return checkClickHouse(ctx, dsn)
	}
}

// compare turns an applied version into Check's result.
func compare(dsn, dialect string, current int) error {
	latest := Latest(dialect)
	if current >= latest {
		return nil
	}
	return &NotMigratedError{DSN: Redact(dsn), Current: current, Latest: latest}
}
