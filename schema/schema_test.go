package schema

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/llmtap/llmtap/ingest/store/storeerr"
)

const (
	pgAdminDSN = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
	pgTestDSN  = "postgres://postgres@127.0.0.1:5432/llmtap_test_schema?sslmode=disable"
	chTestDSN  = "clickhouse://127.0.0.1:9000/llmtap_test_schema"
)

func TestDialect(t *testing.T) {
	tests := []struct {
		dsn, want string
		err       bool
	}{
		{"postgres://u@h/db", Postgres, false},
		{"postgresql://u:p@h:5432/db?sslmode=disable", Postgres, false},
		{"clickhouse://h:9000/db", ClickHouse, false},
		{"tcp://h:9000/db", ClickHouse, false},
		{"CLICKHOUSE://h:9000", ClickHouse, false},
		{"mysql://h/db", "", true},
		{"h:5432", "", true},
		{"", "", true},
	}
	for _, tt := range tests {
		got, err := Dialect(tt.dsn)
		if (err != nil) != tt.err || got != tt.want {
			t.Errorf("Dialect(%q) = %q, %v; want %q, err %v", tt.dsn, got, err, tt.want, tt.err)
		}
	}
}

func TestRedact(t *testing.T) {
	tests := []struct{ in, want string }{
		{"postgres://alice:s3cret@h:5432/db?sslmode=disable", "postgres://alice@h:5432/db?sslmode=disable"},
		{"clickhouse://h:9000/db?password=s3cret&dial_timeout=1s", "clickhouse://h:9000/db?dial_timeout=1s"},
		{"postgres://h/db", "postgres://h/db"},
	}
	for _, tt := range tests {
		if got := Redact(tt.in); got != tt.want {
			t.Errorf("Redact(%q) = %q, want %q", tt.in, got, tt.want)
		}
		if strings.Contains(Redact(tt.in), "s3cret") {
			t.Errorf("Redact(%q) leaks the password", tt.in)
		}
	}
}

func TestMigrations(t *testing.T) {
	for _, d := range []string{Postgres, ClickHouse} {
		ms, err := Migrations(d)
		if err != nil {
			t.Fatal(err)
		}
		if len(ms) == 0 || ms[0].Version != 1 {
			t.Fatalf("%s: migrations %v", d, ms)
		}
		if Latest(d) != ms[len(ms)-1].Version {
			t.Errorf("%s: Latest = %d", d, Latest(d))
		}
		for _, m := range ms {
			for _, want := range []string{"llm_requests", "llm_rejects"} {
				if m.Version == 1 && !strings.Contains(m.SQL, want) {
					t.Errorf("%s %s lacks %s", d, m.Name, want)
				}
			}
		}
	}
	if _, err := Migrations("mysql"); err == nil {
		t.Error("Migrations(mysql) succeeded")
	}
}

func TestSplitStatements(t *testing.T) {
	got := SplitStatements("-- a; comment\nCREATE TABLE a (x UInt8);\n\n  -- x\nCREATE TABLE b (y String)\n;\n")
	want := []string{"CREATE TABLE a (x UInt8)", "CREATE TABLE b (y String)"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("got %q, want %q", got, want)
	}
}

func resetPG(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, pgAdminDSN)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS llmtap_test_schema WITH (FORCE)"); err != nil {
		t.Fatal(err)
	}
}

func resetCH(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	opts, _ := CHOptions("clickhouse://127.0.0.1:9000/default")
	conn, err := chOpen(ctx, opts, "")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.Exec(ctx, "DROP DATABASE IF EXISTS llmtap_test_schema"); err != nil {
		t.Fatal(err)
	}
}

func TestMigrateAndCheck(t *testing.T) {
	if testing.Short() {
		t.Skip("needs PostgreSQL and ClickHouse")
	}
	for _, tc := range []struct {
		dsn   string
		reset func(*testing.T)
	}{{pgTestDSN, resetPG}, {chTestDSN, resetCH}} {
		t.Run(tc.dsn[:strings.Index(tc.dsn, ":")], func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			tc.reset(t)
			d, _ := Dialect(tc.dsn)

			// No database at all: not migrated, version 0.
			err := Check(ctx, tc.dsn)
			want := fmt.Sprintf("store %s is not migrated (at version 0, need %d): run `llmtap migrate --store %s`", tc.dsn, Latest(d), tc.dsn)
			if err == nil || err.Error() != want {
				t.Fatalf("Check on empty store = %v\nwant %s", err, want)
			}
			if !errors.Is(err, ErrNotMigrated) || errors.Is(err, storeerr.ErrUnavailable) {
				t.Errorf("Check error classes wrong: %v", err)
			}

			// Concurrent first runs, then a second run: all succeed.
			var wg sync.WaitGroup
			errs := make([]error, 3)
			for i := range errs {
				wg.Add(1)
				go func() { defer wg.Done(); errs[i] = Migrate(ctx, tc.dsn, nil) }()
			}
			wg.Wait()
			for _, err := range errs {
				if err != nil && d == Postgres {
					t.Fatalf("concurrent Migrate: %v", err)
				}
			}
			if err := Migrate(ctx, tc.dsn, nil); err != nil {
				t.Fatalf("second Migrate: %v", err)
			}
			if err := Check(ctx, tc.dsn); err != nil {
				t.Fatalf("Check after Migrate: %v", err)
			}
		})
	}
}

