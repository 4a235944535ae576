// Package storetest holds what the store tests and benchmarks share:
// realistic record generators and a behaviour suite that every store
// implementation must pass against its real database.
package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/llmtap/llmtap/ingest/record"
	"github.com/llmtap/llmtap/ingest/store/storeerr"
	"github.com/llmtap/llmtap/schema"
)

// Writer is the part of store.Store the suite drives.
type Writer interface {
	Write(ctx context.Context, recs []record.Record, rejects []record.Reject) error
	Ping(ctx context.Context) error
}

// Suite binds the behaviour tests to one store and its database.
type Suite struct {
	Store Writer
	// Reset empties llm_requests and llm_rejects.
	Reset func(t *testing.T)
	// Records reads every stored record, ordered by ts then event_id.
	Records func(t *testing.T) []record.Record
	// Rejects reads every stored reject, ordered by reason then payload.
	Rejects func(t *testing.T) []record.Reject
	// Stats returns what users' queries see: count(*) and sum(total_tokens)
	// of llm_requests, without FINAL or any other de-duplication.
	Stats func(t *testing.T) (count, tokens int64)
	// Compact forces background de-duplication (ClickHouse OPTIMIZE … FINAL);
	// nil when the store has none.
	Compact func(t *testing.T)
	// Normalize maps a written record to what the store gives back
	// (timestamp precision).
	Normalize func(record.Record) record.Record
}

func ptr[T any](v T) *T { return &v }

// Full returns a record with every field set, including unicode, a large
// body and zero-valued (not nil) usage.
func Full() record.Record {
	big := strings.Repeat("Grüße, 世界! 🚀 \"quoted\" \\ back\\slash\ttab\n", 20000) // ~1 MB
	return record.Record{
		EventID:          uuid.Must(uuid.NewV7()).String(),
		TS:               time.Date(2026, 11, 21, 10, 11, 12, 123456789, time.UTC),
		Source:           "proxy",
		Consumer:         "team-ä'\"x",
		KeyID:            "key_01",
		KeyPrefix:        "sk-abc",
		ClientIP:         "2001:db8::1",
		Method:           "POST",
		Path:             "/v1/chat/completions",
		RequestID:        "req-123",
		Endpoint:         "chat",
		Model:            "Qwen/Qwen2.5-7B-Instruct",
		Status:           200,
		Stream:           true,
		LatencyMs:        1234.567,
		TTFBMs:           ptr(12.5),
		TTFTMs:           ptr(0.0),
		PromptTokens:     ptr(int64(0)),
		CompletionTokens: ptr(int64(42)),
		TotalTokens:      ptr(int64(1) << 40),
		UsageSource:      record.UsageResponse,
		Prompt:           "Wie geht's? 日本語 'single' ; DROP TABLE x; --",
		Response:         big,
		Reasoning:        "thinking…",
		ToolCalls:        `[{"id":"call_1","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}}]`,
		FinishReason:     "tool_calls",
		Error:            "upstream: EOF",
		RequestHeaders:   `{"content-type":"application/json","authorization":"[REDACTED]"}`,
		ResponseHeaders:  `{"content-type":"text/event-stream"}`,
		RequestBody:      `{"model":"m","messages":[{"role":"user","content":"Wie geht's?"}],"stream":true}`,
		ResponseBody:     "data: {\"x\":1}\r\n\r\ndata: [DONE]\n\n",
		Truncated:        true,
		IngestedAt:       time.Date(2026, 11, 21, 10, 11, 13, 987654321, time.UTC),
	}
}

// Sparse returns a record with only the required fields: no usage, no
// timings, empty strings.
func Sparse(ts time.Time) record.Record {
	return record.Record{
		EventID:     uuid.Must(uuid.NewV7()).String(),
		TS:          ts,
		Source:      "kong",
		Status:      401,
		UsageSource: record.UsageNone,
		IngestedAt:  ts.Add(time.Second),
	}
}

var words = strings.Fields(`the quick brown fox jumps over lazy dog model token stream
inference latency request response consumer audit usage prompt completion gpu vllm
kubernetes cluster deploy python golang function return error retry batch`)

func text(r *rand.Rand, n int) string {
	var b strings.Builder
	b.Grow(n + 16)
	for b.Len() < n {
		b.WriteString(words[r.IntN(len(words))])
		b.WriteByte(' ')
	}
	return b.String()[:n]
}

