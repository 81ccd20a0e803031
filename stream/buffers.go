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

// onFreshStack runs fn on a goroutine of its own and waits for it. A
// stream's goroutines live as long as the stream and park most of that
// time; the stack a goroutine grew to stays with it (a collection shrinks
// a parked stack only to four times what its frames use, 4 KiB for a
// read loop), so deep one-off work (a dial) runs here, on a stack that
// goes back to the runtime's pool when fn returns.
func onFreshStack(fn func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn()
	}()
	<-done
}
