package query

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	chdriver "github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/jackc/pgx/v5"

	"github.com/llmtap/llmtap/internal/jsonstr"
	"github.com/llmtap/llmtap/schema"
)

// Export formats.
const (
	FormatJSONL = "jsonl"
	// FormatCSV ("csv") is shared with Result.Write.
)

// ExportColumns are the columns of an export file, in order: every column of
// llm_requests (ingest/record.Record in snake_case). On ClickHouse, ts is
// rebuilt from ts and ts_us, so both stores give the same columns.
var ExportColumns = exportColumns[:]

var exportColumns = [numColumns]string{
	"event_id", "ts", "source", "consumer", "key_id", "key_prefix", "client_ip", "method", "path",
	"request_id", "endpoint", "model", "status", "stream", "latency_ms", "ttfb_ms", "ttft_ms",
	"prompt_tokens", "completion_tokens", "total_tokens", "usage_source", "prompt", "response",
	"reasoning", "tool_calls", "finish_reason", "error", "request_headers", "response_headers",
	"request_body", "response_body", "truncated", "ingested_at",
	// Tamper evidence (schema 0003): the chain link that wrote the row and
	// the SHA-256 of its erasable text and bodies as written.
	"chain_batch", "text_hash", "body_hash",
}

// Column positions in ExportColumns with a type other than text.
const (
	colTS         = 1
	colStatus     = 12
	colStream     = 13
	colLatency    = 14
	colTTFB       = 15
	colTTFT       = 16
	colPrompt     = 17 // prompt_tokens
	colCompletion = 18
	colTotal      = 19
	colTruncated  = 31
	colIngestedAt = 32
	colChainBatch = 33
	numColumns    = 36
)

// ExportTimeFormat is how ts and ingested_at appear in exports: UTC with
// microseconds (the precision both stores keep).
const ExportTimeFormat = "2006-01-02T15:04:05.000000Z"

// Filters are the row filters recorded in a manifest.
type Filters struct {
	Consumer string `json:"consumer"` // empty: all consumers
	KeyID    string `json:"key_id"`   // empty: all keys
}

// Manifest describes one export file; Export writes it as JSON next to the
// file (FILE.manifest.json).
type Manifest struct {
	File        string    `json:"file"`   // base name of the export file (it sits next to the manifest)
	Format      string    `json:"format"` // jsonl | csv
	Rows        int64     `json:"rows"`
	Bytes       int64     `json:"bytes"`
	SHA256      string    `json:"sha256"` // hex SHA-256 of the whole file
	Table       string    `json:"table"`
	Columns     []string  `json:"columns"`
	Order       string    `json:"order"`
	From        time.Time `json:"from"` // window [from, to) on ts
	To          time.Time `json:"to"`
	Filters     Filters   `json:"filters"`
	Store       string    `json:"store"` // the DSN without password
	Dialect     string    `json:"dialect"`
	GeneratedAt time.Time `json:"generated_at"`
	Generator   string    `json:"generator"`
}

// ManifestPath returns the manifest's path for an export file.
func ManifestPath(out string) string { return out + ".manifest.json" }

// chBlockRows is the block size (rows) asked of ClickHouse during an export.
const chBlockRows = 512

// exportSliceRows is the target number of rows per export query: the
// window is cut at minute boundaries into slices of about this many rows
// (a busier single minute is one slice).
var exportSliceRows int64 = 50000

