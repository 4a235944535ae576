package sim

import (
	"errors"
	"fmt"
	"time"
)

// Config configures a Server. The zero value of any field means its default
// (see DefaultConfig), except the rates, whose zero value means "never".
type Config struct {
	// Model is the served model name, default "meta-llama/Llama-3.1-8B-Instruct".
	// Requests naming another model get vLLM's 404 NotFoundError.
	Model string
	// TTFT is the delay before the first token (per request: X-Sim-TTFT).
	TTFT time.Duration
	// TokenInterval is the delay between tokens (per request: X-Sim-Token-Interval).
	TokenInterval time.Duration
	// Tokens is the answer length in visible tokens (default 16; per request:
	// X-Sim-Tokens). max_tokens in the request caps it (finish_reason "length").
	Tokens int
	// APIKey, like vLLM's --api-key, guards only paths starting with /v1
	// (OPTIONS exempt) with "Authorization: Bearer <key>". Empty: no auth.
	APIKey string
	// ErrorRate is the fraction of generation requests answered with
	// ErrorStatus and a vLLM error body.
	ErrorRate float64
	// ErrorStatus is the status of injected errors, default 500.
	ErrorStatus int
	// MidStreamErrorRate is the fraction of streams that send
	// data: {"error": {...}} and then data: [DONE] after a few tokens.
	MidStreamErrorRate float64
	// AbruptCloseRate is the fraction of streams whose connection is cut
	// after a few tokens (no finish chunk, no [DONE]).
	AbruptCloseRate float64
	// Seed seeds the fault dice. Answers never depend on it.
	Seed int64

	// MaxModelLen, when > 0, is enforced like vLLM's context-length check
	// (400 BadRequestError) and reported by /v1/models. When 0 nothing is
	// enforced and /v1/models reports 131072.
	MaxModelLen int
	// MaxBodyBytes limits request bodies (413 above it), default 64 MiB.
	MaxBodyBytes int64
	// EmbeddingDim is the default embedding size, default 16.
	EmbeddingDim int
	// Version is reported by GET /version, default "0.11.0".
	Version string
}

// Defaults.
const (
	DefaultModel        = "meta-llama/Llama-3.1-8B-Instruct"
	DefaultTokens       = 16
	DefaultErrorStatus  = 500
	DefaultMaxBodyBytes = 64 << 20
	DefaultEmbeddingDim = 16
	DefaultVersion      = "0.11.0"
	reportedMaxModelLen = 131072
)

// DefaultConfig returns the defaults: the Llama 3.1 8B model name, 16 tokens,
// no delays, no auth, no faults, status 500 for injected errors.
func DefaultConfig() Config {
	return Config{
		Model:        DefaultModel,
		Tokens:       DefaultTokens,
		ErrorStatus:  DefaultErrorStatus,
		MaxBodyBytes: DefaultMaxBodyBytes,
		EmbeddingDim: DefaultEmbeddingDim,
		Version:      DefaultVersion,
	}
}

// withDefaults fills zero fields with their defaults.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.Model == "" {
		c.Model = d.Model
	}
	if c.Tokens == 0 {
		c.Tokens = d.Tokens
	}
	if c.ErrorStatus == 0 {
		c.ErrorStatus = d.ErrorStatus
	}
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = d.MaxBodyBytes
	}
	if c.EmbeddingDim == 0 {
		c.EmbeddingDim = d.EmbeddingDim
	}
	if c.Version == "" {
		c.Version = d.Version
	}
	return c
}

// Validate reports every invalid field (after defaults are applied to zero
// fields).
func (c Config) Validate() error {
	c = c.withDefaults()
	var errs []error
	if c.TTFT < 0 {
		errs = append(errs, fmt.Errorf("sim: ttft %v is negative", c.TTFT))
	}
	if c.TokenInterval < 0 {
		errs = append(errs, fmt.Errorf("sim: token interval %v is negative", c.TokenInterval))
	}
	if c.Tokens < 0 {
		errs = append(errs, fmt.Errorf("sim: tokens %d is negative", c.Tokens))
	}
	for name, r := range map[string]float64{
		"error rate": c.ErrorRate, "mid-stream error rate": c.MidStreamErrorRate, "abrupt close rate": c.AbruptCloseRate,
	} {
		if !(r >= 0 && r <= 1) {
			errs = append(errs, fmt.Errorf("sim: %s %v is not in [0, 1]", name, r))
		}
	}
	if c.ErrorStatus < 400 || c.ErrorStatus > 599 {
		errs = append(errs, fmt.Errorf("sim: error status %d is not in 400..599", c.ErrorStatus))
	}
	if c.MaxModelLen < 0 {
		errs = append(errs, fmt.Errorf("sim: max model len %d is negative", c.MaxModelLen))
	}
	if c.MaxBodyBytes < 0 {
		errs = append(errs, fmt.Errorf("sim: max body bytes %d is negative", c.MaxBodyBytes))
	}
	if c.EmbeddingDim < 1 || c.EmbeddingDim > maxEmbeddingDim {
		errs = append(errs, fmt.Errorf("sim: embedding dim %d is not in 1..%d", c.EmbeddingDim, maxEmbeddingDim))
	}
	return errors.Join(errs...)
}

const maxEmbeddingDim = 8192
