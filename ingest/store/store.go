// Package store writes records to PostgreSQL or ClickHouse. Open picks the
// implementation from the DSN's scheme.
package store

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	"github.com/llmtap/llmtap/ingest/record"
	"github.com/llmtap/llmtap/ingest/store/clickhouse"
	"github.com/llmtap/llmtap/ingest/store/postgres"
	"github.com/llmtap/llmtap/ingest/store/storeerr"
)

// Store writes records durably.
//
// Write commits recs and rejects, or returns an error. It is idempotent on
// Record.EventID: writing a record whose EventID is already stored is a no-op,
// and no query counts it twice. On error nothing or everything may have been
// written; the caller retries the whole batch. Errors that a retry may cure
// (server down, connection refused, timeout) wrap ErrUnavailable.
// Implementations are safe for concurrent use.
type Store interface {
	Write(ctx context.Context, recs []record.Record, rejects []record.Reject) error
	// Ping reports whether the store is reachable and migrated.
	Ping(ctx context.Context) error
	Close() error
}

// ErrUnavailable marks errors that a later retry may cure. (It lives in
// package storeerr so that the implementations can wrap it; it is the same
// value.)
var ErrUnavailable = storeerr.ErrUnavailable

// Open connects to the store named by dsn: postgres:// or postgresql:// for
// PostgreSQL, clickhouse:// or tcp:// for ClickHouse (native protocol).
// Connections are made lazily, so Open succeeds while the server is down;
// Write and Ping then return errors wrapping ErrUnavailable. Open does not
// migrate; Ping reports an unmigrated store (schema.Check's error). logger
// may be nil.
func Open(ctx context.Context, dsn string, logger *slog.Logger) (Store, error) {
	scheme, _, _ := strings.Cut(dsn, "://")
	switch strings.ToLower(scheme) {
	case "postgres", "postgresql":
		s, err := postgres.New(ctx, dsn, logger)
		if err != nil {
			return nil, err
		}
		return s, nil
	case "clickhouse", "tcp":
		s, err := clickhouse.New(ctx, dsn, logger)
		if err != nil {
			return nil, err
		}
		return s, nil
	}
	return nil, fmt.Errorf("store: unsupported DSN scheme %q (want postgres:// or clickhouse://)", scheme)
}
