package ship

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/llmtap/llmtap/ingest/event"
)

func testLogger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

type spoolCounts struct{ corrupt, torn int }

func openTestSpool(t *testing.T, dir string, maxBytes, segBytes int64) (*spool, *spoolCounts) {
	t.Helper()
	c := &spoolCounts{}
	sp, err := openSpool(dir, maxBytes, segBytes, testLogger(t), func() { c.corrupt++ }, func(int64) { c.torn++ }, nil)
	if err != nil {
		t.Fatal(err)
	}
	return sp, c
}

func payloadN(i int) []byte {
	return []byte(fmt.Sprintf("payload-%04d-%s", i, strings.Repeat("x", i%37)))
}

// drain reads and acks every record.
func drain(t *testing.T, sp *spool) [][]byte {
	t.Helper()
	var out [][]byte
	for {
		p, at, err := sp.next()
		if errors.Is(err, errSpoolEmpty) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, slices.Clone(p))
		sp.ack(at)
	}
}

func segFiles(t *testing.T, dir, suffix string) []string {
	t.Helper()
	m, _ := filepath.Glob(filepath.Join(dir, "*"+suffix))
	slices.Sort(m)
	return m
}

func TestSpoolRoundTripAcrossSegmentsAndRestart(t *testing.T) {
	dir := t.TempDir()
	sp, _ := openTestSpool(t, dir, 1<<20, 256)
	for i := range 40 {
		if err := sp.append(payloadN(i)); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(segFiles(t, dir, segSuffix)); n < 5 {
		t.Fatalf("want several segments, got %d", n)
	}
	// Read half, then "restart".
	for range 20 {
		_, at, err := sp.next()
		if err != nil {
			t.Fatal(err)
		}
		sp.ack(at)
	}
	sp.close()

	sp2, c := openTestSpool(t, dir, 1<<20, 256)
	got := drain(t, sp2)
	if c.corrupt != 0 || c.torn != 0 {
		t.Fatalf("clean spool reported corruption %+v", c)
	}
	// The ack file resumes exactly after the last consumed record.
	if len(got) != 20 {
		t.Fatalf("replayed %d records, want 20", len(got))
	}
	for i, p := range got {
		if !bytes.Equal(p, payloadN(20+i)) {
			t.Fatalf("record %d = %q, want %q", i, p, payloadN(20+i))
		}
	}
	if sp2.size() != 0 || len(segFiles(t, dir, segSuffix)) != 0 {
		t.Fatalf("spool not empty after drain: %d bytes, files %v", sp2.size(), segFiles(t, dir, segSuffix))
	}
	// The spool keeps working after it was emptied.
	if err := sp2.append(payloadN(99)); err != nil {
		t.Fatal(err)
	}
	if got := drain(t, sp2); len(got) != 1 || !bytes.Equal(got[0], payloadN(99)) {
		t.Fatalf("after refill: %q", got)
	}
	sp2.close()
}

func TestSpoolAckFileCannotLoseRecords(t *testing.T) {
	cases := []struct {
		name string
		ack  string
		want int // records replayed out of 10 (5 consumed before the restart)
	}{
		{"valid", "", 5},
		{"missing", "-", 10},
		{"garbage", "hello", 10},
		{"not a boundary", "1 7", 10},
		{"past the end", "1 999999", 10},
		{"other segment", "7 20", 10},
	}
	// A stale ack file must not apply to a new segment that reuses an id.
	t.Run("stale after the spool emptied", func(t *testing.T) {
		dir := t.TempDir()
		sp, _ := openTestSpool(t, dir, 1<<20, 1<<20)
		for range 4 {
			sp.append(make([]byte, 100)) // equal sizes: every offset k*108 is a boundary
		}
		sp.close()
		os.WriteFile(filepath.Join(dir, ackFile), []byte("1 216"), 0o600)
		os.Remove(filepath.Join(dir, segName(1))) // as after a crash between delete and ack removal
		sp2, _ := openTestSpool(t, dir, 1<<20, 1<<20)
		for range 4 {
			sp2.append(make([]byte, 100))
		}
		sp2.close()
		sp3, _ := openTestSpool(t, dir, 1<<20, 1<<20)
		defer sp3.close()
		if got := drain(t, sp3); len(got) != 4 {
			t.Fatalf("replayed %d of 4 records", len(got))
		}
	})
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			sp, _ := openTestSpool(t, dir, 1<<20, 1<<20)
			for i := range 10 {
				sp.append(payloadN(i))
			}
			for range 5 {
				_, at, _ := sp.next()
				sp.ack(at)
			}
			sp.close()
			switch tc.ack {
			case "":
			case "-":
				os.Remove(filepath.Join(dir, ackFile))
			default:
				os.WriteFile(filepath.Join(dir, ackFile), []byte(tc.ack), 0o600)
			}
			sp2, _ := openTestSpool(t, dir, 1<<20, 1<<20)
			defer sp2.close()
			got := drain(t, sp2)
			if len(got) != tc.want || !bytes.Equal(got[len(got)-1], payloadN(9)) || !bytes.Equal(got[0], payloadN(10-tc.want)) {
				t.Fatalf("replayed %d records, want the last %d", len(got), tc.want)
			}
		})
	}
}

