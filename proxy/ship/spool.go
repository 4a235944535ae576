package ship

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// Spool on-disk format
//
// The spool is a directory of append-only segment files named
// NNNNNNNNNN.seg (ten decimal digits, increasing). A segment is a sequence of
// records:
//
//	+----------------+----------------------+-----------------+
//	| length uint32  | CRC32C(payload) u32  | payload (length)|
//	| little endian  | little endian        |                 |
//	+----------------+----------------------+-----------------+
//
// A payload is one batch of events as gzip-compressed NDJSON (the same
// encoding the ingest client sends). Records are written with one write and
// then fsync'ed (one fsync per batch), and a new segment's directory entry is
// fsync'ed when it is created: a batch counts as spooled only after its fsync
// returned. Only the newest segment is ever written; older ones are sealed.
// A segment is deleted only after the replayer got every one of its records
// consumed by the next hop.
//
// The replay position in the oldest segment is saved in the file "ack"
// ("<segment id> <offset>") after each consumed batch, by write-to-temp and
// rename without fsync: it only saves re-sending batches after a restart,
// and a lost, stale or damaged ack file means duplicates, never loss (an
// offset is used only if a valid record or the segment's end is there).
//
// Opening the spool scans every segment:
//   - a torn tail (an incomplete record at the end of the newest segment,
//     left by a crash during a write that was never acknowledged) is
//     truncated away;
//   - a checksum mismatch, an impossible length, or an incomplete record
//     followed by more data resynchronises: the scan moves forward byte by
//     byte to the next offset where a complete record's length and CRC32C
//     validate (and, in the Shipper, the payload decodes as a batch). Only
//     the damaged bytes in between are moved to NNNNNNNNNN[.k].corrupt (one
//     file per damaged region, kept for inspection, never replayed); the
//     intact records before and after it are kept, the segment is rewritten
//     without the damaged bytes (write to temp, fsync, rename), and
//     llmtap_spool_corrupt_records_total grows by one per damaged region.
//     The number of events lost in a damaged region cannot be known (the
//     events are inside the damaged, gzip-compressed payload); it is logged
//     as unknown. An incomplete record at the end of a sealed segment is a
//     damaged region too.
//
// The same resynchronisation applies when a record goes bad on disk after
// Open (found by the replayer): the damaged bytes are copied to a .corrupt
// file and the replay continues at the next intact record.
//
// Nothing in the spool can make Open fail except I/O errors on the directory
// itself, so a damaged spool never causes a crash loop.

const (
	recordHeaderLen = 8
	// maxRecordLen bounds a record's payload; larger lengths are corruption.
	maxRecordLen  = 1 << 30
	segSuffix     = ".seg"
	corruptSuffix = ".corrupt"
	ackFile       = "ack"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// errSpoolFull is returned by append when the record would exceed the
// spool's byte bound.
var errSpoolFull = errors.New("ship: spool full")

// errSpoolEmpty is returned by next when there is nothing to replay.
var errSpoolEmpty = errors.New("ship: spool empty")

// tailState says how reading a record ended.
type tailState int

const (
	recOK      tailState = iota // a valid record
	recEnd                      // clean end of data
	recTorn                     // incomplete record at the end of data
	recCorrupt                  // bad length or checksum
)

// readRecord reads the record at off from r, whose valid data ends at end.
// buf is reused for the payload when large enough. On recOK it returns the
// payload and the offset of the next record.
func readRecord(r io.ReaderAt, off, end int64, buf []byte) (payload []byte, next int64, st tailState, err error) {
	if off >= end {
		return nil, off, recEnd, nil
	}
	if end-off < recordHeaderLen {
		return nil, off, recTorn, nil
	}
	var hdr [recordHeaderLen]byte
	if _, err := r.ReadAt(hdr[:], off); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, off, recTorn, nil // the file is shorter than we knew
		}
		return nil, off, recEnd, fmt.Errorf("read record header: %w", err)
	}
	n := int64(binary.LittleEndian.Uint32(hdr[0:4]))
	sum := binary.LittleEndian.Uint32(hdr[4:8])
	if n == 0 || n > maxRecordLen {
		return nil, off, recCorrupt, nil
	}
	if end-off-recordHeaderLen < n {
		return nil, off, recTorn, nil
	}
	if int64(cap(buf)) >= n {
		buf = buf[:n]
	} else {
		buf = make([]byte, n)
	}
	if _, err := r.ReadAt(buf, off+recordHeaderLen); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, off, recTorn, nil
		}
		return nil, off, recEnd, fmt.Errorf("read record: %w", err)
	}
	if crc32.Checksum(buf, castagnoli) != sum {
		return nil, off, recCorrupt, nil
	}
	return buf, off + recordHeaderLen + n, recOK, nil
}

