package session

import (
	"sync"
	"sync/atomic"
	"time"

	"gateway/ring"
)

// Kind is what a session streams.
type Kind string

// The session kinds.
const (
	Exec        Kind = "exec"
	Attach      Kind = "attach"
	PortForward Kind = "portforward"
)

// Kinds lists every kind, for metrics that must exist from the start.
var Kinds = []Kind{Exec, Attach, PortForward}

// State is where a session is in its life.
type State string

// The session states.
const (
	Pending  State = "pending"  // registered, stream not yet upgraded
	Active   State = "active"   // streaming
	Detached State = "detached" // its process runs with no client, until ReapAt
	Closed   State = "closed"   // ended; kept for the retention period
)

// States lists every live state, for metrics that must exist from the start.
var States = []State{Pending, Active, Detached}

// Closer ends a live stream. Close must not block for long: it asks the
// stream to end, and the stream reports its end with Session.Finish. cause
// is one of ErrClosedByAPI, ErrShutdown or another error saying why.
type Closer interface {
	Close(cause error)
}

// Session is one stream. Its identity is static after construction; the
// rest is safe for concurrent use.
type Session struct {
	// Static after construction.
	ID         string
	Kind       Kind
	Target     string // the container or sandbox id
	RemoteAddr string
	CreatedAt  time.Time

	bytesIn  atomic.Int64                       // client to process or port
	bytesOut atomic.Int64                       // process or port to client
	output   atomic.Pointer[ring.Buffer]        // most recent output; nil once dropped (see Config.ClosedOutput)
	tail     atomic.Pointer[func(n int) []byte] // where the recent output is kept instead, until it finishes (OutputFrom)
	rec      atomic.Pointer[recorder]           // its recording, if any

	reg     *Registry
	keptLen int // the output it kept when it closed (the registry's, under its mu)

	mu       sync.Mutex
	state    State
	closer   Closer
	closedAt time.Time
	exitCode *int
	closing  bool // Close was asked; Finish not yet called

	// Of a shared session (see Share): how long it outlives its clients,
	// how many are connected, and when a detached one is reaped.
	detach  time.Duration
	viewers int
	reapAt  time.Time
}

// Recorder records a session: its output, its clients' input, the
// terminal's resizes, and its end with the exit code.
type Recorder interface {
	ID() string
	Output(p []byte)
	Input(p []byte)
	Resize(cols, rows int)
	End(exitCode *int)
}

type recorder struct{ Recorder }

// SetRecorder records the session from now on.
func (s *Session) SetRecorder(r Recorder) { s.rec.Store(&recorder{r}) }

// Resized records a new terminal size.
func (s *Session) Resized(cols, rows int) {
	if r := s.rec.Load(); r != nil {
		r.Resize(cols, rows)
	}
}

// Info is a snapshot of a session, as the REST API shows it.
type Info struct {
	ID         string     `json:"id"`
	Kind       Kind       `json:"kind"`
	Target     string     `json:"target"`
	State      State      `json:"state"`
	CreatedAt  time.Time  `json:"createdAt"`
	ClosedAt   *time.Time `json:"closedAt,omitempty"`
	BytesIn    int64      `json:"bytesIn"`
	BytesOut   int64      `json:"bytesOut"`
	ExitCode   *int       `json:"exitCode,omitempty"`
	RemoteAddr string     `json:"remoteAddr"`
	// Of a shared session: how long its process outlives its last client
	// (seconds), the clients connected, and when a detached one is reaped.
	Detach  float64    `json:"detach,omitempty"`
	Viewers int        `json:"viewers"`
	ReapAt  *time.Time `json:"reapAt,omitempty"`
	// Recording is the id of its recording, if it is recorded.
	Recording string `json:"recording,omitempty"`
}

// Info returns a snapshot of the session.
func (s *Session) Info() Info {
	s.mu.Lock()
	defer s.mu.Unlock()
	info := Info{
		ID:         s.ID,
		Kind:       s.Kind,
		Target:     s.Target,
		State:      s.state,
		CreatedAt:  s.CreatedAt,
		BytesIn:    s.bytesIn.Load(),
		BytesOut:   s.bytesOut.Load(),
		RemoteAddr: s.RemoteAddr,
		Detach:     s.detach.Seconds(),
		Viewers:    s.viewers,
	}
	if r := s.rec.Load(); r != nil {
		info.Recording = r.ID()
	}
	if s.state == Detached {
		t := s.reapAt
		info.ReapAt = &t
	}
	if !s.closedAt.IsZero() {
		t := s.closedAt
		info.ClosedAt = &t
	}
	if s.exitCode != nil {
		c := *s.exitCode
		info.ExitCode = &c
	}
	return info
}

