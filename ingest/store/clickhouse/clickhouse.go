// Package clickhouse is the ClickHouse store (clickhouse-go/v2, native
// protocol, LZ4): it writes records to llm_requests and rejects to
// llm_rejects (schema/clickhouse). It works with ClickHouse 18.16 and
// current releases.
//
// # Write path
//
// One Write is one INSERT per table (records, then rejects), built with
// PrepareBatch over an explicit column list (18.16 sends no columns without
// one) and filled column by column (batch.Column(i).Append(slice)), which is
// several times faster than appending row by row.
//
// # Idempotency ("replays must not double any count")
//
// ClickHouse has no unique constraint and 18.16 has no insert deduplication
// for non-replicated tables, so a Write does three things:
//
//  1. Duplicates inside the batch are dropped (first one wins).
//  2. In-process exclusion: a Write registers its event ids as in flight;
//     a concurrent Write of the same Store holding any of them waits until
//     that one has finished. So within one process, check-then-insert is
//     atomic per event.
//  3. Pre-insert check: the batch's keys (consumer, ts, event_id) go to the
//     server as an external table with the query
//     SELECT event_id FROM llm_requests WHERE (consumer, ts, event_id) IN
//     (SELECT consumer, ts, event_id FROM _batch). The set is the whole
//     sorting key, so the primary index limits the read to the granules
//     holding those keys (on 18.16: 229 k rows read for 500 keys in a
//     5 M-row table, against 5 M without the index), independent of the
//     table's size. Rows already stored are not inserted again. This covers
//     every retry of a batch whose earlier attempt did (or half did) commit,
//     which is the at-least-once delivery case. Sending the keys as literal
//     tuples in the query text instead made Write 2.5× slower (parsing).
//
// Backstop: llm_requests is a ReplacingMergeTree ordered by
// (consumer, ts, event_id), so two copies of an event (same id, same
// consumer and ts, as every replay of an event carries) collapse when their
// parts merge; OPTIMIZE TABLE … FINAL forces it.
//
// Residual window: two processes (two ingest instances behind a load
// balancer) that write the same event at the same moment can both pass the
// check; until the parts merge (usually minutes), queries without FINAL
// count that event twice. With one ingest process per table the window is
// closed. The identity of an event is (consumer, ts, event_id): a replay
// whose decoding gives another consumer or ts (a decoder change between the
// two deliveries) is not recognised. Rejects are keyed by a content id
// (source, reason, payload) and follow the same check against llm_rejects
// (ReplacingMergeTree ORDER BY id).
//
// # Hash chain (package chain)
//
// Every row also carries chain_batch, text_hash and body_hash (computed
// while the existence check waits for the server); after the rows are
// inserted, one llm_chain link covering exactly those rows is appended
// under a process-wide mutex. A crash between the two leaves rows that
// chain.Verify reports as "link missing". See package chain.
package clickhouse

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"

	ch "github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/ext"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/google/uuid"

	"github.com/llmtap/llmtap/ingest/record"
	"github.com/llmtap/llmtap/ingest/store/chain"
	"github.com/llmtap/llmtap/ingest/store/classify"
	"github.com/llmtap/llmtap/ingest/store/internal/rowid"
	"github.com/llmtap/llmtap/schema"
)

// RequestColumns are llm_requests' columns in insert order.
var RequestColumns = []string{
	"event_id", "ts", "ts_us", "source", "consumer", "key_id", "key_prefix", "client_ip",
	"method", "path", "request_id", "endpoint", "model", "status", "stream",
	"latency_ms", "ttfb_ms", "ttft_ms", "prompt_tokens", "completion_tokens",
	"total_tokens", "usage_source", "prompt", "response", "reasoning",
	"tool_calls", "finish_reason", "error", "request_headers",
	"response_headers", "request_body", "response_body", "truncated",
	"ingested_at", "chain_batch", "text_hash", "body_hash",
}

var rejectColumns = []string{"id", "received_at", "source", "reason", "payload"}

