package stream

import "sync"

// bufferPool recycles fixed-size read buffers. Buffers of another size are
// dropped on Put.
type bufferPool struct {
	size int
	pool sync.Pool
}

func newBufferPool(size int) *bufferPool {
	b := &bufferPool{size: size}
	b.pool.New = func() any { s := make([]byte, size); return &s }
	return b
}

// Get returns a buffer of the pool's size.
func (b *bufferPool) Get() []byte { return *b.pool.Get().(*[]byte) }

// Put returns a buffer for reuse.
func (b *bufferPool) Put(buf []byte) {
	if cap(buf) != b.size {
		return
	}
	buf = buf[:b.size]
	b.pool.Put(&buf)
}
