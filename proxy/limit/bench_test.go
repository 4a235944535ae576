package limit

import (
	"context"
	"os"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/llmtap/llmtap/proxy/limit/limittest"
)

func benchAdmit(b *testing.B, l Limiter, lim Limits) {
	b.ReportAllocs()
	var n atomic.Int64
	b.RunParallel(func(pb *testing.PB) {
		key := "key_" + strconv.FormatInt(n.Add(1)%4, 10)
		for pb.Next() {
			d, rel, err := l.Admit(context.Background(), key, lim)
			if err != nil {
				b.Fatal(err)
			}
			if !d.Allowed {
				b.Fatalf("refused: %+v", d)
			}
			rel(100)
		}
	})
}

// BenchmarkAdmitRelease: one Admit plus its release, RPM + TPM +
// concurrency limits high enough never to refuse (ops/s = admissions/s).
func BenchmarkAdmitRelease(b *testing.B) {
	lim := Limits{RPM: 1 << 40, TPM: 1 << 60, Concurrent: 1 << 20}
	b.Run("memory", func(b *testing.B) {
		l, _ := New(DefaultConfig(), nil)
		defer l.Close()
		benchAdmit(b, l, lim)
	})
	b.Run("memory/unlimited", func(b *testing.B) {
		l, _ := New(DefaultConfig(), nil)
		defer l.Close()
		benchAdmit(b, l, Limits{})
	})
	b.Run("redis", func(b *testing.B) {
		c := DefaultConfig()
		c.RedisURL = limittest.RedisURL()
		c.KeyPrefix = limittest.Prefix(b, c.RedisURL)
		c.Timeout = 5 * time.Second // a loaded test machine is not an outage
		l, err := New(c, nil)
		if err != nil {
			b.Fatal(err)
		}
		defer l.Close()
		benchAdmit(b, l, lim)
	})
	b.Run("redis/parallel16", func(b *testing.B) {
		c := DefaultConfig()
		c.RedisURL = limittest.RedisURL()
		c.KeyPrefix = limittest.Prefix(b, c.RedisURL)
		c.Timeout = 5 * time.Second // a loaded test machine is not an outage
		l, err := New(c, nil)
		if err != nil {
			b.Fatal(err)
		}
		defer l.Close()
		b.SetParallelism(8) // 8×GOMAXPROCS goroutines, as concurrent proxy requests
		benchAdmit(b, l, lim)
	})
}

func BenchmarkUsageTokens(b *testing.B) {
	for _, f := range []string{"../../testdata/samples/vllm-chat-nonstream.json", "../../testdata/sse/responses-stream.sse"} {
		body, err := os.ReadFile(f)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(f[len("../../testdata/"):], func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				if UsageTokens(body, true) <= 0 {
					b.Fatal("no usage")
				}
			}
		})
	}
}
