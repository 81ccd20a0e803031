package stream

import "sync"

// buffer is the storage the pool hands out.
type buffer = [bufferSize]byte

// bufferPool recycles the read and scratch buffers of streams, without an
// allocation per Put. Buffers of another size are dropped on Put.
type bufferPool struct {
	pool sync.Pool
}

func newBufferPool() *bufferPool {
	return &bufferPool{pool: sync.Pool{New: func() any { return new(buffer) }}}
}

// Get returns a buffer of bufferSize bytes.
func (b *bufferPool) Get() []byte { return b.pool.Get().(*buffer)[:] }

// Put returns a buffer for reuse.
func (b *bufferPool) Put(buf []byte) {
	if cap(buf) != bufferSize {
		return
	}
	b.pool.Put((*buffer)(buf[:bufferSize]))
}