// encodeRecord returns header+payload as one buffer.
func encodeRecord(payload []byte) []byte {
	rec := make([]byte, recordHeaderLen+len(payload))
	binary.LittleEndian.PutUint32(rec[0:4], uint32(len(payload)))
	binary.LittleEndian.PutUint32(rec[4:8], crc32.Checksum(payload, castagnoli))
	copy(rec[recordHeaderLen:], payload)
	return rec
}

// segment is one segment file; size is the end of its last valid record.
type segment struct {
	id   uint64
	size int64
}

func segName(id uint64) string { return fmt.Sprintf("%010d%s", id, segSuffix) }

// pos is a position in the spool: the record after (seg, off) is next.
type pos struct {
	seg uint64
	off int64
}

// spool is the on-disk queue. append is safe for concurrent use; next, ack
// and quarantine are called by one reader goroutine only.
type spool struct {
	dir        string
	lock       *os.File // holds the directory lock until close
	maxBytes   int64
	segBytes   int64
	log        *slog.Logger
	onCorrupt  func() // called once per quarantined damaged region
	onTornTail func(bytes int64)
	// check, when set, must accept a payload for a resynchronisation to
	// stop at it (a CRC match alone is then not enough).
	check *payloadCheck

	mu     sync.Mutex
	segs   []segment // ascending ids; the last one is the write segment when w != nil
	w      *os.File
	bytes  atomic.Int64 // sum of segs[].size; written under mu, read anywhere
	nextID uint64
	roff   int64 // read offset in segs[0]
	closed bool

	// reader-only state
	rf  *os.File
	rid uint64
	buf []byte
}

// openSpool opens (creating if needed) the spool in dir, scanning and
// repairing its segments.
// check (may be nil) is the payload check used when resynchronising after
// damage.
func openSpool(dir string, maxBytes, segBytes int64, log *slog.Logger, onCorrupt func(), onTorn func(int64), check *payloadCheck) (*spool, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("ship: create spool dir: %w", err)
	}
	lock, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		lock.Close()
		return nil, fmt.Errorf("ship: read spool dir: %w", err)
	}
	s := &spool{dir: dir, lock: lock, maxBytes: maxBytes, segBytes: segBytes, log: log, onCorrupt: onCorrupt, onTornTail: onTorn, check: check, nextID: 1}
	var ids []uint64
	for _, e := range entries {
		name := e.Name()
		if !e.Type().IsRegular() || !strings.HasSuffix(name, segSuffix) {
			continue
		}
		id, err := strconv.ParseUint(strings.TrimSuffix(name, segSuffix), 10, 64)
		if err != nil {
			continue
		}
		ids = append(ids, id)
	}
	slices.Sort(ids)
	rewritten := false
	for i, id := range ids {
		size, rw, err := s.repair(id, i == len(ids)-1)
		rewritten = rewritten || rw
		if err != nil {
			// Leave the file alone and skip it: an unreadable segment must
			// not stop the proxy. It is logged loudly.
			log.Error("spool segment unreadable, skipped", "segment", segName(id), "err", err)
			continue
		}
		if size == 0 {
			os.Remove(filepath.Join(dir, segName(id)))
			continue
		}
		s.segs = append(s.segs, segment{id: id, size: size})
		s.bytes.Add(size)
	}
	if len(ids) > 0 {
		s.nextID = ids[len(ids)-1] + 1
	}
	if rewritten {
		// Offsets moved: a saved position could now point at a later
		// record. Replaying from the start only duplicates.
		os.Remove(filepath.Join(dir, ackFile))
	}
	s.roff = s.loadAck()
	spoolBytes.Set(float64(s.bytes.Load()))
	return s, nil
}

// loadAck returns the saved replay offset in segs[0], or 0 when there is
// none or it cannot be trusted; an ack file that does not fit is removed,
// so that it can never apply to a later segment that reuses the id.
func (s *spool) loadAck() int64 {
	path := filepath.Join(s.dir, ackFile)
	data, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	if off := s.checkAck(string(data)); off > 0 {
		return off
	}
	os.Remove(path)
	return 0
}