func TestCheckEmptyDatabase(t *testing.T) {
	if testing.Short() {
		t.Skip("needs PostgreSQL")
	}
	ctx := context.Background()
	resetPG(t)
	conn, err := pgx.Connect(ctx, pgAdminDSN)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE llmtap_test_schema"); err != nil {
		t.Fatal(err)
	}
	err = Check(ctx, pgTestDSN)
	var nm *NotMigratedError
	if !errors.As(err, &nm) || nm.Current != 0 {
		t.Fatalf("Check on empty database = %v", err)
	}
	if !strings.Contains(err.Error(), "run `llmtap migrate --store "+pgTestDSN+"`") {
		t.Errorf("message does not say what to run: %v", err)
	}
}

func TestCheckUnreachable(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, dsn := range []string{
		"postgres://postgres:pw@127.0.0.1:1/x?sslmode=disable&connect_timeout=2",
		"clickhouse://127.0.0.1:1/x?dial_timeout=2s",
	} {
		err := Check(ctx, dsn)
		if !errors.Is(err, storeerr.ErrUnavailable) {
			t.Errorf("Check(%s) = %v, want ErrUnavailable", dsn, err)
		}
		if err != nil && strings.Contains(err.Error(), ":pw@") {
			t.Errorf("error leaks password: %v", err)
		}
		if err := Migrate(ctx, dsn, nil); !errors.Is(err, storeerr.ErrUnavailable) {
			t.Errorf("Migrate(%s) = %v, want ErrUnavailable", dsn, err)
		}
	}
}

func TestCheckEmptyDatabaseClickHouse(t *testing.T) {
	if testing.Short() {
		t.Skip("needs ClickHouse")
	}
	ctx := context.Background()
	resetCH(t)
	opts, _ := CHOptions("clickhouse://127.0.0.1:9000/default")
	conn, err := chOpen(ctx, opts, "")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.Exec(ctx, "CREATE DATABASE llmtap_test_schema"); err != nil {
		t.Fatal(err)
	}
	err = Check(ctx, chTestDSN)
	var nm *NotMigratedError
	if !errors.As(err, &nm) || nm.Current != 0 || nm.Latest != Latest(ClickHouse) {
		t.Fatalf("Check on empty database = %v", err)
	}
	if !strings.Contains(err.Error(), "run `llmtap migrate --store "+chTestDSN+"`") {
		t.Errorf("message does not say what to run: %v", err)
	}
}

// TestUpgrade: a store at an older version is reported as such and brought
// to the latest by Migrate (PostgreSQL has two migrations).
func TestUpgrade(t *testing.T) {
	if testing.Short() {
		t.Skip("needs PostgreSQL")
	}
	if Latest(Postgres) < 2 {
		t.Skip("one migration only")
	}
	ctx := context.Background()
	resetPG(t)
	if err := Migrate(ctx, pgTestDSN, nil); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, pgTestDSN)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "DELETE FROM schema_migrations WHERE version > 1"); err != nil {
		t.Fatal(err)
	}
	err = Check(ctx, pgTestDSN)
	want := fmt.Sprintf("store %s is not migrated (at version 1, need %d): run `llmtap migrate --store %s`", pgTestDSN, Latest(Postgres), pgTestDSN)
	if err == nil || err.Error() != want {
		t.Fatalf("Check = %v\nwant %s", err, want)
	}
	if err := Migrate(ctx, pgTestDSN, nil); err != nil {
		t.Fatalf("upgrade: %v", err)
	}
	if err := Check(ctx, pgTestDSN); err != nil {
		t.Fatalf("Check after upgrade: %v", err)
	}
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM schema_migrations").Scan(&n); err != nil || n != Latest(Postgres) {
		t.Errorf("schema_migrations has %d rows (%v), want %d", n, err, Latest(Postgres))
	}
}

func TestRender(t *testing.T) {
	ms, err := Migrations(ClickHouse)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		major, minor int
		codec        bool
	}{{18, 16, false}, {19, 17, false}, {20, 1, true}, {24, 8, true}} {
		for _, m := range ms {
			out := Render(m.SQL, tc.major, tc.minor)
			if strings.Contains(out, "{{") {
				t.Errorf("%d.%d %s: placeholder left", tc.major, tc.minor, m.Name)
			}
			if m.Version == 1 {
				stmts := strings.Join(SplitStatements(out), "\n")
				if got := strings.Contains(stmts, "CODEC(ZSTD(1))"); got != tc.codec {
					t.Errorf("%d.%d: codec %v, want %v", tc.major, tc.minor, got, tc.codec)
				}
				if !strings.Contains(stmts, "request_body      String") {
					t.Errorf("%d.%d: request_body column missing:\n%s", tc.major, tc.minor, stmts)
				}
			}
		}
	}
	for _, v := range []struct {
		in           string
		major, minor int
		ok           bool
	}{{"18.16.1", 18, 16, true}, {"24.8.4.13", 24, 8, true}, {"x", 0, 0, false}, {"23", 0, 0, false}} {
		ma, mi, ok := parseVersion(v.in)
		if ok != v.ok || (ok && (ma != v.major || mi != v.minor)) {
			t.Errorf("parseVersion(%q) = %d, %d, %v", v.in, ma, mi, ok)
		}
	}
}
