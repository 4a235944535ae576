package chain

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/llmtap/llmtap/ingest/store/classify"
	"github.com/llmtap/llmtap/schema"
)

var (
	retentionRuns = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "llmtap_retention_runs_total",
		Help: "Retention runs, by result (ok, error).",
	}, []string{"result"})
	retentionRowsDeleted = promauto.NewCounter(prometheus.CounterOpts{
		Name: "llmtap_retention_rows_deleted_total",
		Help: "llm_requests rows deleted by retention.metadata.",
	})
	retentionBodiesCleared = promauto.NewCounter(prometheus.CounterOpts{
		Name: "llmtap_retention_bodies_cleared_total",
		Help: "llm_requests rows whose request_body and response_body retention.bodies cleared.",
	})
	retentionLastSuccess = promauto.NewGauge(prometheus.GaugeOpts{
		Name: "llmtap_retention_last_success_timestamp_seconds",
		Help: "Unix time of the last successful retention run.",
	})
)

// Policy says how long data is kept; 0 keeps it forever.
type Policy struct {
	// Bodies: request_body and response_body of rows older than this are
	// cleared (prompt, response and metadata stay).
	Bodies time.Duration
	// Metadata: rows older than this are deleted, by whole batches (a
	// batch goes when its newest row is older than the cutoff).
	Metadata time.Duration
}

// Validate rejects negative durations.
func (p Policy) Validate() error {
	if p.Bodies < 0 || p.Metadata < 0 {
		return fmt.Errorf("retention: negative duration (bodies %s, metadata %s)", p.Bodies, p.Metadata)
	}
	return nil
}

// Result is what one retention run did.
type Result struct {
	BodiesCleared int64
	RowsDeleted   int64
	Batches       int64 // batch links whose rows were deleted
	Link          *Link // the retention link; nil when there was nothing to do
}

// Retention applies p at time now: clears old bodies and deletes the rows
// of old batches, and records both in one retention link so Verify accepts
// them. A run with nothing to do appends no link.
//
// PostgreSQL: one transaction. ClickHouse: counts, then the link (intent),
// then ALTER TABLE … UPDATE / DELETE mutations with literal conditions, and
// it waits for them.
func Retention(ctx context.Context, dsn string, p Policy, now time.Time) (*Result, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if p.Bodies == 0 && p.Metadata == 0 {
		return &Result{}, nil
	}
	d, err := open(ctx, dsn)
	if err != nil {
		return nil, err
	}
	defer d.close()
	var rd RetentionDetails
	if p.Bodies > 0 {
		t := clamp(now.Add(-p.Bodies))
		rd.BodiesBefore = &t
	}
	if p.Metadata > 0 {
		t := clamp(now.Add(-p.Metadata))
		rd.RowsBefore = &t
	}
	switch d := d.(type) {
	case *pgDB:
		return retentionPG(ctx, d, &rd)
	case *chDB:
		return retentionCH(ctx, d, &rd)
	}
	return nil, errors.New("retention: unknown store")
}

func retentionLink(rd *RetentionDetails) (*Link, error) {
	js, err := json.Marshal(rd)
	if err != nil {
		return nil, err
	}
	var hi time.Time
	if rd.BodiesBefore != nil {
		hi = *rd.BodiesBefore
	}
	if rd.RowsBefore != nil && rd.RowsBefore.After(hi) {
		hi = *rd.RowsBefore
	}
	return &Link{Kind: KindRetention, Rows: rd.BodiesCleared + rd.RowsDeleted, MinTS: clamp(time.Time{}), MaxTS: hi,
		CreatedAt: time.Now().UTC().Truncate(time.Second), Details: string(js)}, nil
}