func (s *spool) checkAck(data string) int64 {
	var id uint64
	var off int64
	if _, err := fmt.Sscanf(data, "%d %d", &id, &off); err != nil || len(s.segs) == 0 {
		return 0
	}
	seg := s.segs[0]
	if id != seg.id || off <= 0 || off > seg.size {
		return 0
	}
	if off == seg.size {
		return off
	}
	f, err := os.Open(filepath.Join(s.dir, segName(seg.id)))
	if err != nil {
		return 0
	}
	defer f.Close()
	if _, _, st, err := readRecord(f, off, seg.size, nil); err != nil || st != recOK {
		return 0 // not a record boundary: replay the whole segment
	}
	return off
}

// saveAck records the replay position (best effort, see the format notes).
func (s *spool) saveAck(p pos) {
	tmp := filepath.Join(s.dir, ackFile+".tmp")
	if err := os.WriteFile(tmp, []byte(fmt.Sprintf("%d %d\n", p.seg, p.off)), 0o600); err != nil {
		return
	}
	os.Rename(tmp, filepath.Join(s.dir, ackFile))
}

// repair scans one segment, truncates a torn tail (newest segment only),
// quarantines damaged regions and rewrites the segment with the intact
// records only. It returns the valid size and whether the file was
// rewritten (record offsets moved).
func (s *spool) repair(id uint64, newest bool) (int64, bool, error) {
	path := filepath.Join(s.dir, segName(id))
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return 0, false, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0, false, err
	}
	size := fi.Size()
	data := make([]byte, size)
	if _, err := f.ReadAt(data, 0); err != nil && !errors.Is(err, io.EOF) {
		return 0, false, err
	}
	sc := scanSegment(data, s.check)
	if len(sc.bad) == 0 && sc.torn < 0 {
		return size, false, nil
	}
	if sc.torn >= 0 && !newest {
		// An incomplete record at the end of a sealed segment: damage.
		sc.bad = append(sc.bad, [2]int64{sc.torn, size})
		sc.torn = -1
	}
	if len(sc.bad) == 0 {
		// Only a torn tail: the write interrupted by a crash.
		s.log.Warn("spool: truncating torn tail (a write interrupted by a crash)",
			"segment", segName(id), "valid_bytes", sc.torn, "torn_bytes", size-sc.torn)
		if err := f.Truncate(sc.torn); err != nil {
			return 0, false, err
		}
		if err := f.Sync(); err != nil {
			return 0, false, err
		}
		if s.onTornTail != nil {
			s.onTornTail(size - sc.torn)
		}
		return sc.torn, false, nil
	}
	for _, b := range sc.bad {
		if err := s.quarantine(f, id, b[0], b[1]); err != nil {
			return 0, false, err
		}
	}
	if sc.torn >= 0 {
		s.log.Warn("spool: dropping torn tail after damage", "segment", segName(id), "torn_bytes", size-sc.torn)
		if s.onTornTail != nil {
			s.onTornTail(size - sc.torn)
		}
	}
	// Rewrite the segment with the intact records only.
	var out []byte
	for _, r := range sc.recs {
		out = append(out, data[r[0]:r[1]]...)
	}
	if len(out) == 0 {
		if err := f.Truncate(0); err != nil {
			return 0, false, err
		}
		return 0, true, f.Sync()
	}
	tmp := path + ".tmp"
	if err := writeFileSync(tmp, out); err != nil {
		os.Remove(tmp)
		return 0, false, err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return 0, false, err
	}
	if err := syncDir(s.dir); err != nil {
		return 0, false, err
	}
	return int64(len(out)), true, nil
}

