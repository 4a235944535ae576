package chain

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/llmtap/llmtap/ingest/store/classify"
	"github.com/llmtap/llmtap/schema"
)

// db is what Verify, Erase and Retention need from a store.
type db interface {
	// links calls fn for every link in seq order.
	links(ctx context.Context, fn func(*Link) error) error
	// rows calls fn for every row with ts in [from, to] (microseconds; all
	// rows when all is set), in no particular order.
	rows(ctx context.Context, from, to int64, all bool, fn func(*Row, *Content) error) error
	// start returns llm_chain_start: rows stored before chaining and the
	// latest of their ts (microseconds).
	start(ctx context.Context) (legacyRows, legacyMaxUS int64, err error)
	close()
}

// Clamp limits t to what both stores can hold exactly in a link
// (ClickHouse DateTime: 1970-01-01 to 2106-02-07).
func clamp(t time.Time) time.Time {
	switch sec := t.Unix(); {
	case t.IsZero() || sec < 0:
		return time.Unix(0, 0).UTC()
	case sec > math.MaxUint32-1:
		return time.Unix(math.MaxUint32-1, 0).UTC()
	}
	return t.UTC().Truncate(time.Microsecond)
}

func open(ctx context.Context, dsn string) (db, error) {
	d, err := schema.Dialect(dsn)
	if err != nil {
		return nil, err
	}
	if d == schema.Postgres {
		cfg, err := pgx.ParseConfig(dsn)
		if err != nil {
			return nil, fmt.Errorf("store %s: %w", schema.Redact(dsn), err)
		}
		if cfg.ConnectTimeout == 0 {
			cfg.ConnectTimeout = 10 * time.Second
		}
		c, err := pgx.ConnectConfig(ctx, cfg)
		if err != nil {
			return nil, classify.Postgres("connect "+schema.Redact(dsn), err)
		}
		return &pgDB{c}, nil
	}
	opts, err := schema.CHOptions(dsn)
	if err != nil {
		return nil, err
	}
	c, err := clickhouse.Open(opts)
	if err != nil {
		return nil, classify.ClickHouse("connect "+schema.Redact(dsn), err)
	}
	if err := c.Ping(ctx); err != nil {
		c.Close()
		return nil, classify.ClickHouse("connect "+schema.Redact(dsn), err)
	}
	return &chDB{c}, nil
}

// ---- PostgreSQL ----

type pgDB struct{ c *pgx.Conn }

func (p *pgDB) close() { p.c.Close(context.Background()) }

func (p *pgDB) links(ctx context.Context, fn func(*Link) error) error {
	rows, err := p.c.Query(ctx, "SELECT seq, kind, batch, prev_hash, hash, rows, min_ts, max_ts, created_at, details FROM llm_chain ORDER BY seq")
	if err != nil {
		return classify.Postgres("chain: read links", err)
	}
	defer rows.Close()
	for rows.Next() {
		var l Link
		if err := rows.Scan(&l.Seq, &l.Kind, &l.Batch, &l.PrevHash, &l.Hash, &l.Rows, &l.MinTS, &l.MaxTS, &l.CreatedAt, &l.Details); err != nil {
			return fmt.Errorf("chain: read links: %w", err)
		}
		l.MinTS, l.MaxTS, l.CreatedAt = l.MinTS.UTC(), l.MaxTS.UTC(), l.CreatedAt.UTC()
		if err := fn(&l); err != nil {
			return err
		}
	}
	return classify.Postgres("chain: read links", rows.Err())
}

const pgRowCols = `event_id, ts, source, consumer, key_id, key_prefix, client_ip, method, path,
 request_id, endpoint, model, status, stream, latency_ms, ttfb_ms, ttft_ms, prompt_tokens,
 completion_tokens, total_tokens, usage_source, finish_reason, error, request_headers,
 response_headers, truncated, text_hash, body_hash, chain_batch,
 prompt, response, reasoning, tool_calls, request_body, response_body`

