package schema

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/llmtap/llmtap/ingest/store/classify"
)

// chCreateMigrations works on 18.16 (no DEFAULT now64, no DateTime64).
const chCreateMigrations = `CREATE TABLE IF NOT EXISTS schema_migrations (
    version    UInt32,
    name       String,
    applied_at DateTime('UTC')
) ENGINE = MergeTree ORDER BY version`

// CHOptions parses a clickhouse:// or tcp:// DSN into driver options for
// the native protocol (the HTTP protocol is refused by 18.16).
func CHOptions(dsn string) (*clickhouse.Options, error) {
	if s, rest, ok := strings.Cut(dsn, "://"); ok && strings.EqualFold(s, "tcp") {
		dsn = "clickhouse://" + rest
	}
	opts, err := clickhouse.ParseDSN(dsn)
	if err != nil {
		return nil, fmt.Errorf("store %s: %w", Redact(dsn), err)
	}
	opts.Protocol = clickhouse.Native
	if opts.DialTimeout == 0 {
		opts.DialTimeout = 10 * time.Second
	}
	return opts, nil
}

func chOpen(ctx context.Context, opts *clickhouse.Options, dsn string) (driver.Conn, error) {
	conn, err := clickhouse.Open(opts)
	if err != nil {
		return nil, classify.ClickHouse("connect "+Redact(dsn), err)
	}
	if err := conn.Ping(ctx); err != nil {
		conn.Close()
		return nil, classify.ClickHouse("connect "+Redact(dsn), err)
	}
	return conn, nil
}

func chCode(err error, code int32) bool {
	var ex *clickhouse.Exception
	return errors.As(err, &ex) && ex.Code == code
}

// SplitStatements splits a migration file into statements: "--" comment
// lines are dropped and statements end with ";". Statements must not hold
// ";" inside string literals.
func SplitStatements(sql string) []string {
	var b strings.Builder
	for _, line := range strings.Split(sql, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "--") {
			continue
		}
		b.WriteString(line)
		b.WriteByte('\n')
	}
	var out []string
	for _, s := range strings.Split(b.String(), ";") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

func migrateClickHouse(ctx context.Context, dsn string, logger *slog.Logger) error {
	opts, err := CHOptions(dsn)
	if err != nil {
		return err
	}
	db := opts.Auth.Database
	if db != "" && db != "default" {
		o := *opts
		o.Auth.Database = "default"
		conn, err := chOpen(ctx, &o, dsn)
		if err != nil {
			return err
		}
		err = conn.Exec(ctx, "CREATE DATABASE IF NOT EXISTS `"+strings.ReplaceAll(db, "`", "\\`")+"`")
		conn.Close()
		if err != nil {
			return classify.ClickHouse("create database "+db, err)
		}
	}
	conn, err := chOpen(ctx, opts, dsn)
	if err != nil {
		return err
	}
	defer conn.Close()

	major, minor, err := ServerVersion(ctx, conn)
	if err != nil {
		return err
	}
	if err := conn.Exec(ctx, chCreateMigrations); err != nil {
		return classify.ClickHouse("migrate: create schema_migrations", err)
	}
	current, err := chVersion(ctx, conn)
	if err != nil {
		return err
	}
	ms, err := Migrations(ClickHouse)
	if err != nil {
		return err
	}
	for _, m := range ms {
		if m.Version <= current {
			continue
		}
		start := time.Now()
		sql := Render(m.SQL, major, minor)
		// ClickHouse has no transactions: every statement must be safe to
		// run again (IF NOT EXISTS), so an interrupted migration is
		// finished by the next run.
		for _, stmt := range SplitStatements(sql) {
			if err := conn.Exec(ctx, stmt); err != nil {
				if chCode(err, 44) && isAddColumn(stmt) {
					// ILLEGAL_COLUMN "already exists": 18.16 has no
					// ADD COLUMN IF NOT EXISTS, so a re-run lands here.
					continue
				}
				return classify.ClickHouse("migrate: apply "+m.Name, err)
			}
		}
		// Column list and Append: PrepareBatch needs both on 18.16.
		batch, err := conn.PrepareBatch(ctx, "INSERT INTO schema_migrations (version, name, applied_at)")
		if err != nil {
			return classify.ClickHouse("migrate: record "+m.Name, err)
		}
		if err := batch.Append(uint32(m.Version), m.Name, time.Now().UTC()); err != nil {
			batch.Abort()
			return fmt.Errorf("migrate: record %s: %w", m.Name, err)
		}
		if err := batch.Send(); err != nil {
			return classify.ClickHouse("migrate: record "+m.Name, err)
		}
		logger.Info("applied migration", "store", Redact(dsn), "version", m.Version, "name", m.Name, "took", time.Since(start))
	}
	return nil
}

