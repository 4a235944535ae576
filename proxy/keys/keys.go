// Package keys manages the proxy's API keys file: creating, listing and
// revoking keys (for the CLI), and loading, looking up and hot-reloading
// them (for the proxy).
//
// A key is "sk-" followed by 48 random URL-safe characters. Only its SHA-256
// (hex) and a short display prefix are stored; the plain key is returned once
// by Create and never written anywhere. Lookups hash the presented key and
// look the digest up in a map, so no plain-key comparison ever happens.
//
// The file is a YAML list of entries:
//
//   - id: key_3f9c0a1b2c4d5e6f
//     consumer: team-a
//     sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
//     prefix: sk-AbCdEfG
//     created_at: 2026-01-02T03:04:05Z
//     expires_at: 2026-02-01T03:04:05Z   # optional
//     revoked: false
//     rpm: 60                            # optional, 0 = unlimited
//     tpm: 100000                        # optional, 0 = unlimited
//
// Writers (Create, Revoke) hold an advisory lock on "<path>.lock" and replace
// the file atomically (temp file in the same directory, fsync, rename, mode
// 0600), so concurrent CLI calls never lose an entry and a reader never sees
// a half-written file.
package keys

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"gopkg.in/yaml.v3"
)

// KeyPrefix starts every key this package creates.
const KeyPrefix = "sk-"

// randomLen is the number of random URL-safe characters after KeyPrefix.
const randomLen = 48

// PrefixLen is the length of the display prefix stored with a key
// ("sk-" and 7 random characters).
const PrefixLen = 10

// Key is one entry of the keys file. It never holds the plain key.
type Key struct {
	ID        string     `yaml:"id" json:"id"`
	Consumer  string     `yaml:"consumer" json:"consumer"`
	SHA256    string     `yaml:"sha256" json:"sha256"`
	Prefix    string     `yaml:"prefix" json:"prefix"`
	CreatedAt time.Time  `yaml:"created_at" json:"created_at"`
	ExpiresAt *time.Time `yaml:"expires_at,omitempty" json:"expires_at,omitempty"`
	Revoked   bool       `yaml:"revoked" json:"revoked"`
	// RPM and TPM are per-key limits (requests and tokens per minute);
	// 0 means unlimited. Stored now, enforced by a later proxy stage.
	RPM int64 `yaml:"rpm,omitempty" json:"rpm,omitempty"`
	TPM int64 `yaml:"tpm,omitempty" json:"tpm,omitempty"`
}

// Expired reports whether k has an expiry at or before now.
func (k Key) Expired(now time.Time) bool {
	return k.ExpiresAt != nil && !now.Before(*k.ExpiresAt)
}

// CreateOptions are the inputs of Create.
type CreateOptions struct {
	Consumer string
	RPM, TPM int64
	// Expires, when > 0, sets ExpiresAt to now+Expires.
	Expires time.Duration
}

// Hash returns the hex SHA-256 of a plain key, as stored in the keys file.
func Hash(plain string) string {
	sum := sha256.Sum256([]byte(plain))
	return hex.EncodeToString(sum[:])
}

// DisplayPrefix returns the part of a presented key that may be shown and
// logged: the first PrefixLen characters of keys long enough that this
// reveals only a small part of them, and "" for short strings.
func DisplayPrefix(plain string) string {
	if len(plain) < 2*PrefixLen {
		return ""
	}
	return plain[:PrefixLen]
}

const urlSafe = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

// NewPlainKey returns a fresh random key: KeyPrefix + 48 URL-safe characters
// from crypto/rand (288 bits of entropy).
func NewPlainKey() (string, error) {
	var raw [randomLen]byte
	if _, err := io.ReadFull(rand.Reader, raw[:]); err != nil {
		return "", fmt.Errorf("keys: random: %w", err)
	}
	b := make([]byte, 0, len(KeyPrefix)+randomLen)
	b = append(b, KeyPrefix...)
	for _, c := range raw {
		b = append(b, urlSafe[c&63]) // 64 symbols: no modulo bias
	}
	return string(b), nil
}

func newID() (string, error) {
	var raw [8]byte
	if _, err := io.ReadFull(rand.Reader, raw[:]); err != nil {
		return "", fmt.Errorf("keys: random: %w", err)
	}
	return "key_" + hex.EncodeToString(raw[:]), nil
}

// Create adds a new key for opt.Consumer to the file at path (creating the
// file if missing) and returns the stored entry and the plain key. The plain
// key is not recoverable afterwards.
func Create(path string, opt CreateOptions) (Key, string, error) {
	opt.Consumer = strings.TrimSpace(opt.Consumer)
	if opt.Consumer == "" {
		return Key{}, "", errors.New("keys: consumer is required")
	}
	if opt.RPM < 0 || opt.TPM < 0 || opt.Expires < 0 {
		return Key{}, "", errors.New("keys: rpm, tpm and expires must not be negative")
	}
	plain, err := NewPlainKey()
	if err != nil {
		return Key{}, "", err
	}
	id, err := newID()
	if err != nil {
		return Key{}, "", err
	}
	now := time.Now().UTC().Truncate(time.Second)
	k := Key{
		ID:        id,
		Consumer:  opt.Consumer,
		SHA256:    Hash(plain),
		Prefix:    plain[:PrefixLen],
		CreatedAt: now,
		RPM:       opt.RPM,
		TPM:       opt.TPM,
	}
	if opt.Expires > 0 {
		exp := now.Add(opt.Expires)
		k.ExpiresAt = &exp
	}
	err = update(path, true, func(list []Key) ([]Key, error) {
		return append(list, k), nil
	})
	if err != nil {
		return Key{}, "", err
	}
	return k, plain, nil
}