// Store is the ClickHouse store. It is safe for concurrent use.
type Store struct {
	conn   driver.Conn
	dsn    string
	logger *slog.Logger

	mu       sync.Mutex
	inflight map[uuid.UUID]chan struct{}

	// SkipCheck disables the pre-insert existence check (benchmarks only).
	SkipCheck bool
	// LiteralCheck sends the check's keys in the query text instead of as
	// an external table (benchmarks only).
	LiteralCheck bool
}

// New opens a connection pool for dsn (clickhouse://host:9000/db or
// tcp://…; native protocol, LZ4 compression). It does not connect: a server
// that is down makes Write and Ping fail with store.ErrUnavailable. logger
// may be nil.
func New(ctx context.Context, dsn string, logger *slog.Logger) (*Store, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	opts, err := schema.CHOptions(dsn)
	if err != nil {
		return nil, err
	}
	if opts.Compression == nil {
		opts.Compression = &ch.Compression{Method: ch.CompressionLZ4}
	}
	if opts.MaxOpenConns == 0 {
		opts.MaxOpenConns = 8
	}
	if opts.MaxIdleConns == 0 {
		opts.MaxIdleConns = 4
	}
	if opts.ConnMaxLifetime == 0 {
		opts.ConnMaxLifetime = time.Hour
	}
	conn, err := ch.Open(opts)
	if err != nil {
		return nil, classify.ClickHouse("store "+schema.Redact(dsn), err)
	}
	return &Store{conn: conn, dsn: dsn, logger: logger, inflight: map[uuid.UUID]chan struct{}{}}, nil
}

// Conn returns the underlying connection pool (tests and tools; do not
// close it).
func (s *Store) Conn() driver.Conn { return s.conn }

// Ping checks that the server answers and the schema is current.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.conn.Ping(ctx); err != nil {
		return classify.ClickHouse("clickhouse ping", err)
	}
	return schema.CheckClickHouse(ctx, s.conn, s.dsn)
}

// Close closes the pool.
func (s *Store) Close() error {
	chain.ForgetCH(s.conn)
	return s.conn.Close()
}

// acquire marks ids as in flight, first waiting for any other Write that
// holds one of them. It returns the release function. It keeps its own copy
// of ids: the caller may reorder or shorten its slice afterwards.
func (s *Store) acquire(ctx context.Context, ids []uuid.UUID) (func(), error) {
	ids = append([]uuid.UUID(nil), ids...)
	for {
		s.mu.Lock()
		var wait chan struct{}
		for _, id := range ids {
			if c, ok := s.inflight[id]; ok {
				wait = c
				break
			}
		}
		if wait == nil {
			done := make(chan struct{})
			for _, id := range ids {
				s.inflight[id] = done
			}
			s.mu.Unlock()
			return func() {
				s.mu.Lock()
				for _, id := range ids {
					delete(s.inflight, id)
				}
				s.mu.Unlock()
				close(done)
			}, nil
		}
		s.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			return nil, classify.ClickHouse("clickhouse write: wait for concurrent write", ctx.Err())
		}
	}
}

// Write stores recs and rejects; see the package comment for idempotency.
// ClickHouse has no transactions: on error some of the batch may be stored;
// a retry of the same batch stores the rest and nothing twice.
func (s *Store) Write(ctx context.Context, recs []record.Record, rejects []record.Reject) error {
	if len(recs) == 0 && len(rejects) == 0 {
		return nil
	}
	now := time.Now().UTC()
	seen := make(map[uuid.UUID]struct{}, len(recs)+len(rejects))
	ids := make([]uuid.UUID, 0, len(recs)+len(rejects))
	rs := make([]*record.Record, 0, len(recs))
	for i := range recs {
		u, err := rowid.Event(&recs[i])
		if err != nil {
			return fmt.Errorf("clickhouse write: %w", err)
		}
		if _, dup := seen[u]; dup {
			continue
		}
		seen[u] = struct{}{}
		ids = append(ids, u)
		rs = append(rs, &recs[i])
	}
	nrec := len(ids)
	js := make([]*record.Reject, 0, len(rejects))
	for i := range rejects {
		u := rowid.Reject(rejects[i])
		if _, dup := seen[u]; dup {
			continue
		}
		seen[u] = struct{}{}
		ids = append(ids, u)
		js = append(js, &rejects[i])
	}

	release, err := s.acquire(ctx, ids)
	if err != nil {
		return err
	}
	defer release()

	if nrec > 0 {
		if err := s.writeRecords(ctx, rs, ids[:nrec], now); err != nil {
			return err
		}
	}
	if len(js) > 0 {
		if err := s.writeRejects(ctx, js, ids[nrec:], now); err != nil {
			return err
		}
	}
	return nil
}

