package chain

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"math"
	"sync"
	"time"

	"github.com/llmtap/llmtap/ingest/record"
)

// Row is one llm_requests row as the chain sees it: every metadata column in
// its stored form, the two content hashes, and the batch. Both stores read
// it back bit-identically (see the package documentation).
type Row struct {
	EventID   [16]byte
	TSMicro   int64 // ts as stored: microseconds since the Unix epoch
	Source    string
	Consumer  string
	KeyID     string
	KeyPrefix string
	ClientIP  string
	Method    string
	Path      string
	RequestID string
	Endpoint  string
	Model     string
	Status    int32
	Stream    bool

	LatencyMs        float64
	TTFBMs, TTFTMs   *float64
	PromptTokens     *int64
	CompletionTokens *int64
	TotalTokens      *int64
	UsageSource      string
	FinishReason     string
	Error            string
	RequestHeaders   string
	ResponseHeaders  string
	Truncated        bool

	TextHash string // hex SHA-256 of prompt, response, reasoning, tool_calls
	BodyHash string // hex SHA-256 of request_body, response_body
	Batch    int64  // chain_batch
}

// Content is a row's erasable content.
type Content struct {
	Prompt, Response, Reasoning, ToolCalls string
	RequestBody, ResponseBody              string
}

// TextEmpty tells whether the text part (what erasure clears besides the
// bodies) is empty.
func (c *Content) TextEmpty() bool {
	return c.Prompt == "" && c.Response == "" && c.Reasoning == "" && c.ToolCalls == ""
}

// BodiesEmpty tells whether both bodies are empty.
func (c *Content) BodiesEmpty() bool { return c.RequestBody == "" && c.ResponseBody == "" }

// Domain separation tags: a text hash can never equal a body hash or a row
// digest of other fields.
const (
	tagText = "llmtap-text-v1"
	tagBody = "llmtap-body-v1"
	tagRow  = "llmtap-row-v1"
	tagRows = "llmtap-rows-v1"
	tagLink = "llmtap-link-v1"
)

// enc builds the length-prefixed encoding in a buffer that is hashed in one
// call (many small writes into a hash.Hash cost more than the hashing).
type enc struct{ b []byte }

var encPool = sync.Pool{New: func() any { return &enc{b: make([]byte, 0, 16<<10)} }}

func getEnc() *enc { e := encPool.Get().(*enc); e.b = e.b[:0]; return e }

// sum hashes the encoding and returns the buffer to the pool.
func (e *enc) sum() [32]byte {
	d := sha256.Sum256(e.b)
	if cap(e.b) <= 1<<20 {
		encPool.Put(e)
	}
	return d
}

func (e *enc) str(s string) {
	e.b = binary.BigEndian.AppendUint64(e.b, uint64(len(s)))
	e.b = append(e.b, s...)
}

func (e *enc) raw(p []byte) { e.b = append(e.b, p...) }

func (e *enc) u64(v uint64) { e.b = binary.BigEndian.AppendUint64(e.b, v) }

func (e *enc) i64(v int64) { e.u64(uint64(v)) }

func (e *enc) b1(v bool) {
	if v {
		e.b = append(e.b, 1)
	} else {
		e.b = append(e.b, 0)
	}
}

// f64 writes the IEEE-754 bits; -0 is written as +0 and every NaN as one
// NaN, the only values a store might not return bit for bit.
func (e *enc) f64(v float64) {
	switch {
	case v == 0:
		v = 0
	case math.IsNaN(v):
		v = math.NaN()
	}
	e.u64(math.Float64bits(v))
}

func (e *enc) optF64(v *float64) {
	e.b1(v != nil)
	if v != nil {
		e.f64(*v)
	}
}

func (e *enc) optI64(v *int64) {
	e.b1(v != nil)
	if v != nil {
		e.i64(*v)
	}
}

func hexSum(e *enc) string {
	d := e.sum()
	return hex.EncodeToString(d[:])
}

// TextHash returns the hex SHA-256 of the text part of the content.
func TextHash(c *Content) string {
	e := getEnc()
	e.str(tagText)
	e.str(c.Prompt)
	e.str(c.Response)
	e.str(c.Reasoning)
	e.str(c.ToolCalls)
	return hexSum(e)
}

// BodyHash returns the hex SHA-256 of the bodies.
func BodyHash(c *Content) string {
	e := getEnc()
	e.str(tagBody)
	e.str(c.RequestBody)
	e.str(c.ResponseBody)
	return hexSum(e)
}

// Digest returns the row's digest: SHA-256 over the length-prefixed
// encoding of every field of Row except Batch (which the link holds).
func (r *Row) Digest() [32]byte {
	e := getEnc()
	r.encode(e)
	return e.sum()
}