func retentionPG(ctx context.Context, d *pgDB, rd *RetentionDetails) (*Result, error) {
	tx, err := d.c.Begin(ctx)
	if err != nil {
		return nil, classify.Postgres("retention: begin", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // no-op after commit
	if rd.BodiesBefore != nil {
		tag, err := tx.Exec(ctx, `UPDATE llm_requests SET request_body = '', response_body = ''
WHERE ts < $1 AND (request_body <> '' OR response_body <> '')`, *rd.BodiesBefore)
		if err != nil {
			return nil, classify.Postgres("retention: clear bodies", err)
		}
		rd.BodiesCleared = tag.RowsAffected()
	}
	if rd.RowsBefore != nil {
		// Whole batches only (every row of a batch link whose max_ts is
		// before the cutoff), so Verify can tell a retained-away batch
		// from a tampered one; unchained rows by their own ts.
		err := tx.QueryRow(ctx, `WITH d AS (
  DELETE FROM llm_requests WHERE ts < $1 AND (chain_batch = 0 OR chain_batch IN
    (SELECT batch FROM llm_chain WHERE kind = 'batch' AND max_ts < $1))
  RETURNING chain_batch)
SELECT count(*), count(DISTINCT chain_batch) FILTER (WHERE chain_batch <> 0) FROM d`, *rd.RowsBefore).Scan(&rd.RowsDeleted, &rd.Batches)
		if err != nil {
			return nil, classify.Postgres("retention: delete rows", err)
		}
	}
	res := &Result{BodiesCleared: rd.BodiesCleared, RowsDeleted: rd.RowsDeleted, Batches: rd.Batches}
	if rd.BodiesCleared+rd.RowsDeleted == 0 {
		return res, nil
	}
	l, err := retentionLink(rd)
	if err != nil {
		return nil, err
	}
	if err := appendPG(ctx, tx, l, [32]byte{}); err != nil {
		return nil, classify.Postgres("retention", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, classify.Postgres("retention: commit", err)
	}
	res.Link = l
	return res, nil
}

func retentionCH(ctx context.Context, d *chDB, rd *RetentionDetails) (*Result, error) {
	var mutations []string
	if rd.BodiesBefore != nil {
		cond := chBefore(rd.BodiesBefore.UnixMicro()) + " AND (request_body != '' OR response_body != '')"
		var n uint64
		if err := d.c.QueryRow(ctx, "SELECT count() FROM llm_requests WHERE "+cond).Scan(&n); err != nil {
			return nil, classify.ClickHouse("retention: count bodies", err)
		}
		rd.BodiesCleared = int64(n)
		if n > 0 {
			mutations = append(mutations, "ALTER TABLE llm_requests UPDATE request_body = '', response_body = '' WHERE "+cond)
		}
	}
	if rd.RowsBefore != nil {
		cut := rd.RowsBefore.UnixMicro()
		old := map[int64]bool{}
		rows, err := d.c.Query(ctx, "SELECT batch FROM llm_chain WHERE kind = 'batch' AND (toInt64(max_ts) * 1000000 + max_ts_us) < "+strconv.FormatInt(cut, 10))
		if err != nil {
			return nil, classify.ClickHouse("retention: old batches", err)
		}
		for rows.Next() {
			var b int64
			if err := rows.Scan(&b); err != nil {
				rows.Close()
				return nil, err
			}
			old[b] = true
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, classify.ClickHouse("retention: old batches", err)
		}
		rows, err = d.c.Query(ctx, "SELECT chain_batch, count() FROM llm_requests WHERE "+chBefore(cut)+" GROUP BY chain_batch")
		if err != nil {
			return nil, classify.ClickHouse("retention: count rows", err)
		}
		var del []string
		var unchained bool
		for rows.Next() {
			var b int64
			var n uint64
			if err := rows.Scan(&b, &n); err != nil {
				rows.Close()
				return nil, err
			}
			switch {
			case b == 0:
				unchained = true
				rd.RowsDeleted += int64(n)
			case old[b]:
				del = append(del, strconv.FormatInt(b, 10))
				rd.RowsDeleted += int64(n)
				rd.Batches++
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, classify.ClickHouse("retention: count rows", err)
		}
		if unchained {
			mutations = append(mutations, "ALTER TABLE llm_requests DELETE WHERE chain_batch = 0 AND "+chBefore(cut))
		}
		for len(del) > 0 {
			n := min(len(del), chChunk)
			mutations = append(mutations, "ALTER TABLE llm_requests DELETE WHERE "+chBefore(cut)+" AND chain_batch IN ("+strings.Join(del[:n], ",")+")")
			del = del[n:]
		}
	}
	res := &Result{BodiesCleared: rd.BodiesCleared, RowsDeleted: rd.RowsDeleted, Batches: rd.Batches}
	if len(mutations) == 0 {
		return res, nil
	}
	l, err := retentionLink(rd)
	if err != nil {
		return nil, err
	}
	if err := appendCH(ctx, d.c, l, [32]byte{}); err != nil {
		return nil, classify.ClickHouse("retention", err)
	}
	for _, m := range mutations {
		if err := d.c.Exec(ctx, m); err != nil {
			return nil, classify.ClickHouse("retention: mutation", err)
		}
	}
	if err := waitMutations(ctx, d.c); err != nil {
		return nil, err
	}
	res.Link = l
	return res, nil
}

// chBefore is a literal condition "ts before us microseconds" that also
// prunes partitions by the whole second.
func chBefore(us int64) string {
	sec := us / 1e6
	return "ts <= toDateTime(" + strconv.FormatInt(max(sec, 0), 10) + ") AND " + chMicro + " < " + strconv.FormatInt(us, 10)
}

// RunRetention applies p every interval until ctx ends (the first run
// right away), logging each run and exporting the llmtap_retention_*
// metrics. A failed run is logged and retried at the next tick. It returns
// ctx's error. A zero policy returns at once with nil.
func RunRetention(ctx context.Context, dsn string, p Policy, interval time.Duration, logger *slog.Logger) error {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if err := p.Validate(); err != nil {
		return err
	}
	if p.Bodies == 0 && p.Metadata == 0 {
		return nil
	}
	if interval <= 0 {
		interval = time.Hour
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		start := time.Now()
		res, err := Retention(ctx, dsn, p, start)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			retentionRuns.WithLabelValues("error").Inc()
			logger.Error("retention run failed", "store", schema.Redact(dsn), "err", err)
		} else {
			retentionRuns.WithLabelValues("ok").Inc()
			retentionRowsDeleted.Add(float64(res.RowsDeleted))
			retentionBodiesCleared.Add(float64(res.BodiesCleared))
			retentionLastSuccess.SetToCurrentTime()
			if res.Link != nil {
				logger.Info("retention run", "store", schema.Redact(dsn), "bodies_cleared", res.BodiesCleared,
					"rows_deleted", res.RowsDeleted, "batches", res.Batches, "link", res.Link.Seq, "took", time.Since(start))
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}
