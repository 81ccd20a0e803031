package container

import (
	"errors"
	"sync"
	"time"
)

// Stream names an output of a main process.
type Stream uint8

// The output streams. With a pty everything is Stdout.
const (
	Stdout Stream = 1
	Stderr Stream = 2
)

// Chunk is a piece of output. Its bytes are shared by every reader and must
// not be modified.
type Chunk struct {
	Stream Stream
	Data   []byte

	// framed, for live chunks, is Data with one byte before it holding the
	// stream number, so a reader can send it as a channel frame (stdout 1,
	// stderr 2, as in the Kubernetes protocol) without a copy.
	framed []byte
}

// Framed returns the chunk's bytes preceded by its stream number, or nil
// when the chunk has no such byte (replayed scrollback).
func (c Chunk) Framed() []byte { return c.framed }

// ErrSlowConsumer ends an attachment that fell too far behind.
var ErrSlowConsumer = errors.New("attacher too slow: its output queue stayed full")

// scrollback keeps the most recent output of a container, at most limit
// bytes, with each byte's stream. Output is packed into blocks of one
// stream each, so a flood of tiny writes costs no more than a few large
// ones; the oldest bytes are dropped first, and a dropped block is reused.
type scrollback struct {
	limit  int
	blocks []block // oldest first
	size   int
	spare  []byte // a dropped block's storage, for the next block
}

// block is a run of one stream's output: data is the part still kept of
// the storage base (the front is dropped first).
type block struct {
	stream Stream
	data   []byte
	base   []byte
}

const scrollbackBlock = 32 << 10

func (s *scrollback) append(st Stream, p []byte) {
	if s.limit <= 0 {
		return
	}
	if len(p) > s.limit {
		p = p[len(p)-s.limit:]
	}
	s.size += len(p)
	for len(p) > 0 {
		last := len(s.blocks) - 1
		if last < 0 || s.blocks[last].stream != st || len(s.blocks[last].data) == cap(s.blocks[last].data) {
			base := s.spare
			s.spare = nil
			if base == nil {
				base = make([]byte, min(scrollbackBlock, s.limit))
			}
			s.blocks = append(s.blocks, block{stream: st, data: base[:0], base: base})
			last++
		}
		b := &s.blocks[last]
		k := min(cap(b.data)-len(b.data), len(p))
		b.data = append(b.data, p[:k]...)
		p = p[k:]
	}
	for s.size > s.limit {
		drop := s.size - s.limit
		if first := &s.blocks[0]; len(first.data) <= drop {
			s.size -= len(first.data)
			s.spare = first.base
			s.blocks[0] = block{}
			s.blocks = s.blocks[1:]
		} else {
			first.data = first.data[drop:]
			s.size -= drop
		}
	}
}

// snapshot returns copies of the kept output, oldest first, merged into as
// few chunks as the streams allow.
func (s *scrollback) snapshot() []Chunk {
	var out []Chunk
	for _, b := range s.blocks {
		if n := len(out); n > 0 && out[n-1].Stream == b.stream {
			out[n-1].Data = append(out[n-1].Data, b.data...)
			continue
		}
		out = append(out, Chunk{Stream: b.stream, Data: append([]byte(nil), b.data...)})
	}
	return out
}

// output is a container's output: the scrollback, and the attachments
// that see each chunk as it is published.
//
// Policy for attachers: each has a queue of attachQueueLen chunks. While
// an attacher's queue is full, publishing waits for it, for at most the lag
// limit (Config.AttachLagLimit); an attacher that takes no chunk in that
// time is cut (ErrSlowConsumer). So every attacher that keeps reading gets
// every byte (the process slows to the pace of the slowest one), and one
// that stops reading holds the others up for the lag limit once. Memory
// per attacher is bounded by its queue.
type output struct {
	pub sync.Mutex // serializes publish and end: one order for everyone

	lagLimit time.Duration // static

	mu       sync.Mutex
	scroll   scrollback
	total    int64 // bytes ever published
	watchers map[*Attachment]struct{}
	ended    *int       // the exit code, once the process ended for good
	marks    []timeMark // when the kept output was published, for logs
	runs     [2]int64   // where the previous run's output and the current run's start; -1 none
}

// attachQueueLen bounds each attacher's queue, in chunks of at most 32 KiB.
const attachQueueLen = 64

func newOutput(limit int, lagLimit time.Duration) *output {
	return &output{lagLimit: lagLimit, scroll: scrollback{limit: limit}, watchers: make(map[*Attachment]struct{}),
		runs: [2]int64{-1, -1}}
}

