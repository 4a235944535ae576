package receiver

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/llmtap/llmtap/ingest/pipeline"
	"github.com/llmtap/llmtap/ingest/store"
)

func TestStatusOf(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want int
	}{
		{"unauthorized", errUnauthorized, http.StatusUnauthorized},
		{"too large", fmt.Errorf("%w: over", errTooLarge), http.StatusRequestEntityTooLarge},
		{"max bytes", bodyError("reading body", &http.MaxBytesError{Limit: 10}), http.StatusRequestEntityTooLarge},
		{"unreadable", bodyError("reading body", errors.New("unexpected EOF")), http.StatusBadRequest},
		{"store unavailable", fmt.Errorf("pipeline: store write: %w", store.ErrUnavailable), http.StatusServiceUnavailable},
		{"overloaded", fmt.Errorf("%w: 10 pending", pipeline.ErrOverloaded), http.StatusServiceUnavailable},
		{"closed", pipeline.ErrClosed, http.StatusServiceUnavailable},
		{"timeout", fmt.Errorf("waiting: %w", context.DeadlineExceeded), http.StatusServiceUnavailable},
		{"status wins over cause", &httpError{status: http.StatusBadRequest, msg: "x", err: store.ErrUnavailable}, http.StatusBadRequest},
		{"other", errors.New("constraint violated"), http.StatusInternalServerError},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := statusOf(tt.err); got != tt.want {
				t.Errorf("statusOf(%v) = %d, want %d", tt.err, got, tt.want)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		mod     func(*Config)
		wantErr string
	}{
		{"default", func(*Config) {}, ""},
		{"token", func(c *Config) { c.Token = "t" }, ""},
		{"body", func(c *Config) { c.MaxBodyBytes = 0 }, "max body bytes"},
		{"line", func(c *Config) { c.MaxLineBytes = -1 }, "max line bytes"},
		{"read timeout", func(c *Config) { c.ReadTimeout = 0 }, "read timeout"},
		{"request timeout", func(c *Config) { c.RequestTimeout = 0 }, "request timeout"},
		{"retry after", func(c *Config) { c.RetryAfter = 500 * time.Millisecond }, "retry after"},
		{"concurrent", func(c *Config) { c.MaxConcurrent = 0 }, "max concurrent"},
		{"queue wait", func(c *Config) { c.QueueWait = 0 }, "queue wait"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultConfig()
			tt.mod(&c)
			err := c.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate() = %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Validate() = %v, want %q", err, tt.wantErr)
			}
		})
	}
}

func TestNewDefaultsAndServer(t *testing.T) {
	r := New(Config{Token: "x"}, nil, nil)
	if r.cfg.MaxBodyBytes != DefaultConfig().MaxBodyBytes || cap(r.slots) != DefaultConfig().MaxConcurrent {
		t.Errorf("zero fields not defaulted: %+v", r.cfg)
	}
	if err := r.cfg.Validate(); err != nil {
		t.Errorf("defaulted config invalid: %v", err)
	}
	s := r.Server("127.0.0.1:0", r.Handler())
	if s.ReadHeaderTimeout == 0 || s.IdleTimeout == 0 || s.WriteTimeout < r.cfg.ReadTimeout+r.cfg.RequestTimeout {
		t.Errorf("server timeouts %v %v %v", s.ReadHeaderTimeout, s.IdleTimeout, s.WriteTimeout)
	}
}
