package ring

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

func TestBuffer(t *testing.T) {
	tests := []struct {
		name   string
		limit  int
		writes []string
		want   string
	}{
		{"empty", 8, nil, ""},
		{"under limit", 8, []string{"abc", "de"}, "abcde"},
		{"exactly full", 4, []string{"ab", "cd"}, "abcd"},
		{"wraps", 4, []string{"abc", "def"}, "cdef"},
		{"wraps twice", 3, []string{"ab", "cd", "ef", "g"}, "efg"},
		{"one write over limit", 4, []string{"abcdefgh"}, "efgh"},
		{"big write after wrap", 4, []string{"abc", "de", "123456"}, "3456"},
		{"zero limit", 0, []string{"abc"}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := New(tc.limit)
			for _, w := range tc.writes {
				n, err := b.Write([]byte(w))
				if n != len(w) || err != nil {
					t.Fatalf("Write(%q) = %d, %v", w, n, err)
				}
			}
			if got := string(b.Bytes()); got != tc.want {
				t.Errorf("Bytes() = %q, want %q", got, tc.want)
			}
		})
	}
}

// TestBufferMatchesTail checks random write sequences against the obvious
// model: the last limit bytes of everything written.
func TestBufferMatchesTail(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 200 {
		limit := r.IntN(64) + 1
		b := New(limit)
		var all []byte
		for range r.IntN(40) {
			p := make([]byte, r.IntN(3*limit))
			for i := range p {
				p[i] = byte(r.Uint32())
			}
			b.Write(p)
			all = append(all, p...)
		}
		want := all[max(0, len(all)-limit):]
		if got := b.Bytes(); !bytes.Equal(got, want) {
			t.Fatalf("limit %d: got %x, want %x", limit, got, want)
		}
	}
}

func BenchmarkWrite(b *testing.B) {
	buf := New(1 << 20)
	p := make([]byte, 32<<10)
	b.SetBytes(int64(len(p)))
	b.ReportAllocs()
	for b.Loop() {
		buf.Write(p)
	}
}