// Attachment is one attacher's view of a container's output: the
// scrollback at the moment it attached, then every chunk published after,
// on C, without a gap or a repeat. C is closed at the end: Err then says
// why (nil when the process exited, with ExitCode).
type Attachment struct {
	// Replay is the scrollback, to send before anything from C.
	Replay []Chunk
	// C delivers live output; closed when the attachment ends.
	C <-chan Chunk

	c      chan Chunk
	o      *output
	gone   chan struct{} // closed by Detach
	onCut  func()        // called once when it is cut; nil for none
	detach sync.Once

	// Set before c is closed.
	err      error
	exitCode *int
}

// Err reports why C was closed: nil when the process exited (see
// ExitCode), ErrSlowConsumer when the attacher fell behind.
func (a *Attachment) Err() error { return a.err }

// ExitCode is the exit code of the main process once C is closed by its
// exit.
func (a *Attachment) ExitCode() *int { return a.exitCode }

// Detach stops the attachment; C is not closed by it. Call it when the
// attacher leaves.
func (a *Attachment) Detach() {
	a.detach.Do(func() {
		close(a.gone)
		a.o.mu.Lock()
		delete(a.o.watchers, a)
		a.o.mu.Unlock()
	})
}

// attach snapshots the scrollback (when replay is set) and subscribes, in
// one step.
func (o *output) attach(replay bool, onCut func()) *Attachment {
	c := make(chan Chunk, attachQueueLen)
	a := &Attachment{C: c, c: c, o: o, gone: make(chan struct{}), onCut: onCut}
	o.mu.Lock()
	defer o.mu.Unlock()
	if replay {
		a.Replay = o.scroll.snapshot()
	}
	if o.ended != nil {
		a.exitCode = o.ended
		close(c)
		return a
	}
	o.watchers[a] = struct{}{}
	return a
}

// publish records a chunk and hands it to every attachment, waiting for
// full queues as the policy says. framed is the stream number, then the
// data; it must not be modified afterwards.
func (o *output) publish(st Stream, framed []byte) {
	p := framed[1:]
	o.pub.Lock()
	defer o.pub.Unlock()
	o.mu.Lock()
	o.mark(o.total, time.Now())
	o.scroll.append(st, p)
	o.total += int64(len(p))
	watchers := make([]*Attachment, 0, len(o.watchers))
	for a := range o.watchers {
		watchers = append(watchers, a)
	}
	o.mu.Unlock()

	chunk := Chunk{Stream: st, Data: p, framed: framed}
	var timer *time.Timer
	for _, a := range watchers {
		select {
		case a.c <- chunk:
			continue
		case <-a.gone:
			continue
		default:
		}
		if timer == nil {
			timer = time.NewTimer(o.lagLimit)
			defer timer.Stop()
		}
		select {
		case a.c <- chunk:
		case <-a.gone:
		case <-timer.C:
			o.cut(a, ErrSlowConsumer, nil)
		}
	}
}

// end closes every attachment with the exit code. When final, the process
// will not run again: later attachments end right after their replay.
func (o *output) end(code int, final bool) {
	o.pub.Lock()
	defer o.pub.Unlock()
	o.mu.Lock()
	watchers := o.watchers
	o.watchers = make(map[*Attachment]struct{})
	if final {
		o.ended = &code
	}
	o.mu.Unlock()
	for a := range watchers {
		o.close(a, nil, &code)
	}
}

// begin marks a new run of the process: attachments wait for its output.
func (o *output) begin() {
	o.mu.Lock()
	o.ended = nil
	o.runs = [2]int64{o.runs[1], o.total}
	o.mu.Unlock()
}

// cut removes one attachment.
func (o *output) cut(a *Attachment, err error, code *int) {
	o.mu.Lock()
	delete(o.watchers, a)
	o.mu.Unlock()
	o.close(a, err, code)
}

// close ends an attachment; only publish and end call it, under pub.
func (o *output) close(a *Attachment, err error, code *int) {
	a.err, a.exitCode = err, code
	close(a.c)
	if err != nil && a.onCut != nil {
		a.onCut()
	}
}

// Attach subscribes to the container's output; see Attachment. With
// replay, the scrollback comes first. onCut, when not nil, is called once
// if the attacher is cut for falling behind (on the publisher's
// goroutine: it must not block).
func (c *Container) Attach(replay bool, onCut func()) *Attachment {
	return c.out.attach(replay, onCut)
}

// Scrollback returns a copy of the container's most recent output.
func (c *Container) Scrollback() []Chunk {
	c.out.mu.Lock()
	defer c.out.mu.Unlock()
	return c.out.scroll.snapshot()
}
