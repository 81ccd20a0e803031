package record

import (
	"bytes"
	"encoding/base64"
	"math/rand/v2"
	"testing"
)

// BenchmarkJSONString: what encoding a recording's output costs, for text
// (base64) and for NULs (each escaped as \u0000).
func BenchmarkJSONString(b *testing.B) {
	raw := make([]byte, 3<<10)
	for i := range raw {
		raw[i] = byte(rand.IntN(256))
	}
	text := []byte(base64.StdEncoding.EncodeToString(raw))[:4096]
	for _, c := range []struct {
		name string
		p    []byte
	}{{"text", text}, {"zeros", make([]byte, 4096)}, {"utf8", bytes.Repeat([]byte("日本語 "), 4096/10)}} {
		b.Run(c.name, func(b *testing.B) {
			buf := make([]byte, 0, 64<<10)
			b.SetBytes(int64(len(c.p)))
			for b.Loop() {
				buf = appendJSONString(buf[:0], c.p)
			}
		})
	}
}
