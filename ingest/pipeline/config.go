package pipeline

import (
	"errors"
	"fmt"
	"time"
)

// Config tunes batching, memory bounds and timeouts. The zero value is not
// usable; start from DefaultConfig.
type Config struct {
	// BatchSize is the number of rows (records + rejects) at which a batch
	// is written without waiting any longer. A single Ingest call is never
	// split, so one batch may exceed BatchSize when a caller sends more.
	BatchSize int
	// BatchAge is the group-commit window: how long a writer that picked up
	// work waits for other callers' work before it writes. 0 writes at once
	// whatever is queued.
	BatchAge time.Duration
	// Writers is the number of goroutines writing batches to the store
	// concurrently.
	Writers int
	// MaxPending bounds the events admitted but not yet committed (or
	// answered). Beyond it Ingest waits for room (back-pressure), at most
	// MaxWait, then fails with ErrOverloaded.
	MaxPending int
	// MaxPendingBytes bounds the captured body and payload bytes admitted
	// but not yet committed, the same way as MaxPending. One call larger
	// than either bound is admitted alone when nothing else is pending.
	MaxPendingBytes int64
	// MaxWait is how long Ingest waits for room under back-pressure before
	// it gives up with ErrOverloaded (retryable). The caller's context may
	// end the wait earlier.
	MaxWait time.Duration
	// WriteTimeout bounds one store.Write. A write that times out fails
	// every caller in its batch with an error wrapping store.ErrUnavailable.
	WriteTimeout time.Duration
}

// DefaultConfig returns the defaults: batches of up to 5000 rows collected
// for at most 20 ms, two writers, 100k events / 256 MiB pending, 10 s wait
// for room, 30 s per write.
func DefaultConfig() Config {
	return Config{
		BatchSize:       5000,
		BatchAge:        20 * time.Millisecond,
		Writers:         2,
		MaxPending:      100_000,
		MaxPendingBytes: 256 << 20,
		MaxWait:         10 * time.Second,
		WriteTimeout:    30 * time.Second,
	}
}

// Validate reports the first invalid setting.
func (c Config) Validate() error {
	var errs []error
	if c.BatchSize < 1 {
		errs = append(errs, fmt.Errorf("batch size %d: must be at least 1", c.BatchSize))
	}
	if c.BatchAge < 0 {
		errs = append(errs, fmt.Errorf("batch age %s: must not be negative", c.BatchAge))
	}
	if c.Writers < 1 {
		errs = append(errs, fmt.Errorf("writers %d: must be at least 1", c.Writers))
	}
	if c.MaxPending < 1 {
		errs = append(errs, fmt.Errorf("max pending %d: must be at least 1", c.MaxPending))
	}
	if c.MaxPendingBytes < 1 {
		errs = append(errs, fmt.Errorf("max pending bytes %d: must be at least 1", c.MaxPendingBytes))
	}
	if c.MaxWait <= 0 {
		errs = append(errs, fmt.Errorf("max wait %s: must be positive", c.MaxWait))
	}
	if c.WriteTimeout <= 0 {
		errs = append(errs, fmt.Errorf("write timeout %s: must be positive", c.WriteTimeout))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("pipeline config: %w", err)
	}
	return nil
}
