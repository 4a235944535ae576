package chain

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/llmtap/llmtap/ingest/store/classify"
)

// Erase removes the content (prompt, response, reasoning, tool_calls,
// request_body, response_body) of consumer's rows with ts in [from, to)
// (zero from: since the beginning; zero to: until now and after) and
// appends an erasure link that lists the erased event ids, so Verify
// accepts the cleared content. Metadata, token counts and the rows' hashes
// stay. The link is also the audit record of the erasure (its created_at,
// consumer, window and count); Links(ctx, dsn, KindErasure) lists them.
//
// PostgreSQL: one transaction. ClickHouse: the link is written first, then
// ALTER TABLE … UPDATE mutations, and Erase waits until they are done; a
// crash in between leaves a link whose rows still hold their content (which
// verifies, since content that matches its hash is always accepted): run
// Erase again.
func Erase(ctx context.Context, dsn, consumer string, from, to time.Time) (*Link, error) {
	if consumer == "" {
		return nil, errors.New("erase: a consumer is required")
	}
	if !from.IsZero() && !to.IsZero() && !from.Before(to) {
		return nil, fmt.Errorf("erase: empty window: from %s is not before to %s", from.Format(time.RFC3339), to.Format(time.RFC3339))
	}
	d, err := open(ctx, dsn)
	if err != nil {
		return nil, err
	}
	defer d.close()
	fromUS, toUS := int64(math.MinInt64), int64(math.MaxInt64)
	if !from.IsZero() {
		fromUS = from.UnixMicro()
	}
	if !to.IsZero() {
		toUS = to.UnixMicro() - 1 // [from, to)
	}
	ed := ErasureDetails{Consumer: consumer, From: clamp(from), To: clamp(to)}
	if to.IsZero() {
		ed.To = clamp(time.Unix(math.MaxUint32, 0))
	}
	switch d := d.(type) {
	case *pgDB:
		return erasePG(ctx, d, &ed, fromUS, toUS)
	case *chDB:
		return eraseCH(ctx, d, &ed, fromUS, toUS)
	}
	return nil, errors.New("erase: unknown store")
}

func erasureLink(ed *ErasureDetails) (*Link, error) {
	sort.Strings(ed.EventIDs)
	if ed.EventIDs == nil {
		ed.EventIDs = []string{}
	}
	ed.Count = int64(len(ed.EventIDs))
	js, err := json.Marshal(ed)
	if err != nil {
		return nil, err
	}
	return &Link{Kind: KindErasure, Rows: ed.Count, MinTS: ed.From, MaxTS: ed.To,
		CreatedAt: time.Now().UTC().Truncate(time.Second), Details: string(js)}, nil
}

func erasePG(ctx context.Context, d *pgDB, ed *ErasureDetails, fromUS, toUS int64) (*Link, error) {
	tx, err := d.c.Begin(ctx)
	if err != nil {
		return nil, classify.Postgres("erase: begin", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // no-op after commit
	q := `UPDATE llm_requests SET prompt = '', response = '', reasoning = '', tool_calls = '',
 request_body = '', response_body = '' WHERE consumer = $1`
	args := []any{ed.Consumer}
	if fromUS != math.MinInt64 {
		q += " AND ts >= $2"
		args = append(args, time.UnixMicro(fromUS))
	}
	if toUS != math.MaxInt64 {
		args = append(args, time.UnixMicro(toUS))
		q += " AND ts <= $" + strconv.Itoa(len(args))
	}
	rows, err := tx.Query(ctx, q+" RETURNING event_id", args...)
	if err != nil {
		return nil, classify.Postgres("erase: update", err)
	}
	for rows.Next() {
		var u pgtype.UUID
		if err := rows.Scan(&u); err != nil {
			rows.Close()
			return nil, fmt.Errorf("erase: %w", err)
		}
		ed.EventIDs = append(ed.EventIDs, uuid.UUID(u.Bytes).String())
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, classify.Postgres("erase: update", err)
	}
	l, err := erasureLink(ed)
	if err != nil {
		return nil, err
	}
	if err := appendPG(ctx, tx, l, [32]byte{}); err != nil {
		return nil, classify.Postgres("erase", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, classify.Postgres("erase: commit", err)
	}
	return l, nil
}

// chChunk bounds the ids per mutation (query size limit 256 KiB).
const chChunk = 2000

func eraseCH(ctx context.Context, d *chDB, ed *ErasureDetails, fromUS, toUS int64) (*Link, error) {
	where := "consumer = " + chQuote(ed.Consumer)
	if fromUS != math.MinInt64 || toUS != math.MaxInt64 {
		where += " AND " + chWindow(max(fromUS, 0), min(toUS, int64(math.MaxUint32)*1e6+999999))
	}
	rows, err := d.c.Query(ctx, "SELECT event_id FROM llm_requests WHERE "+where)
	if err != nil {
		return nil, classify.ClickHouse("erase: select", err)
	}
	for rows.Next() {
		var u uuid.UUID
		if err := rows.Scan(&u); err != nil {
			rows.Close()
			return nil, fmt.Errorf("erase: %w", err)
		}
		ed.EventIDs = append(ed.EventIDs, u.String())
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, classify.ClickHouse("erase: select", err)
	}
	l, err := erasureLink(ed)
	if err != nil {
		return nil, err
	}
	// Intent first: the link, then the mutations.
	if err := appendCH(ctx, d.c, l, [32]byte{}); err != nil {
		return nil, classify.ClickHouse("erase", err)
	}
	ids := ed.EventIDs
	for len(ids) > 0 {
		n := min(len(ids), chChunk)
		// Literals only: on 18.16 a mutation whose WHERE holds a subquery
		// fails forever and blocks every later mutation of the table.
		m := "ALTER TABLE llm_requests UPDATE prompt = '', response = '', reasoning = '', tool_calls = '', request_body = '', response_body = '' WHERE " +
			where + " AND event_id IN (" + chUUIDList(ids[:n]) + ")"
		if err := d.c.Exec(ctx, m); err != nil {
			return nil, classify.ClickHouse("erase: mutation", err)
		}
		ids = ids[n:]
	}
	if err := waitMutations(ctx, d.c); err != nil {
		return nil, err
	}
	return l, nil
}

// waitMutations waits until no mutation of llm_requests is pending.
func waitMutations(ctx context.Context, c driver.Conn) error {
	for delay := 20 * time.Millisecond; ; delay = min(delay*2, time.Second) {
		var n uint64
		if err := c.QueryRow(ctx, "SELECT count() FROM system.mutations WHERE database = currentDatabase() AND table = 'llm_requests' AND is_done = 0").Scan(&n); err != nil {
			return classify.ClickHouse("wait for mutations", err)
		}
		if n == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for %d mutations of llm_requests (SELECT * FROM system.mutations WHERE is_done = 0): %w", n, ctx.Err())
		case <-time.After(delay):
		}
	}
}

// Links returns the links of one kind ("" for all) whose time range
// overlaps [from, to] (zero values: unbounded), in seq order. Use it to
// list erasures (KindErasure) and retention runs.
func Links(ctx context.Context, dsn, kind string, from, to time.Time) ([]Link, error) {
	d, err := open(ctx, dsn)
	if err != nil {
		return nil, err
	}
	defer d.close()
	var out []Link
	err = d.links(ctx, func(l *Link) error {
		if kind != "" && l.Kind != kind {
			return nil
		}
		if (!from.IsZero() && l.MaxTS.Before(from)) || (!to.IsZero() && l.MinTS.After(to)) {
			return nil
		}
		out = append(out, *l)
		return nil
	})
	return out, err
}
