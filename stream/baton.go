package stream

import (
	"sync"
	"sync/atomic"

	"gateway/internal/notify"
)

// baton is the right to write to one consumer (a WebSocket, a process's
// input, a TCP connection), held by at most one goroutine at a time. A
// producer that queues work takes the baton and writes itself, with no
// hand-off to another goroutine (run), or starts a goroutine that does
// (kick); the holder writes until its queue is empty, then parks the
// baton. So a quiet stream has no writer goroutine at all.
//
// The phases and their transitions:
//
//	idle    → writing  take: a producer or kick won the baton (one CAS)
//	writing → idle     park: the holder found no work; if work came in
//	                   meanwhile it takes the baton straight back
//	writing → ended    end: the holder ended the writing for good; no
//	                   writer starts again, and Done is closed
//
// Nothing leaves ended. Only the holder parks or ends the baton.
type baton struct {
	phase   atomic.Int32
	writers sync.WaitGroup // goroutines started by kick
	done    chan struct{}  // closed by end; never otherwise

	parked notify.Signal // at each park or end
}

const (
	idle int32 = iota
	writing
	ended
)

func newBaton() *baton { return &baton{done: make(chan struct{})} }

// take moves idle → writing; it reports whether the caller now holds the
// baton.
func (b *baton) take() bool { return b.phase.CompareAndSwap(idle, writing) }

// run runs loop on the calling goroutine if it wins the baton; loop must
// park or end it before returning.
func (b *baton) run(loop func()) {
	if b.take() {
		b.writers.Add(1)
		loop()
		b.writers.Done()
	}
}

// kick runs loop on a goroutine of its own if it wins the baton.
func (b *baton) kick(loop func()) {
	if b.take() {
		b.writers.Go(loop)
	}
}

// handOff gives the baton its holder holds to loop, on a goroutine of
// its own.
func (b *baton) handOff(loop func()) { b.writers.Go(loop) }

// park moves writing → idle. pending reports whether work is waiting: it
// is checked after the baton is down, so work queued by a producer that
// saw the baton taken is never stranded; park then takes the baton back
// and returns false (the holder must go on), unless another goroutine
// took it first.
func (b *baton) park(pending func() bool) (parked bool) {
	b.phase.Store(idle)
	b.wakeParked()
	if !pending() {
		return true
	}
	return !b.take()
}

// end moves writing → ended and closes Done.
func (b *baton) end() {
	b.phase.Store(ended)
	close(b.done)
	b.wakeParked()
}

// Done is closed once the writing has ended.
func (b *baton) Done() <-chan struct{} { return b.done }

// isIdle reports whether no writer holds the baton.
func (b *baton) isIdle() bool { return b.phase.Load() == idle }

// waitParked returns a channel closed at the next park or end.
func (b *baton) waitParked() <-chan struct{} { return b.parked.C() }

func (b *baton) wakeParked() { b.parked.Notify() }

// wait waits for the goroutines that kick started.
func (b *baton) wait() { b.writers.Wait() }