func (p *pgDB) rows(ctx context.Context, from, to int64, all bool, fn func(*Row, *Content) error) error {
	q := "SELECT " + pgRowCols + " FROM llm_requests"
	var args []any
	if !all {
		// Unbounded ends are left out (PostgreSQL's timestamptz range is
		// narrower than int64 microseconds).
		var conds []string
		if from != math.MinInt64 {
			args = append(args, time.UnixMicro(from))
			conds = append(conds, "ts >= $"+strconv.Itoa(len(args)))
		}
		if to != math.MaxInt64 {
			args = append(args, time.UnixMicro(to))
			conds = append(conds, "ts <= $"+strconv.Itoa(len(args)))
		}
		if len(conds) > 0 {
			q += " WHERE " + strings.Join(conds, " AND ")
		}
	}
	rows, err := p.c.Query(ctx, q, args...)
	if err != nil {
		return classify.Postgres("chain: read rows", err)
	}
	defer rows.Close()
	var (
		r  Row
		c  Content
		id pgtype.UUID
		ts time.Time
	)
	for rows.Next() {
		r, c = Row{}, Content{}
		if err := rows.Scan(&id, &ts, &r.Source, &r.Consumer, &r.KeyID, &r.KeyPrefix, &r.ClientIP, &r.Method, &r.Path,
			&r.RequestID, &r.Endpoint, &r.Model, &r.Status, &r.Stream, &r.LatencyMs, &r.TTFBMs, &r.TTFTMs, &r.PromptTokens,
			&r.CompletionTokens, &r.TotalTokens, &r.UsageSource, &r.FinishReason, &r.Error, &r.RequestHeaders,
			&r.ResponseHeaders, &r.Truncated, &r.TextHash, &r.BodyHash, &r.Batch,
			&c.Prompt, &c.Response, &c.Reasoning, &c.ToolCalls, &c.RequestBody, &c.ResponseBody); err != nil {
			return fmt.Errorf("chain: read rows: %w", err)
		}
		r.EventID, r.TSMicro = id.Bytes, ts.UnixMicro()
		if err := fn(&r, &c); err != nil {
			return err
		}
	}
	return classify.Postgres("chain: read rows", rows.Err())
}

func (p *pgDB) start(ctx context.Context) (int64, int64, error) {
	var n int64
	var max *time.Time
	err := p.c.QueryRow(ctx, "SELECT legacy_rows, legacy_max_ts FROM llm_chain_start LIMIT 1").Scan(&n, &max)
	if err == pgx.ErrNoRows {
		return 0, 0, nil
	}
	if err != nil {
		return 0, 0, classify.Postgres("chain: read llm_chain_start", err)
	}
	if max == nil {
		return n, 0, nil
	}
	return n, max.UnixMicro(), nil
}

// ---- ClickHouse ----

type chDB struct{ c driver.Conn }

func (h *chDB) close() {
	forgetCH(h.c)
	h.c.Close()
}

func (h *chDB) links(ctx context.Context, fn func(*Link) error) error {
	rows, err := h.c.Query(ctx, "SELECT seq, kind, batch, prev_hash, hash, rows, min_ts, min_ts_us, max_ts, max_ts_us, created_at, details FROM llm_chain ORDER BY seq")
	if err != nil {
		return classify.ClickHouse("chain: read links", err)
	}
	defer rows.Close()
	for rows.Next() {
		var l Link
		var minS, maxS time.Time
		var minUS, maxUS uint32
		if err := rows.Scan(&l.Seq, &l.Kind, &l.Batch, &l.PrevHash, &l.Hash, &l.Rows, &minS, &minUS, &maxS, &maxUS, &l.CreatedAt, &l.Details); err != nil {
			return fmt.Errorf("chain: read links: %w", err)
		}
		l.MinTS, l.MaxTS, l.CreatedAt = joinMicro(minS, minUS), joinMicro(maxS, maxUS), l.CreatedAt.UTC()
		if err := fn(&l); err != nil {
			return err
		}
	}
	return classify.ClickHouse("chain: read links", rows.Err())
}