// Export writes every row of llm_requests with ts in [p.From, p.To) (whole
// seconds, UTC), optionally only one consumer's or key's, to out as JSONL
// (one JSON object per line, every column, NULL as null) or CSV (a header
// row, then one row per request, NULL as an empty field), in order of ts
// then event_id, and writes the manifest to ManifestPath(out).
//
// Memory stays constant whatever the number of rows: rows are streamed from
// the store and written through a buffer while the SHA-256 is computed. Both
// files are written to temporary files in out's directory (mode 0600, since
// exports hold prompts) and renamed into place only when complete: an export
// that fails (bad input, store error, full disk) leaves no partial file and
// an existing out as it was. (Two renames cannot be one atomic step: a crash
// between them leaves a new manifest beside the old file, which VerifyExport
// reports.) On PostgreSQL the whole export reads one snapshot.
//
// p.From and p.To are required; p.Text and p.Limit must be zero.
func Export(ctx context.Context, dsn string, p Params, format, out string) (Manifest, error) {
	var m Manifest
	if err := validateExport(p, format, out); err != nil {
		return m, err
	}
	p = p.Normalize(time.Time{}) // both set: only truncates
	dialect, err := schema.Dialect(dsn)
	if err != nil {
		return m, fmt.Errorf("export: %w", err)
	}
	m = Manifest{
		File:    filepath.Base(out),
		Format:  format,
		Table:   "llm_requests",
		Columns: slices.Clone(ExportColumns),
		Order:   "ts, event_id",
		From:    p.From,
		To:      p.To,
		Filters: Filters{Consumer: p.Consumer, KeyID: p.KeyID},
		Store:   schema.Redact(dsn),
		Dialect: dialect,
	}

	dir := filepath.Dir(out)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(out)+".tmp-*")
	if err != nil {
		return m, fmt.Errorf("export: %w", err)
	}
	done := false
	defer func() {
		if !done {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()

	h := sha256.New()
	sw := &syncingWriter{f: tmp}
	cw := &countWriter{w: io.MultiWriter(sw, h)}
	bw := bufio.NewWriterSize(cw, 256<<10)
	var enc rowEncoder
	if format == FormatCSV {
		enc = newCSVEncoder(bw)
	} else {
		enc = &jsonlEncoder{w: bw}
	}
	if err := enc.header(); err != nil {
		return m, fmt.Errorf("export: write %s: %w", out, err)
	}
	switch dialect {
	case Postgres:
		m.Rows, err = exportPostgres(ctx, dsn, p, enc)
	case ClickHouse:
		m.Rows, err = exportClickHouse(ctx, dsn, p, enc)
	default:
		err = fmt.Errorf("unsupported dialect %q", dialect)
	}
	if err != nil {
		return m, fmt.Errorf("export from %s: %w", m.Store, err)
	}
	if err := enc.flush(); err != nil {
		return m, fmt.Errorf("export: write %s: %w", out, err)
	}
	if err := bw.Flush(); err != nil {
		return m, fmt.Errorf("export: write %s: %w", out, err)
	}
	if err := sw.finish(); err != nil {
		return m, fmt.Errorf("export: sync %s: %w", out, err)
	}
	if err := tmp.Close(); err != nil {
		return m, fmt.Errorf("export: close %s: %w", out, err)
	}
	m.Bytes = cw.n
	m.SHA256 = hashHex(h)
	m.GeneratedAt = time.Now().UTC()
	m.Generator = "llmtap export"

	// The manifest goes in first: a file without its manifest must not
	// appear, a stale manifest is overwritten next.
	mb, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return m, fmt.Errorf("export: manifest: %w", err)
	}
	if err := writeFileAtomic(ManifestPath(out), append(mb, '\n')); err != nil {
		return m, fmt.Errorf("export: manifest: %w", err)
	}
	if err := os.Rename(tmp.Name(), out); err != nil {
		os.Remove(ManifestPath(out))
		return m, fmt.Errorf("export: %w", err)
	}
	done = true
	syncDir(dir)
	return m, nil
}