// quote returns a ClickHouse string literal.
func quote(s string) string {
	var b strings.Builder
	b.Grow(len(s) + 2)
	b.WriteByte('\'')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '\\', '\'':
			b.WriteByte('\\')
			b.WriteByte(c)
		case 0:
			b.WriteString(`\0`)
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('\'')
	return b.String()
}

// maxCheckQuery bounds an existence query's text (max_query_size is
// 256 KiB by default).
const maxCheckQuery = 192 << 10

// existing runs "prefix (tuples…)" over as many queries as the size limit
// needs and returns the ids (first column) found.
func (s *Store) existing(ctx context.Context, prefix string, tuples []string) (map[uuid.UUID]bool, error) {
	have := map[uuid.UUID]bool{}
	var q strings.Builder
	run := func() error {
		q.WriteString(")")
		rows, err := s.conn.Query(ctx, q.String())
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var u uuid.UUID
			if err := rows.Scan(&u); err != nil {
				return err
			}
			have[u] = true
		}
		return rows.Err()
	}
	n := 0
	for _, t := range tuples {
		if n == 0 {
			q.Reset()
			q.WriteString(prefix)
			q.WriteString(" (")
		} else {
			q.WriteByte(',')
		}
		q.WriteString(t)
		n++
		if q.Len() > maxCheckQuery {
			if err := run(); err != nil {
				return nil, err
			}
			n = 0
		}
	}
	if n > 0 {
		if err := run(); err != nil {
			return nil, err
		}
	}
	return have, nil
}

// chTime maps t to what a DateTime column holds: UTC seconds, clamped to
// DateTime's range (1970 to 2106), so an out-of-range timestamp cannot fail
// a batch forever.
func chTime(t time.Time) time.Time {
	switch sec := t.Unix(); {
	case sec < 0:
		return time.Unix(0, 0).UTC()
	case sec > math.MaxUint32:
		return time.Unix(math.MaxUint32, 0).UTC()
	}
	return t.UTC()
}

func uuidLit(id uuid.UUID) string { return "toUUID('" + id.String() + "')" }

func (s *Store) writeRecords(ctx context.Context, rs []*record.Record, ids []uuid.UUID, now time.Time) error {
	// The chain's hashes (mostly SHA-256 of the bodies) are computed while
	// the existence check waits for the server.
	cb := chain.NewBatch(len(rs))
	rows := make([]chain.Row, len(rs))
	hashed := make(chan struct{})
	go func() {
		defer close(hashed)
		for i, r := range rs {
			rows[i] = chain.FromRecord(r, ids[i], chTime(r.TS).UnixMicro(), cb.ID)
		}
	}()
	if !s.SkipCheck {
		var have map[uuid.UUID]bool
		var err error
		if s.LiteralCheck {
			have, err = s.existingLiteral(ctx, rs, ids)
		} else {
			have, err = s.existingExternal(ctx, rs, ids)
		}
		<-hashed // before rs is reordered below
		if err != nil {
			return classify.ClickHouse("clickhouse write: check existing events", err)
		}
		if len(have) > 0 {
			keep := 0
			for i := range rs {
				if !have[ids[i]] {
					rs[keep], ids[keep], rows[keep] = rs[i], ids[i], rows[i]
					keep++
				}
			}
			rs, ids, rows = rs[:keep], ids[:keep], rows[:keep]
		}
		if len(rs) == 0 {
			return nil
		}
	}
	<-hashed
	// Rows first, then their link (no transactions: see package chain for
	// the window between the two).
	if err := insertRecords(ctx, s.conn, "llm_requests", rs, ids, now, rows, cb); err != nil {
		return err
	}
	if err := chain.AppendCH(ctx, s.conn, cb); err != nil {
		return classify.ClickHouse("clickhouse write llm_chain", err)
	}
	return nil
}

