package stream

import (
	"context"
	"io"
	"log/slog"
)

// stdinQueue carries client input to a process, so that readLoop never
// waits for a process that is slow to read: it keeps reading, and so keeps
// answering pings, while up to stdinQueueLen chunks of stdinChunk bytes
// wait. Beyond that readLoop blocks, and TCP slows the client down.
type stdinQueue struct {
	q    chan stdinItem
	stop chan struct{} // closed when the process is gone: input is dropped
}

type stdinItem struct {
	data  []byte
	close bool // no more input: close the process's stdin
}

const (
	stdinChunk    = 32 << 10
	stdinQueueLen = 16 // 512 KiB of input at most waits for the process
)

func newStdinQueue() *stdinQueue {
	return &stdinQueue{q: make(chan stdinItem, stdinQueueLen), stop: make(chan struct{})}
}

// push queues a copy of p (readLoop). It blocks while the queue is full,
// and drops the input once the process is gone or ctx ends.
func (s *stdinQueue) push(ctx context.Context, p []byte) {
	for len(p) > 0 {
		n := min(len(p), stdinChunk)
		if !s.put(ctx, stdinItem{data: append([]byte(nil), p[:n]...)}) {
			return
		}
		p = p[n:]
	}
}

// closeInput queues the end of input, after the data already queued.
func (s *stdinQueue) closeInput(ctx context.Context) { s.put(ctx, stdinItem{close: true}) }

func (s *stdinQueue) put(ctx context.Context, it stdinItem) bool {
	select {
	case s.q <- it:
		return true
	case <-s.stop:
	case <-ctx.Done():
	}
	return false
}

// stdinTarget is where queued input goes.
type stdinTarget interface {
	io.Writer
	CloseStdin() error
}

// writeLoop writes queued input to w until stop is closed. After a write
// fails (the process closed its input), further input is dropped, as
// Kubernetes does. A write blocked on a process that does not read ends
// when the process's files are closed.
func (s *stdinQueue) writeLoop(w stdinTarget, log *slog.Logger) {
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
					log.Debug("stdin closed by the process", "error", err)
					failed = true
				}
			}
		case <-s.stop:
			return
		}
	}
}