func validateExport(p Params, format, out string) error {
	var errs []error
	if format != FormatJSONL && format != FormatCSV {
		errs = append(errs, fmt.Errorf("--format %q: want jsonl or csv", format))
	}
	if out == "" {
		errs = append(errs, errors.New("--out is required (the file to write)"))
	} else if st, err := os.Stat(filepath.Dir(out)); err != nil || !st.IsDir() {
		errs = append(errs, fmt.Errorf("--out %s: folder %s does not exist", out, filepath.Dir(out)))
	} else if st, err := os.Stat(out); err == nil && st.IsDir() {
		errs = append(errs, fmt.Errorf("--out %s is a folder; give a file name", out))
	}
	if p.Text != "" {
		errs = append(errs, errors.New("export does not filter by text (--text is for query search)"))
	}
	if p.Limit != 0 {
		errs = append(errs, errors.New("export has no row limit; narrow --from/--to instead"))
	}
	if err := p.Validate(); err != nil {
		errs = append(errs, err)
	} else if !p.From.Truncate(time.Second).Before(p.To.Truncate(time.Second)) {
		errs = append(errs, errors.New("--from and --to fall in the same second; the window is whole seconds"))
	}
	if len(errs) > 0 {
		return fmt.Errorf("export: %w", errors.Join(errs...))
	}
	return nil
}

func hashHex(h hash.Hash) string { return hex.EncodeToString(h.Sum(nil)) }

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.n += int64(n)
	return n, err
}

// syncWriteEvery is how many bytes syncingWriter writes between background
// syncs.
const syncWriteEvery = 64 << 20

// syncingWriter writes to f and, every syncWriteEvery bytes, starts an
// fsync in the background (one at a time), so that the disk writes the file
// while the export runs instead of all at once in the final sync.
type syncingWriter struct {
	f       *os.File
	since   int64
	running chan error // non-nil while a background sync runs
	err     error      // first background sync error
}

func (s *syncingWriter) Write(b []byte) (int, error) {
	n, err := s.f.Write(b)
	s.since += int64(n)
	if s.since >= syncWriteEvery {
		s.poll()
		if s.running == nil {
			s.since = 0
			ch := make(chan error, 1)
			s.running = ch
			go func() { ch <- s.f.Sync() }()
		}
	}
	return n, err
}

// poll collects a finished background sync.
func (s *syncingWriter) poll() {
	if s.running == nil {
		return
	}
	select {
	case err := <-s.running:
		s.running = nil
		if s.err == nil {
			s.err = err
		}
	default:
	}
}

// finish waits for a background sync and syncs the rest.
func (s *syncingWriter) finish() error {
	if s.running != nil {
		if err := <-s.running; s.err == nil {
			s.err = err
		}
		s.running = nil
	}
	if s.err != nil {
		return s.err
	}
	return s.f.Sync()
}

func writeFileAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(f.Name())
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(f.Name())
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(f.Name())
		return err
	}
	if err := os.Rename(f.Name(), path); err != nil {
		os.Remove(f.Name())
		return err
	}
	return nil
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}

// exportRow is one row being written; the encoders read it. Strings hold the
// text columns by ExportColumns position (typed columns are zero there).
type exportRow struct {
	text       [numColumns]string
	ts         time.Time
	status     int64
	stream     bool
	latency    float64
	ttfb, ttft *float64
	tokens     [3]*int64 // prompt, completion, total
	truncated  bool
	ingestedAt time.Time
	chainBatch int64
}

// slice is one export query's window.
type slice struct{ from, to time.Time }

// planRows are the rows of the export_plan query, (minute, rows) in minute
// order; pgx.Rows and the ClickHouse driver's rows both are.
type planRows interface {
	Next() bool
	Scan(dest ...any) error
	Err() error
}

// planSlices cuts [p.From, p.To) at minute boundaries so that each slice
// holds about exportSliceRows rows, from the per-minute counts of the plan
// query. The caller closes rs.
func planSlices(p Params, rs planRows) ([]slice, error) {
	var out []slice
	start := p.From
	var acc int64
	for rs.Next() {
		var minute, rows int64
		if err := rs.Scan(&minute, &rows); err != nil {
			return nil, fmt.Errorf("plan: %w", err)
		}
		b := time.Unix(minute, 0).UTC()
		if acc > 0 && acc+rows > exportSliceRows && b.After(start) {
			out = append(out, slice{start, b})
			start, acc = b, 0
		}
		acc += rows
	}
	if err := rs.Err(); err != nil {
		return nil, fmt.Errorf("plan: %w", err)
	}
	return append(out, slice{start, p.To}), nil
}

