package chain

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/jackc/pgx/v5"
)

// pgLockKey serializes chain appends on PostgreSQL (pg_advisory_xact_lock):
// "llmtapch".
const pgLockKey int64 = 0x6c6c6d7461706368

func sortIDDigests(ds []IDDigest) {
	slices.SortFunc(ds, func(a, b IDDigest) int { return bytes.Compare(a.ID[:], b.ID[:]) })
}

// NewBatchID returns a random positive chain_batch for a new batch (63
// random bits; 0 is reserved for unchained rows).
func NewBatchID() int64 {
	var b [8]byte
	for {
		if _, err := rand.Read(b[:]); err != nil {
			panic(err) // crypto/rand does not fail on Linux
		}
		if v := int64(binary.BigEndian.Uint64(b[:]) >> 1); v != 0 {
			return v
		}
	}
}

// Batch collects the rows of one batch as a store inserts them. Not safe
// for concurrent use.
type Batch struct {
	ID       int64
	ds       []IDDigest
	min, max int64
}

// NewBatch starts a batch with a fresh ID; n is a capacity hint.
func NewBatch(n int) *Batch { return &Batch{ID: NewBatchID(), ds: make([]IDDigest, 0, n)} }

// Add records one inserted row (its Batch must be b.ID).
func (b *Batch) Add(r *Row) {
	if len(b.ds) == 0 || r.TSMicro < b.min {
		b.min = r.TSMicro
	}
	if len(b.ds) == 0 || r.TSMicro > b.max {
		b.max = r.TSMicro
	}
	b.ds = append(b.ds, IDDigest{ID: r.EventID, Digest: r.Digest()})
}

// AddDigest records one inserted row by its parts (digest from Row.Digest).
func (b *Batch) AddDigest(id [16]byte, tsMicro int64, digest [32]byte) {
	if len(b.ds) == 0 || tsMicro < b.min {
		b.min = tsMicro
	}
	if len(b.ds) == 0 || tsMicro > b.max {
		b.max = tsMicro
	}
	b.ds = append(b.ds, IDDigest{ID: id, Digest: digest})
}

// Len is the number of rows added.
func (b *Batch) Len() int { return len(b.ds) }

// link returns the batch's link (without seq and hashes) and rows digest.
func (b *Batch) link(now time.Time) (Link, [32]byte) {
	return Link{
		Kind: KindBatch, Batch: b.ID, Rows: int64(len(b.ds)),
		MinTS: time.UnixMicro(b.min).UTC(), MaxTS: time.UnixMicro(b.max).UTC(),
		CreatedAt: now.UTC().Truncate(time.Second),
	}, RowsDigest(b.ds)
}

// AppendPG appends b's link inside tx, the transaction that inserted b's
// rows, so rows and link commit together. It takes a transaction-scoped
// advisory lock, which serializes appends (and their commits) across
// processes. A batch with no rows appends nothing.
func AppendPG(ctx context.Context, tx pgx.Tx, b *Batch) error {
	if b.Len() == 0 {
		return nil
	}
	l, rd := b.link(time.Now())
	return appendPG(ctx, tx, &l, rd)
}

