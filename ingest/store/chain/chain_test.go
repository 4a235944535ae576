package chain_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	ch "github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/llmtap/llmtap/ingest/record"
	"github.com/llmtap/llmtap/ingest/store"
	"github.com/llmtap/llmtap/ingest/store/chain"
	"github.com/llmtap/llmtap/ingest/store/clickhouse"
	"github.com/llmtap/llmtap/ingest/store/internal/storetest"
	"github.com/llmtap/llmtap/schema"
)

const (
	pgDSN = "postgres://postgres@127.0.0.1:5432/llmtap_test_chain?sslmode=disable"
	chDSN = "clickhouse://127.0.0.1:9000/llmtap_test_chain"
)

var tenth = 0.1

// T0 is the start of the first test batch; batch i spans the minute
// before T0 + i hours.
var T0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// env is one store under test, reset to empty tables.
type env struct {
	name string
	dsn  string
	st   store.Store
	pg   *pgx.Conn
	ch   driver.Conn
}

// exec runs one statement of raw SQL (the tamperer's tool), waiting for a
// ClickHouse mutation to finish. sql uses PostgreSQL or ClickHouse syntax
// as the env's name says.
func (e *env) exec(t *testing.T, sql string) {
	t.Helper()
	ctx := context.Background()
	if e.pg != nil {
		if _, err := e.pg.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
		return
	}
	if err := e.ch.Exec(ctx, sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	waitMutations(t, e.ch)
}

// tctx bounds a call into the package so that a hang (a ClickHouse
// mutation that never finishes) fails the test instead of the run.
func tctx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func waitMutations(t *testing.T, c driver.Conn) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var n uint64
		if err := c.QueryRow(context.Background(), "SELECT count() FROM system.mutations WHERE database = currentDatabase() AND table = 'llm_requests' AND is_done = 0").Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d mutations pending", n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (e *env) count(t *testing.T, where string) int64 {
	t.Helper()
	q := "SELECT count(*) FROM llm_requests WHERE " + where
	if e.pg != nil {
		var n int64
		if err := e.pg.QueryRow(context.Background(), q).Scan(&n); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		return n
	}
	var n uint64
	if err := e.ch.QueryRow(context.Background(), q).Scan(&n); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return int64(n)
}

// idLit is an event id literal in the env's dialect.
func (e *env) idLit(id string) string {
	if e.pg != nil {
		return "'" + id + "'::uuid"
	}
	return "toUUID('" + id + "')"
}

var migrateOnce = map[string]*sync.Once{pgDSN: {}, chDSN: {}}

func setup(t *testing.T, dsn string) *env {
	t.Helper()
	if testing.Short() {
		t.Skip("needs PostgreSQL and ClickHouse")
	}
	ctx := context.Background()
	var merr error
	migrateOnce[dsn].Do(func() {
		merr = resetDatabase(ctx, dsn)
		if merr == nil {
			merr = schema.Migrate(ctx, dsn, nil)
		}
	})
	if merr != nil {
		t.Fatal(merr)
	}
	e := &env{dsn: dsn}
	if strings.HasPrefix(dsn, "postgres") {
		e.name = "postgres"
		c, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close(context.Background()) })
		e.pg = c
		if _, err := c.Exec(ctx, "TRUNCATE llm_requests, llm_chain, llm_rejects"); err != nil {
			t.Fatal(err)
		}
	} else {
		e.name = "clickhouse"
		opts, err := schema.CHOptions(dsn)
		if err != nil {
			t.Fatal(err)
		}
		c, err := ch.Open(opts)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		e.ch = c
		waitMutations(t, c)
		for _, q := range []string{"TRUNCATE TABLE llm_requests", "TRUNCATE TABLE llm_chain", "TRUNCATE TABLE llm_rejects"} {
			if err := c.Exec(ctx, q); err != nil {
				t.Fatal(err)
			}
		}
	}
	st, err := store.Open(ctx, dsn, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	e.st = st
	return e
}

