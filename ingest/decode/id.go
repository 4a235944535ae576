package decode

import (
	"crypto/sha256"
	"encoding/json"
	"time"

	"github.com/google/uuid"

	"github.com/llmtap/llmtap/ingest/event"
)

// Namespace is the UUID namespace of ids that llmtap derives (UUIDv5).
var Namespace = uuid.MustParse("6f1c3a52-8d0e-4c55-9a57-3d1f0b0c2a11")

// EventID returns ev.ID if it is a UUID (in canonical lower-case form), or
// derives a deterministic UUIDv5 from the event's content, so that re-sent
// events without an id are idempotent. A non-UUID id is hashed on its own.
func EventID(ev event.Event) string {
	if ev.ID != "" {
		if u, err := uuid.Parse(ev.ID); err == nil {
			return u.String()
		}
		return uuid.NewSHA1(Namespace, []byte("id:"+ev.ID)).String()
	}
	ev.ID = ""
	b, err := json.Marshal(ev) // deterministic: struct order, sorted map keys
	if err != nil {
		b = []byte(ev.Source + ev.Path + ev.Time.String())
	}
	sum := sha256.Sum256(b)
	return uuid.NewSHA1(Namespace, append([]byte("event:"), sum[:]...)).String()
}

// DeriveID returns the UUIDv5 of name under Namespace, for producers whose
// entries carry their own non-UUID id (Kong's request id).
func DeriveID(name string) string {
	return uuid.NewSHA1(Namespace, []byte(name)).String()
}

func isUUID(s string) bool {
	if len(s) != 36 && len(s) != 38 && len(s) != 32 && len(s) != 45 {
		return false
	}
	_, err := uuid.Parse(s)
	return err == nil
}

func uuidV7Time(s string) (time.Time, bool) {
	u, err := uuid.Parse(s)
	if err != nil || u.Version() != 7 {
		return time.Time{}, false
	}
	sec, nsec := u.Time().UnixTime()
	return time.Unix(sec, nsec).UTC(), true
}