func writeFileSync(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// payloadCheck is what a resynchronisation requires of a payload besides
// its CRC: a fixed prefix (checked first, so that scanning a damaged region
// of random-looking bytes rarely computes a CRC) and a full check.
type payloadCheck struct {
	prefix []byte
	valid  func([]byte) bool
}

// segScan is the result of scanSegment: the intact records and damaged
// regions as [start, end) byte ranges in order, and the start of a torn
// tail (an incomplete record with no intact record after it), or -1.
type segScan struct {
	recs, bad [][2]int64
	torn      int64
}

// recordAt checks the record at off in data: it returns the offset after
// it and recOK, recTorn (the record does not fit in data) or recCorrupt.
func recordAt(data []byte, off int64, check *payloadCheck) (int64, tailState) {
	end := int64(len(data))
	if end-off < recordHeaderLen {
		return off, recTorn
	}
	n := int64(binary.LittleEndian.Uint32(data[off : off+4]))
	sum := binary.LittleEndian.Uint32(data[off+4 : off+8])
	if n == 0 || n > maxRecordLen {
		return off, recCorrupt
	}
	if end-off-recordHeaderLen < n {
		return off, recTorn
	}
	p := data[off+recordHeaderLen : off+recordHeaderLen+n]
	if check != nil && !bytes.HasPrefix(p, check.prefix) {
		return off, recCorrupt // cheap filter before the CRC
	}
	if crc32.Checksum(p, castagnoli) != sum {
		return off, recCorrupt
	}
	if check != nil && check.valid != nil && !check.valid(p) {
		return off, recCorrupt
	}
	return off + recordHeaderLen + n, recOK
}

// resync returns the first offset at or after from where a complete,
// valid record starts, or len(data) when there is none.
func resync(data []byte, from int64, check *payloadCheck) int64 {
	for o := from; o+recordHeaderLen < int64(len(data)); o++ {
		if _, st := recordAt(data, o, check); st == recOK {
			return o
		}
	}
	return int64(len(data))
}

// scanSegment splits a segment's bytes into intact records and damaged
// regions. Records met in sequence are checked by length and CRC only;
// after damage, the record the scan resynchronises on must also pass valid.
func scanSegment(data []byte, check *payloadCheck) segScan {
	sc := segScan{torn: -1}
	end := int64(len(data))
	var off int64
	for off < end {
		next, st := recordAt(data, off, nil)
		if st == recOK {
			sc.recs = append(sc.recs, [2]int64{off, next})
			off = next
			continue
		}
		j := resync(data, off+1, check)
		if j == end && st == recTorn {
			sc.torn = off
			break
		}
		sc.bad = append(sc.bad, [2]int64{off, j})
		off = j
	}
	return sc
}

// quarantine copies bytes [from, to) of segment id (open as f) into
// NNNNNNNNNN.corrupt, fsyncs it, and counts one corrupt record.
func (s *spool) quarantine(f *os.File, id uint64, from, to int64) error {
	name := fmt.Sprintf("%010d%s", id, corruptSuffix)
	path := filepath.Join(s.dir, name)
	for i := 1; ; i++ {
		if _, err := os.Lstat(path); errors.Is(err, os.ErrNotExist) {
			break
		}
		path = filepath.Join(s.dir, fmt.Sprintf("%010d.%d%s", id, i, corruptSuffix))
	}
	out, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("quarantine: %w", err)
	}
	_, err = io.Copy(out, io.NewSectionReader(f, from, to-from))
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("quarantine: %w", err)
	}
	s.log.Error("spool: damaged bytes quarantined (not replayed); intact records around them are kept",
		"segment", segName(id), "offset", from, "quarantined_bytes", to-from, "file", filepath.Base(path),
		"events_lost", "unknown (inside the damaged payload)")
	if s.onCorrupt != nil {
		s.onCorrupt()
	}
	return nil
}

// append writes payload as one record and fsyncs it. It returns errSpoolFull
// when the spool would exceed its bound.
func (s *spool) append(payload []byte) error {
	rec := encodeRecord(payload)
	n := int64(len(rec))
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("ship: spool closed")
	}
	if s.bytes.Load()+n > s.maxBytes {
		return errSpoolFull
	}
	if s.w == nil || (s.segs[len(s.segs)-1].size > 0 && s.segs[len(s.segs)-1].size+n > s.segBytes) {
		if err := s.rollLocked(); err != nil {
			return err
		}
	}
	last := &s.segs[len(s.segs)-1]
	if _, err := s.w.WriteAt(rec, last.size); err != nil {
		s.abandonWriterLocked()
		return fmt.Errorf("ship: spool write: %w", err)
	}
	if err := s.w.Sync(); err != nil {
		s.abandonWriterLocked()
		return fmt.Errorf("ship: spool fsync: %w", err)
	}
	last.size += n
	s.bytes.Add(n)
	spoolBytes.Set(float64(s.bytes.Load()))
	return nil
}

// abandonWriterLocked seals the write segment after a failed write: the
// file is truncated back to its last good record (best effort; the scan on
// the next open repairs it anyway) and the next append starts a new one.
func (s *spool) abandonWriterLocked() {
	last := s.segs[len(s.segs)-1]
	s.w.Truncate(last.size)
	s.w.Close()
	s.w = nil
	if last.size == 0 {
		os.Remove(filepath.Join(s.dir, segName(last.id)))
		s.segs = s.segs[:len(s.segs)-1]
	}
}

