// Package storeerr holds store.ErrUnavailable in a leaf package, so that the
// store implementations (ingest/store/postgres, ingest/store/clickhouse) and
// schema can wrap it while package store imports them for Open. Use
// store.ErrUnavailable in callers; it is the same value.
package storeerr

import "errors"

// ErrUnavailable marks errors that a later retry may cure.
var ErrUnavailable = errors.New("store unavailable")
