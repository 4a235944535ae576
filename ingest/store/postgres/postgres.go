// Package postgres is the PostgreSQL store (pgx/v5): it writes records to
// llm_requests and rejects to llm_rejects (schema/postgres).
//
// # Write path and idempotency
//
// A Write is one transaction. Records are de-duplicated within the batch by
// event_id, then one indexed lookup (event_id = ANY($1)) drops those already
// stored, and the rest go in with binary COPY straight into llm_requests:
// COPY is the fastest way into PostgreSQL, and the lookup costs about one
// index probe per row. If a concurrent writer stored one of the same events
// between lookup and COPY, the COPY fails on the primary key (23505); the
// transaction is rolled back and the batch is written again through a
// per-connection temporary staging table: COPY into the stage, then
// INSERT … SELECT … ON CONFLICT (event_id) DO NOTHING. Either way the
// primary key on event_id makes the result exact: a replay never adds a row,
// so no query counts an event twice. Rejects take the same path keyed by
// their content id (schema/postgres/0001_init.sql).
//
// The other write modes (staging always; multi-row INSERT … ON CONFLICT) are
// kept for the benchmarks that chose between them: interleaved with the
// ceiling (plain COPY into the same table and indexes), lookup + COPY ran at
// 0.8–1.2× the ceiling, staging at 0.4–0.6×, multi-row INSERT at 0.5–0.6×.
// Rows are sorted by id before writing so that concurrent writers of
// overlapping batches wait for each other instead of deadlocking.
//
// # Hash chain (package chain)
//
// Every row also carries chain_batch, text_hash and body_hash, and the same
// transaction appends one llm_chain link covering exactly the rows it
// inserted (not those skipped as already stored), under a transaction-scoped
// advisory lock that keeps the chain linear across processes. The hashes
// are computed by a goroutine while the lookup and COPY run. See package
// chain for the encoding and for Verify, Erase and Retention.
//
// # Layout choices (schema/postgres)
//
// Primary key event_id, btree (ts), btree (consumer, ts); large text columns
// compressed with lz4 (migration 0002; several times cheaper than pglz on
// COPY). BRIN on ts and monthly range partitions were measured
// (BenchmarkPostgresLayouts): the same COPY cost per event within noise at
// the sizes a benchmark reaches, while BRIN cannot serve "most recent
// first" (ORDER BY ts DESC LIMIT n) and partitioning forces the key to
// (event_id, ts) and needs partitions created ahead. So the table is not
// partitioned; revisit for retention by DROP PARTITION at hundreds of
// millions of rows.
package postgres

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/llmtap/llmtap/ingest/record"
	"github.com/llmtap/llmtap/ingest/store/chain"
	"github.com/llmtap/llmtap/ingest/store/classify"
	"github.com/llmtap/llmtap/ingest/store/internal/rowid"
	"github.com/llmtap/llmtap/schema"
)

// Columns of llm_requests in COPY order.
var requestColumns = []string{
	"event_id", "ts", "source", "consumer", "key_id", "key_prefix", "client_ip",
	"method", "path", "request_id", "endpoint", "model", "status", "stream",
	"latency_ms", "ttfb_ms", "ttft_ms", "prompt_tokens", "completion_tokens",
	"total_tokens", "usage_source", "prompt", "response", "reasoning",
	"tool_calls", "finish_reason", "error", "request_headers",
	"response_headers", "request_body", "response_body", "truncated",
	"ingested_at", "chain_batch", "text_hash", "body_hash",
}

var rejectColumns = []string{"id", "received_at", "source", "reason", "payload"}

// Mode selects how Write inserts (exported for benchmarks).
type Mode int

const (
	// ModeCopy: lookup + direct COPY, staging fallback on conflict (default).
	ModeCopy Mode = iota
	// ModeStage: COPY into a temporary table, INSERT … SELECT … ON CONFLICT.
	ModeStage
	// ModeInsert: multi-row INSERT … ON CONFLICT DO NOTHING.
	ModeInsert
)

// Store is the PostgreSQL store. It is safe for concurrent use.
type Store struct {
	pool   *pgxpool.Pool
	dsn    string // for messages; password removed
	logger *slog.Logger
	mode   Mode
}

// New makes a pool for dsn (pgxpool settings such as pool_max_conns may be
// given in the DSN). It does not connect: a server that is down makes Write
// and Ping fail with store.ErrUnavailable, not New. logger may be nil.
func New(ctx context.Context, dsn string, logger *slog.Logger) (*Store, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("store %s: %w", schema.Redact(dsn), err)
	}
	if cfg.ConnConfig.ConnectTimeout == 0 {
		cfg.ConnConfig.ConnectTimeout = 10 * time.Second
	}
	if cfg.MaxConnIdleTime == 30*time.Minute { // pgxpool's default: keep a warm pool longer
		cfg.MaxConnIdleTime = time.Hour
	}
	pool, err := pgxpool.NewWithConfig(context.WithoutCancel(ctx), cfg)
	if err != nil {
		return nil, classify.Postgres("store "+schema.Redact(dsn), err)
	}
	return &Store{pool: pool, dsn: dsn, logger: logger}, nil
}

