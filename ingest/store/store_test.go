package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/llmtap/llmtap/ingest/record"
	"github.com/llmtap/llmtap/ingest/store"
	"github.com/llmtap/llmtap/ingest/store/storeerr"
)

func TestOpen(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	tests := []struct {
		dsn     string
		openErr bool
	}{
		{"postgres://postgres@127.0.0.1:1/x?sslmode=disable&connect_timeout=2", false},
		{"postgresql://postgres@127.0.0.1:1/x?sslmode=disable&connect_timeout=2", false},
		{"clickhouse://127.0.0.1:1/x?dial_timeout=2s", false},
		{"tcp://127.0.0.1:1/x?dial_timeout=2s", false},
		{"mysql://127.0.0.1/x", true},
		{"127.0.0.1:5432", true},
	}
	rec := record.Record{EventID: "0192f0c1-7a4b-7cde-8f00-0123456789ab", TS: time.Now()}
	for _, tt := range tests {
		s, err := store.Open(ctx, tt.dsn, nil)
		if tt.openErr {
			if err == nil {
				t.Errorf("Open(%s) succeeded", tt.dsn)
				s.Close()
			}
			continue
		}
		if err != nil {
			t.Errorf("Open(%s) = %v; must not need the server", tt.dsn, err)
			continue
		}
		// Nothing listens there: retryable errors.
		if err := s.Write(ctx, []record.Record{rec}, nil); !errors.Is(err, store.ErrUnavailable) {
			t.Errorf("%s: Write = %v, want ErrUnavailable", tt.dsn, err)
		}
		if err := s.Ping(ctx); !errors.Is(err, store.ErrUnavailable) {
			t.Errorf("%s: Ping = %v, want ErrUnavailable", tt.dsn, err)
		}
		s.Close()
	}
	if store.ErrUnavailable != storeerr.ErrUnavailable {
		t.Error("store.ErrUnavailable is not storeerr.ErrUnavailable")
	}
}