// existingLiteral asks with the batch's keys as literal tuples in the query
// text (kept for comparison: parsing large literal IN lists is slow).
func (s *Store) existingLiteral(ctx context.Context, rs []*record.Record, ids []uuid.UUID) (map[uuid.UUID]bool, error) {
	tuples := make([]string, len(rs))
	for i, r := range rs {
		tuples[i] = "(" + quote(r.Consumer) + ",toDateTime(" + strconv.FormatInt(chTime(r.TS).Unix(), 10) + ")," + uuidLit(ids[i]) + ")"
	}
	return s.existing(ctx, "SELECT event_id FROM llm_requests WHERE (consumer, ts, event_id) IN", tuples)
}

// existingExternal sends the batch's keys as an external table (native
// protocol, sent with the query, no parsing) and asks for those stored:
// (consumer, ts, event_id) IN (SELECT … FROM _batch). The set is the whole
// sorting key, so the primary index (use_index_for_in_with_subqueries, on by
// default since 18.x) reads about one granule per key.
func (s *Store) existingExternal(ctx context.Context, rs []*record.Record, ids []uuid.UUID) (map[uuid.UUID]bool, error) {
	tbl, err := ext.NewTable("_batch",
		ext.Column("consumer", "String"),
		ext.Column("ts", "DateTime"),
		ext.Column("event_id", "UUID"))
	if err != nil {
		return nil, err
	}
	consumers := make([]string, len(rs))
	ts := make([]time.Time, len(rs))
	for i, r := range rs {
		consumers[i], ts[i] = r.Consumer, chTime(r.TS)
	}
	cols := tbl.Block().Columns
	for i, v := range []any{consumers, ts, ids} {
		if _, err := cols[i].Append(v); err != nil {
			return nil, err
		}
	}
	qctx := ch.Context(ctx, ch.WithExternalTable(tbl))
	rows, err := s.conn.Query(qctx, "SELECT event_id FROM llm_requests WHERE (consumer, ts, event_id) IN (SELECT consumer, ts, event_id FROM _batch)")
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	have := map[uuid.UUID]bool{}
	for rows.Next() {
		var u uuid.UUID
		if err := rows.Scan(&u); err != nil {
			return nil, err
		}
		have[u] = true
	}
	return have, rows.Err()
}

// InsertRecords inserts rs (with their parsed ids) into table, which has
// llm_requests' columns, in one column-wise batch. now replaces a zero
// IngestedAt. It does no de-duplication (benchmarks use it as the ceiling)
// and appends no chain link: the rows carry a fresh chain_batch whose link
// is missing, which chain.Verify reports.
func InsertRecords(ctx context.Context, conn driver.Conn, table string, rs []*record.Record, ids []uuid.UUID, now time.Time) error {
	return insertRecords(ctx, conn, table, rs, ids, now, nil, chain.NewBatch(len(rs)))
}

