package vt

import (
	"bytes"
	"encoding/base64"
	"math/rand/v2"
	"testing"
)

// plainOutput is what `base64` prints: 76 columns and a newline per line,
// with the pty's CRLF.
func plainOutput(n int) []byte {
	raw := make([]byte, n*3/4)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range raw {
		raw[i] = byte(r.Uint32())
	}
	text := base64.StdEncoding.EncodeToString(raw)
	var b bytes.Buffer
	for i := 0; i < len(text); i += 76 {
		b.WriteString(text[i:min(i+76, len(text))])
		b.WriteString("\r\n")
	}
	return b.Bytes()
}

// colourOutput is coloured ls-like output: SGR changes every few words.
func colourOutput(n int) []byte {
	unit := []byte("\x1b[01;34mdirectory\x1b[0m  \x1b[01;32mprogram.sh\x1b[0m  plain-file.txt  \x1b[38;5;208morange\x1b[0m\r\n")
	return bytes.Repeat(unit, n/len(unit)+1)
}

func BenchmarkWrite(b *testing.B) {
	for _, c := range []struct {
		name string
		data []byte
	}{{"plain", plainOutput(1 << 20)}, {"colour", colourOutput(1 << 20)}, {"zeros", make([]byte, 1<<20)}} {
		b.Run(c.name, func(b *testing.B) {
			t := New(200, 50, DefaultConfig())
			b.SetBytes(int64(len(c.data)))
			b.ReportAllocs()
			for b.Loop() {
				t.Write(c.data)
			}
		})
	}
}
