package chain

import (
	"testing"
	"time"

	"github.com/llmtap/llmtap/ingest/store/internal/storetest"
)

// BenchmarkFromRecord: the per-row cost a store's Write pays for the chain
// (content hashes and row digest) on realistic rows.
func BenchmarkFromRecord(b *testing.B) {
	recs := storetest.Realistic(1000, 7, time.Now())
	b.SetBytes(storetest.Bytes(recs) / int64(len(recs)))
	b.ReportAllocs()
	var id [16]byte
	cb := NewBatch(b.N)
	for i := 0; i < b.N; i++ {
		r := &recs[i%len(recs)]
		row := FromRecord(r, id, r.TS.UnixMicro(), 1)
		cb.Add(&row)
	}
}
