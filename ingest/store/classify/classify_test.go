package classify

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/llmtap/llmtap/ingest/store/storeerr"
)

func TestPostgres(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"refused", &net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}, true},
		{"reset", fmt.Errorf("read: %w", syscall.ECONNRESET), true},
		{"eof", io.ErrUnexpectedEOF, true},
		{"deadline", context.DeadlineExceeded, true},
		{"admin shutdown", &pgconn.PgError{Code: "57P01"}, true},
		{"cannot connect now", &pgconn.PgError{Code: "57P03"}, true},
		{"connection failure", &pgconn.PgError{Code: "08006"}, true},
		{"too many connections", &pgconn.PgError{Code: "53300"}, true},
		{"deadlock", &pgconn.PgError{Code: "40P01"}, true},
		{"unique violation", &pgconn.PgError{Code: "23505"}, false},
		{"bad utf8 / nul", &pgconn.PgError{Code: "22021"}, false},
		{"undefined table", &pgconn.PgError{Code: "42P01"}, false},
		{"canceled by caller", context.Canceled, false},
		{"plain", errors.New("boom"), false},
	}
	for _, tt := range tests {
		err := Postgres("op", tt.err)
		if got := errors.Is(err, storeerr.ErrUnavailable); got != tt.want {
			t.Errorf("%s: unavailable = %v, want %v (%v)", tt.name, got, tt.want, err)
		}
		if !errors.Is(err, tt.err) {
			t.Errorf("%s: cause lost: %v", tt.name, err)
		}
	}
	if Postgres("op", nil) != nil || ClickHouse("op", nil) != nil {
		t.Error("nil error not kept nil")
	}
}

func TestClickHouse(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"refused", &net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}, true},
		{"eof", io.EOF, true},
		{"acquire timeout", clickhouse.ErrAcquireConnTimeout, true},
		{"too many parts", &clickhouse.Exception{Code: 252}, true},
		{"timeout", &clickhouse.Exception{Code: 159}, true},
		{"memory", &clickhouse.Exception{Code: 241}, true},
		{"syntax", &clickhouse.Exception{Code: 62}, false},
		{"unknown table", &clickhouse.Exception{Code: 60}, false},
		{"type mismatch", &clickhouse.Exception{Code: 53}, false},
		{"plain", errors.New("boom"), false},
	}
	for _, tt := range tests {
		err := ClickHouse("op", tt.err)
		if got := errors.Is(err, storeerr.ErrUnavailable); got != tt.want {
			t.Errorf("%s: unavailable = %v, want %v (%v)", tt.name, got, tt.want, err)
		}
	}
}
