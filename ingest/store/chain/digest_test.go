package chain

import (
	"encoding/hex"
	"math"
	"reflect"
	"testing"
	"time"
)

func f64(v float64) *float64 { return &v }
func i64(v int64) *int64     { return &v }

// tenth is a variable so that tenth+0.2 is computed at run time
// (0.30000000000000004), not folded to the constant 0.3.
var tenth = 0.1

func sampleRow() Row {
	return Row{
		EventID: [16]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16},
		TSMicro: 1772366400123456, Source: "proxy", Consumer: "team-ä'\"x", KeyID: "k1", KeyPrefix: "sk-llmt",
		ClientIP: "10.0.0.1", Method: "POST", Path: "/v1/chat/completions", RequestID: "r1", Endpoint: "chat",
		Model: "m", Status: 200, Stream: true, LatencyMs: tenth + 0.2, TTFBMs: f64(5.5), TTFTMs: nil,
		PromptTokens: i64(10), CompletionTokens: i64(0), TotalTokens: nil, UsageSource: "response",
		FinishReason: "stop", Error: "", RequestHeaders: `{"a":"b"}`, ResponseHeaders: `{}`, Truncated: false,
		TextHash: TextHash(&Content{Prompt: "hi", Response: "hello"}), BodyHash: BodyHash(&Content{RequestBody: "{}"}),
		Batch: 42,
	}
}

// TestDigestGolden pins the encoding: a change here breaks every stored
// chain, so it must come with a new version tag.
func TestDigestGolden(t *testing.T) {
	r := sampleRow()
	d := r.Digest()
	// Recomputed independently from the package documentation (Python
	// hashlib/struct) to check that the documented encoding is the real one.
	const want = "2d90e0e3b94ce83dcb5fdfeb5274684bb31588429b16ef4977274e366862abc0"
	if got := hex.EncodeToString(d[:]); got != want {
		t.Errorf("row digest = %s, want %s", got, want)
	}
	l := Link{Seq: 7, Kind: KindBatch, Batch: 42, PrevHash: "ab", Rows: 1,
		MinTS: time.UnixMicro(r.TSMicro), MaxTS: time.UnixMicro(r.TSMicro), CreatedAt: time.Unix(1772366401, 0)}
	const wantLink = "16c1b9853c5fe7d651ee4b6b958400a4fdd922106107764caa476af83946beb1"
	if got := l.ComputeHash(RowsDigest([]IDDigest{{r.EventID, d}})); got != wantLink {
		t.Errorf("link hash = %s, want %s", got, wantLink)
	}
}

// TestDigestCoversEveryField: changing any field but Batch changes the
// digest.
func TestDigestCoversEveryField(t *testing.T) {
	base := sampleRow()
	d0 := base.Digest()
	v := reflect.ValueOf(&base).Elem()
	for i := 0; i < v.NumField(); i++ {
		name := v.Type().Field(i).Name
		r := sampleRow()
		f := reflect.ValueOf(&r).Elem().Field(i)
		switch f.Kind() {
		case reflect.String:
			f.SetString(f.String() + "x")
		case reflect.Int64, reflect.Int32:
			f.SetInt(f.Int() + 1)
		case reflect.Bool:
			f.SetBool(!f.Bool())
		case reflect.Float64:
			f.SetFloat(math.Nextafter(f.Float(), 1e9))
		case reflect.Array:
			f.Index(0).SetUint(f.Index(0).Uint() + 1)
		case reflect.Pointer:
			if f.IsNil() {
				f.Set(reflect.New(f.Type().Elem()))
			} else {
				f.Set(reflect.Zero(f.Type()))
			}
		default:
			t.Fatalf("field %s: unhandled kind %s", name, f.Kind())
		}
		changed := r.Digest() != d0
		if name == "Batch" {
			if changed {
				t.Errorf("Batch changes the row digest (the link holds it)")
			}
			continue
		}
		if !changed {
			t.Errorf("changing %s does not change the digest", name)
		}
	}
}

func TestDigestNormalization(t *testing.T) {
	a, b := sampleRow(), sampleRow()
	a.LatencyMs, b.LatencyMs = 0, math.Copysign(0, -1)
	if a.Digest() != b.Digest() {
		t.Error("-0 and +0 differ")
	}
	a.LatencyMs, b.LatencyMs = math.NaN(), math.Float64frombits(0x7ff8000000000001)
	if a.Digest() != b.Digest() {
		t.Error("two NaNs differ")
	}
	// nil and 0 tokens are different facts.
	a, b = sampleRow(), sampleRow()
	a.TotalTokens, b.TotalTokens = nil, i64(0)
	if a.Digest() == b.Digest() {
		t.Error("nil and 0 tokens hash alike")
	}
}

func TestRowsDigestOrderIndependent(t *testing.T) {
	ds := []IDDigest{{ID: [16]byte{3}}, {ID: [16]byte{1}, Digest: [32]byte{9}}, {ID: [16]byte{2}}}
	rev := []IDDigest{ds[2], ds[1], ds[0]}
	if RowsDigest(ds) != RowsDigest(rev) {
		t.Error("rows digest depends on input order")
	}
	if RowsDigest(ds[:2]) == RowsDigest(ds) {
		t.Error("rows digest ignores a row")
	}
}

// FuzzDigestBoundaries: moving bytes between adjacent strings always
// changes the digest (the length prefix makes the encoding injective).
func FuzzDigestBoundaries(f *testing.F) {
	f.Add("ab", "c", 1)
	f.Add("", "x", 0)
	f.Add("team", "-01", 2)
	f.Fuzz(func(t *testing.T, a, b string, k int) {
		joined := a + b
		if k < 0 || k > len(joined) || k == len(a) {
			return
		}
		r1, r2 := sampleRow(), sampleRow()
		r1.Source, r1.Consumer = a, b
		r2.Source, r2.Consumer = joined[:k], joined[k:]
		if r1.Digest() == r2.Digest() {
			t.Errorf("(%q,%q) and (%q,%q) hash alike", a, b, r2.Source, r2.Consumer)
		}
		c1 := Content{Prompt: a, Response: b}
		c2 := Content{Prompt: joined[:k], Response: joined[k:]}
		if TextHash(&c1) == TextHash(&c2) {
			t.Errorf("text hash of (%q,%q) and (%q,%q) alike", a, b, c2.Prompt, c2.Response)
		}
	})
}
