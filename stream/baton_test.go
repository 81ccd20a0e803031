package stream

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
)

// TestBaton: many producers queue work and take the baton to write it;
// every item is written exactly once, by one writer at a time, and no work
// is stranded when the last producer leaves.
func TestBaton(t *testing.T) {
	b := newBaton()
	q := make(chan int, 8)
	var written, inside atomic.Int64
	loop := func() {
		for {
			select {
			case <-q:
				if inside.Add(1) != 1 {
					t.Error("two writers at once")
				}
				written.Add(1)
				inside.Add(-1)
			default:
				if b.park(func() bool { return len(q) > 0 }) {
					return
				}
			}
		}
	}
	var producers sync.WaitGroup
	const each, n = 2000, 8
	for i := range n {
		producers.Go(func() {
			for j := range each {
				q <- j
				if i%2 == 0 {
					b.run(loop) // write inline
				} else {
					b.kick(loop) // or on a goroutine
				}
			}
		})
	}
	producers.Wait()
	b.wait()
	// Whatever a producer queued after the last writer looked was taken
	// back by park: nothing is left.
	if len(q) != 0 || written.Load() != each*n {
		t.Fatalf("%d written, %d left in the queue, want %d and 0", written.Load(), len(q), each*n)
	}
	if !b.isIdle() {
		t.Error("the baton is not idle at rest")
	}
	if !b.take() {
		t.Fatal("take from idle failed")
	}
	b.end()
	select {
	case <-b.Done():
	default:
		t.Error("Done not closed by end")
	}
	if b.take() {
		t.Error("a baton left ended")
	}
}

// TestSendFromHandlerPanics: the FrameHandler contract is enforced.
func TestSendFromHandlerPanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("Send with a handler's context did not panic")
		}
	}()
	checkNotHandler(handlerCtx{context.Background()})
}