// SetMode changes the write mode (benchmarks and tests). Not safe to call
// concurrently with Write.
func (s *Store) SetMode(m Mode) { s.mode = m }

// Pool returns the underlying pool (tests and tools; do not close it).
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// Ping checks that the server answers and the schema is current.
func (s *Store) Ping(ctx context.Context) error {
	return schema.CheckPostgres(ctx, s.pool, s.dsn)
}

// Close closes the pool, waiting for connections in use to be released.
func (s *Store) Close() error {
	s.pool.Close()
	return nil
}

// batch is a Write's input after validation and in-batch de-duplication.
type batch struct {
	recs      []*record.Record
	ids       []pgtype.UUID
	rows      []chain.Row // chain view of recs, same order; row i is ready once hashed[i/hashChunk] is closed
	hashed    []chan struct{}
	chainID   int64
	rejects   []*record.Reject
	rejectIDs []pgtype.UUID
	now       time.Time
}

// hashChunk is how many rows the hashing goroutine hands over at a time.
const hashChunk = 128

// waitHashed returns when every row of the batch is hashed.
func (b *batch) waitHashed() {
	for _, c := range b.hashed {
		<-c
	}
}

// row returns row i of the chain view, waiting until it is hashed.
func (b *batch) row(i int) *chain.Row {
	<-b.hashed[i/hashChunk]
	return &b.rows[i]
}

func prepare(recs []record.Record, rejects []record.Reject) (*batch, error) {
	b := &batch{now: time.Now().UTC()}
	seen := make(map[uuid.UUID]struct{}, len(recs))
	for i := range recs {
		u, err := rowid.Event(&recs[i])
		if err != nil {
			return nil, err
		}
		if _, dup := seen[u]; dup {
			continue
		}
		seen[u] = struct{}{}
		b.recs = append(b.recs, &recs[i])
		b.ids = append(b.ids, pgtype.UUID{Bytes: u, Valid: true})
	}
	clear(seen)
	for i := range rejects {
		u := rowid.Reject(rejects[i])
		if _, dup := seen[u]; dup {
			continue
		}
		seen[u] = struct{}{}
		b.rejects = append(b.rejects, &rejects[i])
		b.rejectIDs = append(b.rejectIDs, pgtype.UUID{Bytes: u, Valid: true})
	}
	// One key order for every writer: concurrent transactions that insert
	// overlapping ids then wait for each other instead of deadlocking.
	sortByID(b.ids, b.recs)
	sortByID(b.rejectIDs, b.rejects)
	b.chainID = chain.NewBatchID()
	b.rows = make([]chain.Row, len(b.recs))
	// The chain's hashes (mostly SHA-256 of the bodies, ~5 µs a row) are
	// computed in chunks by one goroutine while the lookup and the COPY
	// run; the COPY source waits for each chunk. waitHashed must be called
	// before the records go back to the caller.
	b.hashed = make([]chan struct{}, (len(b.recs)+hashChunk-1)/hashChunk)
	for i := range b.hashed {
		b.hashed[i] = make(chan struct{})
	}
	go func() {
		for c := range b.hashed {
			for i := c * hashChunk; i < min(len(b.recs), (c+1)*hashChunk); i++ {
				r := b.recs[i]
				b.rows[i] = chain.FromRecord(r, b.ids[i].Bytes, r.TS.UnixMicro(), b.chainID)
			}
			close(b.hashed[c])
		}
	}()
	return b, nil
}

type byID[T any] struct {
	ids  []pgtype.UUID
	rows []T
}

func (s byID[T]) Len() int           { return len(s.ids) }
func (s byID[T]) Less(i, j int) bool { return bytes.Compare(s.ids[i].Bytes[:], s.ids[j].Bytes[:]) < 0 }
func (s byID[T]) Swap(i, j int) {
	s.ids[i], s.ids[j] = s.ids[j], s.ids[i]
	s.rows[i], s.rows[j] = s.rows[j], s.rows[i]
}

func sortByID[T any](ids []pgtype.UUID, rows []T) {
	sort.Sort(byID[T]{ids, rows})
}

