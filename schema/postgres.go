package schema

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/llmtap/llmtap/ingest/store/classify"
)

// pgLockKey is the advisory lock that serializes concurrent migrations.
const pgLockKey int64 = 0x6c6c6d746170 // "llmtap"

const pgCreateMigrations = `CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer     NOT NULL PRIMARY KEY,
    name       text        NOT NULL DEFAULT '',
    applied_at timestamptz NOT NULL DEFAULT now()
)`

// PGQuerier is what CheckPostgres needs (*pgx.Conn, *pgxpool.Pool, pgx.Tx).
type PGQuerier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

func pgConnect(ctx context.Context, dsn string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("store %s: %w", Redact(dsn), err)
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = 10 * time.Second
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, classify.Postgres("connect "+Redact(dsn), err)
	}
	return conn, nil
}

func isPGCode(err error, code string) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == code
}

// pgCreateDatabase creates the DSN's database through the postgres database.
func pgCreateDatabase(ctx context.Context, dsn string, logger *slog.Logger) error {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return err
	}
	name := cfg.Database
	cfg.Database = "postgres"
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return classify.Postgres("connect to database postgres to create "+name, err)
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
	if err != nil && !isPGCode(err, "42P04") && !isPGCode(err, "23505") { // duplicate_database (or its race): someone else made it
		return classify.Postgres("create database "+name, err)
	}
	logger.Info("created database", "store", Redact(dsn), "database", name)
	return nil
}

func migratePostgres(ctx context.Context, dsn string, logger *slog.Logger) error {
	conn, err := pgConnect(ctx, dsn)
	if err != nil && isPGCode(err, "3D000") { // invalid_catalog_name: no such database
		if err := pgCreateDatabase(ctx, dsn, logger); err != nil {
			return err
		}
		conn, err = pgConnect(ctx, dsn)
	}
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())

	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", pgLockKey); err != nil {
		return classify.Postgres("migrate: lock", err)
	}
	defer conn.Exec(context.Background(), "SELECT pg_advisory_unlock($1)", pgLockKey) //nolint:errcheck // the session ends anyway

	if _, err := conn.Exec(ctx, pgCreateMigrations); err != nil {
		return classify.Postgres("migrate: create schema_migrations", err)
	}
	current, err := pgVersion(ctx, conn)
	if err != nil {
		return err
	}
	ms, err := Migrations(Postgres)
	if err != nil {
		return err
	}
	for _, m := range ms {
		if m.Version <= current {
			continue
		}
		start := time.Now()
		tx, err := conn.Begin(ctx)
		if err != nil {
			return classify.Postgres("migrate: begin", err)
		}
		// Simple protocol: a file may hold several statements.
		if _, err := tx.Conn().PgConn().Exec(ctx, m.SQL).ReadAll(); err != nil {
			tx.Rollback(context.Background()) //nolint:errcheck
			return classify.Postgres("migrate: apply "+m.Name, err)
		}
		if _, err := tx.Exec(ctx, "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", m.Version, m.Name); err != nil {
			tx.Rollback(context.Background()) //nolint:errcheck
			return classify.Postgres("migrate: record "+m.Name, err)
		}
		if err := tx.Commit(ctx); err != nil {
			return classify.Postgres("migrate: commit "+m.Name, err)
		}
		logger.Info("applied migration", "store", Redact(dsn), "version", m.Version, "name", m.Name, "took", time.Since(start))
	}
	return nil
}

// pgVersion returns the highest applied version, 0 if schema_migrations
// does not exist.
func pgVersion(ctx context.Context, q PGQuerier) (int, error) {
	var v int
	err := q.QueryRow(ctx, "SELECT coalesce(max(version), 0) FROM schema_migrations").Scan(&v)
	if isPGCode(err, "42P01") { // undefined_table
		return 0, nil
	}
	if err != nil {
		return 0, classify.Postgres("read schema version", err)
	}
	return v, nil
}

func checkPostgres(ctx context.Context, dsn string) error {
	conn, err := pgConnect(ctx, dsn)
	if isPGCode(err, "3D000") {
		return compare(dsn, Postgres, 0)
	}
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	return CheckPostgres(ctx, conn, dsn)
}

// CheckPostgres is Check over an open connection or pool; dsn is only used
// in the error message.
func CheckPostgres(ctx context.Context, q PGQuerier, dsn string) error {
	v, err := pgVersion(ctx, q)
	if err != nil {
		return err
	}
	return compare(dsn, Postgres, v)
}
