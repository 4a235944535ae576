package limit

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis data per key id K (P = Config.KeyPrefix):
//
//	P{K}:req  sorted set, member request id, score admission time (µs, Redis TIME)
//	P{K}:tok  sorted set, member "<request id>:<tokens>", score release time (µs)
//	P{K}:sum  string, sum of the tokens in P{K}:tok (kept in step by the scripts)
//	P{K}:conc sorted set, member request id, score lease expiry (µs)
//
// req, tok and sum expire Window+1s after their last write; conc expires
// 2×Lease after its last write or refresh.

// admitScript: KEYS req tok sum conc; ARGV rpm tpm conc window_us lease_us id.
// Returns {reason, nreq, used, inflight, reset_req_us, reset_tok_us, retry_us};
// reason 0 = admitted, 1 requests, 2 tokens, 3 concurrency.
var admitScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local rpm, tpm, conc = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local win, lease, id = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6]
local cutoff = now - win
local ttl = math.floor(win / 1000) + 1000
local nreq, used, inflight = 0, 0, 0
if rpm > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', cutoff)
  nreq = redis.call('ZCARD', KEYS[1])
end
local function tokfree()
  local e = redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
  local sum = used
  for i = 1, #e, 2 do
    sum = sum - tonumber(string.match(e[i], ':(%d+)$'))
    if sum < tpm then return tonumber(e[i + 1]) + win - now end
  end
  return win
end
if tpm > 0 then
  used = tonumber(redis.call('GET', KEYS[3]) or '0')
  local old = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', cutoff)
  if #old > 0 then
    for i = 1, #old do used = used - tonumber(string.match(old[i], ':(%d+)$')) end
    redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', cutoff)
  end
  if used <= 0 or redis.call('ZCARD', KEYS[2]) == 0 then
    used = 0
    redis.call('DEL', KEYS[3])
  elseif #old > 0 then
    redis.call('SET', KEYS[3], used, 'PX', ttl)
  end
end
if conc > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)
  inflight = redis.call('ZCARD', KEYS[4])
end
local reason, retry = 0, 0
if rpm > 0 and nreq >= rpm then
  reason = 1
  local e = redis.call('ZRANGE', KEYS[1], nreq - rpm, nreq - rpm, 'WITHSCORES')
  retry = tonumber(e[2]) + win - now
elseif tpm > 0 and used >= tpm then
  reason = 2
  retry = tokfree()
elseif conc > 0 and inflight >= conc then
  reason = 3
  retry = 1000000
else
  if rpm > 0 then
    redis.call('ZADD', KEYS[1], now, id)
    redis.call('PEXPIRE', KEYS[1], ttl)
    nreq = nreq + 1
  end
  if conc > 0 then
    redis.call('ZADD', KEYS[4], now + lease, id)
    redis.call('PEXPIRE', KEYS[4], math.floor(lease / 500))
    inflight = inflight + 1
  end
end
local rreq, rtok = 0, 0
if nreq > 0 then
  local e = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  rreq = tonumber(e[2]) + win - now
end
if tpm > 0 then
  if used >= tpm then
    rtok = tokfree()
  else
    local e = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
    if #e > 0 then rtok = tonumber(e[2]) + win - now end
  end
end
return {reason, nreq, used, inflight, rreq, rtok, retry}
`)

// releaseScript: KEYS tok sum conc; ARGV tokens id window_us has_conc.
var releaseScript = redis.NewScript(`
if ARGV[4] == '1' then redis.call('ZREM', KEYS[3], ARGV[2]) end
local tokens = tonumber(ARGV[1])
if tokens > 0 then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local ttl = math.floor(tonumber(ARGV[3]) / 1000) + 1000
  redis.call('ZADD', KEYS[1], now, ARGV[2] .. ':' .. ARGV[1])
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('INCRBY', KEYS[2], tokens)
  redis.call('PEXPIRE', KEYS[2], ttl)
