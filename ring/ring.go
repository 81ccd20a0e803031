// Package ring provides a bounded byte buffer that keeps the most recent
// bytes written to it: a terminal's scrollback, a session's recent output.
//
// The buffer grows on demand up to its limit, so an idle buffer costs
// nothing; after that it overwrites its oldest bytes. Memory stays bounded
// whatever is written.
package ring

import "sync"

// Buffer keeps the last Limit bytes written to it. It is safe for concurrent
// use.
type Buffer struct {
	mu    sync.Mutex
	limit int
	buf   []byte // len(buf) <= limit; grows until full, then wraps
	start int    // index in buf of the oldest byte once full
}

// New returns a buffer that keeps at most limit bytes. A limit of zero or
// less keeps nothing.
func New(limit int) *Buffer {
	return &Buffer{limit: max(limit, 0)}
}

// Write appends p, dropping the oldest bytes beyond the limit. It never fails.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	b.write(p)
	b.mu.Unlock()
	return len(p), nil
}

func (b *Buffer) write(p []byte) {
	n := len(p)
	if b.limit == 0 {
		return
	}
	if n >= b.limit { // only the tail of p survives
		b.buf = append(b.buf[:0], p[n-b.limit:]...)
		b.start = 0
		return
	}
	if room := b.limit - len(b.buf); room > 0 { // still growing
		k := min(room, n)
		b.buf = append(b.buf, p[:k]...)
		p = p[k:]
		if len(p) == 0 {
			return
		}
	}
	// Full: overwrite from start, wrapping around.
	for len(p) > 0 {
		k := copy(b.buf[b.start:], p)
		p = p[k:]
		b.start = (b.start + k) % b.limit
	}
}

// Bytes returns a copy of the kept bytes, oldest first.
func (b *Buffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.appendTo(nil)
}

func (b *Buffer) appendTo(dst []byte) []byte {
	dst = append(dst, b.buf[b.start:]...)
	return append(dst, b.buf[:b.start]...)
}

// Len reports how many bytes are kept.
func (b *Buffer) Len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.buf)
}