func TestSpoolFullBound(t *testing.T) {
	sp, _ := openTestSpool(t, t.TempDir(), 1000, 500)
	n := 0
	for {
		err := sp.append(make([]byte, 92)) // 100 bytes per record
		if errors.Is(err, errSpoolFull) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		n++
	}
	if n != 10 || sp.size() != 1000 {
		t.Fatalf("stored %d records, %d bytes; want 10, 1000", n, sp.size())
	}
	// Consuming one whole segment makes room again.
	for range 5 {
		_, at, err := sp.next()
		if err != nil {
			t.Fatal(err)
		}
		sp.ack(at)
	}
	if sp.size() != 500 {
		t.Fatalf("size after freeing a segment: %d", sp.size())
	}
	if err := sp.append(make([]byte, 92)); err != nil {
		t.Fatal(err)
	}
}

// writeSegments lays out payloadN records into segs segments of perSeg
// records each.
func writeSegments(t *testing.T, dir string, segs, perSeg int) {
	t.Helper()
	i := 0
	for s := 1; s <= segs; s++ {
		var buf bytes.Buffer
		for range perSeg {
			buf.Write(encodeRecord(payloadN(i)))
			i++
		}
		if err := os.WriteFile(filepath.Join(dir, segName(uint64(s))), buf.Bytes(), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

func recordOffset(seg, rec int, perSeg int) int64 {
	var off int64
	for r := range rec {
		off += int64(recordHeaderLen + len(payloadN((seg-1)*perSeg+r)))
	}
	return off
}

func TestSpoolRepairOnOpen(t *testing.T) {
	const segs, perSeg = 3, 5
	seq := func(ranges ...[2]int) []int {
		var out []int
		for _, r := range ranges {
			for i := r[0]; i < r[1]; i++ {
				out = append(out, i)
			}
		}
		return out
	}
	cases := []struct {
		name     string
		damage   func(t *testing.T, dir string)
		want     []int // payload indexes replayed
		corrupt  int
		torn     int
		quarantd int // number of .corrupt files
	}{
		{
			name:   "clean",
			damage: func(*testing.T, string) {},
			want:   seq([2]int{0, 15}),
		},
		{
			name: "torn tail in newest segment",
			damage: func(t *testing.T, dir string) {
				p := filepath.Join(dir, segName(3))
				fi, _ := os.Stat(p)
				os.Truncate(p, fi.Size()-5)
			},
			want: seq([2]int{0, 14}),
			torn: 1,
		},
		{
			name: "torn header in newest segment",
			damage: func(t *testing.T, dir string) {
				f, _ := os.OpenFile(filepath.Join(dir, segName(3)), os.O_APPEND|os.O_WRONLY, 0)
				f.Write([]byte{1, 2, 3})
				f.Close()
			},
			want: seq([2]int{0, 15}),
			torn: 1,
		},
		{
			name: "bit flip in sealed segment",
			damage: func(t *testing.T, dir string) {
				flip(t, filepath.Join(dir, segName(1)), recordOffset(1, 2, perSeg)+recordHeaderLen+3)
			},
			want:     seq([2]int{0, 2}, [2]int{3, 15}),
			corrupt:  1,
			quarantd: 1,
		},
		{
			name: "bit flip in checksum of newest segment",
			damage: func(t *testing.T, dir string) {
				flip(t, filepath.Join(dir, segName(3)), recordOffset(3, 1, perSeg)+5)
			},
			want:     seq([2]int{0, 11}, [2]int{12, 15}),
			corrupt:  1,
			quarantd: 1,
		},
		{
			name: "zeroed length",
			damage: func(t *testing.T, dir string) {
				p := filepath.Join(dir, segName(2))
				data, _ := os.ReadFile(p)
				binary.LittleEndian.PutUint32(data[recordOffset(2, 3, perSeg):], 0)
				os.WriteFile(p, data, 0o600)
			},
			want:     seq([2]int{0, 8}, [2]int{9, 15}),
			corrupt:  1,
			quarantd: 1,
		},
		{
			name: "truncated sealed segment",
			damage: func(t *testing.T, dir string) {
				p := filepath.Join(dir, segName(1))
				fi, _ := os.Stat(p)
				os.Truncate(p, fi.Size()-2)
			},
			want:     seq([2]int{0, 4}, [2]int{5, 15}),
			corrupt:  1,
			quarantd: 1,
		},
		{
			name: "two damaged regions in one segment",
			damage: func(t *testing.T, dir string) {
				p := filepath.Join(dir, segName(2))
				flip(t, p, recordOffset(2, 1, perSeg)+recordHeaderLen+1)
				flip(t, p, recordOffset(2, 3, perSeg)+2) // length field
			},
			want:     seq([2]int{0, 6}, [2]int{7, 8}, [2]int{9, 15}),
			corrupt:  2,
			quarantd: 2,
		},
		{
			name: "length flipped beyond the newest segment's end",
			damage: func(t *testing.T, dir string) {
				flip(t, filepath.Join(dir, segName(3)), recordOffset(3, 2, perSeg)+3)
			},
			want:     seq([2]int{0, 12}, [2]int{13, 15}),
			corrupt:  1,
			quarantd: 1,
		},
		{
			name: "first record corrupt",
			damage: func(t *testing.T, dir string) {
				flip(t, filepath.Join(dir, segName(2)), recordHeaderLen)
			},
			want:     seq([2]int{0, 5}, [2]int{6, 15}),
			corrupt:  1,
			quarantd: 1,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			writeSegments(t, dir, segs, perSeg)
			tc.damage(t, dir)
			sp, c := openTestSpool(t, dir, 1<<20, 1<<20)
			defer sp.close()
			got := drain(t, sp)
			var want [][]byte
			for _, i := range tc.want {
				want = append(want, payloadN(i))
			}
			if len(got) != len(want) {
				t.Fatalf("replayed %d records, want %d", len(got), len(want))
			}
			for i := range want {
				if !bytes.Equal(got[i], want[i]) {
					t.Fatalf("record %d = %q, want %q", i, got[i], want[i])
				}
			}
			if c.corrupt != tc.corrupt || c.torn != tc.torn {
				t.Fatalf("corrupt=%d torn=%d, want %d %d", c.corrupt, c.torn, tc.corrupt, tc.torn)
			}
			if n := len(segFiles(t, dir, corruptSuffix)); n != tc.quarantd {
				t.Fatalf("%d quarantine files, want %d", n, tc.quarantd)
			}
			// Opening again finds a clean spool: repair is persistent.
			sp.close()
			_, c2 := openTestSpool(t, dir, 1<<20, 1<<20)
			if c2.corrupt != 0 || c2.torn != 0 {
				t.Fatalf("second open still repairs: %+v", c2)
			}
		})
	}
}

func TestSpoolCorruptionAfterOpenIsQuarantined(t *testing.T) {
	dir := t.TempDir()
	sp, c := openTestSpool(t, dir, 1<<20, 1<<20)
	for i := range 6 {
		if err := sp.append(payloadN(i)); err != nil {
			t.Fatal(err)
		}
	}
	// The disk goes bad under the running spool (the write segment).
	flip(t, filepath.Join(dir, segName(1)), recordOffset(1, 4, 6)+recordHeaderLen)
	got := drain(t, sp)
	if len(got) != 5 || c.corrupt != 1 {
		t.Fatalf("got %d records, corrupt %d; want 5 (all but the damaged one), 1", len(got), c.corrupt)
	}
	for i, want := range []int{0, 1, 2, 3, 5} {
		if !bytes.Equal(got[i], payloadN(want)) {
			t.Fatalf("record %d = %q, want payload %d", i, got[i], want)
		}
	}
	if sp.size() != 0 {
		t.Fatalf("size %d after drain", sp.size())
	}
	if err := sp.append(payloadN(7)); err != nil {
		t.Fatal(err)
	}
	if got := drain(t, sp); len(got) != 1 {
		t.Fatalf("after quarantine: %d records", len(got))
	}
}

func flip(t *testing.T, path string, off int64) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	data[off] ^= 0x10
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// FuzzSpoolSegment builds a segment of known records, damages it (bits
// flipped at fuzzed positions, bytes cut from the end), and checks that the
// spool's repair never panics and replays exactly the intact records: every
// record whose bytes were not touched, in order, and nothing else. Arbitrary
// bytes (raw) are also fed to the record reader and the repair, which must
// not panic and must keep only CRC-valid records.
func FuzzSpoolSegment(f *testing.F) {
	f.Add(uint8(4), []byte{}, uint16(0), []byte{})
	f.Add(uint8(4), []byte{20, 0, 1}, uint16(0), []byte{})
	f.Add(uint8(6), []byte{2, 0, 0x80, 90, 0, 4}, uint16(0), []byte{})
	f.Add(uint8(3), []byte{}, uint16(5), []byte{0, 0, 0, 0, 0, 0, 0, 0})
	f.Add(uint8(5), []byte{0, 0, 0xff, 1, 0, 0xff}, uint16(3), []byte{0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4, 5})
	f.Fuzz(func(t *testing.T, nrec uint8, damage []byte, cut uint16, raw []byte) {
		n := int(nrec%12) + 1
		var data []byte
		var spans [][2]int
		for i := range n {
			start := len(data)
			data = append(data, encodeRecord(payloadN(i))...)
			spans = append(spans, [2]int{start, len(data)})
		}
		orig := bytes.Clone(data)
		for i := 0; i+2 < len(damage); i += 3 {
			at := int(binary.LittleEndian.Uint16(damage[i:])) % len(data)
			data[at] ^= damage[i+2]
		}
		touched := make([]bool, len(data))
		for i := range data {
			touched[i] = data[i] != orig[i]
		}
		c := int(cut) % (len(data) + 1)
		if cut%4 != 0 {
			c = 0 // cut only sometimes
		}
		data = data[:len(data)-c]
		var want [][]byte
		for i, sp := range spans {
			if sp[1] > len(data) || slices.Contains(touched[sp[0]:sp[1]], true) {
				continue
			}
			want = append(want, payloadN(i))
		}
		got := replaySegment(t, data)
		if len(got) != len(want) {
			t.Fatalf("replayed %d records, want the %d intact ones", len(got), len(want))
		}
		for i := range want {
			if !bytes.Equal(got[i], want[i]) {
				t.Fatalf("record %d = %q, want %q", i, got[i], want[i])
			}
		}

		// Arbitrary bytes: no panic, and every replayed record is a
		// CRC-valid record found in the data.
		if len(raw) > 0 && len(raw) < 1<<16 {
			var off int64
			for {
				_, next, st, err := readRecord(bytes.NewReader(raw), off, int64(len(raw)), nil)
				if err != nil {
					t.Fatalf("error on in-memory data: %v", err)
				}
				if st != recOK {
					break
				}
				if next <= off || next > int64(len(raw)) {
					t.Fatalf("offset went from %d to %d", off, next)
				}
				off = next
			}
			for _, p := range replaySegment(t, raw) {
				if !bytes.Contains(raw, encodeRecord(p)) {
					t.Fatalf("replayed a record that is not in the data")
				}
			}
		}
	})
}

// replaySegment writes data as the only segment, opens the spool and
// returns every record it replays; a second open must find nothing to
// repair.
func replaySegment(t *testing.T, data []byte) [][]byte {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, segName(1)), data, 0o600); err != nil {
		t.Fatal(err)
	}
	sp, err := openSpool(dir, 1<<30, 1<<30, slog.New(slog.DiscardHandler), nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	got := drain(t, sp)
	sp.close()
	return got
}

// BenchmarkSpoolAppend measures spooling one batch record (write + fsync).
func BenchmarkSpoolAppend(b *testing.B) {
	for _, size := range []int{64 << 10, 1 << 20} {
		b.Run(fmt.Sprintf("%dKiB", size>>10), func(b *testing.B) {
			sp, err := openSpool(b.TempDir(), 1<<40, 64<<20, slog.New(slog.DiscardHandler), nil, nil, nil)
			if err != nil {
				b.Fatal(err)
			}
			defer sp.close()
			payload := bytes.Repeat([]byte("0123456789abcdef"), size/16)
			b.SetBytes(int64(len(payload)))
			b.ReportAllocs()
			for b.Loop() {
				if err := sp.append(payload); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkSpoolRead measures reading and checksumming the records of a
// 32 MiB segment file (from the page cache), as the replayer does.
func BenchmarkSpoolRead(b *testing.B) {
	dir := b.TempDir()
	payload := bytes.Repeat([]byte("0123456789abcdef"), 64<<10/16)
	var seg bytes.Buffer
	for range 512 {
		seg.Write(encodeRecord(payload))
	}
	path := filepath.Join(dir, segName(1))
	if err := os.WriteFile(path, seg.Bytes(), 0o600); err != nil {
		b.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	end := int64(seg.Len())
	b.SetBytes(end)
	b.ReportAllocs()
	var buf []byte
	for b.Loop() {
		var off int64
		for {
			p, next, st, err := readRecord(f, off, end, buf)
			if err != nil {
				b.Fatal(err)
			}
			if st != recOK {
				break
			}
			buf, off = p[:0], next
		}
		if off != end {
			b.Fatal("short read")
		}
	}
}

// BenchmarkBatchCodec measures encoding and decoding a spooled batch of 100
// events with 1 KiB bodies (gzip NDJSON), each on its own.
func BenchmarkBatchCodec(b *testing.B) {
	evs := make([]event.Event, 100)
	var raw int64
	for i := range evs {
		evs[i] = event.Event{ID: fmt.Sprintf("id-%d", i), Source: "proxy", Status: 200,
			RequestBody:  bytes.Repeat([]byte(`{"role":"user","content":"hello"}`), 32),
			ResponseBody: bytes.Repeat([]byte(`data: {"choices":[{"delta":{"content":"x"}}]}`+"\n\n"), 24)}
		raw += int64(len(evs[i].RequestBody) + len(evs[i].ResponseBody))
	}
	p, err := encodeBatch(evs)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("encode", func(b *testing.B) {
		b.SetBytes(raw)
		b.ReportAllocs()
		for b.Loop() {
			if _, err := encodeBatch(evs); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("decode", func(b *testing.B) {
		b.SetBytes(raw)
		b.ReportAllocs()
		for b.Loop() {
			if _, err := decodeBatch(p); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// TestSpoolRepairDiscardsStaleAck: a segment rewritten by the repair moves
// its records, so a saved replay position must not be applied to it (it
// could land on a later record's boundary and skip unacknowledged ones).
func TestSpoolRepairDiscardsStaleAck(t *testing.T) {
	const perSeg = 40
	dir := t.TempDir()
	writeSegments(t, dir, 1, perSeg)
	// Records 0..37 were consumed before the crash. Record 38 has the
	// same length as record 1 (payloadN), so after record 1 is cut out
	// the old position is exactly the start of record 39 in the rewritten
	// file: a kept ack would skip record 38.
	ackAt := recordOffset(1, 38, perSeg)
	if err := os.WriteFile(filepath.Join(dir, ackFile), []byte(fmt.Sprintf("1 %d\n", ackAt)), 0o600); err != nil {
		t.Fatal(err)
	}
	// Record 1 goes bad; the rewrite shifts records 2.. back.
	flip(t, filepath.Join(dir, segName(1)), recordOffset(1, 1, perSeg)+recordHeaderLen)
	sp, c := openTestSpool(t, dir, 1<<20, 1<<20)
	defer sp.close()
	got := drain(t, sp)
	if c.corrupt != 1 {
		t.Fatalf("corrupt %d, want 1", c.corrupt)
	}
	for _, want := range []int{38, 39} { // never acknowledged
		if !slices.ContainsFunc(got, func(p []byte) bool { return bytes.Equal(p, payloadN(want)) }) {
			t.Fatalf("unacknowledged record %d was not replayed (got %d records)", want, len(got))
		}
	}
}