func exportPostgres(ctx context.Context, dsn string, p Params, enc rowEncoder) (int64, error) {
	conn, err := connectPostgres(ctx, dsn)
	if err != nil {
		return 0, err
	}
	defer conn.Close(context.Background())
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return 0, err
	}
	defer tx.Rollback(context.Background())

	plan, err := load(Postgres, "export_plan")
	if err != nil {
		return 0, err
	}
	sql, args, err := plan.postgres(p, "export")
	if err != nil {
		return 0, err
	}
	prows, err := tx.Query(ctx, sql, args...)
	if err != nil {
		return 0, fmt.Errorf("plan: %w", err)
	}
	parts, err := planSlices(p, prows)
	prows.Close()
	if err != nil {
		return 0, err
	}

	q, err := load(Postgres, "export")
	if err != nil {
		return 0, err
	}
	var r exportRow
	dest := make([]any, len(ExportColumns))
	for i := range dest {
		dest[i] = &r.text[i]
	}
	dest[colTS] = &r.ts
	dest[colStatus] = &r.status
	dest[colStream] = &r.stream
	dest[colLatency] = &r.latency
	dest[colTTFB] = &r.ttfb
	dest[colTTFT] = &r.ttft
	dest[colPrompt] = &r.tokens[0]
	dest[colCompletion] = &r.tokens[1]
	dest[colTotal] = &r.tokens[2]
	dest[colTruncated] = &r.truncated
	dest[colIngestedAt] = &r.ingestedAt
	dest[colChainBatch] = &r.chainBatch

	var n int64
	for _, s := range parts {
		sp := p
		sp.From, sp.To = s.from, s.to
		sql, args, err := q.postgres(sp, "export")
		if err != nil {
			return n, err
		}
		rows, err := tx.Query(ctx, sql, args...)
		if err != nil {
			return n, err
		}
		for rows.Next() {
			if err := rows.Scan(dest...); err != nil {
				rows.Close()
				return n, err
			}
			if err := enc.row(&r); err != nil {
				rows.Close()
				return n, fmt.Errorf("write: %w", err)
			}
			n++
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return n, err
		}
	}
	return n, tx.Commit(ctx)
}

