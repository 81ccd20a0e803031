package stream

import (
	"context"
	"io"
	"log/slog"
)

// inputQueue carries client input to a process or a TCP connection, so
// that readLoop never waits for a consumer that is slow to read: it keeps
// reading, and so keeps answering pings, while up to inputQueueLen chunks
// of inputChunk bytes wait. Beyond that readLoop blocks, and TCP slows the
// client down.
type inputQueue struct {
	q    chan inputItem
	stop chan struct{} // closed when the consumer is gone: input is dropped
}

type inputItem struct {
	data  []byte
	close bool // no more input: close the consumer's input
}

const (
	inputChunk    = 32 << 10
	inputQueueLen = 16 // 512 KiB of input at most waits for the consumer
)

func newInputQueue() *inputQueue {
	return &inputQueue{q: make(chan inputItem, inputQueueLen), stop: make(chan struct{})}
}

// push queues a copy of p (readLoop). It blocks while the queue is full,
// and drops the input once the process is gone or ctx ends.
func (s *inputQueue) push(ctx context.Context, p []byte) {
	for len(p) > 0 {
		n := min(len(p), inputChunk)
		if !s.put(ctx, inputItem{data: append([]byte(nil), p[:n]...)}) {
			return
		}
		p = p[n:]
	}
}

// closeInput queues the end of input, after the data already queued.
func (s *inputQueue) closeInput(ctx context.Context) { s.put(ctx, inputItem{close: true}) }

func (s *inputQueue) put(ctx context.Context, it inputItem) bool {
	select {
	case s.q <- it:
		return true
	case <-s.stop:
	case <-ctx.Done():
	}
	return false
}

// inputTarget is where queued input goes.
type inputTarget interface {
	io.Writer
	// CloseStdin ends the input (the v5 close signal).
	CloseStdin() error
}

// writeLoop writes queued input to w until stop is closed. After a write
// fails (the consumer closed its input), further input is dropped, as
// Kubernetes does. A write blocked on a consumer that does not read ends
// when its files are closed.
func (s *inputQueue) writeLoop(w inputTarget, log *slog.Logger) {
	failed := false
	for {
		select {
		case it := <-s.q:
			switch {
			case failed:
			case it.close:
				if err := w.CloseStdin(); err != nil {
					log.Debug("close stdin", "error", err)
				}
				failed = true // nothing may follow the end of input
			default:
				if _, err := w.Write(it.data); err != nil {
					log.Debug("input closed by its consumer", "error", err)
					failed = true
				}
			}
		case <-s.stop:
			return
		}
	}
}