// rollLocked seals the current write segment and creates the next one.
func (s *spool) rollLocked() error {
	if s.w != nil {
		s.w.Close()
		s.w = nil
	}
	id := s.nextID
	f, err := os.OpenFile(filepath.Join(s.dir, segName(id)), os.O_CREATE|os.O_EXCL|os.O_RDWR, 0o600)
	if err != nil {
		return fmt.Errorf("ship: create spool segment: %w", err)
	}
	if err := syncDir(s.dir); err != nil {
		f.Close()
		os.Remove(f.Name())
		return fmt.Errorf("ship: fsync spool dir: %w", err)
	}
	s.nextID++
	s.w = f
	s.segs = append(s.segs, segment{id: id})
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// next returns the oldest record not yet acknowledged and the position to
// pass to ack. The payload is valid until the next call. It returns
// errSpoolEmpty when there is nothing to replay.
func (s *spool) next() ([]byte, pos, error) {
	for {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return nil, pos{}, errors.New("ship: spool closed")
		}
		if len(s.segs) == 0 {
			s.mu.Unlock()
			return nil, pos{}, errSpoolEmpty
		}
		seg := s.segs[0]
		writing := s.w != nil && len(s.segs) == 1
		if s.roff >= seg.size {
			if writing {
				s.mu.Unlock()
				return nil, pos{}, errSpoolEmpty
			}
			s.dropFirstLocked()
			s.mu.Unlock()
			continue
		}
		off := s.roff
		s.mu.Unlock()

		if s.rf == nil || s.rid != seg.id {
			if s.rf != nil {
				s.rf.Close()
				s.rf = nil
			}
			f, err := os.Open(filepath.Join(s.dir, segName(seg.id)))
			if err != nil {
				return nil, pos{}, fmt.Errorf("ship: open spool segment: %w", err)
			}
			s.rf, s.rid = f, seg.id
		}
		p, nextOff, st, err := readRecord(s.rf, off, seg.size, s.buf)
		if err != nil {
			return nil, pos{}, fmt.Errorf("ship: read spool segment %s: %w", segName(seg.id), err)
		}
		if st == recOK {
			s.buf = p[:0]
			return p, pos{seg: seg.id, off: nextOff}, nil
		}
		// Data that was valid when written went bad: quarantine the
		// damaged bytes and continue at the next intact record.
		if err := s.skipDamage(seg.id, off, seg.size); err != nil {
			return nil, pos{}, err
		}
	}
}

// skipDamage copies the damaged bytes from off up to the next intact
// record of segment id (or its end) into a .corrupt file and moves the
// replay position past them. The bytes stay in the segment (and in the
// spool's size) until the segment is deleted.
func (s *spool) skipDamage(id uint64, off, end int64) error {
	data := make([]byte, end-off)
	if _, err := s.rf.ReadAt(data, off); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("ship: read spool segment %s: %w", segName(id), err)
	}
	j := off + resync(data, 1, s.check)
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.segs) == 0 || s.segs[0].id != id {
		return nil
	}
	if err := s.quarantine(s.rf, id, off, j); err != nil {
		return err
	}
	s.roff = j
	if j < s.segs[0].size {
		s.saveAck(pos{seg: id, off: j})
	}
	return nil
}

// ack marks everything before p as consumed and deletes segments that are
// fully consumed. It reports whether the spool shrank.
func (s *spool) ack(p pos) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.segs) == 0 || s.segs[0].id != p.seg {
		return false
	}
	s.roff = p.off
	if s.roff < s.segs[0].size {
		s.saveAck(p)
		return false
	}
	if s.w != nil && len(s.segs) == 1 {
		// The reader caught up with the writer: retire the write segment
		// so that its bytes are freed; the next append starts a new one.
		s.w.Close()
		s.w = nil
	}
	s.dropFirstLocked()
	return true
}

// dropFirstLocked deletes segs[0] (fully consumed).
func (s *spool) dropFirstLocked() {
	seg := s.segs[0]
	if s.rf != nil && s.rid == seg.id {
		s.rf.Close()
		s.rf = nil
	}
	if err := os.Remove(filepath.Join(s.dir, segName(seg.id))); err != nil && !errors.Is(err, os.ErrNotExist) {
		s.log.Error("spool: cannot delete consumed segment (it will be replayed again after a restart)",
			"segment", segName(seg.id), "err", err)
	}
	os.Remove(filepath.Join(s.dir, ackFile)) // it pointed into the deleted segment
	s.segs = s.segs[1:]
	s.bytes.Add(-seg.size)
	s.roff = 0
	spoolBytes.Set(float64(s.bytes.Load()))
}

// size returns the spooled bytes. It never blocks.
func (s *spool) size() int64 { return s.bytes.Load() }

// close seals the spool; further appends fail.
func (s *spool) close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	var err error
	if s.w != nil {
		err = s.w.Close()
		s.w = nil
	}
	if s.rf != nil {
		s.rf.Close()
		s.rf = nil
	}
	s.lock.Close()
	return err
}