func exportClickHouse(ctx context.Context, dsn string, p Params, enc rowEncoder) (int64, error) {
	// Cancelling ctx on return aborts a prefetched query that is not read.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	conn, err := connectClickHouse(ctx, dsn)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	// Small blocks, and one block buffered ahead per query, keep the
	// client's memory bounded: about 2 queries × 3 blocks × chBlockRows rows.
	qctx := chReadOnly(ctx, map[string]any{"max_block_size": chBlockRows}, clickhouse.WithBlockBufferSize(1))

	plan, err := load(ClickHouse, "export_plan")
	if err != nil {
		return 0, err
	}
	sql, err := plan.clickhouse(p, "export")
	if err != nil {
		return 0, err
	}
	prows, err := conn.Query(qctx, sql)
	if err != nil {
		return 0, fmt.Errorf("plan: %w", err)
	}
	parts, err := planSlices(p, prows)
	prows.Close()
	if err != nil {
		return 0, err
	}

	q, err := load(ClickHouse, "export")
	if err != nil {
		return 0, err
	}
	// The next slice's query runs on a second connection while this one is
	// read, so the server sorts slice i+1 while the client writes slice i.
	// Only a few blocks of the next slice are buffered (the driver's block
	// buffer), so memory stays bounded.
	type pending struct {
		rows chdriver.Rows
		err  error
	}
	start := func(s slice) chan pending {
		ch := make(chan pending, 1)
		sp := p
		sp.From, sp.To = s.from, s.to
		sql, err := q.clickhouse(sp, "export")
		if err != nil {
			ch <- pending{err: err}
			return ch
		}
		go func() {
			rows, err := conn.Query(qctx, sql)
			ch <- pending{rows, err}
		}()
		return ch
	}
	var next chan pending
	defer func() {
		if next != nil {
			cancel()
			if pd := <-next; pd.rows != nil {
				pd.rows.Close()
			}
		}
	}()

	var (
		r                 exportRow
		tsUS              uint32
		status            int32
		stream, truncated uint8
		lastID            string
	)
	// ClickHouse's export.sql has ts_us after ts.
	dest := make([]any, 0, len(ExportColumns)+1)
	for i := range ExportColumns {
		dest = append(dest, &r.text[i])
		if i == colTS {
			dest[i] = &r.ts
			dest = append(dest, &tsUS)
		}
	}
	at := func(col int) int { // position in dest of an ExportColumns index
		if col > colTS {
			return col + 1
		}
		return col
	}
	dest[at(colStatus)] = &status
	dest[at(colStream)] = &stream
	dest[at(colLatency)] = &r.latency
	dest[at(colTTFB)] = &r.ttfb
	dest[at(colTTFT)] = &r.ttft
	dest[at(colPrompt)] = &r.tokens[0]
	dest[at(colCompletion)] = &r.tokens[1]
	dest[at(colTotal)] = &r.tokens[2]
	dest[at(colTruncated)] = &truncated
	dest[at(colIngestedAt)] = &r.ingestedAt
	dest[at(colChainBatch)] = &r.chainBatch

	var n int64
	next = start(parts[0])
	for i := range parts {
		pd := <-next
		next = nil
		if pd.err != nil {
			return n, pd.err
		}
		if i+1 < len(parts) {
			next = start(parts[i+1])
		}
		rows := pd.rows
		if err := checkCHColumns(rows); err != nil {
			rows.Close()
			return n, err
		}
		for rows.Next() {
			if err := rows.Scan(dest...); err != nil {
				rows.Close()
				return n, err
			}
			// Copies of one event (a replay stored twice before a merge)
			// are adjacent: same ts, ts_us and event_id.
			if r.text[0] == lastID {
				continue
			}
			lastID = r.text[0]
			r.ts = r.ts.Add(time.Duration(tsUS) * time.Microsecond)
			r.status = int64(status)
			r.stream = stream != 0
			r.truncated = truncated != 0
			if err := enc.row(&r); err != nil {
				rows.Close()
				return n, fmt.Errorf("write: %w", err)
			}
			n++
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return n, err
		}
	}
	return n, nil
}

func checkCHColumns(rows chdriver.Rows) error {
	cols := rows.Columns()
	if len(cols) != len(ExportColumns)+1 {
		return fmt.Errorf("export.sql returns %d columns, want %d", len(cols), len(ExportColumns)+1)
	}
	return nil
}

// rowEncoder writes rows of one format.
type rowEncoder interface {
	header() error
	row(r *exportRow) error
	flush() error
}

// jsonlEncoder writes one JSON object per line, keys in ExportColumns order.
type jsonlEncoder struct {
	w   *bufio.Writer
	buf []byte
}

func (e *jsonlEncoder) header() error { return nil }
func (e *jsonlEncoder) flush() error  { return nil }

func (e *jsonlEncoder) row(r *exportRow) error {
	b := e.buf[:0]
	b = append(b, '{')
	for i, col := range ExportColumns {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, '"')
		b = append(b, col...)
		b = append(b, '"', ':')
		switch i {
		case colTS:
			b = append(b, '"')
			b = r.ts.UTC().AppendFormat(b, ExportTimeFormat)
			b = append(b, '"')
		case colIngestedAt:
			b = append(b, '"')
			b = r.ingestedAt.UTC().AppendFormat(b, ExportTimeFormat)
			b = append(b, '"')
		case colStatus:
			b = strconv.AppendInt(b, r.status, 10)
		case colChainBatch:
			b = strconv.AppendInt(b, r.chainBatch, 10)
		case colStream:
			b = strconv.AppendBool(b, r.stream)
		case colTruncated:
			b = strconv.AppendBool(b, r.truncated)
		case colLatency:
			b = appendJSONValue(b, r.latency)
		case colTTFB:
			b = appendNullFloat(b, r.ttfb)
		case colTTFT:
			b = appendNullFloat(b, r.ttft)
		case colPrompt, colCompletion, colTotal:
			if v := r.tokens[i-colPrompt]; v != nil {
				b = strconv.AppendInt(b, *v, 10)
			} else {
				b = append(b, "null"...)
			}
		default:
			b = jsonstr.Append(b, r.text[i])
		}
	}
	b = append(b, '}', '\n')
	e.buf = b
	_, err := e.w.Write(b)
	return err
}