// Realistic returns n records like production traffic: 2–8 KB of bodies,
// 70 % streamed, 20 consumers, timestamps spread over the minute before
// base, usage mostly reported. Deterministic for a seed.
func Realistic(n int, seed uint64, base time.Time) []record.Record {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	out := make([]record.Record, n)
	models := []string{"Qwen/Qwen2.5-7B-Instruct", "meta-llama/Llama-3.1-8B-Instruct", "BAAI/bge-m3"}
	for i := range out {
		var id uuid.UUID
		for j := range id {
			id[j] = byte(r.Uint32())
		}
		id[6] = (id[6] & 0x0f) | 0x70
		id[8] = (id[8] & 0x3f) | 0x80
		stream := r.Float64() < 0.7
		bodies := 2048 + r.IntN(6144)
		promptLen := 100 + r.IntN(bodies/4)
		respLen := 200 + r.IntN(bodies/3)
		prompt := text(r, promptLen)
		resp := text(r, respLen)
		reqBody, _ := json.Marshal(map[string]any{"model": models[i%3], "stream": stream,
			"messages": []map[string]string{{"role": "system", "content": "You are helpful."}, {"role": "user", "content": prompt}}})
		var respBody string
		if stream {
			var b strings.Builder
			for k := 0; k < len(resp); k += 24 {
				fmt.Fprintf(&b, "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":%q}}]}\n\n", resp[k:min(k+24, len(resp))])
				if b.Len() > bodies-len(reqBody) {
					break
				}
			}
			b.WriteString("data: [DONE]\n\n")
			respBody = b.String()
		} else {
			rb, _ := json.Marshal(map[string]any{"id": "chatcmpl-x", "choices": []map[string]any{{"index": 0, "message": map[string]string{"role": "assistant", "content": resp}}}})
			respBody = string(rb)
		}
		rec := record.Record{
			EventID:         id.String(),
			TS:              base.Add(-time.Duration(r.Int64N(int64(time.Minute)))).UTC(),
			Source:          "proxy",
			Consumer:        fmt.Sprintf("team-%02d", r.IntN(20)),
			KeyID:           fmt.Sprintf("key-%03d", r.IntN(60)),
			KeyPrefix:       "sk-llmt",
			ClientIP:        fmt.Sprintf("10.0.%d.%d", r.IntN(4), r.IntN(250)),
			Method:          "POST",
			Path:            "/v1/chat/completions",
			RequestID:       uuid.NewString(),
			Endpoint:        "chat",
			Model:           models[i%3],
			Status:          200,
			Stream:          stream,
			LatencyMs:       50 + r.Float64()*5000,
			TTFBMs:          ptr(5 + r.Float64()*200),
			UsageSource:     record.UsageResponse,
			Prompt:          prompt,
			Response:        resp,
			FinishReason:    "stop",
			RequestHeaders:  `{"content-type":"application/json","user-agent":"OpenAI/Python 1.50.0","authorization":"[REDACTED]"}`,
			ResponseHeaders: `{"content-type":"application/json","x-request-id":"abc"}`,
			RequestBody:     string(reqBody),
			ResponseBody:    respBody,
			IngestedAt:      base,
		}
		if stream {
			rec.TTFTMs = ptr(*rec.TTFBMs + r.Float64()*50)
			rec.ResponseHeaders = `{"content-type":"text/event-stream"}`
		}
		if r.Float64() < 0.95 {
			p, c := int64(promptLen/4), int64(respLen/4)
			rec.PromptTokens, rec.CompletionTokens, rec.TotalTokens = &p, &c, ptr(p+c)
		} else {
			rec.UsageSource = record.UsageNone
		}
		if r.Float64() < 0.03 {
			rec.Status, rec.Error, rec.FinishReason = 500, "upstream error", ""
		}
		out[i] = rec
	}
	return out
}

// Bytes returns the size of the records' text, for b.SetBytes.
func Bytes(recs []record.Record) int64 {
	var n int
	for i := range recs {
		r := &recs[i]
		n += len(r.Prompt) + len(r.Response) + len(r.RequestBody) + len(r.ResponseBody) +
			len(r.RequestHeaders) + len(r.ResponseHeaders) + 200
	}
	return int64(n)
}

func sumTokens(recs []record.Record) int64 {
	var n int64
	for _, r := range recs {
		if r.TotalTokens != nil {
			n += *r.TotalTokens
		}
	}
	return n
}

