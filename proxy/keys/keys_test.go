package keys

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestCreateListRevoke(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys.yaml")
	k, plain, err := Create(path, CreateOptions{Consumer: "team-a", RPM: 60, TPM: 1000, Expires: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(plain, "sk-") || len(plain) != 3+48 {
		t.Fatalf("plain key %q: want sk- + 48 chars", plain)
	}
	for _, c := range plain[3:] {
		if !strings.ContainsRune(urlSafe, c) {
			t.Fatalf("plain key has non-url-safe char %q", c)
		}
	}
	if k.Prefix != plain[:10] || k.SHA256 != Hash(plain) || k.Consumer != "team-a" || k.RPM != 60 || k.TPM != 1000 {
		t.Fatalf("bad key %+v", k)
	}
	if k.ExpiresAt == nil || k.ExpiresAt.Sub(k.CreatedAt) != time.Hour {
		t.Fatalf("expires_at = %v, created_at %v", k.ExpiresAt, k.CreatedAt)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(raw), plain) || strings.Contains(string(raw), plain[10:]) {
		t.Fatal("plain key stored in keys file")
	}
	fi, _ := os.Stat(path)
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, want 0600", fi.Mode().Perm())
	}

	k2, plain2, err := Create(path, CreateOptions{Consumer: "team-b"})
	if err != nil {
		t.Fatal(err)
	}
	if plain2 == plain || k2.ID == k.ID || k2.ExpiresAt != nil {
		t.Fatalf("second key not distinct or has expiry: %+v", k2)
	}
	list, err := List(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].ID != k.ID || list[1].ID != k2.ID {
		t.Fatalf("list = %+v", list)
	}
	if !list[0].CreatedAt.Equal(k.CreatedAt) || !list[0].ExpiresAt.Equal(*k.ExpiresAt) {
		t.Fatalf("times did not round-trip: %+v vs %+v", list[0], k)
	}

	if err := Revoke(path, k.ID); err != nil {
		t.Fatal(err)
	}
	if err := Revoke(path, "key_nope"); err == nil {
		t.Fatal("revoke of unknown id: want error")
	}
	s, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if got, res := s.Lookup(plain); res != Revoked || got.ID != k.ID {
		t.Fatalf("lookup revoked = %v %v", got.ID, res)
	}
	if got, res := s.Lookup(plain2); res != OK || got.Consumer != "team-b" {
		t.Fatalf("lookup ok = %+v %v", got, res)
	}
}

func TestCreateValidation(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys.yaml")
	for _, opt := range []CreateOptions{{}, {Consumer: "  "}, {Consumer: "a\nb"}, {Consumer: "a", RPM: -1}, {Consumer: "a", Expires: -time.Second}} {
		if _, _, err := Create(path, opt); err == nil {
			t.Errorf("Create(%+v): want error", opt)
		}
	}
	if _, err := os.Stat(path); err == nil {
		t.Error("failed create wrote the file")
	}
	if _, err := List(path); err == nil {
		t.Error("List of missing file: want error")
	}
}

func TestCreateConcurrent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys.yaml")
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, _, err := Create(path, CreateOptions{Consumer: "c"}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	list, err := List(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 8 {
		t.Fatalf("%d keys after 8 concurrent creates", len(list))
	}
}

const goodHash = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08" // sha256("test")

func TestLoadValidation(t *testing.T) {
	entry := func(id, hash string) string {
		return "- id: " + id + "\n  consumer: c\n  sha256: " + hash + "\n  prefix: sk-x\n  created_at: 2026-01-01T00:00:00Z\n"
	}
	other := strings.Repeat("ab", 32)
	cases := []struct {
		name, body string
		ok         bool
		n          int
	}{
		{"empty", "", true, 0},
		{"comments only", "# nothing\n", true, 0},
		{"empty list", "[]\n", true, 0},
		{"one", entry("a", goodHash), true, 1},
		{"two", entry("a", goodHash) + entry("b", other), true, 2},
		{"dup id", entry("a", goodHash) + entry("a", other), false, 0},
		{"dup hash", entry("a", goodHash) + entry("b", goodHash), false, 0},
		{"dup hash case", entry("a", goodHash) + entry("b", strings.ToUpper(goodHash)), false, 0},
		{"bad hex", entry("a", strings.Repeat("zz", 32)), false, 0},
		{"short hash", entry("a", "abcd"), false, 0},
		{"no id", entry("", goodHash), false, 0},
		{"unknown field", entry("a", goodHash) + "  colour: red\n", false, 0},
		{"not a list", "id: a\n", false, 0},
		{"broken yaml", "- id: [\n", false, 0},
		{"control char in consumer", strings.Replace(entry("a", goodHash), "consumer: c", `consumer: "c\r\nX-Evil: 1"`, 1), false, 0},
		{"no consumer", "- id: a\n  sha256: " + goodHash + "\n", false, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "k.yaml")
			if err := os.WriteFile(path, []byte(tc.body), 0o600); err != nil {
				t.Fatal(err)
			}
			s, err := Load(path)
			if tc.ok != (err == nil) {
				t.Fatalf("Load err = %v, want ok=%v", err, tc.ok)
			}
			if err == nil && s.Len() != tc.n {
				t.Fatalf("Len = %d, want %d", s.Len(), tc.n)
			}
		})
	}
}