func appendNullFloat(b []byte, f *float64) []byte {
	if f == nil {
		return append(b, "null"...)
	}
	return appendJSONValue(b, *f)
}

// csvEncoder writes RFC 4180 CSV with a header row.
type csvEncoder struct {
	w   *csv.Writer
	rec []string
}

func newCSVEncoder(w io.Writer) *csvEncoder {
	return &csvEncoder{w: csv.NewWriter(w), rec: make([]string, len(ExportColumns))}
}

func (e *csvEncoder) header() error { return e.w.Write(ExportColumns) }

func (e *csvEncoder) flush() error {
	e.w.Flush()
	return e.w.Error()
}

func (e *csvEncoder) row(r *exportRow) error {
	for i := range ExportColumns {
		switch i {
		case colTS:
			e.rec[i] = r.ts.UTC().Format(ExportTimeFormat)
		case colIngestedAt:
			e.rec[i] = r.ingestedAt.UTC().Format(ExportTimeFormat)
		case colStatus:
			e.rec[i] = strconv.FormatInt(r.status, 10)
		case colChainBatch:
			e.rec[i] = strconv.FormatInt(r.chainBatch, 10)
		case colStream:
			e.rec[i] = strconv.FormatBool(r.stream)
		case colTruncated:
			e.rec[i] = strconv.FormatBool(r.truncated)
		case colLatency:
			e.rec[i] = formatFloat(r.latency)
		case colTTFB:
			e.rec[i] = nullFloat(r.ttfb)
		case colTTFT:
			e.rec[i] = nullFloat(r.ttft)
		case colPrompt, colCompletion, colTotal:
			e.rec[i] = ""
			if v := r.tokens[i-colPrompt]; v != nil {
				e.rec[i] = strconv.FormatInt(*v, 10)
			}
		default:
			e.rec[i] = r.text[i]
		}
	}
	return e.w.Write(e.rec)
}

func nullFloat(f *float64) string {
	if f == nil {
		return ""
	}
	return formatFloat(*f)
}

// VerifyExport recomputes the SHA-256, size and row count of an export file
// and compares them with its manifest; nil means they match.
func VerifyExport(out string) (Manifest, error) {
	var m Manifest
	b, err := os.ReadFile(ManifestPath(out))
	if err != nil {
		return m, fmt.Errorf("verify: %w", err)
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("verify: manifest %s: %w", ManifestPath(out), err)
	}
	f, err := os.Open(out)
	if err != nil {
		return m, fmt.Errorf("verify: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	lines := &lineCounter{}
	n, err := io.Copy(io.MultiWriter(h, lines), f)
	if err != nil {
		return m, fmt.Errorf("verify: read %s: %w", out, err)
	}
	var errs []string
	if got := hashHex(h); got != m.SHA256 {
		errs = append(errs, fmt.Sprintf("sha256 is %s, manifest says %s", got, m.SHA256))
	}
	if n != m.Bytes {
		errs = append(errs, fmt.Sprintf("size is %d bytes, manifest says %d", n, m.Bytes))
	}
	if m.Format == FormatJSONL && lines.n != m.Rows {
		errs = append(errs, fmt.Sprintf("%d lines, manifest says %d rows", lines.n, m.Rows))
	}
	if len(errs) > 0 {
		return m, fmt.Errorf("verify %s: %s", out, strings.Join(errs, "; "))
	}
	return m, nil
}

type lineCounter struct{ n int64 }

func (l *lineCounter) Write(b []byte) (int, error) {
	for _, c := range b {
		if c == '\n' {
			l.n++
		}
	}
	return len(b), nil
}