// Run runs the behaviour suite.
func (s *Suite) Run(t *testing.T) {
	t.Run("RoundTrip", s.roundTrip)
	t.Run("ReplayStoresOnce", s.replay)
	t.Run("IntraBatchDuplicate", s.intraBatch)
	t.Run("ConcurrentDuplicates", s.concurrent)
	t.Run("Rejects", s.rejects)
	t.Run("BadEventID", s.badID)
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return c
}

func (s *Suite) write(t *testing.T, recs []record.Record, rejects []record.Reject) {
	t.Helper()
	if err := s.Store.Write(ctx(t), recs, rejects); err != nil {
		t.Fatalf("Write: %v", err)
	}
}

func (s *Suite) roundTrip(t *testing.T) {
	s.Reset(t)
	full := Full()
	sparse := Sparse(time.Date(2026, 11, 21, 10, 11, 12, 0, time.UTC)) // same second as full
	// A zero-usage record: 0 must come back as 0, not NULL.
	zero := Sparse(time.Date(2026, 11, 21, 9, 0, 0, 1000, time.UTC))
	zero.PromptTokens, zero.CompletionTokens, zero.TotalTokens = ptr(int64(0)), ptr(int64(0)), ptr(int64(0))
	zero.LatencyMs = 0.001
	in := []record.Record{full, sparse, zero}
	s.write(t, in, nil)

	got := s.Records(t)
	want := []record.Record{s.Normalize(zero), s.Normalize(sparse), s.Normalize(full)}
	if len(got) != len(want) {
		t.Fatalf("read %d records, want %d", len(got), len(want))
	}
	for i := range want {
		if !reflect.DeepEqual(got[i], want[i]) {
			t.Errorf("record %d differs:\n%s", i, diff(got[i], want[i]))
		}
	}
}

func diff(got, want record.Record) string {
	var b strings.Builder
	gv, wv := reflect.ValueOf(got), reflect.ValueOf(want)
	for i := 0; i < gv.NumField(); i++ {
		g, w := gv.Field(i).Interface(), wv.Field(i).Interface()
		if !reflect.DeepEqual(g, w) {
			gs, ws := show(g), show(w)
			if len(gs) > 200 {
				gs = gs[:200] + "…"
			}
			if len(ws) > 200 {
				ws = ws[:200] + "…"
			}
			fmt.Fprintf(&b, "  %s: got %s, want %s\n", gv.Type().Field(i).Name, gs, ws)
		}
	}
	return b.String()
}

func show(v any) string {
	rv := reflect.ValueOf(v)
	if rv.Kind() == reflect.Pointer {
		if rv.IsNil() {
			return "nil"
		}
		return fmt.Sprintf("&%v", rv.Elem().Interface())
	}
	return fmt.Sprintf("%q", fmt.Sprint(v))
}

func (s *Suite) replay(t *testing.T) {
	s.Reset(t)
	recs := Realistic(500, 1, time.Now())
	rejects := []record.Reject{{ReceivedAt: time.Now(), Source: "kong", Reason: "bad json", Payload: []byte("{not json\x00\xff")}}
	s.write(t, recs, rejects)
	n1, tok1 := s.Stats(t)
	if n1 != int64(len(recs)) || tok1 != sumTokens(recs) {
		t.Fatalf("after first write: count %d tokens %d; want %d, %d", n1, tok1, len(recs), sumTokens(recs))
	}
	// The same batch again (a retry), then an overlapping batch.
	s.write(t, recs, rejects)
	more := Realistic(100, 2, time.Now())
	s.write(t, append(append([]record.Record{}, recs[100:300]...), more...), rejects)
	wantN, wantTok := int64(len(recs)+len(more)), sumTokens(recs)+sumTokens(more)
	if n, tok := s.Stats(t); n != wantN || tok != wantTok {
		t.Fatalf("after replays: count %d tokens %d; want %d, %d", n, tok, wantN, wantTok)
	}
	if s.Compact != nil {
		s.Compact(t)
		if n, tok := s.Stats(t); n != wantN || tok != wantTok {
			t.Fatalf("after compaction: count %d tokens %d; want %d, %d", n, tok, wantN, wantTok)
		}
	}
	if got := len(s.Rejects(t)); got != 1 {
		t.Errorf("rejects stored %d times, want once", got)
	}
}

