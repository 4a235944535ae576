// Package rowid computes the ids that make store writes idempotent.
package rowid

import (
	"crypto/sha256"
	"fmt"

	"github.com/google/uuid"

	"github.com/llmtap/llmtap/ingest/record"
)

// Reject returns a reject's id: a UUID (version 8, RFC 9562) made of the
// SHA-256 of its source, reason and payload. ReceivedAt is left out, so a
// retried batch (received again, later) maps to the same ids.
func Reject(r record.Reject) uuid.UUID {
	h := sha256.New()
	h.Write([]byte(r.Source))
	h.Write([]byte{0})
	h.Write([]byte(r.Reason))
	h.Write([]byte{0})
	h.Write(r.Payload)
	var u uuid.UUID
	copy(u[:], h.Sum(nil))
	u[6] = (u[6] & 0x0f) | 0x80 // version 8
	u[8] = (u[8] & 0x3f) | 0x80 // RFC 9562 variant
	return u
}

// Event parses a record's EventID.
func Event(r *record.Record) (uuid.UUID, error) {
	u, err := uuid.Parse(r.EventID)
	if err != nil {
		return u, fmt.Errorf("record %q: event_id is not a UUID: %w", r.EventID, err)
	}
	return u, nil
}
