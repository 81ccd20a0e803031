package container

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"time"

	"gateway/internal/chunkio"
	"gateway/vt"
)

// Stream names an output of a main process.
type Stream uint8

// The output streams. With a pty everything is Stdout. Resized is no
// output: a chunk of it says that the pty took a new size (Chunk.Size),
// at that point of the output.
const (
	Stdout  Stream = 1
	Stderr  Stream = 2
	Resized Stream = 0
)

// Chunk is a piece of output. Its bytes are shared by every reader and must
// not be modified.
type Chunk struct {
	Stream Stream
	Data   []byte
	Size   Size // of a Resized chunk

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
// Blocks start small and grow with what is kept, so that a quiet process
// (an idle shell) holds little.
type scrollback struct {
	limit  int
	blocks []block // oldest first
	size   int
	spare  []byte // a dropped block's storage, for the next block
	next   int    // the size of the next new block, 0 for scrollbackFirst
}

// block is a run of one stream's output: data is the part still kept of
// the storage base (the front is dropped first).
type block struct {
	stream Stream
	data   []byte
	base   []byte
}

// Block sizes: the first is scrollbackFirst, then each doubles up to
// scrollbackBlock (and again from the first after a compact).
const (
	scrollbackFirst = 512
	scrollbackBlock = 32 << 10
)

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
				n := max(s.next, scrollbackFirst)
				s.next = min(2*n, scrollbackBlock)
				base = make([]byte, min(n, s.limit))
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

// tail returns a copy of the last n bytes kept, of every stream, in the
// order they came.
func (s *scrollback) tail(n int) []byte {
	out := make([]byte, min(n, s.size))
	i := len(out)
	for k := len(s.blocks) - 1; k >= 0 && i > 0; k-- {
		d := s.blocks[k].data
		if len(d) > i {
			d = d[len(d)-i:]
		}
		i -= copy(out[i-len(d):i], d)
	}
	return out
}

// compact gives back the blocks' spare room: the kept bytes of each run of
// one stream's blocks move into blocks of their exact size (up to
// scrollbackBlock each), and new blocks start small again.
func (s *scrollback) compact() {
	s.spare, s.next = nil, 0
	var out []block
	for i := 0; i < len(s.blocks); {
		j, n, room := i, 0, 0
		for ; j < len(s.blocks) && s.blocks[j].stream == s.blocks[i].stream; j++ {
			n += len(s.blocks[j].data)
			room += cap(s.blocks[j].base) - len(s.blocks[j].data)
		}
		if room < scrollbackFirst {
			out = append(out, s.blocks[i:j]...)
			i = j
			continue
		}
		var cur []byte
		for _, b := range s.blocks[i:j] {
			for data := b.data; len(data) > 0; {
				if len(cur) == cap(cur) {
					if cur != nil {
						out = append(out, block{stream: b.stream, data: cur, base: cur})
					}
					cur = make([]byte, 0, min(n, scrollbackBlock))
				}
				k := copy(cur[len(cur):cap(cur)], data)
				cur, data, n = cur[:len(cur)+k], data[k:], n-k
			}
		}
		out = append(out, block{stream: s.blocks[i].stream, data: cur, base: cur})
		i = j
	}
	s.blocks = slices.Clip(out)
}

// snapshot returns copies of the kept output, oldest first, merged into as
// few chunks as the streams allow.
func (s *scrollback) snapshot() []Chunk { return s.last(s.size) }

// last returns copies of the last n kept bytes (n at most size), as
// snapshot does.
func (s *scrollback) last(n int) []Chunk {
	var out []Chunk
	skip := s.size - n
	for _, b := range s.blocks {
		if skip >= len(b.data) {
			skip -= len(b.data)
			continue
		}
		b.data, skip = b.data[skip:], 0
		if n := len(out); n > 0 && out[n-1].Stream == b.stream {
			out[n-1].Data = append(out[n-1].Data, b.data...)
			continue
		}
		out = append(out, Chunk{Stream: b.stream, Data: append([]byte(nil), b.data...)})
	}
	return out
}

// output is the output of a process that clients share (a container's
// main process, or a Job): the scrollback, with a tty the terminal's state,
// and the attachments that see each chunk as it is published.
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

	lagLimit  time.Duration     // static
	onPublish func(data []byte) // static; called with each chunk, under mu

	mu       sync.Mutex
	scroll   scrollback
	term     *vt.Terminal // a tty's screen, fed every chunk; nil without a tty
	total    int64        // bytes ever published
	watchers map[*Attachment]struct{}
	ended    *int        // the exit code, once the process ended for good
	marks    []timeMark  // when the kept output was published, for logs
	runs     [2]int64    // where the previous run's output and the current run's start; -1 none
	quiet    *time.Timer // compacts the kept state once output has been quiet for compactAfter
}

// compactAfter is how long output is quiet before the state kept for
// joins is compacted (a tty's cells packed, the scrollback's spare room
// given back): an idle shell costs about what its screen's text does.
const compactAfter = 2 * time.Second