const chRowCols = `event_id, ts, ts_us, source, consumer, key_id, key_prefix, client_ip, method, path,
 request_id, endpoint, model, status, stream, latency_ms, ttfb_ms, ttft_ms, prompt_tokens,
 completion_tokens, total_tokens, usage_source, finish_reason, error, request_headers,
 response_headers, truncated, text_hash, body_hash, chain_batch,
 prompt, response, reasoning, tool_calls, request_body, response_body`

// chMicro is the SQL expression for a row's ts in microseconds.
const chMicro = "(toInt64(ts) * 1000000 + ts_us)"

// chWindow returns a WHERE condition for ts in [from, to] microseconds,
// with a whole-second condition on ts that prunes partitions.
func chWindow(from, to int64) string {
	fs, ts := from/1e6, to/1e6
	if fs < 0 {
		fs = 0
	}
	if ts > math.MaxUint32 {
		ts = math.MaxUint32
	}
	if ts < 0 {
		ts = 0
	}
	return "ts >= toDateTime(" + strconv.FormatInt(fs, 10) + ") AND ts <= toDateTime(" + strconv.FormatInt(ts, 10) + ") AND " +
		chMicro + " >= " + strconv.FormatInt(from, 10) + " AND " + chMicro + " <= " + strconv.FormatInt(to, 10)
}

func (h *chDB) rows(ctx context.Context, from, to int64, all bool, fn func(*Row, *Content) error) error {
	q := "SELECT " + chRowCols + " FROM llm_requests"
	if !all {
		q += " WHERE " + chWindow(from, to)
	}
	rows, err := h.c.Query(ctx, q)
	if err != nil {
		return classify.ClickHouse("chain: read rows", err)
	}
	defer rows.Close()
	var (
		r                 Row
		c                 Content
		id                uuid.UUID
		ts                time.Time
		us                uint32
		stream, truncated uint8
	)
	for rows.Next() {
		r, c = Row{}, Content{}
		if err := rows.Scan(&id, &ts, &us, &r.Source, &r.Consumer, &r.KeyID, &r.KeyPrefix, &r.ClientIP, &r.Method, &r.Path,
			&r.RequestID, &r.Endpoint, &r.Model, &r.Status, &stream, &r.LatencyMs, &r.TTFBMs, &r.TTFTMs, &r.PromptTokens,
			&r.CompletionTokens, &r.TotalTokens, &r.UsageSource, &r.FinishReason, &r.Error, &r.RequestHeaders,
			&r.ResponseHeaders, &truncated, &r.TextHash, &r.BodyHash, &r.Batch,
			&c.Prompt, &c.Response, &c.Reasoning, &c.ToolCalls, &c.RequestBody, &c.ResponseBody); err != nil {
			return fmt.Errorf("chain: read rows: %w", err)
		}
		r.EventID, r.TSMicro = id, ts.Unix()*1e6+int64(us)
		r.Stream, r.Truncated = stream != 0, truncated != 0
		if err := fn(&r, &c); err != nil {
			return err
		}
	}
	return classify.ClickHouse("chain: read rows", rows.Err())
}

func (h *chDB) start(ctx context.Context) (int64, int64, error) {
	var n uint64
	var max int64
	err := h.c.QueryRow(ctx, "SELECT legacy_rows, legacy_max_us FROM llm_chain_start LIMIT 1").Scan(&n, &max)
	if err != nil {
		if strings.Contains(err.Error(), "no rows") {
			return 0, 0, nil
		}
		return 0, 0, classify.ClickHouse("chain: read llm_chain_start", err)
	}
	return int64(n), max, nil
}

// chUUIDList renders ids as a ClickHouse IN list of toUUID literals.
func chUUIDList(ids []string) string {
	var b strings.Builder
	for i, id := range ids {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString("toUUID('")
		b.WriteString(id) // canonical form from uuid.UUID.String: no quoting needed
		b.WriteString("')")
	}
	return b.String()
}

// chQuote returns a ClickHouse string literal.
func chQuote(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `'`, `\'`, "\x00", `\0`)
	return "'" + r.Replace(s) + "'"
}
