package limit

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/llmtap/llmtap/proxy/limit/limittest"
)

type backend struct {
	name string
	// open returns a limiter; cfg has limits and Window set by the test.
	open func(t *testing.T, cfg Config) Limiter
}

func newTestMemory(t *testing.T, cfg Config) Limiter {
	t.Helper()
	l, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func newTestRedis(t *testing.T, cfg Config) Limiter {
	t.Helper()
	if testing.Short() {
		t.Skip("redis: skipped in -short")
	}
	cfg.RedisURL = limittest.RedisURL()
	if cfg.KeyPrefix == "" || cfg.KeyPrefix == DefaultConfig().KeyPrefix {
		cfg.KeyPrefix = limittest.Prefix(t, cfg.RedisURL)
	}
	cfg.Timeout = 2 * time.Second
	l, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	// The shared tests need a reachable Redis: fail, not skip.
	if err := l.(*redisLimiter).rdb.Ping(context.Background()).Err(); err != nil {
		t.Fatalf("redis at %s: %v", cfg.RedisURL, err)
	}
	return l
}

var backends = []backend{
	{"memory", newTestMemory},
	{"redis", newTestRedis},
}

func admit(t *testing.T, l Limiter, key string, lim Limits) (Decision, Release) {
	t.Helper()
	d, rel, err := l.Admit(context.Background(), key, lim)
	if err != nil {
		t.Fatalf("admit: %v", err)
	}
	if rel == nil {
		t.Fatal("admit returned a nil release")
	}
	return d, rel
}

func TestConfigValidate(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("default config: %v", err)
	}
	bad := []func(*Config){
		func(c *Config) { c.DefaultRPM = -1 },
		func(c *Config) { c.DefaultTPM = -1 },
		func(c *Config) { c.DefaultConcurrent = -1 },
		func(c *Config) { c.FailurePolicy = "maybe" },
		func(c *Config) { c.FailurePolicy = "" },
		func(c *Config) { c.Timeout = 0 },
		func(c *Config) { c.Window = 0 },
		func(c *Config) { c.Lease = time.Millisecond },
		func(c *Config) { c.RedisURL, c.KeyPrefix = "redis://127.0.0.1:6379", "" },
	}
	for i, f := range bad {
		c := DefaultConfig()
		f(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("case %d: %+v validated", i, c)
		}
		if _, err := New(c, nil); err == nil {
			t.Errorf("case %d: New accepted an invalid config", i)
		}
	}
	c := DefaultConfig()
	c.RedisURL = "::not a url"
	if _, err := New(c, nil); err == nil {
		t.Error("New accepted a bad redis url")
	}
}

func TestLimitsFor(t *testing.T) {
	c := DefaultConfig()
	c.DefaultRPM, c.DefaultTPM, c.DefaultConcurrent = 60, 1000, 4
	tests := []struct {
		rpm, tpm int64
		want     Limits
	}{
		{0, 0, Limits{60, 1000, 4}},
		{10, 0, Limits{10, 1000, 4}},
		{0, 50, Limits{60, 50, 4}},
		{500, 70000, Limits{500, 70000, 4}},
	}
	for _, tt := range tests {
		if got := c.LimitsFor(tt.rpm, tt.tpm); got != tt.want {
			t.Errorf("LimitsFor(%d, %d) = %+v, want %+v", tt.rpm, tt.tpm, got, tt.want)
		}
	}
	if got := DefaultConfig().LimitsFor(0, 0); got != (Limits{}) {
		t.Errorf("default config limits = %+v, want unlimited", got)
	}
}

// TestBoundary: with RPM = N, exactly N requests pass and the N+1st is
// refused; refusals are not counted; other keys are independent.
func TestBoundary(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			for _, n := range []int64{1, 5, 37} {
				l := b.open(t, DefaultConfig())
				lim := Limits{RPM: n}
				for i := int64(1); i <= n; i++ {
					d, rel := admit(t, l, "k", lim)
					if !d.Allowed {
						t.Fatalf("n=%d: request %d refused: %+v", n, i, d)
					}
					if d.LimitRequests != n || d.RemainingRequests != n-i {
						t.Fatalf("n=%d: request %d: limit %d remaining %d", n, i, d.LimitRequests, d.RemainingRequests)
					}
					rel(0)
				}
				for i := 0; i < 3; i++ {
					d, _ := admit(t, l, "k", lim)
					if d.Allowed || d.Reason != ReasonRequests {
						t.Fatalf("n=%d: request %d over the limit: %+v", n+1, i, d)
					}
					if d.RemainingRequests != 0 || d.RetryAfter <= 0 || d.RetryAfter > time.Minute {
						t.Fatalf("n=%d: refusal: %+v", n, d)
					}
				}
				if d, _ := admit(t, l, "other", lim); !d.Allowed {
					t.Fatalf("n=%d: another key was refused: %+v", n, d)
				}
				// A raised limit (keys reload) applies at once.
				if d, _ := admit(t, l, "k", Limits{RPM: n + 1}); !d.Allowed || d.RemainingRequests != 0 {
					t.Fatalf("n=%d: raised limit: %+v", n, d)
				}
			}
		})
	}
}

// TestUnlimited: no limits means no work, no headers, and a usable release.
func TestUnlimited(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			l := b.open(t, DefaultConfig())
			for i := 0; i < 100; i++ {
				d, rel := admit(t, l, "k", Limits{})
				if !d.Allowed || d.LimitRequests != 0 || d.LimitTokens != 0 {
					t.Fatalf("unlimited: %+v", d)
				}
				rel(1 << 40)
			}
		})
	}
}