// compact compacts the state kept for joins.
func (o *output) compact() {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.term != nil {
		o.term.Compact()
	}
	o.scroll.compact()
	o.marks = slices.Clip(o.marks)
}

// attachQueueLen bounds each attacher's queue, in chunks of at most 32 KiB.
const attachQueueLen = 64

// newOutput returns an output that keeps limit bytes and, when term is
// not nil, the screen of a tty.
func newOutput(limit int, lagLimit time.Duration, term *vt.Terminal) *output {
	return &output{lagLimit: lagLimit, scroll: scrollback{limit: limit}, term: term,
		watchers: make(map[*Attachment]struct{}), runs: [2]int64{-1, -1}}
}

// newTerminal is the screen state of a pty of the given size.
func newTerminal(s Size) *vt.Terminal {
	if s.Cols == 0 || s.Rows == 0 {
		s = DefaultSize
	}
	return vt.New(int(s.Cols), int(s.Rows), vt.DefaultConfig())
}

// Join says where an attachment's output starts.
type Join struct {
	// From, when not negative, starts right after the first From bytes
	// of output, without a gap or a repeat: it fails with a *GoneError
	// once they are no longer kept.
	From int64
	// Replay (when From is negative) first gives what there is to see:
	// with a tty the screen as it is now, else the kept output.
	Replay bool
}

// Live joins with the output to come only; Replay with what there is to
// see first.
var (
	Live   = Join{From: -1}
	Replay = Join{From: -1, Replay: true}
)

// ErrGone is what every GoneError is.
var ErrGone = errors.New("output no longer kept")

// GoneError refuses a join from an offset that is no longer kept.
type GoneError struct{ From, Kept, Total int64 }

func (e *GoneError) Is(target error) bool { return target == ErrGone }

func (e *GoneError) Error() string {
	return fmt.Sprintf("output from byte %d is no longer kept: bytes %d to %d are", e.From, e.Kept, e.Total)
}

