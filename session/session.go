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
	Pending State = "pending" // registered, stream not yet upgraded
	Active  State = "active"  // streaming
	Closed  State = "closed"  // ended; kept for the retention period
)

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

	bytesIn  atomic.Int64                // client to process or port
	bytesOut atomic.Int64                // process or port to client
	output   atomic.Pointer[ring.Buffer] // most recent output; nil once dropped (see Config.ClosedOutput)

	reg     *Registry
	keptLen int // the output it kept when it closed (the registry's, under its mu)

	mu       sync.Mutex
	state    State
	closer   Closer
	closedAt time.Time
	exitCode *int
	closing  bool // Close was asked; Finish not yet called
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
	s.closedAt = s.reg.now()
	if exitCode != nil {
		c := *exitCode
		s.exitCode = &c
	}
	s.mu.Unlock()
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

// AddIn counts bytes from the client to the process or port.
func (s *Session) AddIn(n int) { s.bytesIn.Add(int64(n)) }

// RecordOut counts bytes from the process or port to the client and keeps
// them in the session's output buffer.
func (s *Session) RecordOut(p []byte) {
	s.bytesOut.Add(int64(len(p)))
	if b := s.output.Load(); b != nil {
		b.Write(p)
	}
}

// Output returns a copy of the most recent output (none once the
// registry dropped it: see Config.ClosedOutput).
func (s *Session) Output() []byte {
	if b := s.output.Load(); b != nil {
		return b.Bytes()
	}
	return nil
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