func appendPG(ctx context.Context, tx pgx.Tx, l *Link, rows [32]byte) error {
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", pgLockKey); err != nil {
		return fmt.Errorf("chain: lock: %w", err)
	}
	var seq int64
	var prev string
	err := tx.QueryRow(ctx, "SELECT seq, hash FROM llm_chain ORDER BY seq DESC LIMIT 1").Scan(&seq, &prev)
	if err != nil && err != pgx.ErrNoRows {
		return fmt.Errorf("chain: read head: %w", err)
	}
	l.Seq, l.PrevHash = seq+1, prev
	l.Hash = l.ComputeHash(rows)
	_, err = tx.Exec(ctx, `INSERT INTO llm_chain (seq, kind, batch, prev_hash, hash, rows, min_ts, max_ts, created_at, details)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
		l.Seq, l.Kind, l.Batch, l.PrevHash, l.Hash, l.Rows, l.MinTS, l.MaxTS, l.CreatedAt, l.Details)
	if err != nil {
		return fmt.Errorf("chain: append link %d: %w", l.Seq, err)
	}
	return nil
}

// chMu serializes chain appends on ClickHouse within this process (see the
// package documentation for the multi-process caveat). chHeads caches the
// last link each connection pool appended or read.
var (
	chMu    sync.Mutex
	chHeads = map[driver.Conn]chHead{}
)

type chHead struct {
	seq  int64
	hash string
}

// AppendCH appends b's link after its rows were inserted. ClickHouse has no
// transactions: a crash between the rows and the link leaves rows whose
// link is missing, which Verify reports as such.
func AppendCH(ctx context.Context, conn driver.Conn, b *Batch) error {
	if b.Len() == 0 {
		return nil
	}
	l, rd := b.link(time.Now())
	return appendCH(ctx, conn, &l, rd)
}

// chReadHead returns the highest seq and its hash. With a cached head it
// asks only for links from that seq on, which the primary key (ORDER BY
// seq) answers from the last granules; without, it scans the seq column.
func chReadHead(ctx context.Context, conn driver.Conn) (int64, string, error) {
	if h, ok := chHeads[conn]; ok {
		rows, err := conn.Query(ctx, "SELECT seq, hash FROM llm_chain WHERE seq >= "+strconv.FormatInt(h.seq, 10)+" ORDER BY seq")
		if err != nil {
			return 0, "", err
		}
		found := false
		var seq int64
		var hash string
		for rows.Next() {
			if err := rows.Scan(&seq, &hash); err != nil {
				rows.Close()
				return 0, "", err
			}
			found = true
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return 0, "", err
		}
		if found {
			return seq, hash, nil
		}
		// The cached link is gone: fall back to a full read.
	}
	var seq int64
	var hash string
	if err := conn.QueryRow(ctx, "SELECT max(seq) FROM llm_chain").Scan(&seq); err != nil {
		return 0, "", err
	}
	if seq > 0 {
		if err := conn.QueryRow(ctx, "SELECT any(hash) FROM llm_chain WHERE seq = "+strconv.FormatInt(seq, 10)).Scan(&hash); err != nil {
			return 0, "", err
		}
	}
	return seq, hash, nil
}

func appendCH(ctx context.Context, conn driver.Conn, l *Link, rows [32]byte) error {
	chMu.Lock()
	defer chMu.Unlock()
	seq, prev, err := chReadHead(ctx, conn)
	if err != nil {
		delete(chHeads, conn)
		return fmt.Errorf("chain: read head: %w", err)
	}
	l.Seq, l.PrevHash = seq+1, prev
	l.Hash = l.ComputeHash(rows)
	batch, err := conn.PrepareBatch(ctx, "INSERT INTO llm_chain (seq, kind, batch, prev_hash, hash, rows, min_ts, min_ts_us, max_ts, max_ts_us, created_at, details)")
	if err != nil {
		return fmt.Errorf("chain: append link %d: %w", l.Seq, err)
	}
	minS, minUS := splitMicro(l.MinTS)
	maxS, maxUS := splitMicro(l.MaxTS)
	if err := batch.Append(l.Seq, l.Kind, l.Batch, l.PrevHash, l.Hash, l.Rows, minS, minUS, maxS, maxUS, l.CreatedAt, l.Details); err != nil {
		batch.Abort()
		return fmt.Errorf("chain: append link %d: %w", l.Seq, err)
	}
	if err := batch.Send(); err != nil {
		// Unknown whether it landed: read the head afresh next time.
		delete(chHeads, conn)
		return fmt.Errorf("chain: append link %d: %w", l.Seq, err)
	}
	chHeads[conn] = chHead{l.Seq, l.Hash}
	return nil
}

// ForgetCH drops the head cached for conn; call it when closing a pool
// that AppendCH used.
func ForgetCH(conn driver.Conn) { forgetCH(conn) }

func forgetCH(conn driver.Conn) {
	chMu.Lock()
	delete(chHeads, conn)
	chMu.Unlock()
}

// splitMicro splits t into whole seconds and the microseconds within.
func splitMicro(t time.Time) (time.Time, uint32) {
	us := t.UnixMicro()
	sec := us / 1e6
	rem := us % 1e6
	if rem < 0 {
		sec--
		rem += 1e6
	}
	return time.Unix(sec, 0).UTC(), uint32(rem)
}

func joinMicro(sec time.Time, us uint32) time.Time {
	return time.UnixMicro(sec.Unix()*1e6 + int64(us)).UTC()
}