func (r *Row) encode(e *enc) {
	e.str(tagRow)
	e.raw(r.EventID[:])
	e.i64(r.TSMicro)
	for _, s := range [...]string{r.Source, r.Consumer, r.KeyID, r.KeyPrefix, r.ClientIP,
		r.Method, r.Path, r.RequestID, r.Endpoint, r.Model} {
		e.str(s)
	}
	e.i64(int64(r.Status))
	e.b1(r.Stream)
	e.f64(r.LatencyMs)
	e.optF64(r.TTFBMs)
	e.optF64(r.TTFTMs)
	e.optI64(r.PromptTokens)
	e.optI64(r.CompletionTokens)
	e.optI64(r.TotalTokens)
	for _, s := range [...]string{r.UsageSource, r.FinishReason, r.Error, r.RequestHeaders, r.ResponseHeaders} {
		e.str(s)
	}
	e.b1(r.Truncated)
	e.str(r.TextHash)
	e.str(r.BodyHash)
}

// FromRecord builds the Row a store writes for rec: id is the parsed
// event id, tsMicro the timestamp as that store keeps it (PostgreSQL:
// rec.TS.UnixMicro(); ClickHouse: after clamping to DateTime's range) and
// batch the chain_batch. It computes the content hashes.
func FromRecord(rec *record.Record, id [16]byte, tsMicro, batch int64) Row {
	c := Content{rec.Prompt, rec.Response, rec.Reasoning, rec.ToolCalls, rec.RequestBody, rec.ResponseBody}
	return Row{
		EventID: id, TSMicro: tsMicro,
		Source: rec.Source, Consumer: rec.Consumer, KeyID: rec.KeyID, KeyPrefix: rec.KeyPrefix,
		ClientIP: rec.ClientIP, Method: rec.Method, Path: rec.Path, RequestID: rec.RequestID,
		Endpoint: rec.Endpoint, Model: rec.Model, Status: int32(rec.Status), Stream: rec.Stream,
		LatencyMs: rec.LatencyMs, TTFBMs: rec.TTFBMs, TTFTMs: rec.TTFTMs,
		PromptTokens: rec.PromptTokens, CompletionTokens: rec.CompletionTokens, TotalTokens: rec.TotalTokens,
		UsageSource: rec.UsageSource, FinishReason: rec.FinishReason, Error: rec.Error,
		RequestHeaders: rec.RequestHeaders, ResponseHeaders: rec.ResponseHeaders, Truncated: rec.Truncated,
		TextHash: TextHash(&c), BodyHash: BodyHash(&c), Batch: batch,
	}
}

// RowsDigest is the digest of one batch's rows: SHA-256 over the count and
// the (event id, row digest) pairs sorted by event id. ds is sorted in
// place.
func RowsDigest(ds []IDDigest) [32]byte {
	sortIDDigests(ds)
	h := sha256.New() // streamed: a batch can be large
	var n [8]byte
	h.Write(binary.BigEndian.AppendUint64(n[:0], uint64(len(tagRows))))
	h.Write([]byte(tagRows))
	h.Write(binary.BigEndian.AppendUint64(n[:0], uint64(len(ds))))
	buf := make([]byte, 0, 48*256)
	for i := range ds {
		buf = append(append(buf, ds[i].ID[:]...), ds[i].Digest[:]...)
		if len(buf) == cap(buf) {
			h.Write(buf)
			buf = buf[:0]
		}
	}
	h.Write(buf)
	var d [32]byte
	h.Sum(d[:0])
	return d
}

// IDDigest is one row's event id and digest.
type IDDigest struct {
	ID     [16]byte
	Digest [32]byte
}

// Link is one entry of llm_chain.
type Link struct {
	Seq       int64
	Kind      string // KindBatch, KindErasure or KindRetention
	Batch     int64  // chain_batch of the rows (batch links), 0 otherwise
	PrevHash  string // hex; "" for the first link
	Hash      string // hex
	Rows      int64  // rows written, erased, cleared or deleted
	MinTS     time.Time
	MaxTS     time.Time
	CreatedAt time.Time // whole seconds
	Details   string    // JSON; "" for batch links
}

// Link kinds.
const (
	KindBatch     = "batch"
	KindErasure   = "erasure"
	KindRetention = "retention"
)

// ComputeHash returns the link's hash from its fields and, for a batch
// link, the digest of its rows (RowsDigest; zero for other kinds).
func (l *Link) ComputeHash(rows [32]byte) string {
	e := getEnc()
	e.str(tagLink)
	e.str(l.PrevHash)
	e.i64(l.Seq)
	e.str(l.Kind)
	e.i64(l.Batch)
	e.i64(l.Rows)
	e.i64(l.MinTS.UnixMicro())
	e.i64(l.MaxTS.UnixMicro())
	e.i64(l.CreatedAt.Unix())
	e.str(l.Details)
	e.raw(rows[:])
	return hexSum(e)
}