// Activate marks the stream as started; c ends it on request. A session
// already asked to close (during its upgrade) is closed through c at once.
func (s *Session) Activate(c Closer) {
	s.mu.Lock()
	if s.state != Pending {
		s.mu.Unlock()
		return
	}
	s.state = Active
	s.closer = c
	closing := s.closing
	s.mu.Unlock()
	if closing {
		c.Close(ErrClosedByAPI)
	}
}

// Share makes an active session a shared one, which c now ends on
// request, and which outlives its clients by detach. It reports false when
// the session was asked to close meanwhile (c should end at once).
func (s *Session) Share(c Closer, detach time.Duration) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state != Active || s.closing {
		return false
	}
	s.closer, s.detach, s.viewers = c, detach, 1
	return true
}

// SetViewers records how many clients a shared session has: with none it
// is detached until reapAt, else active.
func (s *Session) SetViewers(n int, reapAt time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state == Closed {
		return
	}
	s.viewers = n
	if n == 0 {
		s.state, s.reapAt = Detached, reapAt
	} else {
		s.state, s.reapAt = Active, time.Time{}
	}
}

// Live reports whether the session has not finished.
func (s *Session) Live() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state != Closed
}

// Finish marks the session closed. exitCode is nil when there is none (no
// process, or it did not exit on its own). Finishing twice is harmless.
func (s *Session) Finish(exitCode *int) {
	s.mu.Lock()
	if s.state == Closed {
		s.mu.Unlock()
		return
	}
	s.state = Closed
	s.closer = nil
	s.viewers = 0
	s.closedAt = s.reg.now()
	if exitCode != nil {
		c := *exitCode
		s.exitCode = &c
	}
	s.mu.Unlock()
	if r := s.rec.Load(); r != nil {
		r.End(exitCode) // flushed and synced before the session shows closed
	}
	s.reg.finished(s)
}

// Abandon removes a pending session whose stream never started (its
// upgrade failed): it leaves no trace in the registry.
func (s *Session) Abandon() {
	s.mu.Lock()
	pending := s.state == Pending
	s.state = Closed
	s.mu.Unlock()
	if pending {
		s.reg.abandoned(s)
	}
}

// RecordIn counts bytes from the client to the process or port, and
// records them when the session is recorded.
func (s *Session) RecordIn(p []byte) {
	s.bytesIn.Add(int64(len(p)))
	if r := s.rec.Load(); r != nil {
		r.Input(p)
	}
}

// RecordOut counts bytes from the process or port to the client, keeps
// them in the session's output buffer and records them.
func (s *Session) RecordOut(p []byte) {
	s.bytesOut.Add(int64(len(p)))
	if b := s.output.Load(); b != nil && s.tail.Load() == nil {
		b.Write(p)
	}
	if r := s.rec.Load(); r != nil {
		r.Output(p)
	}
}

// Output returns a copy of the most recent output (none once the
// registry dropped it: see Config.ClosedOutput).
func (s *Session) Output() []byte {
	if t := s.tail.Load(); t != nil {
		return (*t)(s.reg.cfg.OutputBuffer)
	}
	if b := s.output.Load(); b != nil {
		return b.Bytes()
	}
	return nil
}

// OutputFrom makes tail the session's recent output: tail(n) returns the
// last n bytes of output, kept elsewhere (a shared exec's job keeps more
// than the session does, for joins, and a detached shell need not hold
// them twice). kept is the most tail can return: below the session's own
// buffer size, OutputFrom does nothing. When the session finishes, what
// tail returns then is copied into the session's own buffer and tail is
// let go.
func (s *Session) OutputFrom(tail func(n int) []byte, kept int) {
	if kept >= s.reg.cfg.OutputBuffer {
		s.tail.Store(&tail)
	}
}

// ownOutput ends OutputFrom: the tail becomes the session's own buffer.
func (s *Session) ownOutput() {
	t := s.tail.Load()
	if t == nil {
		return
	}
	b := ring.New(s.reg.cfg.OutputBuffer)
	b.Write((*t)(s.reg.cfg.OutputBuffer))
	s.output.Store(b)
	s.tail.Store(nil)
}

// outputLen is how many bytes of output the session keeps.
func (s *Session) outputLen() int {
	if b := s.output.Load(); b != nil {
		return b.Len()
	}
	return 0
}

// close asks the live stream to end; see Registry.Close.
func (s *Session) close(cause error) error {
	s.mu.Lock()
	switch {
	case s.state == Closed:
		s.mu.Unlock()
		return ErrClosed
	case s.closing: // asked already: it counts as closed
		s.mu.Unlock()
		return ErrClosed
	case s.closer == nil: // pending: close as soon as it activates
		s.closing = true
		s.mu.Unlock()
		return nil
	}
	c := s.closer
	s.closing = true
	s.mu.Unlock()
	c.Close(cause)
	return nil
}
