package limit

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

func TestTail(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{1, 2, 7, 64, 4096} {
		for trial := 0; trial < 50; trial++ {
			tl := NewTail(n)
			var all []byte
			for w := r.IntN(20); w >= 0; w-- {
				p := make([]byte, r.IntN(3*n+2))
				for i := range p {
					p[i] = byte(r.IntN(256))
				}
				if c, err := tl.Write(p); c != len(p) || err != nil {
					t.Fatalf("Write = %d, %v", c, err)
				}
				all = append(all, p...)
			}
			want := all[max(0, len(all)-n):]
			if got := tl.Bytes(); !bytes.Equal(got, want) {
				t.Fatalf("n=%d: kept %d bytes, want the last %d of %d", n, len(got), len(want), len(all))
			}
		}
	}
}

// TestTailUsage: the usage of a long stream survives in a 4 KiB tail.
func TestTailUsage(t *testing.T) {
	tl := NewTail(4096)
	chunk := []byte("data: {\"choices\":[{\"delta\":{\"content\":\"word \"}}],\"usage\":null}\n\n")
	for i := 0; i < 10000; i++ {
		tl.Write(chunk)
	}
	tl.Write([]byte("data: {\"choices\":[],\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":10000,\"total_tokens\":10010}}\n\ndata: [DONE]\n\n"))
	if got := UsageTokens(tl.Bytes(), true); got != 10010 {
		t.Fatalf("UsageTokens(tail) = %d", got)
	}
}
