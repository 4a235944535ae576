package limit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/llmtap/llmtap/proxy/limit/limittest"
)

func redisCfg(t *testing.T) Config {
	t.Helper()
	if testing.Short() {
		t.Skip("redis: skipped in -short")
	}
	c := DefaultConfig()
	c.RedisURL = limittest.RedisURL()
	c.KeyPrefix = limittest.Prefix(t, c.RedisURL)
	c.Timeout = 2 * time.Second
	return c
}

func openRedis(t *testing.T, c Config) *redisLimiter {
	t.Helper()
	l, err := New(c, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l.(*redisLimiter)
}

// TestRedisWindowSlides: with a short window, requests and tokens leave the
// window and the budget comes back; keys carry a TTL.
func TestRedisWindowSlides(t *testing.T) {
	c := redisCfg(t)
	c.Window = 600 * time.Millisecond
	l := openRedis(t, c)
	lim := Limits{RPM: 2, TPM: 10}
	for i := 0; i < 2; i++ {
		d, rel := admit(t, l, "k", lim)
		if !d.Allowed {
			t.Fatalf("request %d: %+v", i, d)
		}
		rel(5)
	}
	d, _ := admit(t, l, "k", lim)
	if d.Allowed || d.Reason != ReasonRequests || d.RetryAfter <= 0 || d.RetryAfter > c.Window {
		t.Fatalf("third: %+v", d)
	}
	if d.RemainingTokens != 0 {
		t.Fatalf("10 of 10 tokens used, remaining %d", d.RemainingTokens)
	}
	for _, k := range []string{"req", "tok", "sum"} {
		ttl, err := l.rdb.PTTL(context.Background(), c.KeyPrefix+"{k}:"+k).Result()
		if err != nil || ttl <= 0 || ttl > c.Window+time.Second {
			t.Errorf("%s: ttl %v err %v", k, ttl, err)
		}
	}
	time.Sleep(d.RetryAfter + 50*time.Millisecond)
	d, _ = admit(t, l, "k", lim)
	if !d.Allowed {
		t.Fatalf("after the window moved: %+v", d)
	}
	time.Sleep(c.Window + 50*time.Millisecond)
	d, _ = admit(t, l, "k", lim)
	if !d.Allowed || d.RemainingRequests != 1 || d.RemainingTokens != 10 {
		t.Fatalf("after a full window: %+v", d)
	}
	if n, _ := l.rdb.Exists(context.Background(), c.KeyPrefix+"{k}:sum").Result(); n != 0 {
		t.Errorf("token sum survives an empty token window")
	}
}

// TestRedisTokensExpire: a spent TPM budget is refused until the window
// moves past the token entries.
func TestRedisTokensExpire(t *testing.T) {
	c := redisCfg(t)
	c.Window = 500 * time.Millisecond
	l := openRedis(t, c)
	lim := Limits{TPM: 100}
	_, rel := admit(t, l, "k", lim)
	rel(150)
	d, _ := admit(t, l, "k", lim)
	if d.Allowed || d.Reason != ReasonTokens || d.RetryAfter <= 0 {
		t.Fatalf("spent: %+v", d)
	}
	time.Sleep(d.RetryAfter + 50*time.Millisecond)
	if d, _ := admit(t, l, "k", lim); !d.Allowed || d.RemainingTokens != 100 {
		t.Fatalf("after the window: %+v", d)
	}
}

// TestRedisSharedBudget: two limiters (two proxy replicas) admitting at once
// from one Redis budget pass exactly the limit in total.
func TestRedisSharedBudget(t *testing.T) {
	c := redisCfg(t)
	a, b := openRedis(t, c), openRedis(t, c)
	const limit = 100
	got := admitMany(t, []Limiter{a, b}, "k", Limits{RPM: limit}, 6, 30)
	if got != limit {
		t.Fatalf("admitted %d, want exactly %d", got, limit)
	}
	// Concurrency is shared too.
	lim := Limits{Concurrent: 2}
	_, r1 := admit(t, a, "c", lim)
	_, r2 := admit(t, b, "c", lim)
	if d, _ := admit(t, a, "c", lim); d.Allowed {
		t.Fatalf("third slot across replicas: %+v", d)
	}
	r1(0)
	if d, _ := admit(t, b, "c", lim); !d.Allowed {
		t.Fatalf("slot released by the other replica: %+v", d)
	}
	r2(0)
}

const childEnv = "LLMTAP_LIMIT_CHILD"

// TestHelperProcess is the second process of TestRedisCrossProcess.
func TestHelperProcess(t *testing.T) {
	spec := os.Getenv(childEnv)
	if spec == "" {
		t.Skip("helper process only")
	}
	// spec: url|prefix|rpm|attempts
	f := strings.Split(spec, "|")
	rpm, _ := strconv.ParseInt(f[2], 10, 64)
	attempts, _ := strconv.Atoi(f[3])
	c := DefaultConfig()
	c.RedisURL, c.KeyPrefix, c.Timeout = f[0], f[1], 2*time.Second
	l, err := New(c, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	n := admitMany(t, []Limiter{l}, "k", Limits{RPM: rpm}, 4, attempts/4)
	fmt.Printf("ADMITTED %d\n", n)
}

// TestRedisCrossProcess: this process and a re-executed copy of the test
// binary hammer one budget at the same time; the sum admitted is the limit.
func TestRedisCrossProcess(t *testing.T) {
	c := redisCfg(t)
	const limit, attempts = 150, 200
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s|%s|%d|%d", childEnv, c.RedisURL, c.KeyPrefix, limit, attempts))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	l := openRedis(t, c)
	mine := admitMany(t, []Limiter{l}, "k", Limits{RPM: limit}, 4, attempts/4)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("child: %v\n%s", err, out.String())
	}
	var theirs int
	if _, err := fmt.Sscanf(out.String()[strings.Index(out.String(), "ADMITTED"):], "ADMITTED %d", &theirs); err != nil {
		t.Fatalf("child output: %v\n%s", err, out.String())
	}
	if mine+theirs != limit {
		t.Fatalf("admitted %d here + %d in the child = %d, want %d", mine, theirs, mine+theirs, limit)
	}
	t.Logf("admitted %d here, %d in the child", mine, theirs)
}

// TestRedisLeaseExpires: the slots of a process that died without releasing
// are reclaimed after the lease; a live process keeps its slots by refresh.
func TestRedisLeaseExpires(t *testing.T) {
	c := redisCfg(t)
	c.Lease = 600 * time.Millisecond
	lim := Limits{Concurrent: 1}

	// A live holder keeps its slot for several leases.
	live := openRedis(t, c)
	_, rel := admit(t, live, "live", lim)
	other := openRedis(t, c)
	time.Sleep(3 * c.Lease)
	if d, _ := admit(t, other, "live", lim); d.Allowed {
		t.Fatalf("a refreshed slot was reclaimed: %+v", d)
	}
	rel(0)
	if d, r := admit(t, other, "live", lim); !d.Allowed {
		t.Fatalf("after release: %+v", d)
	} else {
		r(0)
	}

	// A "dead" holder: stop its refresh loop and drop its client without
	// releasing (as a killed process would).
	dead := openRedis(t, c)
	if d, _ := admit(t, dead, "dead", lim); !d.Allowed {
		t.Fatal(d)
	}
	close(dead.stop)
	<-dead.done
	dead.closed.Store(true)
	dead.rdb.Close()
	if d, _ := admit(t, other, "dead", lim); d.Allowed {
		t.Fatalf("slot free before the lease ran out: %+v", d)
	}
	time.Sleep(c.Lease + 300*time.Millisecond)
	if d, _ := admit(t, other, "dead", lim); !d.Allowed {
		t.Fatalf("dead process's slot not reclaimed after the lease: %+v", d)
	}
}

// TestRedisCloseFreesSlots: Close removes the slots this process holds.
func TestRedisCloseFreesSlots(t *testing.T) {
	c := redisCfg(t)
	lim := Limits{Concurrent: 1}
	a := openRedis(t, c)
	if d, _ := admit(t, a, "k", lim); !d.Allowed {
		t.Fatal(d)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	b := openRedis(t, c)
	if d, _ := admit(t, b, "k", lim); !d.Allowed {
		t.Fatalf("slot of a closed limiter still held: %+v", d)
	}
}

// TestRedisRestart: while Redis is down, fail-open admits (and counts a
// backend error) and fail-closed refuses with "unavailable"; after Redis is
// back both enforce the limit again.
func TestRedisRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("redis: skipped in -short")
	}
	srv := limittest.StartRedis(t)
	mk := func(policy string) *redisLimiter {
		c := DefaultConfig()
		c.RedisURL = srv.URL()
		c.KeyPrefix = "llmtap:test:restart:"
		c.FailurePolicy = policy
		c.Timeout = time.Second
		return openRedis(t, c)
	}
	open, closed := mk(FailOpen), mk(FailClosed)
	lim := Limits{RPM: 2, Concurrent: 5}
	for _, l := range []*redisLimiter{open, closed} {
		for i := 0; i < 2; i++ {
			if d, _ := admit(t, l, l.cfg.FailurePolicy, lim); !d.Allowed {
				t.Fatalf("%s before restart: %+v", l.cfg.FailurePolicy, d)
			}
		}
		if d, _ := admit(t, l, l.cfg.FailurePolicy, lim); d.Allowed {
			t.Fatalf("%s: limit not enforced before restart", l.cfg.FailurePolicy)
		}
	}

	srv.Stop()
	errsBefore := counterValue(t, backendErrors)
	for i := 0; i < 3; i++ {
		d, rel, err := open.Admit(context.Background(), "open", lim)
		if err == nil || !d.Allowed || d.LimitRequests != 0 {
			t.Fatalf("fail open while down: %+v err %v", d, err)
		}
		rel(10) // best effort, fails quietly
		d, _, err = closed.Admit(context.Background(), "closed", lim)
		if err == nil || d.Allowed || d.Reason != ReasonUnavailable || d.RetryAfter <= 0 {
			t.Fatalf("fail closed while down: %+v err %v", d, err)
		}
	}
	if got := counterValue(t, backendErrors) - errsBefore; got < 6 {
		t.Errorf("backend errors counted while down: %v, want >= 6", got)
	}

	srv.Start() // empty: the restarted Redis lost all counters
	for _, l := range []*redisLimiter{open, closed} {
		var allowed int
		for i := 0; i < 5; i++ {
			d, rel, err := l.Admit(context.Background(), l.cfg.FailurePolicy, lim)
			if err != nil && i > 0 {
				t.Fatalf("%s after restart, attempt %d: %v", l.cfg.FailurePolicy, i, err)
			}
			if err == nil && d.Allowed {
				allowed++
				rel(0)
			}
		}
		if allowed != 2 {
			t.Fatalf("%s after restart: %d admitted, want the limit 2", l.cfg.FailurePolicy, allowed)
		}
	}
}

// TestRedisCanceledContext: a caller that gave up is not a backend error.
func TestRedisCanceledContext(t *testing.T) {
	c := redisCfg(t)
	l := openRedis(t, c)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	before := counterValue(t, backendErrors)
	d, _, err := l.Admit(ctx, "k", Limits{RPM: 1})
	if err == nil || !errors.Is(err, context.Canceled) || d.Allowed {
		t.Fatalf("canceled: %+v %v", d, err)
	}
	if counterValue(t, backendErrors) != before {
		t.Error("a canceled caller counted as a backend error")
	}
}
