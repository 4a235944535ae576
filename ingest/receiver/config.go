package receiver

import (
	"errors"
	"fmt"
	"time"
)

// Config is the receiver's configuration. Start from DefaultConfig.
type Config struct {
	// Token, when not empty, is required as "Authorization: Bearer <token>"
	// on POST /v1/events and /v1/kong. It is compared in constant time and
	// never logged.
	Token string
	// MaxBodyBytes bounds a request body both as sent and after gzip
	// decompression; beyond it the reply is 413.
	MaxBodyBytes int64
	// MaxLineBytes bounds one NDJSON line (one event) on /v1/events; a longer
	// line becomes a reject, not a failure of the batch.
	MaxLineBytes int
	// ReadTimeout bounds reading one request body (slow senders).
	ReadTimeout time.Duration
	// RequestTimeout bounds handing a read body to the pipeline: waiting for
	// room and for the commit. Past it the reply is 503 and the sender
	// retries (the store deduplicates a write that still landed).
	RequestTimeout time.Duration
	// RetryAfter is the Retry-After hint sent with 503 replies.
	RetryAfter time.Duration
	// MaxConcurrent bounds the POST requests being read, decoded or waiting
	// for their commit at once. Each holds up to about 3×MaxBodyBytes (the
	// body, its events, their records), so this bounds the receiver's
	// memory; a request over the bound waits up to QueueWait, then gets 503.
	MaxConcurrent int
	// QueueWait is how long a request waits for one of the MaxConcurrent
	// slots before the reply is 503.
	QueueWait time.Duration
}

// DefaultConfig returns no token, 64 MiB bodies, 16 MiB lines, 60 s to read a
// body, 90 s per request, Retry-After 5 s, 32 concurrent POSTs that wait up
// to 10 s for a slot.
func DefaultConfig() Config {
	return Config{
		MaxBodyBytes:   64 << 20,
		MaxLineBytes:   16 << 20,
		ReadTimeout:    60 * time.Second,
		RequestTimeout: 90 * time.Second,
		RetryAfter:     5 * time.Second,
		MaxConcurrent:  32,
		QueueWait:      10 * time.Second,
	}
}

// Validate reports invalid settings.
func (c Config) Validate() error {
	var errs []error
	if c.MaxBodyBytes < 1 {
		errs = append(errs, fmt.Errorf("max body bytes %d: must be positive", c.MaxBodyBytes))
	}
	if c.MaxLineBytes < 1 {
		errs = append(errs, fmt.Errorf("max line bytes %d: must be positive", c.MaxLineBytes))
	}
	if c.ReadTimeout <= 0 {
		errs = append(errs, fmt.Errorf("read timeout %s: must be positive", c.ReadTimeout))
	}
	if c.RequestTimeout <= 0 {
		errs = append(errs, fmt.Errorf("request timeout %s: must be positive", c.RequestTimeout))
	}
	if c.RetryAfter < time.Second {
		errs = append(errs, fmt.Errorf("retry after %s: must be at least 1s", c.RetryAfter))
	}
	if c.MaxConcurrent < 1 {
		errs = append(errs, fmt.Errorf("max concurrent %d: must be at least 1", c.MaxConcurrent))
	}
	if c.QueueWait <= 0 {
		errs = append(errs, fmt.Errorf("queue wait %s: must be positive", c.QueueWait))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("receiver config: %w", err)
	}
	return nil
}
