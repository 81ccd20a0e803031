package stream

import "sync"

// buffer is the storage the pool hands out.
type buffer = [bufferSize]byte

// bulkBuffer is the storage of a bulk read (see bulkReads).
type bulkBuffer = [bulkSize]byte

// bulkSize is the size of the buffers a tunnel's TCP source is read into
// while it fills ordinary ones: a download read so carried 0.87-1.46x
// websockify's rate (median 1.17) where 64 KiB reads carried 0.82-1.07x
// (0.92), at less CPU per MiB (docs/performance.md, "Bulk reads for
// tunnels").
const bulkSize = 256<<10 + 1

// bufferPool recycles the read and scratch buffers of streams, without an
// allocation per Put. Buffers of another size are dropped on Put.
type bufferPool struct {
	pool, bulk sync.Pool
}

func newBufferPool() *bufferPool {
	return &bufferPool{
		pool: sync.Pool{New: func() any { return new(buffer) }},
		bulk: sync.Pool{New: func() any { return new(bulkBuffer) }},
	}
}

// Get returns a buffer of bufferSize bytes.
func (b *bufferPool) Get() []byte { return b.pool.Get().(*buffer)[:] }

// getBulk returns a buffer of bulkSize bytes.
func (b *bufferPool) getBulk() []byte { return b.bulk.Get().(*bulkBuffer)[:] }

// Put returns a buffer of either size for reuse.
func (b *bufferPool) Put(buf []byte) {
	switch cap(buf) {
	case bufferSize:
		b.pool.Put((*buffer)(buf[:bufferSize]))
	case bulkSize:
		b.bulk.Put((*bulkBuffer)(buf[:bulkSize]))
	}
}

// bulkReads is the BufferPool of one TCP source's reader: ordinary
// buffers, or bulk ones while the source fills what it is given and the
// transport holds at most one frame waiting, so that an interactive
// tunnel never takes a bulk buffer and a slow client holds at most two.
type bulkReads struct {
	bufs  *bufferPool
	full  bool   // the last read filled its buffer (its reader sets it)
	queue queuer // the transport; nil: no bulk reads
}

// queuer is a transport that tells how many frames wait for its writer.
type queuer interface{ queued() int }

func (r *bulkReads) Get() []byte {
	if r.full && r.queue != nil && r.queue.queued() <= 1 {
		return r.bufs.getBulk()
	}
	return r.bufs.Get()
}

func (r *bulkReads) Put(buf []byte) { r.bufs.Put(buf) }