// Attachment is one attacher's view of a process's output: Replay, then
// every chunk published after, on C, without a gap or a repeat. C is
// closed at the end: Err then says why (nil when the process exited, with
// ExitCode).
type Attachment struct {
	// Replay comes before anything from C: kept output, or a screen.
	Replay []Chunk
	// Offset is how many bytes of output came before C's first chunk.
	Offset int64
	// Screen: Replay is a tty's screen (drawn from a reset), not output.
	Screen bool
	// Size is the pty's size when it attached (zero without a pty).
	Size Size
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

// ExitCode is the exit code of the process once C is closed by its exit.
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

// attach takes what the join asks for and subscribes, in one step.
func (o *output) attach(j Join, onCut func()) (*Attachment, error) {
	c := make(chan Chunk, attachQueueLen)
	a := &Attachment{C: c, c: c, o: o, gone: make(chan struct{}), onCut: onCut}
	o.mu.Lock()
	defer o.mu.Unlock()
	if err := o.check(j); err != nil {
		return nil, err
	}
	switch {
	case j.From >= 0:
		a.Replay = o.scroll.last(int(o.total - j.From))
	case j.Replay && o.term != nil:
		a.Replay, a.Screen = []Chunk{{Stream: Stdout, Data: o.restore()}}, true
	case j.Replay:
		a.Replay = o.scroll.snapshot()
		if o.total > int64(o.scroll.size) {
			a.Replay = afterFirstLine(a.Replay) // its start was dropped
		}
	}
	a.Offset = o.total
	if o.term != nil {
		cols, rows := o.term.Size()
		a.Size = Size{Cols: uint16(cols), Rows: uint16(rows)}
	}
	if o.ended != nil {
		a.exitCode = o.ended
		close(c)
		return a, nil
	}
	o.watchers[a] = struct{}{}
	return a, nil
}

// afterFirstLine drops the chunks' bytes up to the first newline: a
// replay whose first line lost its start (perhaps inside an escape
// sequence or a character) starts at the next one. Without a newline
// everything is kept.
func afterFirstLine(chunks []Chunk) []Chunk {
	for i, c := range chunks {
		if j := bytes.IndexByte(c.Data, '\n'); j >= 0 {
			out := chunks[i:]
			out[0].Data = c.Data[j+1:]
			if len(out[0].Data) == 0 {
				out = out[1:]
			}
			return out
		}
	}
	return chunks
}

// check refuses a join from an offset not kept, or not reached. o.mu is
// held.
func (o *output) check(j Join) error {
	switch kept := o.total - int64(o.scroll.size); {
	case j.From > o.total:
		return fmt.Errorf("%w: output from byte %d: there have been only %d", ErrInvalid, j.From, o.total)
	case j.From >= 0 && j.From < kept:
		return &GoneError{From: j.From, Kept: kept, Total: o.total}
	}
	return nil
}

// tail returns the last n bytes of output kept.
func (o *output) tail(n int) []byte {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.scroll.tail(n)
}

// restore is the output that draws the screen as it is. o.mu is held.
func (o *output) restore() []byte { return o.term.AppendRestore(nil) }

// resize follows a resize of the pty: the screen takes the size, and the
// attachments see a Resized chunk where it falls in the output.
func (o *output) resize(s Size) {
	o.pub.Lock()
	defer o.pub.Unlock()
	o.mu.Lock()
	if o.term != nil {
		o.term.Resize(int(s.Cols), int(s.Rows))
	}
	watchers := o.watching()
	o.mu.Unlock()
	o.deliver(watchers, Chunk{Stream: Resized, Size: s})
}

// watching lists the attachments. o.mu is held.
func (o *output) watching() []*Attachment {
	watchers := make([]*Attachment, 0, len(o.watchers))
	for a := range o.watchers {
		watchers = append(watchers, a)
	}
	return watchers
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
	if o.term != nil {
		o.term.Write(p)
	}
	o.total += int64(len(p))
	if o.quiet == nil {
		o.quiet = time.AfterFunc(compactAfter, o.compact)
	} else {
		o.quiet.Reset(compactAfter)
	}
	if o.onPublish != nil {
		o.onPublish(p)
	}
	watchers := o.watching()
	o.mu.Unlock()
	o.deliver(watchers, Chunk{Stream: st, Data: p, framed: framed})
}

// deliver hands a chunk to the attachments, waiting for full queues as the
// policy says. o.pub is held.
func (o *output) deliver(watchers []*Attachment, chunk Chunk) {
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

// handoffMin is the smallest read that keeps its buffer rather than being
// copied: pty reads (about 4 KiB) are copied, pipe floods are not.
const handoffMin = 8 << 10

// readBuffers are the process readers' buffers, shared: a reader holds one
// only while it reads (chunkio gives it back when the read finds nothing),
// so an idle process costs none.
var readBuffers = sync.Pool{New: func() any { return make([]byte, 1+32<<10) }}

type pooledBuffers struct{}

func (pooledBuffers) Get() []byte { return readBuffers.Get().([]byte) }

//lint:ignore SA6002 the slice header's allocation is small next to its 32 KiB
func (pooledBuffers) Put(b []byte) { readBuffers.Put(b) }

// pump runs one process into the output: it reads its output (stdout and
// stderr in one order), writes the input queued on stdin to it, and
// returns its exit code once it has exited and been reaped.
func (o *output) pump(proc *Process, stdin <-chan []byte, log *slog.Logger) (int, error) {
	var pub sync.Mutex // stdout and stderr reach the output in one order
	read := func(st Stream, f *os.File) {
		var bufs pooledBuffers
		err := chunkio.ReadAt(f, bufs, 1, func(b []byte, n int) error {
			// Chunks are shared with attachers and sent as frames: the byte
			// before the data holds the stream number. A large read keeps its
			// buffer (the next read gets another); a small one is copied.
			var framed []byte
			if n >= handoffMin {
				framed = b[:1+n]
			} else {
				framed = make([]byte, 1+n)
				copy(framed[1:], b[1:1+n])
				bufs.Put(b)
			}
			framed[0] = byte(st)
			pub.Lock()
			o.publish(st, framed)
			pub.Unlock()
			return nil
		})
		if err != nil && !errors.Is(err, os.ErrClosed) {
			log.Warn("process output", "error", err)
		}
	}
	var workers sync.WaitGroup
	runDone := make(chan struct{})
	if proc.Stdin != nil {
		workers.Go(func() { writeInput(proc, stdin, runDone, log) })
	}
	var stderr sync.WaitGroup
	if proc.Stderr != nil {
		stderr.Go(func() { read(Stderr, proc.Stderr) })
	}
	read(Stdout, proc.Stdout)
	stderr.Wait()
	code, err := proc.Wait()
	proc.Close() // ends a write blocked on a child that holds stdin open
	close(runDone)
	workers.Wait()
	return code, err
}

// writeInput writes queued input to one run of a process until the run
// ends. Input the process refuses is dropped; a nil chunk closes its input.
func writeInput(proc *Process, stdin <-chan []byte, runDone <-chan struct{}, log *slog.Logger) {
	for {
		select {
		case p := <-stdin:
			if p == nil {
				if err := proc.CloseStdin(); err != nil {
					log.Debug("stdin close", "error", err)
				}
				continue
			}
			if _, err := proc.Write(p); err != nil {
				log.Debug("stdin write", "error", err)
			}
		case <-runDone:
			return
		}
	}
}

// Attach subscribes to the container's output; see Attachment and Join.
// onCut, when not nil, is called once if the attacher is cut for falling
// behind (on the publisher's goroutine: it must not block).
func (c *Container) Attach(j Join, onCut func()) (*Attachment, error) {
	return c.out.attach(j, onCut)
}

// Scrollback returns a copy of the container's most recent output.
func (c *Container) Scrollback() []Chunk {
	c.out.mu.Lock()
	defer c.out.mu.Unlock()
	return c.out.scroll.snapshot()
}