// TestTokens: tokens recorded on release count against TPM; the request that
// spends the budget passes, the next is refused until the window moves.
func TestTokens(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			l := b.open(t, DefaultConfig())
			lim := Limits{TPM: 100}
			d, rel := admit(t, l, "k", lim)
			if !d.Allowed || d.LimitTokens != 100 || d.RemainingTokens != 100 || d.ResetTokens != 0 {
				t.Fatalf("first: %+v", d)
			}
			// Tokens are only known at the end: a second request admitted
			// while the first runs still sees the full budget.
			d2, rel2 := admit(t, l, "k", lim)
			if !d2.Allowed || d2.RemainingTokens != 100 {
				t.Fatalf("concurrent second: %+v", d2)
			}
			rel(60)
			rel(1000) // ignored: release is once
			d3, rel3 := admit(t, l, "k", lim)
			if !d3.Allowed || d3.RemainingTokens != 40 || d3.ResetTokens <= 0 || d3.ResetTokens > time.Minute {
				t.Fatalf("after 60 tokens: %+v", d3)
			}
			rel3(0)
			rel2(40) // now exactly 100 used: spent
			d4, _ := admit(t, l, "k", lim)
			if d4.Allowed || d4.Reason != ReasonTokens || d4.RemainingTokens != 0 {
				t.Fatalf("budget spent: %+v", d4)
			}
			if d4.RetryAfter <= 0 || d4.RetryAfter > time.Minute || d4.ResetTokens != d4.RetryAfter {
				t.Fatalf("budget spent: retry %v reset %v", d4.RetryAfter, d4.ResetTokens)
			}
			if d, _ := admit(t, l, "other", lim); !d.Allowed {
				t.Fatalf("other key refused: %+v", d)
			}
		})
	}
}

// TestConcurrency: at most Concurrent requests in flight; release frees a
// slot; refusals take none.
func TestConcurrency(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			l := b.open(t, DefaultConfig())
			lim := Limits{Concurrent: 3}
			var rels []Release
			for i := 0; i < 3; i++ {
				d, rel := admit(t, l, "k", lim)
				if !d.Allowed {
					t.Fatalf("slot %d refused: %+v", i, d)
				}
				rels = append(rels, rel)
			}
			for i := 0; i < 2; i++ {
				d, _ := admit(t, l, "k", lim)
				if d.Allowed || d.Reason != ReasonConcurrency || d.LimitConcurrent != 3 || d.RetryAfter <= 0 {
					t.Fatalf("4th in flight: %+v", d)
				}
			}
			rels[1](10)
			rels[1](10) // second call ignored: must not free another slot
			d, rel := admit(t, l, "k", lim)
			if !d.Allowed {
				t.Fatalf("after a release: %+v", d)
			}
			if d, _ := admit(t, l, "k", lim); d.Allowed {
				t.Fatalf("double release freed two slots: %+v", d)
			}
			rel(0)
			rels[0](0)
			rels[2](0)
			for i := 0; i < 3; i++ {
				if d, _ := admit(t, l, "k", lim); !d.Allowed {
					t.Fatalf("after all released, slot %d: %+v", i, d)
				}
			}
		})
	}
}

// TestConcurrentAdmitsExact: many goroutines admitting at once never pass
// more than the limit.
func TestConcurrentAdmitsExact(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			l := b.open(t, DefaultConfig())
			const limit, workers, each = 50, 8, 20
			got := admitMany(t, []Limiter{l}, "k", Limits{RPM: limit}, workers, each)
			if got != limit {
				t.Fatalf("admitted %d of %d attempts, want exactly %d", got, workers*each, limit)
			}
		})
	}
}

// admitMany runs workers goroutines per limiter, each trying each admits,
// and returns how many were allowed.
func admitMany(t *testing.T, ls []Limiter, key string, lim Limits, workers, each int) int {
	t.Helper()
	var mu sync.Mutex
	allowed := 0
	var wg sync.WaitGroup
	errs := make(chan error, len(ls)*workers)
	for _, l := range ls {
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < each; i++ {
					d, rel, err := l.Admit(context.Background(), key, lim)
					if err != nil {
						errs <- err
						return
					}
					if d.Allowed {
						mu.Lock()
						allowed++
						mu.Unlock()
						rel(0)
					}
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	return allowed
}

func ExampleHeaders() {
	d := Decision{Allowed: true, LimitRequests: 60, RemainingRequests: 59, ResetRequests: time.Second,
		LimitTokens: 150000, RemainingTokens: 149984, ResetTokens: 6 * time.Minute}
	h := make(http.Header)
	Headers(h, d)
	for _, k := range []string{HeaderLimitRequests, HeaderRemainingRequests, HeaderResetRequests,
		HeaderLimitTokens, HeaderRemainingTokens, HeaderResetTokens} {
		fmt.Println(k, h.Get(k))
	}
	// Output:
	// x-ratelimit-limit-requests 60
	// x-ratelimit-remaining-requests 59
	// x-ratelimit-reset-requests 1s
	// x-ratelimit-limit-tokens 150000
	// x-ratelimit-remaining-tokens 149984
	// x-ratelimit-reset-tokens 6m0s
}