func TestLookup(t *testing.T) {
	past := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	future := past.Add(48 * time.Hour)
	now := past.Add(24 * time.Hour)
	s, err := NewSet([]Key{
		{ID: "ok", Consumer: "a", SHA256: Hash("sk-ok")},
		{ID: "okexp", Consumer: "a", SHA256: Hash("sk-future"), ExpiresAt: &future},
		{ID: "rev", Consumer: "b", SHA256: Hash("sk-rev"), Revoked: true},
		{ID: "exp", Consumer: "c", SHA256: strings.ToUpper(Hash("sk-exp")), ExpiresAt: &past},
	})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		plain, id string
		res       LookupResult
	}{
		{"sk-ok", "ok", OK},
		{"sk-future", "okexp", OK},
		{"sk-rev", "rev", Revoked},
		{"sk-exp", "exp", Expired},
		{"sk-nope", "", Unknown},
		{"", "", Unknown},
		{"SK-OK", "", Unknown},
	}
	for _, tc := range cases {
		k, res := s.lookupAt(tc.plain, now)
		if res != tc.res || k.ID != tc.id {
			t.Errorf("Lookup(%q) = %q %v, want %q %v", tc.plain, k.ID, res, tc.id, tc.res)
		}
	}
	if _, res := (*Set)(nil).Lookup("sk-ok"); res != Unknown {
		t.Error("nil set lookup not Unknown")
	}
}

func TestDisplayPrefix(t *testing.T) {
	if p := DisplayPrefix("sk-abcdefghijklmnopqrstuvwxyz"); p != "sk-abcdefg" {
		t.Errorf("prefix %q", p)
	}
	if p := DisplayPrefix("short-secret"); p != "" {
		t.Errorf("short key prefix %q, want empty", p)
	}
}

func waitFor(t *testing.T, d time.Duration, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestWatcherReload(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys.yaml")
	_, plainA, err := Create(path, CreateOptions{Consumer: "a"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewWatcher(filepath.Join(t.TempDir(), "missing.yaml"), nil); err == nil {
		t.Fatal("NewWatcher on a missing file: want error")
	}
	w, err := NewWatcher(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { w.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	if _, res := w.Set().Lookup(plainA); res != OK {
		t.Fatalf("initial lookup %v", res)
	}
	kb, plainB, err := Create(path, CreateOptions{Consumer: "b"})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Second, func() bool { _, r := w.Set().Lookup(plainB); return r == OK }, "new key accepted")
	if testutil.ToFloat64(keysLoaded) != 2 {
		t.Errorf("llmtap_keys_loaded = %v, want 2", testutil.ToFloat64(keysLoaded))
	}

	if err := Revoke(path, kb.ID); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Second, func() bool { _, r := w.Set().Lookup(plainB); return r == Revoked }, "revoked key refused")

	errsBefore := testutil.ToFloat64(reloadErrors)
	if err := os.WriteFile(path, []byte("- id: [broken\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Second, func() bool { return testutil.ToFloat64(reloadErrors) > errsBefore }, "reload error counted")
	if _, r := w.Set().Lookup(plainA); r != OK {
		t.Fatalf("last good set not kept: %v", r)
	}
	if _, r := w.Set().Lookup(plainB); r != Revoked {
		t.Fatalf("last good set not kept for b: %v", r)
	}

	// Removing the file keeps the set too; restoring a valid file is picked up.
	os.Remove(path)
	waitFor(t, 2*time.Second, func() bool { return testutil.ToFloat64(reloadErrors) > errsBefore+1 }, "missing file counted")
	_, plainC, err := Create(path, CreateOptions{Consumer: "c"})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Second, func() bool { _, r := w.Set().Lookup(plainC); return r == OK }, "recreated file loaded")
	if _, r := w.Set().Lookup(plainA); r != Unknown {
		t.Fatalf("key of the removed file still known: %v", r)
	}
}

func BenchmarkLookup(b *testing.B) {
	list := make([]Key, 1000)
	plains := make([]string, len(list))
	for i := range list {
		p, _ := NewPlainKey()
		plains[i] = p
		list[i] = Key{ID: "k" + p[3:13], Consumer: "c", SHA256: Hash(p)}
	}
	s, err := NewSet(list)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if _, r := s.Lookup(plains[i%len(plains)]); r != OK {
			b.Fatal(r)
		}
	}
}