end
return 0
`)

// refreshScript: KEYS conc; ARGV lease_us id... Extends the leases of the
// given ids that still exist.
var refreshScript = redis.NewScript(`
local t = redis.call('TIME')
local exp = tonumber(t[1]) * 1000000 + tonumber(t[2]) + tonumber(ARGV[1])
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], 'XX', exp, ARGV[i]) end
redis.call('PEXPIRE', KEYS[1], math.floor(tonumber(ARGV[1]) / 500))
return 0
`)

type redisLimiter struct {
	cfg    Config
	rdb    *redis.Client
	log    *slog.Logger
	idBase string
	seq    atomic.Uint64

	mu    sync.Mutex
	slots map[string]map[string]struct{} // conc key -> request ids held by this process

	lastLog atomic.Int64 // unix ns of the last backend-error log line
	stop    chan struct{}
	done    chan struct{}
	closed  atomic.Bool
}

func newRedis(cfg Config, logger *slog.Logger) (*redisLimiter, error) {
	opt, err := redis.ParseURL(cfg.RedisURL)
	if err != nil {
		return nil, fmt.Errorf("limit: redis url: %w", err)
	}
	opt.DialTimeout, opt.ReadTimeout, opt.WriteTimeout = cfg.Timeout, cfg.Timeout, cfg.Timeout
	opt.PoolTimeout = cfg.Timeout
	opt.ContextTimeoutEnabled = true
	opt.MaxRetries = -1 // a retried script could count twice; the policy applies instead
	opt.DisableIdentity = true
	var rnd [6]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return nil, fmt.Errorf("limit: random: %w", err)
	}
	l := &redisLimiter{
		cfg:    cfg,
		rdb:    redis.NewClient(opt),
		log:    logger,
		idBase: hex.EncodeToString(rnd[:]) + "-",
		slots:  make(map[string]map[string]struct{}),
		stop:   make(chan struct{}),
		done:   make(chan struct{}),
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.Timeout)
	if err := l.rdb.Ping(ctx).Err(); err != nil {
		logger.Warn("limit: redis not reachable at start; applying the failure policy until it is",
			"policy", cfg.FailurePolicy, "err", err)
	}
	cancel()
	go l.refreshLoop()
	return l, nil
}

func (l *redisLimiter) keys(keyID string) (req, tok, sum, conc string) {
	b := l.cfg.KeyPrefix + "{" + keyID + "}:"
	return b + "req", b + "tok", b + "sum", b + "conc"
}

func (l *redisLimiter) backendError(op string, err error) {
	backendErrors.Inc()
	now := time.Now().UnixNano()
	last := l.lastLog.Load()
	if now-last >= int64(10*time.Second) && l.lastLog.CompareAndSwap(last, now) {
		l.log.Warn("limit: redis "+op+" failed", "policy", l.cfg.FailurePolicy, "err", err)
	}
}

// Admit implements Limiter.
func (l *redisLimiter) Admit(ctx context.Context, keyID string, lim Limits) (Decision, Release, error) {
	if lim.unlimited() {
		return Decision{Allowed: true}, noRelease, nil
	}
	rpm, tpm, conc := max(lim.RPM, 0), max(lim.TPM, 0), max(lim.Concurrent, 0)
	id := l.idBase + strconv.FormatUint(l.seq.Add(1), 36)
	kReq, kTok, kSum, kConc := l.keys(keyID)
	cctx, cancel := context.WithTimeout(ctx, l.cfg.Timeout)
	res, err := admitScript.Run(cctx, l.rdb, []string{kReq, kTok, kSum, kConc},
		rpm, tpm, conc, l.cfg.Window.Microseconds(), l.cfg.Lease.Microseconds(), id).Int64Slice()
	cancel()
	if err == nil && len(res) != 7 {
		err = fmt.Errorf("unexpected script result %v", res)
	}
	if err != nil {
		err = fmt.Errorf("limit: redis admit: %w", err)
		if ctx.Err() != nil { // the caller gave up; not a backend fault
			return Decision{Reason: ReasonUnavailable}, noRelease, err
		}
		l.backendError("admit", err)
		if l.cfg.FailurePolicy == FailClosed {
			return refused(Decision{Reason: ReasonUnavailable, RetryAfter: time.Second}), noRelease, err
		}
		// Fail open: admit; record the tokens if Redis is back by the end.
		var done atomic.Bool
		return Decision{Allowed: true}, func(tokens int64) {
			if tpm > 0 && tokens > 0 && done.CompareAndSwap(false, true) {
				l.release(kTok, kSum, kConc, id, tokens, false)
			}
		}, err
	}
	us := func(v int64) time.Duration { return time.Duration(max(v, 0)) * time.Microsecond }
	d := Decision{
		LimitRequests: rpm, LimitTokens: tpm, LimitConcurrent: conc,
		ResetRequests: us(res[4]), ResetTokens: us(res[5]),
	}
	if rpm > 0 {
		d.RemainingRequests = max(rpm-res[1], 0)
	}
	if tpm > 0 {
		d.RemainingTokens = max(tpm-res[2], 0)
	}
	switch res[0] {
	case 1:
		d.Reason = ReasonRequests
	case 2:
		d.Reason = ReasonTokens
	case 3:
		d.Reason = ReasonConcurrency
	}
	if d.Reason != "" {
		d.RetryAfter = us(res[6])
		return refused(d), noRelease, nil
	}
	d.Allowed = true
	if conc > 0 {
		l.mu.Lock()
		m := l.slots[kConc]
		if m == nil {
			m = make(map[string]struct{})
			l.slots[kConc] = m
		}
		m[id] = struct{}{}
		l.mu.Unlock()
	}
	var done atomic.Bool
	return d, func(tokens int64) {
		if !done.CompareAndSwap(false, true) {
			return
		}
		if conc > 0 {
			l.mu.Lock()
			if m := l.slots[kConc]; m != nil {
				delete(m, id)
				if len(m) == 0 {
					delete(l.slots, kConc)
				}
			}
			l.mu.Unlock()
		}
		if conc > 0 || (tpm > 0 && tokens > 0) {
			if tpm <= 0 {
				tokens = 0
			}
			l.release(kTok, kSum, kConc, id, tokens, conc > 0)
		}
	}, nil
}

func (l *redisLimiter) release(kTok, kSum, kConc, id string, tokens int64, hasConc bool) {
	flag := "0"
	if hasConc {
		flag = "1"
	}
	ctx, cancel := context.WithTimeout(context.Background(), l.cfg.Timeout)
	defer cancel()
	err := releaseScript.Run(ctx, l.rdb, []string{kTok, kSum, kConc},
		max(tokens, 0), id, l.cfg.Window.Microseconds(), flag).Err()
	if err != nil {
		// A lost concurrency slot is reclaimed when its lease runs out.
		l.backendError("release", fmt.Errorf("limit: redis release: %w", err))
	}
}

// refreshLoop extends the leases of this process's concurrency slots every
// Lease/3 so that long requests keep theirs and a dead process's expire.
func (l *redisLimiter) refreshLoop() {
	defer close(l.done)
	t := time.NewTicker(l.cfg.Lease / 3)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
			l.refresh()
		}
	}
}

func (l *redisLimiter) refresh() {
	l.mu.Lock()
	batch := make(map[string][]any, len(l.slots))
	for k, m := range l.slots {
		args := make([]any, 0, len(m)+1)
		args = append(args, l.cfg.Lease.Microseconds())
		for id := range m {
			args = append(args, id)
		}
		batch[k] = args
	}
	l.mu.Unlock()
	for k, args := range batch {
		ctx, cancel := context.WithTimeout(context.Background(), l.cfg.Timeout)
		err := refreshScript.Run(ctx, l.rdb, []string{k}, args...).Err()
		cancel()
		if err != nil {
			l.backendError("lease refresh", fmt.Errorf("limit: redis refresh: %w", err))
		}
	}
}

// Close implements Limiter: stops the refresh loop, removes this process's
// remaining concurrency slots (best effort) and closes the client.
func (l *redisLimiter) Close() error {
	if !l.closed.CompareAndSwap(false, true) {
		return nil
	}
	close(l.stop)
	<-l.done
	l.mu.Lock()
	slots := l.slots
	l.slots = map[string]map[string]struct{}{}
	l.mu.Unlock()
	var errs []error
	for k, m := range slots {
		members := make([]any, 0, len(m))
		for id := range m {
			members = append(members, id)
		}
		ctx, cancel := context.WithTimeout(context.Background(), l.cfg.Timeout)
		if err := l.rdb.ZRem(ctx, k, members...).Err(); err != nil {
			errs = append(errs, err)
		}
		cancel()
	}
	if err := l.rdb.Close(); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("limit: close: %w", err)
	}
	return nil
}
