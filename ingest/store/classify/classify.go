// Package classify sorts PostgreSQL and ClickHouse errors into those a retry
// may cure (wrapped with storeerr.ErrUnavailable) and the rest (constraint,
// type and syntax errors, which a retry repeats).
package classify

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/llmtap/llmtap/ingest/store/storeerr"
)

// Postgres returns err annotated with what and wrapped with
// storeerr.ErrUnavailable when err is transient. nil stays nil.
func Postgres(what string, err error) error {
	if err == nil {
		return nil
	}
	if transientPG(err) {
		return fmt.Errorf("%s: %w: %w", what, storeerr.ErrUnavailable, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// ClickHouse is Postgres for ClickHouse errors.
func ClickHouse(what string, err error) error {
	if err == nil {
		return nil
	}
	if transientCH(err) {
		return fmt.Errorf("%s: %w: %w", what, storeerr.ErrUnavailable, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

func transientNet(err error) bool {
	if errors.Is(err, storeerr.ErrUnavailable) {
		return true
	}
	if errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, net.ErrClosed) || errors.Is(err, driver.ErrBadConn) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.ECONNABORTED) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, syscall.ETIMEDOUT) || errors.Is(err, syscall.EHOSTUNREACH) ||
		errors.Is(err, syscall.ENETUNREACH) {
		return true
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return true // dial, read and write errors on the socket
	}
	var oe *net.OpError
	return errors.As(err, &oe)
}

func transientPG(err error) bool {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch {
		case len(pe.Code) >= 2 && pe.Code[:2] == "08": // connection exception
			return true
		case len(pe.Code) >= 2 && pe.Code[:2] == "53": // insufficient resources (disk full, too many connections)
			return true
		case pe.Code == "57P01", pe.Code == "57P02", pe.Code == "57P03": // admin/crash shutdown, cannot connect now
			return true
		case pe.Code == "40001", pe.Code == "40P01": // serialization failure, deadlock
			return true
		case pe.Code == "57014": // query_canceled (statement_timeout)
			return true
		}
		return false
	}
	var ce *pgconn.ConnectError
	if errors.As(err, &ce) {
		return true
	}
	if pgconn.Timeout(err) || pgconn.SafeToRetry(err) {
		return true
	}
	return transientNet(err)
}

// ClickHouse server error codes that a retry may cure.
var chTransientCodes = map[int32]bool{
	159: true, // TIMEOUT_EXCEEDED
	160: true, // TOO_SLOW
	164: true, // READONLY
	202: true, // TOO_MANY_SIMULTANEOUS_QUERIES
	203: true, // NO_FREE_CONNECTION
	209: true, // SOCKET_TIMEOUT
	210: true, // NETWORK_ERROR
	241: true, // MEMORY_LIMIT_EXCEEDED
	242: true, // TABLE_IS_READ_ONLY
	252: true, // TOO_MANY_PARTS
	243: true, // NOT_ENOUGH_SPACE
	394: true, // QUERY_WAS_CANCELLED
	999: true, // KEEPER_EXCEPTION
}

func transientCH(err error) bool {
	var ex *clickhouse.Exception
	if errors.As(err, &ex) {
		return chTransientCodes[ex.Code]
	}
	if errors.Is(err, clickhouse.ErrAcquireConnTimeout) || errors.Is(err, clickhouse.ErrConnectionClosed) {
		return true
	}
	return transientNet(err)
}
