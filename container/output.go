package container

import "sync"

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
}

// scrollback keeps the most recent output of a container, at most limit
// bytes, with each byte's stream. Output is packed into blocks of one
// stream each, so a flood of tiny writes costs no more than a few large
// ones; the oldest bytes are dropped first.
type scrollback struct {
	limit  int
	blocks []Chunk // oldest first
	size   int
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
		if last < 0 || s.blocks[last].Stream != st || len(s.blocks[last].Data) == cap(s.blocks[last].Data) {
			s.blocks = append(s.blocks, Chunk{Stream: st, Data: make([]byte, 0, min(scrollbackBlock, s.limit))})
			last++
		}
		b := &s.blocks[last]
		k := min(cap(b.Data)-len(b.Data), len(p))
		b.Data = append(b.Data, p[:k]...)
		p = p[k:]
	}
	for s.size > s.limit {
		drop := s.size - s.limit
		if first := &s.blocks[0]; len(first.Data) <= drop {
			s.size -= len(first.Data)
			s.blocks[0] = Chunk{}
			s.blocks = s.blocks[1:]
		} else {
			first.Data = first.Data[drop:]
			s.size -= drop
		}
	}
}

// snapshot returns copies of the kept output, oldest first, merged into as
// few chunks as the streams allow.
func (s *scrollback) snapshot() []Chunk {
	var out []Chunk
	for _, b := range s.blocks {
		if n := len(out); n > 0 && out[n-1].Stream == b.Stream {
			out[n-1].Data = append(out[n-1].Data, b.Data...)
			continue
		}
		out = append(out, Chunk{Stream: b.Stream, Data: append([]byte(nil), b.Data...)})
	}
	return out
}

// output is a container's output: the scrollback, and the subscribers that
// see each chunk as it is published.
type output struct {
	mu     sync.Mutex
	scroll scrollback
	total  int64 // bytes ever published
}

func newOutput(limit int) *output {
	return &output{scroll: scrollback{limit: limit}}
}

// publish records a chunk. p must not be modified afterwards.
func (o *output) publish(st Stream, p []byte) {
	o.mu.Lock()
	o.scroll.append(st, p)
	o.total += int64(len(p))
	o.mu.Unlock()
}

// Scrollback returns a copy of the container's most recent output.
func (c *Container) Scrollback() []Chunk {
	c.out.mu.Lock()
	defer c.out.mu.Unlock()
	return c.out.scroll.snapshot()
}