// resetDatabase drops the test database so that migrations (and
// llm_chain_start) start from nothing.
func resetDatabase(ctx context.Context, dsn string) error {
	if strings.HasPrefix(dsn, "postgres") {
		c, err := pgx.Connect(ctx, strings.Replace(dsn, "/llmtap_test_chain", "/postgres", 1))
		if err != nil {
			return err
		}
		defer c.Close(ctx)
		_, err = c.Exec(ctx, "DROP DATABASE IF EXISTS llmtap_test_chain WITH (FORCE)")
		return err
	}
	opts, err := schema.CHOptions(strings.Replace(dsn, "/llmtap_test_chain", "/default", 1))
	if err != nil {
		return err
	}
	c, err := ch.Open(opts)
	if err != nil {
		return err
	}
	defer c.Close()
	return c.Exec(ctx, "DROP DATABASE IF EXISTS llmtap_test_chain")
}

// batch returns the records of test batch i: realistic rows plus a full
// and a sparse one (every nullable column set, and none), with timestamps
// in the minute before T0 + i hours.
func batch(i, n int) []record.Record {
	base := T0.Add(time.Duration(i) * time.Hour)
	recs := storetest.Realistic(n, uint64(1000+i), base)
	full := storetest.Full()
	full.EventID = uuid.NewString()
	full.TS = base.Add(-1234567 * time.Nanosecond)
	full.LatencyMs = tenth + 0.2 // 0.30000000000000004: must round-trip bit for bit
	sparse := storetest.Sparse(base.Add(-30 * time.Second))
	sparse.EventID = uuid.NewString()
	return append(recs, full, sparse)
}