// insertRecords is InsertRecords that adds each row to cb (chain_batch
// cb.ID, content hashes) for the link the caller appends after it. rows, if
// not nil, are the rows' chain.FromRecord, computed ahead.
func insertRecords(ctx context.Context, conn driver.Conn, table string, rs []*record.Record, ids []uuid.UUID, now time.Time, rows []chain.Row, cb *chain.Batch) error {
	n := len(rs)
	var (
		ts                                    = make([]time.Time, n)
		tsUS                                  = make([]uint32, n)
		source, consumer, keyID, keyPrefix    = make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		clientIP, method, path, requestID     = make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		endpoint, model                       = make([]string, n), make([]string, n)
		status                                = make([]int32, n)
		stream, truncated                     = make([]uint8, n), make([]uint8, n)
		latency                               = make([]float64, n)
		ttfb, ttft                            = make([]*float64, n), make([]*float64, n)
		pt, ct, tt                            = make([]*int64, n), make([]*int64, n), make([]*int64, n)
		usageSource, prompt, response, reason = make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		toolCalls, finish, errs, reqH         = make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		respH, reqBody, respBody              = make([]string, n), make([]string, n), make([]string, n)
		ingested                              = make([]time.Time, n)
		chainBatch                            = make([]int64, n)
		textHash, bodyHash                    = make([]string, n), make([]string, n)
	)
	for i, r := range rs {
		t := chTime(r.TS)
		ts[i] = t.Truncate(time.Second)
		tsUS[i] = uint32(t.Nanosecond() / 1000)
		source[i], consumer[i], keyID[i], keyPrefix[i] = r.Source, r.Consumer, r.KeyID, r.KeyPrefix
		clientIP[i], method[i], path[i], requestID[i] = r.ClientIP, r.Method, r.Path, r.RequestID
		endpoint[i], model[i] = r.Endpoint, r.Model
		status[i] = int32(r.Status)
		if r.Stream {
			stream[i] = 1
		}
		if r.Truncated {
			truncated[i] = 1
		}
		latency[i] = r.LatencyMs
		ttfb[i], ttft[i] = r.TTFBMs, r.TTFTMs
		pt[i], ct[i], tt[i] = r.PromptTokens, r.CompletionTokens, r.TotalTokens
		usageSource[i], prompt[i], response[i], reason[i] = r.UsageSource, r.Prompt, r.Response, r.Reasoning
		toolCalls[i], finish[i], errs[i], reqH[i] = r.ToolCalls, r.FinishReason, r.Error, r.RequestHeaders
		respH[i], reqBody[i], respBody[i] = r.ResponseHeaders, r.RequestBody, r.ResponseBody
		ingested[i] = chTime(r.IngestedAt)
		if r.IngestedAt.IsZero() {
			ingested[i] = now
		}
		var row chain.Row
		if rows != nil {
			row = rows[i]
		} else {
			row = chain.FromRecord(r, ids[i], t.UnixMicro(), cb.ID)
		}
		cb.Add(&row)
		chainBatch[i], textHash[i], bodyHash[i] = cb.ID, row.TextHash, row.BodyHash
	}
	cols := []any{ids, ts, tsUS, source, consumer, keyID, keyPrefix, clientIP,
		method, path, requestID, endpoint, model, status, stream,
		latency, ttfb, ttft, pt, ct,
		tt, usageSource, prompt, response, reason,
		toolCalls, finish, errs, reqH,
		respH, reqBody, respBody, truncated,
		ingested, chainBatch, textHash, bodyHash}
	return sendColumns(ctx, conn, table, RequestColumns, cols)
}

func sendColumns(ctx context.Context, conn driver.Conn, table string, names []string, cols []any) error {
	batch, err := conn.PrepareBatch(ctx, "INSERT INTO "+table+" ("+strings.Join(names, ", ")+")")
	if err != nil {
		return classify.ClickHouse("clickhouse write "+table+": prepare", err)
	}
	for i, c := range cols {
		if err := batch.Column(i).Append(c); err != nil {
			batch.Abort()
			return fmt.Errorf("clickhouse write %s: column %s: %w", table, names[i], err)
		}
	}
	if err := batch.Send(); err != nil {
		return classify.ClickHouse("clickhouse write "+table+": send", err)
	}
	return nil
}

func (s *Store) writeRejects(ctx context.Context, js []*record.Reject, ids []uuid.UUID, now time.Time) error {
	tuples := make([]string, len(ids))
	for i, id := range ids {
		tuples[i] = uuidLit(id)
	}
	have, err := s.existing(ctx, "SELECT id FROM llm_rejects WHERE id IN", tuples)
	if err != nil {
		return classify.ClickHouse("clickhouse write: check existing rejects", err)
	}
	n := 0
	for i := range js {
		if !have[ids[i]] {
			n++
		}
	}
	if n == 0 {
		return nil
	}
	var (
		id       = make([]uuid.UUID, 0, n)
		at       = make([]time.Time, 0, n)
		source   = make([]string, 0, n)
		reason   = make([]string, 0, n)
		payloads = make([]string, 0, n)
	)
	for i, j := range js {
		if have[ids[i]] {
			continue
		}
		t := j.ReceivedAt
		if t.IsZero() {
			t = now
		}
		id = append(id, ids[i])
		at = append(at, chTime(t))
		source = append(source, j.Source)
		reason = append(reason, j.Reason)
		payloads = append(payloads, string(j.Payload))
	}
	return sendColumns(ctx, s.conn, "llm_rejects", rejectColumns, []any{id, at, source, reason, payloads})
}