// Write stores recs and rejects in one transaction; see the package comment.
func (s *Store) Write(ctx context.Context, recs []record.Record, rejects []record.Reject) error {
	if len(recs) == 0 && len(rejects) == 0 {
		return nil
	}
	b, err := prepare(recs, rejects)
	if err != nil {
		return fmt.Errorf("postgres write: %w", err)
	}
	defer b.waitHashed() // the goroutine reads recs, which the caller owns
	mode := s.mode
	err = s.writeTx(ctx, b, mode)
	if mode == ModeCopy && isUniqueViolation(err) {
		// A concurrent writer stored some of these events after our lookup.
		s.logger.Debug("postgres write: concurrent duplicate, retrying through staging", "records", len(b.recs))
		err = s.writeTx(ctx, b, ModeStage)
	}
	return err
}

func isUniqueViolation(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23505"
}

func (s *Store) writeTx(ctx context.Context, b *batch, mode Mode) error {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return classify.Postgres("postgres write: begin", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // no-op after Commit

	if len(b.recs) > 0 {
		src := &recordSource{b: b}
		inserted, err := s.insert(ctx, tx, mode, "llm_requests", "event_id", requestColumns, b.ids, src)
		if err != nil {
			return classify.Postgres("postgres write llm_requests", err)
		}
		// The chain link covers exactly the rows this transaction inserted.
		cb := chain.NewBatch(len(b.rows))
		cb.ID = b.chainID
		b.waitHashed()
		for i := range b.rows {
			if inserted(b.ids[i].Bytes) {
				cb.Add(&b.rows[i])
			}
		}
		if err := chain.AppendPG(ctx, tx, cb); err != nil {
			return classify.Postgres("postgres write llm_chain", err)
		}
	}
	if len(b.rejects) > 0 {
		src := &rejectSource{b: b}
		if _, err := s.insert(ctx, tx, mode, "llm_rejects", "id", rejectColumns, b.rejectIDs, src); err != nil {
			return classify.Postgres("postgres write llm_rejects", err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return classify.Postgres("postgres write: commit", err)
	}
	return nil
}

// rowSource is a pgx.CopyFromSource that can skip rows and restart.
type rowSource interface {
	pgx.CopyFromSource
	skip(map[[16]byte]bool)
	len() int
}

// insert writes src's rows into table and returns which ids it inserted
// (not those skipped as already stored).
func (s *Store) insert(ctx context.Context, tx pgx.Tx, mode Mode, table, key string, cols []string, ids []pgtype.UUID, src rowSource) (func([16]byte) bool, error) {
	switch mode {
	case ModeCopy:
		rows, err := tx.Query(ctx, "SELECT "+key+" FROM "+table+" WHERE "+key+" = ANY($1)", ids)
		if err != nil {
			return nil, err
		}
		have := map[[16]byte]bool{}
		for rows.Next() {
			var u pgtype.UUID
			if err := rows.Scan(&u); err != nil {
				rows.Close()
				return nil, err
			}
			have[u.Bytes] = true
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
		inserted := func(id [16]byte) bool { return !have[id] }
		src.skip(have)
		if src.len() == 0 {
			return inserted, nil
		}
		_, err = tx.CopyFrom(ctx, pgx.Identifier{table}, cols, src)
		return inserted, err
	case ModeStage:
		stage := table + "_stage"
		if _, err := tx.Exec(ctx, "CREATE TEMP TABLE IF NOT EXISTS "+stage+
			" (LIKE "+table+" INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"); err != nil {
			return nil, err
		}
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{stage}, cols, src); err != nil {
			return nil, err
		}
		list := joinCols(cols)
		rows, err := tx.Query(ctx, "INSERT INTO "+table+" ("+list+") SELECT "+list+" FROM "+stage+
			" ON CONFLICT ("+key+") DO NOTHING RETURNING "+key)
		if err != nil {
			return nil, err
		}
		return collectIDs(rows)
	default:
		return insertValues(ctx, tx, table, key, cols, src)
	}
}

// collectIDs reads a RETURNING list of uuids into a membership test.
func collectIDs(rows pgx.Rows) (func([16]byte) bool, error) {
	got := map[[16]byte]bool{}
	defer rows.Close()
	for rows.Next() {
		var u pgtype.UUID
		if err := rows.Scan(&u); err != nil {
			return nil, err
		}
		got[u.Bytes] = true
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return func(id [16]byte) bool { return got[id] }, nil
}

// insertValues writes with multi-row INSERT … ON CONFLICT DO NOTHING, as
// many rows per statement as the 65535-parameter limit allows.
func insertValues(ctx context.Context, tx pgx.Tx, table, key string, cols []string, src rowSource) (func([16]byte) bool, error) {
	per := 65535 / len(cols)
	if per > 1000 {
		per = 1000
	}
	head := "INSERT INTO " + table + " (" + joinCols(cols) + ") VALUES "
	args := make([]any, 0, per*len(cols))
	got := map[[16]byte]bool{}
	flush := func(n int) error {
		if n == 0 {
			return nil
		}
		sql := make([]byte, 0, len(head)+n*len(cols)*6)
		sql = append(sql, head...)
		p := 1
		for r := 0; r < n; r++ {
			if r > 0 {
				sql = append(sql, ',')
			}
			sql = append(sql, '(')
			for c := range cols {
				if c > 0 {
					sql = append(sql, ',')
				}
				sql = append(sql, '$')
				sql = fmt.Appendf(sql, "%d", p)
				p++
			}
			sql = append(sql, ')')
		}
		sql = append(sql, " ON CONFLICT ("+key+") DO NOTHING RETURNING "+key...)
		rows, err := tx.Query(ctx, string(sql), args...)
		args = args[:0]
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var u pgtype.UUID
			if err := rows.Scan(&u); err != nil {
				return err
			}
			got[u.Bytes] = true
		}
		return rows.Err()
	}
	n := 0
	for src.Next() {
		v, err := src.Values()
		if err != nil {
			return nil, err
		}
		args = append(args, v...)
		n++
		if n == per {
			if err := flush(n); err != nil {
				return nil, err
			}
			n = 0
		}
	}
	if err := flush(n); err != nil {
		return nil, err
	}
	return func(id [16]byte) bool { return got[id] }, nil
}

func joinCols(cols []string) string { return strings.Join(cols, ", ") }

// recordSource feeds a batch's records to CopyFrom.
type recordSource struct {
	b       *batch
	skipped map[[16]byte]bool
	i       int
	vals    [36]any
}

func (r *recordSource) skip(m map[[16]byte]bool) { r.skipped = m; r.i = 0 }
func (r *recordSource) len() int                 { return len(r.b.recs) - len(r.skipped) }

func (r *recordSource) Next() bool {
	for r.i < len(r.b.recs) {
		r.i++
		if !r.skipped[r.b.ids[r.i-1].Bytes] {
			return true
		}
	}
	return false
}

func (r *recordSource) Err() error { return nil }

func (r *recordSource) Values() ([]any, error) {
	i := r.i - 1
	rec := r.b.recs[i]
	ing := rec.IngestedAt
	if ing.IsZero() {
		ing = r.b.now
	}
	v := r.vals[:]
	v[0] = r.b.ids[i]
	v[1] = rec.TS
	v[2] = rec.Source
	v[3] = rec.Consumer
	v[4] = rec.KeyID
	v[5] = rec.KeyPrefix
	v[6] = rec.ClientIP
	v[7] = rec.Method
	v[8] = rec.Path
	v[9] = rec.RequestID
	v[10] = rec.Endpoint
	v[11] = rec.Model
	v[12] = int32(rec.Status)
	v[13] = rec.Stream
	v[14] = rec.LatencyMs
	v[15] = rec.TTFBMs
	v[16] = rec.TTFTMs
	v[17] = rec.PromptTokens
	v[18] = rec.CompletionTokens
	v[19] = rec.TotalTokens
	v[20] = rec.UsageSource
	v[21] = rec.Prompt
	v[22] = rec.Response
	v[23] = rec.Reasoning
	v[24] = rec.ToolCalls
	v[25] = rec.FinishReason
	v[26] = rec.Error
	v[27] = rec.RequestHeaders
	v[28] = rec.ResponseHeaders
	v[29] = rec.RequestBody
	v[30] = rec.ResponseBody
	v[31] = rec.Truncated
	v[32] = ing
	row := r.b.row(i)
	v[33] = row.Batch
	v[34] = row.TextHash
	v[35] = row.BodyHash
	return v, nil
}

// rejectSource feeds a batch's rejects to CopyFrom.
type rejectSource struct {
	b       *batch
	skipped map[[16]byte]bool
	i       int
	vals    [5]any
}

func (r *rejectSource) skip(m map[[16]byte]bool) { r.skipped = m; r.i = 0 }
func (r *rejectSource) len() int                 { return len(r.b.rejects) - len(r.skipped) }

func (r *rejectSource) Next() bool {
	for r.i < len(r.b.rejects) {
		r.i++
		if !r.skipped[r.b.rejectIDs[r.i-1].Bytes] {
			return true
		}
	}
	return false
}

func (r *rejectSource) Err() error { return nil }

func (r *rejectSource) Values() ([]any, error) {
	i := r.i - 1
	rj := r.b.rejects[i]
	at := rj.ReceivedAt
	if at.IsZero() {
		at = r.b.now
	}
	payload := rj.Payload
	if payload == nil {
		payload = []byte{}
	}
	r.vals = [5]any{r.b.rejectIDs[i], at, rj.Source, rj.Reason, payload}
	return r.vals[:], nil
}