// write writes batches 0..k-1 and returns them.
func (e *env) write(t *testing.T, k, n int) [][]record.Record {
	t.Helper()
	var out [][]record.Record
	for i := 0; i < k; i++ {
		b := batch(i, n)
		if err := e.st.Write(context.Background(), b, nil); err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

func (e *env) verify(t *testing.T, from, to time.Time) *chain.Report {
	t.Helper()
	r, err := chain.Verify(tctx(t), e.dsn, from, to)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func stores(t *testing.T, f func(t *testing.T, e *env)) {
	for _, dsn := range []string{pgDSN, chDSN} {
		name := "postgres"
		if strings.HasPrefix(dsn, "clickhouse") {
			name = "clickhouse"
		}
		t.Run(name, func(t *testing.T) { f(t, setup(t, dsn)) })
	}
}

func wantOK(t *testing.T, r *chain.Report) {
	t.Helper()
	if !r.OK {
		for _, p := range r.Problems {
			t.Errorf("problem: %s", p)
		}
		t.Fatalf("verify: not OK (%d problems)", r.Total)
	}
}

// batchRange is the time range of test batch i as written (microseconds).
func batchRange(recs []record.Record) (time.Time, time.Time) {
	lo, hi := recs[0].TS, recs[0].TS
	for _, r := range recs {
		if r.TS.Before(lo) {
			lo = r.TS
		}
		if r.TS.After(hi) {
			hi = r.TS
		}
	}
	return lo.Truncate(time.Microsecond), hi.Truncate(time.Microsecond)
}

func TestUntouchedVerifies(t *testing.T) {
	stores(t, func(t *testing.T, e *env) {
		bs := e.write(t, 3, 20)
		r := e.verify(t, time.Time{}, time.Time{})
		wantOK(t, r)
		if r.Links != 3 || r.Checked != 3 || r.Rows != int64(3*len(bs[0])) {
			t.Errorf("links %d checked %d rows %d, want 3, 3, %d", r.Links, r.Checked, r.Rows, 3*len(bs[0]))
		}
		if r.Head == nil || r.Head.Seq != 3 || len(r.Head.Hash) != 64 {
			t.Errorf("head = %+v", r.Head)
		}
		// A replayed batch (at-least-once delivery) adds no row and no link.
		if err := e.st.Write(context.Background(), bs[1], nil); err != nil {
			t.Fatal(err)
		}
		r = e.verify(t, time.Time{}, time.Time{})
		wantOK(t, r)
		if r.Links != 3 {
			t.Errorf("after replay: %d links, want 3", r.Links)
		}
		// A batch half new, half replayed: the link holds the new rows only.
		mixed := append(batch(5, 4), bs[2][:3]...)
		if err := e.st.Write(context.Background(), mixed, nil); err != nil {
			t.Fatal(err)
		}
		r = e.verify(t, time.Time{}, time.Time{})
		wantOK(t, r)
		if r.Links != 4 || r.Head.Rows != 6 {
			t.Errorf("after mixed batch: %d links, head rows %d; want 4, 6", r.Links, r.Head.Rows)
		}
	})
}

// TestTamperDetected: each change made outside llmtap is named at the
// right link and time range.
func TestTamperDetected(t *testing.T) {
	type tc struct {
		name   string
		tamper func(t *testing.T, e *env, bs [][]record.Record)
		seq    int64  // expected FirstBad.Seq (-1: any)
		batch  int    // test batch whose time range FirstBad must fall in (-1: skip)
		reason string // expected FirstBad.Reason
	}
	cases := []tc{
		{"update response", func(t *testing.T, e *env, bs [][]record.Record) {
			e.exec(t, upd(e, "response = 'forged'", bs[1][3].EventID))
		}, 2, 1, chain.ReasonRowChanged},
		{"update metadata", func(t *testing.T, e *env, bs [][]record.Record) {
			e.exec(t, upd(e, "status = status + 1", bs[1][0].EventID))
		}, 2, 1, chain.ReasonRowChanged},
		{"update tokens to null", func(t *testing.T, e *env, bs [][]record.Record) {
			e.exec(t, upd(e, "prompt_tokens = NULL", bs[2][len(bs[2])-2].EventID)) // the full row
		}, 3, 2, chain.ReasonRowChanged},
		{"clear content without erasure", func(t *testing.T, e *env, bs [][]record.Record) {
			e.exec(t, upd(e, "prompt = '', response = '', request_body = '', response_body = ''", bs[0][1].EventID))
		}, 1, 0, chain.ReasonRowChanged},
		{"update content and its hash", func(t *testing.T, e *env, bs [][]record.Record) {
			c := chain.Content{Prompt: "forged"}
			e.exec(t, upd(e, "prompt = 'forged', response = '', reasoning = '', tool_calls = '', text_hash = '"+chain.TextHash(&c)+"'", bs[1][2].EventID))
		}, 2, 1, chain.ReasonRowChanged},
		{"delete row", func(t *testing.T, e *env, bs [][]record.Record) {
			e.exec(t, del(e, bs[1][4].EventID))
		}, 2, 1, chain.ReasonRowMissing},
		{"insert row", func(t *testing.T, e *env, bs [][]record.Record) {
			at := bs[1][0].TS.UTC()
			if e.pg != nil {
				e.exec(t, "INSERT INTO llm_requests (event_id, ts, consumer, prompt) VALUES ('"+uuid.NewString()+"', '"+at.Format(time.RFC3339Nano)+"', 'mallory', 'hi')")
			} else {
				e.exec(t, fmt.Sprintf("INSERT INTO llm_requests (event_id, ts, ts_us, consumer, prompt) SELECT toUUID('%s'), toDateTime(%d), toUInt32(%d), 'mallory', 'hi'",
					uuid.NewString(), at.Unix(), at.Nanosecond()/1000))
			}
		}, 0, 1, chain.ReasonRowAdded},
		{"insert row claiming a batch", func(t *testing.T, e *env, bs [][]record.Record) {
			// Copy a row into batch 2 under a new id: same chain_batch, same hashes.
			cols := "ts, consumer, status, latency_ms, chain_batch, text_hash, body_hash"
			if e.pg != nil {
				e.exec(t, "INSERT INTO llm_requests (event_id, "+cols+") SELECT '"+uuid.NewString()+"', "+cols+" FROM llm_requests WHERE event_id = '"+bs[1][0].EventID+"'")
			} else {
				e.exec(t, "INSERT INTO llm_requests (event_id, ts_us, "+cols+") SELECT toUUID('"+uuid.NewString()+"'), ts_us, "+cols+" FROM llm_requests WHERE event_id = toUUID('"+bs[1][0].EventID+"')")
			}
		}, 2, 1, chain.ReasonRowAdded},
		{"move row to another batch", func(t *testing.T, e *env, bs [][]record.Record) {
			to := batchOf(t, e, bs[2][0].EventID)
			if e.ch != nil {
				to = "toInt64(" + to + ")"
			}
			e.exec(t, upd(e, "chain_batch = "+to, bs[0][0].EventID))
		}, 1, 0, chain.ReasonRowMissing},
		{"swap two batches' rows", func(t *testing.T, e *env, bs [][]record.Record) {
			b0, b1 := batchOf(t, e, bs[0][0].EventID), batchOf(t, e, bs[1][0].EventID)
			if e.pg != nil {
				e.exec(t, "UPDATE llm_requests SET chain_batch = CASE WHEN chain_batch = "+b0+" THEN "+b1+" ELSE "+b0+" END WHERE chain_batch IN ("+b0+", "+b1+")")
				return
			}
			e.exec(t, "ALTER TABLE llm_requests UPDATE chain_batch = if(chain_batch = "+b0+", toInt64("+b1+"), toInt64("+b0+")) WHERE chain_batch IN ("+b0+", "+b1+")")
		}, -1, 0, ""},
		{"change ts", func(t *testing.T, e *env, bs [][]record.Record) {
			if e.pg != nil {
				e.exec(t, upd(e, "ts = ts + interval '1 microsecond'", bs[2][5].EventID))
			} else {
				e.exec(t, upd(e, "ts_us = (ts_us + 1) % 1000000", bs[2][5].EventID))
			}
		}, 3, 2, chain.ReasonRowChanged},
		{"delete link", func(t *testing.T, e *env, bs [][]record.Record) {
			if e.pg != nil {
				e.exec(t, "DELETE FROM llm_chain WHERE seq = 2")
			} else {
				if err := e.ch.Exec(context.Background(), "ALTER TABLE llm_chain DELETE WHERE seq = 2"); err != nil {
					t.Fatal(err)
				}
				waitChainMutations(t, e.ch)
			}
		}, -1, 1, chain.ReasonLinkMissing},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			stores(t, func(t *testing.T, e *env) {
				bs := e.write(t, 3, 12)
				wantOK(t, e.verify(t, time.Time{}, time.Time{}))
				c.tamper(t, e, bs)
				r := e.verify(t, time.Time{}, time.Time{})
				if r.OK || r.FirstBad == nil {
					t.Fatalf("tampering not detected: %+v", r)
				}
				p := r.FirstBad
				if sum := r.Summary(); !strings.Contains(sum, "FAILED") || !strings.Contains(sum, "first bad: "+p.String()) {
					t.Errorf("summary does not show the verdict and first problem:\n%s", sum)
				}
				t.Logf("first bad: %s", p)
				if c.seq >= 0 && p.Seq != c.seq {
					t.Errorf("first bad seq %d, want %d", p.Seq, c.seq)
				}
				if c.reason != "" && p.Reason != c.reason {
					t.Errorf("first bad reason %q, want %q", p.Reason, c.reason)
				}
				if c.batch >= 0 {
					lo, hi := batchRange(bs[c.batch])
					if p.MinTS.Before(lo) || p.MaxTS.After(hi) || p.MaxTS.Before(p.MinTS) {
						t.Errorf("first bad range %s..%s, want within batch %d's %s..%s", p.MinTS, p.MaxTS, c.batch, lo, hi)
					}
				}
			})
		})
	}
}

func waitChainMutations(t *testing.T, c driver.Conn) {
	t.Helper()
	for i := 0; i < 1500; i++ {
		var n uint64
		if err := c.QueryRow(context.Background(), "SELECT count() FROM system.mutations WHERE database = currentDatabase() AND table = 'llm_chain' AND is_done = 0").Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("llm_chain mutation pending")
}

func upd(e *env, set, id string) string {
	if e.pg != nil {
		return "UPDATE llm_requests SET " + set + " WHERE event_id = '" + id + "'"
	}
	return "ALTER TABLE llm_requests UPDATE " + set + " WHERE event_id = toUUID('" + id + "')"
}

func del(e *env, id string) string {
	if e.pg != nil {
		return "DELETE FROM llm_requests WHERE event_id = '" + id + "'"
	}
	return "ALTER TABLE llm_requests DELETE WHERE event_id = toUUID('" + id + "')"
}

func batchOf(t *testing.T, e *env, id string) string {
	t.Helper()
	var b int64
	var err error
	if e.pg != nil {
		err = e.pg.QueryRow(context.Background(), "SELECT chain_batch FROM llm_requests WHERE event_id = $1", id).Scan(&b)
	} else {
		err = e.ch.QueryRow(context.Background(), "SELECT chain_batch FROM llm_requests WHERE event_id = toUUID('"+id+"')").Scan(&b)
	}
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprint(b)
}

// TestAnchor: a chain rewritten after its head was recorded elsewhere is
// caught by the anchor even though it is internally consistent.
func TestAnchor(t *testing.T) {
	stores(t, func(t *testing.T, e *env) {
		e.write(t, 2, 4)
		head := e.verify(t, time.Time{}, time.Time{}).Head
		a := chain.Anchor{Seq: head.Seq, Hash: head.Hash}
		r, err := chain.Verify(tctx(t), e.dsn, time.Time{}, time.Time{}, a)
		if err != nil {
			t.Fatal(err)
		}
		wantOK(t, r)
		r, err = chain.Verify(tctx(t), e.dsn, time.Time{}, time.Time{}, chain.Anchor{Seq: head.Seq, Hash: strings.Repeat("0", 64)})
		if err != nil || r.OK || r.FirstBad.Reason != chain.ReasonChainBroken {
			t.Fatalf("wrong anchor hash: %v %+v", err, r.FirstBad)
		}
		r, err = chain.Verify(tctx(t), e.dsn, time.Time{}, time.Time{}, chain.Anchor{Seq: head.Seq + 5, Hash: head.Hash})
		if err != nil || r.OK {
			t.Fatalf("anchor beyond the head: %v %+v", err, r.FirstBad)
		}
	})
}

// TestLinkMissing: rows whose link was never written (a crash between the
// ClickHouse insert and the link, or rows copied in with a made-up batch).
func TestLinkMissing(t *testing.T) {
	stores(t, func(t *testing.T, e *env) {
		e.write(t, 2, 5)
		recs := batch(7, 3)
		if e.ch != nil {
			// InsertRecords is the store's insert without the link: exactly
			// what a crash after the rows leaves.
			rs := make([]*record.Record, len(recs))
			ids := make([]uuid.UUID, len(recs))
			for i := range recs {
				rs[i], ids[i] = &recs[i], uuid.MustParse(recs[i].EventID)
			}
			if err := clickhouse.InsertRecords(context.Background(), e.ch, "llm_requests", rs, ids, time.Now()); err != nil {
				t.Fatal(err)
			}
		} else {
			for _, r := range recs {
				e.exec(t, fmt.Sprintf("INSERT INTO llm_requests (event_id, ts, chain_batch) VALUES ('%s', '%s', 4242)", r.EventID, r.TS.Format(time.RFC3339Nano)))
			}
		}
		r := e.verify(t, time.Time{}, time.Time{})
		if r.OK || r.FirstBad.Reason != chain.ReasonLinkMissing || !strings.Contains(r.FirstBad.Detail, "5 rows") {
			t.Fatalf("want link missing for 3 rows, got %+v", r.FirstBad)
		}
	})
}

// TestRange: a ranged verify recomputes only the batches that overlap it.
func TestRange(t *testing.T) {
	stores(t, func(t *testing.T, e *env) {
		bs := e.write(t, 4, 6)
		e.exec(t, upd(e, "model = 'x'", bs[0][2].EventID))
		lo, hi := batchRange(bs[2])
		r := e.verify(t, lo, hi)
		wantOK(t, r)
		if r.Checked != 1 || r.Links != 4 {
			t.Errorf("checked %d of %d links, want 1 of 4", r.Checked, r.Links)
		}
		lo, hi = batchRange(bs[0])
		r = e.verify(t, lo.Add(-time.Hour), hi)
		if r.OK || r.FirstBad.Seq != 1 {
			t.Fatalf("tampered batch 1 in range not detected: %+v", r.FirstBad)
		}
		lo, hi = batchRange(bs[3])
		wantOK(t, e.verify(t, lo, hi))
		// Open-ended windows.
		wantOK(t, e.verify(t, lo, time.Time{}))
		_, hi = batchRange(bs[0])
		if r := e.verify(t, time.Time{}, hi); r.OK || r.FirstBad.Seq != 1 || r.Checked != 1 {
			t.Fatalf("open start: checked %d, first bad %+v", r.Checked, r.FirstBad)
		}
	})
}

// TestErasure: erased content verifies; the erasure is listed; counts stay;
// tampering with an erased row is still detected.
func TestErasure(t *testing.T) {
	stores(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		bs := e.write(t, 3, 15)
		victim := bs[1][0].Consumer
		rows := func() int64 {
			return e.count(t, "consumer = '"+victim+"'")
		}
		before := rows()
		inWindow := e.count(t, fmt.Sprintf("consumer = '%s' AND prompt != ''", victim))
		l, err := chain.Erase(tctx(t), e.dsn, victim, T0.Add(30*time.Minute), T0.Add(90*time.Minute)) // batch 1 only
		if err != nil {
			t.Fatal(err)
		}
		var want int64
		for _, r := range bs[1] {
			if r.Consumer == victim {
				want++
			}
		}
		if l.Rows != want || want == 0 {
			t.Fatalf("erased %d rows, want %d", l.Rows, want)
		}
		if n := e.count(t, fmt.Sprintf("consumer = '%s' AND (prompt != '' OR response != '' OR request_body != '' OR response_body != '')", victim)); n != inWindow-want {
			t.Errorf("%d rows of %s keep content, want %d (outside the window)", n, victim, inWindow-want)
		}
		if got := rows(); got != before {
			t.Errorf("row count changed by erasure: %d -> %d", before, got)
		}
		r := e.verify(t, time.Time{}, time.Time{})
		wantOK(t, r)
		if r.Erasures != 1 {
			t.Errorf("erasures = %d", r.Erasures)
		}
		ls, err := chain.Links(tctx(t), e.dsn, chain.KindErasure, time.Time{}, time.Time{})
		if err != nil || len(ls) != 1 || !strings.Contains(ls[0].Details, victim) || !strings.Contains(ls[0].Details, bs[1][0].EventID) {
			t.Fatalf("erasure listing: %v %+v", err, ls)
		}
		// Erasing everything of a consumer whose name needs quoting; the
		// same rows again (already empty) still verifies.
		full := storetest.Full().Consumer
		for i := 0; i < 2; i++ {
			l, err := chain.Erase(tctx(t), e.dsn, full, time.Time{}, time.Time{})
			if err != nil {
				t.Fatal(err)
			}
			if l.Rows != 3 {
				t.Errorf("erase %q: %d rows, want 3", full, l.Rows)
			}
		}
		if n := e.count(t, "prompt = '' AND request_body = '' AND consumer LIKE 'team-ä%'"); n != 3 {
			t.Errorf("%d full rows erased, want 3", n)
		}
		wantOK(t, e.verify(t, time.Time{}, time.Time{}))
		// Writing after an erasure continues the chain.
		if err := e.st.Write(ctx, batch(9, 4), nil); err != nil {
			t.Fatal(err)
		}
		wantOK(t, e.verify(t, time.Time{}, time.Time{}))
		// Tampering with an erased row's metadata is detected.
		e.exec(t, upd(e, "total_tokens = 1", bs[1][0].EventID))
		r = e.verify(t, time.Time{}, time.Time{})
		if r.OK || r.FirstBad.Seq != 2 || r.FirstBad.Reason != chain.ReasonRowChanged {
			t.Fatalf("tampered erased row: %+v", r.FirstBad)
		}
	})
}

// TestErasureDetailsTamper: editing an erasure link (to legitimize a
// deletion of content) breaks the chain.
func TestErasureDetailsTamper(t *testing.T) {
	stores(t, func(t *testing.T, e *env) {
		bs := e.write(t, 2, 5)
		if _, err := chain.Erase(tctx(t), e.dsn, "nobody", time.Time{}, time.Time{}); err != nil {
			t.Fatal(err)
		}
		forged := `{"consumer":"nobody","from":"1970-01-01T00:00:00Z","to":"2106-02-07T06:28:14Z","count":1,"event_ids":["` + bs[0][0].EventID + `"]}`
		if e.pg != nil {
			e.exec(t, "UPDATE llm_chain SET details = '"+forged+"' WHERE kind = 'erasure'")
		} else {
			if err := e.ch.Exec(context.Background(), "ALTER TABLE llm_chain UPDATE details = '"+forged+"' WHERE kind = 'erasure'"); err != nil {
				t.Fatal(err)
			}
			waitChainMutations(t, e.ch)
		}
		e.exec(t, upd(e, "prompt = '', response = '', reasoning = '', tool_calls = '', request_body = '', response_body = ''", bs[0][0].EventID))
		r := e.verify(t, time.Time{}, time.Time{})
		if r.OK {
			t.Fatal("forged erasure link verified")
		}
		found := false
		for _, p := range r.Problems {
			if p.Seq == 3 && p.Reason == chain.ReasonChainBroken {
				found = true
			}
		}
		if !found {
			t.Errorf("no chain-broken problem at the forged link: %v", r.Problems)
		}
	})
}

// TestRetention: bodies expire first, then whole old batches; both verify.
func TestRetention(t *testing.T) {
	stores(t, func(t *testing.T, e *env) {
		bs := e.write(t, 4, 8)
		per := int64(len(bs[0]))
		withBodies := func(bs ...[]record.Record) (n int64) {
			for _, b := range bs {
				for _, r := range b {
					if r.RequestBody != "" || r.ResponseBody != "" {
						n++
					}
				}
			}
			return n
		}
		prompts := e.count(t, "prompt != ''")
		now := T0.Add(3*time.Hour + 30*time.Minute) // batch 3 is 30 min old, batch 0 3.5 h
		// Bodies older than 2 h: batches 0 and 1.
		res, err := chain.Retention(tctx(t), e.dsn, chain.Policy{Bodies: 2 * time.Hour}, now)
		if err != nil {
			t.Fatal(err)
		}
		if res.BodiesCleared != withBodies(bs[0], bs[1]) || res.RowsDeleted != 0 || res.Link == nil {
			t.Fatalf("bodies: %+v, want %d cleared", res, withBodies(bs[0], bs[1]))
		}
		if n := e.count(t, "request_body != '' OR response_body != ''"); n != withBodies(bs[2], bs[3]) {
			t.Errorf("%d rows keep bodies, want %d", n, withBodies(bs[2], bs[3]))
		}
		if n := e.count(t, "prompt != ''"); n != prompts {
			t.Errorf("prompts were cleared too: %d rows with a prompt, had %d", n, prompts)
		}
		wantOK(t, e.verify(t, time.Time{}, time.Time{}))
		// Nothing more to do: no link.
		res, err = chain.Retention(tctx(t), e.dsn, chain.Policy{Bodies: 2 * time.Hour}, now)
		if err != nil || res.Link != nil {
			t.Fatalf("idle run: %+v %v", res, err)
		}
		// Metadata older than 100 min (cutoff T0+1h50m): batches 0 and 1
		// go; batch 2 (from T0+1h59m) stays.
		res, err = chain.Retention(tctx(t), e.dsn, chain.Policy{Bodies: 2 * time.Hour, Metadata: 100 * time.Minute}, now)
		if err != nil {
			t.Fatal(err)
		}
		if res.RowsDeleted != 2*per || res.Batches != 2 {
			t.Fatalf("metadata: %+v", res)
		}
		if n := e.count(t, "1 = 1"); n != 2*per {
			t.Errorf("%d rows left, want %d", n, 2*per)
		}
		r := e.verify(t, time.Time{}, time.Time{})
		wantOK(t, r)
		if r.Deleted != 2 || r.Retentions != 2 {
			t.Errorf("deleted %d retentions %d, want 2, 2", r.Deleted, r.Retentions)
		}
		// Deleting a row of a batch retention kept is still detected.
		e.exec(t, del(e, bs[2][0].EventID))
		r = e.verify(t, time.Time{}, time.Time{})
		if r.OK || r.FirstBad.Seq != 3 || r.FirstBad.Reason != chain.ReasonRowMissing {
			t.Fatalf("after delete: %+v", r.FirstBad)
		}
	})
}

// TestRetentionPartialDeleteDetected: deleting only some rows of an old
// batch (not what retention does) is reported.
func TestRetentionPartialDeleteDetected(t *testing.T) {
	stores(t, func(t *testing.T, e *env) {
		bs := e.write(t, 3, 6)
		if _, err := chain.Retention(tctx(t), e.dsn, chain.Policy{Metadata: time.Hour}, T0.Add(90*time.Minute)); err != nil {
			t.Fatal(err)
		}
		// Batch 1 (seq 2) ends at T0+1h, not before the cutoff T0+30m: kept.
		e.exec(t, del(e, bs[1][1].EventID))
		r := e.verify(t, time.Time{}, time.Time{})
		if r.OK || r.FirstBad.Seq != 2 || r.FirstBad.Reason != chain.ReasonRowMissing {
			t.Fatalf("partial delete: %+v", r.FirstBad)
		}
	})
}

// TestConcurrentWriters: parallel Writes keep one linear chain.
func TestConcurrentWriters(t *testing.T) {
	stores(t, func(t *testing.T, e *env) {
		var wg sync.WaitGroup
		errs := make(chan error, 16)
		for w := 0; w < 4; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < 4; i++ {
					b := batch(10+w*4+i, 10)
					if err := e.st.Write(context.Background(), b, nil); err != nil {
						errs <- err
					}
					// Every other batch is written twice, concurrently with others.
					if i%2 == 0 {
						if err := e.st.Write(context.Background(), b, nil); err != nil {
							errs <- err
						}
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		r := e.verify(t, time.Time{}, time.Time{})
		wantOK(t, r)
		if r.Links != 16 || r.Head.Seq != 16 {
			t.Errorf("links %d head %d, want 16", r.Links, r.Head.Seq)
		}
	})
}

// TestRunRetention: the loop runs at once and stops with its context.
func TestRunRetention(t *testing.T) {
	e := setup(t, pgDSN)
	old := batch(0, 3)
	for i := range old {
		old[i].TS = time.Now().Add(-48 * time.Hour)
	}
	if err := e.st.Write(context.Background(), old, nil); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- chain.RunRetention(ctx, e.dsn, chain.Policy{Metadata: 24 * time.Hour}, time.Hour, nil) }()
	deadline := time.Now().Add(20 * time.Second)
	for e.count(t, "1 = 1") != 0 {
		if time.Now().After(deadline) {
			t.Fatal("retention loop did not delete the old rows")
		}
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != context.Canceled {
		t.Errorf("RunRetention returned %v", err)
	}
	wantOK(t, e.verify(t, time.Time{}, time.Time{}))
	if err := chain.RunRetention(context.Background(), e.dsn, chain.Policy{Bodies: -1}, time.Hour, nil); err == nil {
		t.Error("negative policy accepted")
	}
}
