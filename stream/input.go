package stream

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// inputQueue carries client input to a process or a TCP connection, so
// that readLoop never waits for a consumer that is slow to read: it keeps
// reading, and so keeps answering pings, while up to inputQueueLen chunks
// of inputChunk bytes wait. Beyond that readLoop blocks, and TCP slows the
// client down. Its writer holds a baton: it runs only while input waits,
// so an idle stream costs no goroutine.
type inputQueue struct {
	stop chan struct{}                  // closed when the consumer is gone: input is dropped
	q    atomic.Pointer[chan inputItem] // made on first use: most input never waits
	b    *baton

	mu     sync.Mutex
	target inputTarget // nil until the consumer exists
	log    *slog.Logger
	failed bool // a write failed or the input was closed: drop the rest
}

type inputItem struct {
	data  []byte // a chunk from inputChunks
	close bool   // no more input: close the consumer's input
}

const (
	inputChunk    = 32 << 10
	inputQueueLen = 16 // 512 KiB of input at most waits for the consumer
)

// inputChunks recycles the copies of queued input: an upload whose
// remote takes bytes slower than they come is copied at nearly its full
// rate, and fresh copies made the collector run for it (7 % more CPU per
// MiB, docs/performance.md). Its own size, not the stream buffers': the
// queue's bound is in chunks.
var inputChunks = sync.Pool{New: func() any { return new([inputChunk]byte) }}

// keeper is an inputTarget whose Write keeps p after it returns (it hands
// it on): its chunks are left to the collector.
type keeper interface{ keepsInput() }

func newInputQueue() *inputQueue {
	return &inputQueue{stop: make(chan struct{}), b: newBaton()}
}

// queue returns the channel, making it on first use.
func (s *inputQueue) queue() chan inputItem {
	if q := s.q.Load(); q != nil {
		return *q
	}
	q := make(chan inputItem, inputQueueLen)
	s.q.CompareAndSwap(nil, &q)
	return *s.q.Load()
}

// pending reports whether input waits.
func (s *inputQueue) pending() bool {
	q := s.q.Load()
	return q != nil && len(*q) > 0
}

// inputTarget is where queued input goes.
type inputTarget interface {
	io.Writer
	// CloseStdin ends the input (the v5 close signal).
	CloseStdin() error
}

// tryWriter is a target that can take input without blocking.
type tryWriter interface {
	// TryWrite writes what the consumer takes now and returns its length.
	TryWrite(p []byte) (int, error)
}

// start sets the consumer; input queued before it now flows.
func (s *inputQueue) start(w inputTarget, log *slog.Logger) {
	s.mu.Lock()
	s.target, s.log = w, log
	s.mu.Unlock()
	s.wake()
}

// close drops further input and waits for the writer: call it when the
// consumer is gone (a write blocked on a consumer that does not read ends
// when its files are closed).
func (s *inputQueue) close() {
	s.mu.Lock()
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	s.mu.Unlock()
	s.b.wait()
}

// flush waits, at most d, until queued input is written (or dropped after
// a failed write). Call it when no more input comes: after readLoop ends.
func (s *inputQueue) flush(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		parked := s.b.waitParked()
		s.mu.Lock()
		done := s.target == nil || (s.b.isIdle() && !s.pending())
		s.mu.Unlock()
		if done {
			return true
		}
		select {
		case <-parked:
		case <-t.C:
			return false
		}
	}
}

// push hands p to the consumer (readLoop). When nothing is queued, p goes
// straight to the consumer as far as it takes it without blocking: no
// copy, no hand-off. The rest is queued as a copy; push blocks while the
// queue is full, and drops the input once the consumer is gone or ctx ends.
func (s *inputQueue) push(ctx context.Context, p []byte) {
	if n, ok := s.tryDirect(p); ok {
		p = p[n:]
	}
	for len(p) > 0 {
		c := inputChunks.Get().(*[inputChunk]byte)
		n := copy(c[:], p)
		if !s.put(ctx, inputItem{data: c[:n]}) {
			return
		}
		p = p[n:]
	}
}

// tryDirect writes p without blocking if no input waits and no writer
// runs; ok is false if it did not try.
func (s *inputQueue) tryDirect(p []byte) (n int, ok bool) {
	s.mu.Lock()
	tw, can := s.target.(tryWriter)
	log := s.log
	can = can && !s.failed && !s.pending()
	s.mu.Unlock()
	if !can || !s.b.take() {
		return 0, false
	}
	n, err := tw.TryWrite(p)
	if err != nil {
		s.fail() // the rest is dropped, as after any failed write
		log.Debug("input closed by its consumer", "error", err)
		n = len(p)
	}
	if !s.b.park(s.pending) {
		s.b.handOff(s.writeLoop) // input came meanwhile
	}
	return n, true
}

// closeInput queues the end of input, after the data already queued.
func (s *inputQueue) closeInput(ctx context.Context) { s.put(ctx, inputItem{close: true}) }

func (s *inputQueue) put(ctx context.Context, it inputItem) bool {
	select {
	case s.queue() <- it:
		s.wake()
		return true
	case <-s.stop:
	case <-ctx.Done():
	}
	return false
}

// wake starts a writer if input waits for a consumer that exists.
func (s *inputQueue) wake() {
	s.mu.Lock()
	ready := s.target != nil
	s.mu.Unlock()
	select {
	case <-s.stop:
		return
	default:
	}
	if ready && s.pending() {
		s.b.kick(s.writeLoop)
	}
}

// writeLoop writes queued input while it holds the baton, until the queue
// is empty (it parks) or stop is closed. After a write fails (the consumer
// closed its input), further input is dropped, as Kubernetes does.
func (s *inputQueue) writeLoop() {
	q := s.queue()
	for {
		var it inputItem
		select {
		case it = <-q:
		case <-s.stop:
			s.b.park(func() bool { return false })
			return
		default:
			if s.b.park(s.pending) {
				return
			}
			continue
		}
		s.mu.Lock()
		w, log, failed := s.target, s.log, s.failed
		s.mu.Unlock()
		switch {
		case failed:
		case it.close:
			if err := w.CloseStdin(); err != nil {
				log.Debug("close stdin", "error", err)
			}
			s.fail() // nothing may follow the end of input
		default:
			if _, err := w.Write(it.data); err != nil {
				log.Debug("input closed by its consumer", "error", err)
				s.fail()
			}
			if _, keeps := w.(keeper); !keeps {
				inputChunks.Put((*[inputChunk]byte)(it.data[:inputChunk]))
			}
		}
	}
}

func (s *inputQueue) fail() {
	s.mu.Lock()
	s.failed = true
	s.mu.Unlock()
}