func (s *Suite) intraBatch(t *testing.T) {
	s.Reset(t)
	recs := Realistic(10, 3, time.Now())
	batch := append(append([]record.Record{}, recs...), recs[0], recs[5], recs[5])
	s.write(t, batch, nil)
	if n, tok := s.Stats(t); n != 10 || tok != sumTokens(recs) {
		t.Fatalf("count %d tokens %d; want 10, %d", n, tok, sumTokens(recs))
	}
}

func (s *Suite) concurrent(t *testing.T) {
	s.Reset(t)
	recs := Realistic(300, 4, time.Now())
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Overlapping batches in different orders.
			b := append([]record.Record{}, recs[i*50:]...)
			b = append(b, recs[:i*50]...)
			errs[i] = s.Store.Write(ctx(t), b, nil)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatalf("concurrent Write: %v", err)
		}
	}
	if n, tok := s.Stats(t); n != 300 || tok != sumTokens(recs) {
		t.Fatalf("count %d tokens %d; want 300, %d", n, tok, sumTokens(recs))
	}
}

func (s *Suite) rejects(t *testing.T) {
	s.Reset(t)
	at := time.Date(2026, 11, 21, 8, 0, 0, 0, time.UTC)
	in := []record.Reject{
		{ReceivedAt: at, Source: "kong", Reason: "a: invalid character", Payload: []byte{0, 1, 2, 0xff, 0xfe, '\n', '\\', '\''}},
		{ReceivedAt: at, Source: "proxy", Reason: "b: empty", Payload: []byte{}},
		{ReceivedAt: at, Source: "kong", Reason: "c: big", Payload: []byte(strings.Repeat("x\x00y", 100000))},
	}
	recs := Realistic(3, 5, time.Now())
	s.write(t, recs, in)
	got := s.Rejects(t)
	if len(got) != len(in) {
		t.Fatalf("read %d rejects, want %d", len(got), len(in))
	}
	for i := range in {
		if got[i].Source != in[i].Source || got[i].Reason != in[i].Reason ||
			string(got[i].Payload) != string(in[i].Payload) || !got[i].ReceivedAt.Equal(in[i].ReceivedAt) {
			t.Errorf("reject %d: got %+v, want %+v", i, got[i].Reason, in[i].Reason)
		}
	}
	if n, _ := s.Stats(t); n != 3 {
		t.Errorf("records with rejects: count %d, want 3", n)
	}
	// Only rejects.
	s.write(t, nil, []record.Reject{{Source: "kong", Reason: "d", Payload: []byte("z")}})
	if got := s.Rejects(t); len(got) != 4 || got[3].ReceivedAt.IsZero() {
		t.Errorf("reject without ReceivedAt: %d rejects, last %+v", len(got), got[len(got)-1])
	}
}

func (s *Suite) badID(t *testing.T) {
	s.Reset(t)
	r := Sparse(time.Now())
	r.EventID = "not-a-uuid"
	err := s.Store.Write(ctx(t), []record.Record{r}, nil)
	if err == nil {
		t.Fatal("Write accepted a record whose event_id is not a UUID")
	}
	if errors.Is(err, storeerr.ErrUnavailable) {
		t.Errorf("bad event_id classified as unavailable (would be retried forever): %v", err)
	}
	if n, _ := s.Stats(t); n != 0 {
		t.Errorf("count %d after failed write", n)
	}
}

// Unreachable checks a store whose server is not listening (New must not
// have connected): Write and Ping fail with ErrUnavailable, which the
// receiver turns into 503 + Retry-After.
func Unreachable(t *testing.T, s Writer) {
	t.Helper()
	c := ctx(t)
	if err := s.Write(c, Realistic(2, 9, time.Now()), nil); !errors.Is(err, storeerr.ErrUnavailable) {
		t.Errorf("Write to closed port = %v, want ErrUnavailable", err)
	}
	if err := s.Ping(c); !errors.Is(err, storeerr.ErrUnavailable) {
		t.Errorf("Ping to closed port = %v, want ErrUnavailable", err)
	}
}

// Unmigrated checks Ping on a reachable database without llmtap's tables:
// schema.ErrNotMigrated (serve and ingest refuse to start and say what to
// run), not ErrUnavailable (which would be retried forever).
func Unmigrated(t *testing.T, s Writer) {
	t.Helper()
	err := s.Ping(ctx(t))
	if !errors.Is(err, schema.ErrNotMigrated) || errors.Is(err, storeerr.ErrUnavailable) {
		t.Fatalf("Ping on unmigrated db = %v, want ErrNotMigrated", err)
	}
}