// List returns the keys in file order. A missing file is an error.
func List(path string) ([]Key, error) {
	list, err := readFile(path)
	if err != nil {
		return nil, err
	}
	if err := validate(list); err != nil {
		return nil, fmt.Errorf("keys: %s: %w", path, err)
	}
	return list, nil
}

// Revoke marks the key with the given id revoked. Revoking an already
// revoked key is not an error; an unknown id is.
func Revoke(path, id string) error {
	return update(path, false, func(list []Key) ([]Key, error) {
		for i := range list {
			if list[i].ID == id {
				list[i].Revoked = true
				return list, nil
			}
		}
		return nil, fmt.Errorf("keys: no key with id %q in %s", id, path)
	})
}

// update runs fn on the file's entries under the lock and writes the result
// atomically.
func update(path string, create bool, fn func([]Key) ([]Key, error)) error {
	unlock, err := lock(path)
	if err != nil {
		return err
	}
	defer unlock()
	list, err := readFile(path)
	if err != nil {
		if !(create && errors.Is(err, os.ErrNotExist)) {
			return err
		}
		list = nil
	}
	if err := validate(list); err != nil {
		return fmt.Errorf("keys: %s: %w", path, err)
	}
	list, err = fn(list)
	if err != nil {
		return err
	}
	if err := validate(list); err != nil {
		return fmt.Errorf("keys: %w", err)
	}
	return writeFile(path, list)
}

func lock(path string) (func(), error) {
	f, err := os.OpenFile(path+".lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("keys: lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("keys: lock %s: %w", f.Name(), err)
	}
	return func() {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}

func readFile(path string) ([]Key, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("keys: %w", err)
	}
	list, err := parse(b)
	if err != nil {
		return nil, fmt.Errorf("keys: %s: %w", path, err)
	}
	return list, nil
}

// parse decodes the YAML list strictly (unknown fields are an error).
func parse(b []byte) ([]Key, error) {
	var list []Key
	if len(bytes.TrimSpace(b)) == 0 {
		return nil, nil
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&list); err != nil {
		if errors.Is(err, io.EOF) { // only comments
			return nil, nil
		}
		return nil, fmt.Errorf("parse: %w", err)
	}
	return list, nil
}

func validate(list []Key) error {
	ids := make(map[string]bool, len(list))
	hashes := make(map[string]bool, len(list))
	for i, k := range list {
		switch {
		case k.ID == "":
			return fmt.Errorf("entry %d: id is empty", i+1)
		case k.Consumer == "":
			return fmt.Errorf("key %s: consumer is empty", k.ID)
		case !printable(k.Consumer) || !printable(k.ID):
			// The consumer name travels in an HTTP header.
			return fmt.Errorf("key %s: id and consumer must not contain control characters", strconv.Quote(k.ID))
		case k.RPM < 0 || k.TPM < 0:
			return fmt.Errorf("key %s: rpm and tpm must not be negative", k.ID)
		}
		if len(k.SHA256) != 2*sha256.Size {
			return fmt.Errorf("key %s: sha256 must be %d hex characters", k.ID, 2*sha256.Size)
		}
		if _, err := hex.DecodeString(k.SHA256); err != nil {
			return fmt.Errorf("key %s: sha256 is not hex: %w", k.ID, err)
		}
		h := strings.ToLower(k.SHA256)
		if ids[k.ID] {
			return fmt.Errorf("duplicate id %s", k.ID)
		}
		if hashes[h] {
			return fmt.Errorf("key %s: duplicate sha256", k.ID)
		}
		ids[k.ID], hashes[h] = true, true
	}
	return nil
}

func printable(s string) bool {
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return false
		}
	}
	return true
}

const fileHeader = "# llmtap API keys. Managed with `llmtap keys create|list|revoke`.\n" +
	"# Only SHA-256 digests of keys are stored here; plain keys are shown once at creation.\n"

func writeFile(path string, list []Key) error {
	if list == nil {
		list = []Key{}
	}
	var buf bytes.Buffer
	buf.WriteString(fileHeader)
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(list); err != nil {
		return fmt.Errorf("keys: encode: %w", err)
	}
	if err := enc.Close(); err != nil {
		return fmt.Errorf("keys: encode: %w", err)
	}
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("keys: write: %w", err)
	}
	tmpName := tmp.Name()
	ok := false
	defer func() {
		if !ok {
			tmp.Close()
			os.Remove(tmpName)
		}
	}()
	if err := tmp.Chmod(0o600); err != nil {
		return fmt.Errorf("keys: write: %w", err)
	}
	if _, err := tmp.Write(buf.Bytes()); err != nil {
		return fmt.Errorf("keys: write: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("keys: write: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("keys: write: %w", err)
	}
	if err := os.Rename(tmpName, path); err != nil {
		return fmt.Errorf("keys: write: %w", err)
	}
	ok = true
	if d, err := os.Open(dir); err == nil { // make the rename durable
		_ = d.Sync()
		d.Close()
	}
	return nil
}
