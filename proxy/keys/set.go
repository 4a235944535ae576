package keys

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

var (
	reloadErrors = promauto.NewCounter(prometheus.CounterOpts{
		Name: "llmtap_keys_reload_errors_total",
		Help: "Failed reloads of the keys file (the last good set stays in use).",
	})
	keysLoaded = promauto.NewGauge(prometheus.GaugeOpts{
		Name: "llmtap_keys_loaded",
		Help: "Number of keys in the set in use (revoked and expired included).",
	})
	reloads = promauto.NewCounter(prometheus.CounterOpts{
		Name: "llmtap_keys_reloads_total",
		Help: "Successful reloads of the keys file after a change.",
	})
)

// LookupResult is the outcome of Set.Lookup.
type LookupResult int

// Lookup results.
const (
	Unknown LookupResult = iota
	OK
	Revoked
	Expired
)

func (r LookupResult) String() string {
	switch r {
	case OK:
		return "ok"
	case Revoked:
		return "revoked"
	case Expired:
		return "expired"
	default:
		return "unknown"
	}
}

// Set is an immutable, validated set of keys indexed by digest. It is safe
// for concurrent use.
type Set struct {
	byHash map[[sha256.Size]byte]Key
	n      int
}

// NewSet validates list and indexes it.
func NewSet(list []Key) (*Set, error) {
	if err := validate(list); err != nil {
		return nil, err
	}
	s := &Set{byHash: make(map[[sha256.Size]byte]Key, len(list)), n: len(list)}
	for _, k := range list {
		var d [sha256.Size]byte
		if _, err := hex.Decode(d[:], []byte(k.SHA256)); err != nil {
			return nil, fmt.Errorf("key %s: %w", k.ID, err)
		}
		s.byHash[d] = k
	}
	return s, nil
}

// Load reads, parses and validates the keys file at path.
func Load(path string) (*Set, error) {
	list, err := readFile(path)
	if err != nil {
		return nil, err
	}
	s, err := NewSet(list)
	if err != nil {
		return nil, fmt.Errorf("keys: %s: %w", path, err)
	}
	return s, nil
}

// Len is the number of keys in the set.
func (s *Set) Len() int {
	if s == nil {
		return 0
	}
	return s.n
}

// Lookup hashes the presented key and finds its entry. The Key is returned
// for OK, Revoked and Expired (so that rejected attempts can name the key
// id); it is the zero Key for Unknown. A nil Set knows no key.
func (s *Set) Lookup(plain string) (Key, LookupResult) {
	return s.lookupAt(plain, time.Now())
}

func (s *Set) lookupAt(plain string, now time.Time) (Key, LookupResult) {
	if s == nil || plain == "" {
		return Key{}, Unknown
	}
	k, ok := s.byHash[sha256.Sum256([]byte(plain))]
	switch {
	case !ok:
		return Key{}, Unknown
	case k.Revoked:
		return k, Revoked
	case k.Expired(now):
		return k, Expired
	}
	return k, OK
}

// DefaultPollInterval is how often a Watcher checks the file.
const DefaultPollInterval = 500 * time.Millisecond

// Watcher keeps the current Set of a keys file, re-reading it when the file
// changes (polling its mtime, size and inode, which also catches atomic
// renames that inotify watchers on the file miss). When the changed file
// does not load, the last good set stays in use, the error is logged and
// llmtap_keys_reload_errors_total counts it; the file is retried at its next
// change.
type Watcher struct {
	path     string
	logger   *slog.Logger
	interval time.Duration
	cur      atomic.Pointer[Set]
	stamp    fileStamp
}

type fileStamp struct {
	mtime time.Time
	size  int64
	ino   uint64
	dev   uint64
}

func statStamp(path string) (fileStamp, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{}, err
	}
	st := fileStamp{mtime: fi.ModTime(), size: fi.Size()}
	if sys, ok := fi.Sys().(*syscall.Stat_t); ok {
		st.ino, st.dev = sys.Ino, uint64(sys.Dev)
	}
	return st, nil
}

// NewWatcher loads path; the initial load must succeed.
func NewWatcher(path string, logger *slog.Logger) (*Watcher, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	w := &Watcher{path: path, logger: logger, interval: DefaultPollInterval}
	st, err := statStamp(path)
	if err != nil {
		return nil, fmt.Errorf("keys: %w", err)
	}
	s, err := Load(path)
	if err != nil {
		return nil, err
	}
	w.stamp = st
	w.cur.Store(s)
	keysLoaded.Set(float64(s.Len()))
	return w, nil
}

// Set returns the current set. It is safe for concurrent use and never nil.
func (w *Watcher) Set() *Set { return w.cur.Load() }

// Run polls the file until ctx is done. Call it once.
func (w *Watcher) Run(ctx context.Context) {
	t := time.NewTicker(w.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			w.check()
		}
	}
}

// check reloads the file if its stamp changed since the last attempt.
func (w *Watcher) check() {
	st, err := statStamp(w.path)
	if err != nil {
		if w.stamp != (fileStamp{}) {
			reloadErrors.Inc()
			w.logger.Error("keys file unreadable, keeping last good set", "path", w.path, "err", err, "keys", w.Set().Len())
			w.stamp = fileStamp{}
		}
		return
	}
	if st == w.stamp {
		return
	}
	w.stamp = st
	s, err := Load(w.path)
	if err != nil {
		reloadErrors.Inc()
		w.logger.Error("keys file reload failed, keeping last good set", "path", w.path, "err", err, "keys", w.Set().Len())
		return
	}
	w.cur.Store(s)
	reloads.Inc()
	keysLoaded.Set(float64(s.Len()))
	w.logger.Info("keys file reloaded", "path", w.path, "keys", s.Len())
}
