package keys

import (
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// FuzzLoad feeds arbitrary bytes to Load as a keys file. Load must never
// panic; a file that loads must round-trip through the writer (the same
// keys, field for field, load again); and lookups must be consistent: every
// key is found by its digest, a lookup of any string gives the same answer
// on the original and the round-tripped set, and a found key's digest is
// the SHA-256 of the presented string. Seed corpus: testdata/fuzz/FuzzLoad.
func FuzzLoad(f *testing.F) {
	h := Hash("sk-example")
	f.Add([]byte(""), "sk-example")
	f.Add([]byte("# only a comment\n"), "")
	f.Add([]byte("- id: key_1\n  consumer: team-a\n  sha256: "+h+"\n  prefix: sk-exampl\n  created_at: 2026-01-02T03:04:05Z\n  revoked: false\n"), "sk-example")
	f.Add([]byte("- id: key_1\n  consumer: team-a\n  sha256: "+strings.ToUpper(h)+"\n  created_at: 2026-01-02T03:04:05.123456789+02:00\n  expires_at: 2026-02-01T00:00:00Z\n  rpm: 60\n  tpm: 1000\n"), "sk-example")
	f.Add([]byte("- id: key_1\n  consumer: team-a\n  sha256: "+h+"\n  revoked: true\n- id: key_2\n  consumer: b\n  sha256: "+h+"\n"), "sk-example")
	f.Add([]byte("- {id: k, consumer: \"a\\x01\", sha256: "+h+"}\n"), "x")
	f.Add([]byte("- id: k\n  consumer: c\n  sha256: zz\n  bogus: 1\n"), "")
	f.Add([]byte("[[[[[[[[[[[[[[[[[[[["), "")
	f.Add([]byte("- &a {id: k, consumer: c, sha256: "+h+"}\n- *a\n"), "sk-example")
	f.Fuzz(func(t *testing.T, data []byte, probe string) {
		dir := t.TempDir()
		path := filepath.Join(dir, "keys.yaml")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		s, err := Load(path)
		if err != nil {
			if s != nil {
				t.Fatal("Load returned a set with an error")
			}
			return
		}
		list, err := parse(data)
		if err != nil {
			t.Fatalf("Load accepted what parse refuses: %v", err)
		}
		if s.Len() != len(list) {
			t.Fatalf("Len %d, file has %d entries", s.Len(), len(list))
		}
		for _, k := range list {
			var d [32]byte
			if _, err := hex.Decode(d[:], []byte(k.SHA256)); err != nil {
				t.Fatalf("loaded an undecodable digest %q", k.SHA256)
			}
			if got, ok := s.byHash[d]; !ok || got.ID != k.ID {
				t.Fatalf("key %q not found by its digest", k.ID)
			}
		}

		// Round trip through the writer.
		path2 := filepath.Join(dir, "keys2.yaml")
		if err := writeFile(path2, list); err != nil {
			t.Fatalf("a loadable set cannot be written: %v", err)
		}
		s2, err := Load(path2)
		if err != nil {
			t.Fatalf("the written file does not load: %v", err)
		}
		list2, _ := readFile(path2)
		if len(list2) != len(list) {
			t.Fatalf("round trip: %d keys, want %d", len(list2), len(list))
		}
		for i := range list {
			if !sameKey(list[i], list2[i]) {
				t.Fatalf("round trip changed key %d:\n%+v\n%+v", i, list[i], list2[i])
			}
		}

		// Lookups agree, and a found key's digest matches the probe.
		now := time.Now()
		k1, r1 := s.lookupAt(probe, now)
		k2, r2 := s2.lookupAt(probe, now)
		if r1 != r2 || !sameKey(k1, k2) {
			t.Fatalf("lookup differs after round trip: %v %+v / %v %+v", r1, k1, r2, k2)
		}
		if r1 != Unknown && !strings.EqualFold(k1.SHA256, Hash(probe)) {
			t.Fatalf("lookup of %q found key %s with another digest", probe, k1.ID)
		}
		if r1 == Unknown && k1 != (Key{}) {
			t.Fatal("unknown lookup returned a key")
		}
		if _, r := s.lookupAt("", now); r != Unknown {
			t.Fatal("the empty key was found")
		}
	})
}

func sameKey(a, b Key) bool {
	timeEq := func(x, y *time.Time) bool {
		if x == nil || y == nil {
			return x == nil && y == nil
		}
		return x.Equal(*y)
	}
	return a.ID == b.ID && a.Consumer == b.Consumer && a.SHA256 == b.SHA256 && a.Prefix == b.Prefix &&
		a.CreatedAt.Equal(b.CreatedAt) && timeEq(a.ExpiresAt, b.ExpiresAt) &&
		a.Revoked == b.Revoked && a.RPM == b.RPM && a.TPM == b.TPM
}