// isAddColumn tells whether stmt is an ALTER TABLE … ADD COLUMN.
func isAddColumn(stmt string) bool {
	u := strings.ToUpper(strings.Join(strings.Fields(stmt), " "))
	return strings.HasPrefix(u, "ALTER TABLE ") && strings.Contains(u, " ADD COLUMN ")
}

// ServerVersion returns the ClickHouse server's major and minor version
// (18, 16 for 18.16.1).
func ServerVersion(ctx context.Context, conn driver.Conn) (major, minor int, err error) {
	var v string
	if err := conn.QueryRow(ctx, "SELECT version()").Scan(&v); err != nil {
		return 0, 0, classify.ClickHouse("read server version", err)
	}
	major, minor, ok := parseVersion(v)
	if !ok {
		return 0, 0, fmt.Errorf("clickhouse: cannot parse server version %q", v)
	}
	return major, minor, nil
}

func parseVersion(v string) (major, minor int, ok bool) {
	parts := strings.SplitN(v, ".", 3)
	if len(parts) < 2 {
		return 0, 0, false
	}
	major, err1 := strconv.Atoi(parts[0])
	minor, err2 := strconv.Atoi(parts[1])
	return major, minor, err1 == nil && err2 == nil
}

// Render fills a ClickHouse migration's version-dependent placeholders for
// a server major.minor:
//
//	{{codec_text}}  CODEC(ZSTD(1)) on >= 20.1, empty before (no codecs in 18.16)
func Render(sql string, major, minor int) string {
	codec := ""
	if major > 20 || (major == 20 && minor >= 1) {
		codec = "CODEC(ZSTD(1))"
	}
	return strings.NewReplacer("{{codec_text}}", codec).Replace(sql)
}

// chVersion returns the highest applied version, 0 if schema_migrations or
// the database does not exist.
func chVersion(ctx context.Context, conn driver.Conn) (int, error) {
	var v uint32
	err := conn.QueryRow(ctx, "SELECT max(version) FROM schema_migrations").Scan(&v)
	if chCode(err, 60) || chCode(err, 81) { // UNKNOWN_TABLE, UNKNOWN_DATABASE
		return 0, nil
	}
	if err != nil {
		return 0, classify.ClickHouse("read schema version", err)
	}
	return int(v), nil
}

func checkClickHouse(ctx context.Context, dsn string) error {
	opts, err := CHOptions(dsn)
	if err != nil {
		return err
	}
	conn, err := chOpen(ctx, opts, dsn)
	if chCode(err, 81) {
		return compare(dsn, ClickHouse, 0)
	}
	if err != nil {
		return err
	}
	defer conn.Close()
	return CheckClickHouse(ctx, conn, dsn)
}

// CheckClickHouse is Check over an open connection; dsn is only used in the
// error message.
func CheckClickHouse(ctx context.Context, conn driver.Conn, dsn string) error {
	v, err := chVersion(ctx, conn)
	if err != nil {
		return err
	}
	return compare(dsn, ClickHouse, v)
}
