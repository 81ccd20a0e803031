package session

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"gateway/ring"
)

// Errors that callers tell apart.
var (
	ErrNotFound = errors.New("session not found")
	ErrClosed   = errors.New("session already closed")
	ErrTooMany  = errors.New("too many sessions")
	// ErrClosedByAPI and ErrShutdown are the causes handed to a Closer.
	ErrClosedByAPI = errors.New("session closed through the API")
	ErrShutdown    = errors.New("gateway shutting down")
)

// NotFoundError names the session that was not found.
type NotFoundError struct{ ID string }

func (e *NotFoundError) Error() string        { return fmt.Sprintf("session %q not found", e.ID) }
func (e *NotFoundError) Is(target error) bool { return target == ErrNotFound }

// Resource names the missing object for error bodies.
func (e *NotFoundError) Resource() (kind, name string) { return "sessions", e.ID }

// Config sets the limits of a Registry.
type Config struct {
	// MaxSessions bounds pending plus active sessions; beyond it Register
	// fails with ErrTooMany.
	MaxSessions int
	// Retention is how long closed sessions stay listed.
	Retention time.Duration
	// History bounds how many closed sessions stay listed: beyond it the
	// oldest go first, whatever their age. Zero means the default; less
	// than zero keeps none.
	History int
	// OutputBuffer is how many bytes of recent output each session keeps.
	OutputBuffer int
	// ClosedOutput bounds the output that closed sessions keep, all
	// together: beyond it the oldest ones' output is dropped (they stay
	// listed). Zero means the default; less than zero keeps none.
	ClosedOutput int
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// DefaultConfig is what the gateway uses unless told otherwise.
func DefaultConfig() Config {
	return Config{MaxSessions: 4096, Retention: 5 * time.Minute, History: 1000, OutputBuffer: 16 << 10, ClosedOutput: 1 << 20}
}

// Registry tracks sessions. It is safe for concurrent use and starts no
// goroutines: closed sessions are swept when sessions are registered,
// finish or are listed.
type Registry struct {
	cfg Config
	now func() time.Time

	mu       sync.Mutex
	sessions map[string]*Session
	closed   []*Session // closed sessions still listed, in the order they closed
	kept     int        // output bytes the closed sessions keep
	live     int        // pending + active
	opened   uint64     // sessions ever registered
	done     chan struct{}
}

// NewRegistry returns an empty registry.
func NewRegistry(cfg Config) *Registry {
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	if cfg.History == 0 {
		cfg.History = DefaultConfig().History
	}
	if cfg.ClosedOutput == 0 {
		cfg.ClosedOutput = DefaultConfig().ClosedOutput
	}
	return &Registry{cfg: cfg, now: now, sessions: make(map[string]*Session)}
}

// Register adds a pending session. It fails with ErrTooMany when the
// registry is full.
func (r *Registry) Register(kind Kind, target, remoteAddr string) (*Session, error) {
	s := &Session{
		ID:         newID(),
		Kind:       kind,
		Target:     target,
		RemoteAddr: remoteAddr,
		reg:        r,
		state:      Pending,
	}
	s.output.Store(ring.New(r.cfg.OutputBuffer))
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sweep()
	if r.cfg.MaxSessions > 0 && r.live >= r.cfg.MaxSessions {
		return nil, fmt.Errorf("%w: %d streams are open", ErrTooMany, r.live)
	}
	s.CreatedAt = r.now()
	r.sessions[s.ID] = s
	r.live++
	r.opened++
	return s, nil
}

// finished is called once per session by Finish.
func (r *Registry) finished(s *Session) {
	r.mu.Lock()
	r.closed = append(r.closed, s)
	s.ownOutput()
	s.keptLen = s.outputLen()
	r.kept += s.keptLen
	for i := 0; r.kept > max(r.cfg.ClosedOutput, 0) && i < len(r.closed); i++ {
		r.dropOutput(r.closed[i]) // oldest first
	}
	r.sweep()
	r.live--
	if r.live == 0 && r.done != nil {
		close(r.done)
		r.done = nil
	}
	r.mu.Unlock()
}

// abandoned is called once per session by Abandon.
func (r *Registry) abandoned(s *Session) {
	r.mu.Lock()
	delete(r.sessions, s.ID)
	r.live--
	if r.live == 0 && r.done != nil {
		close(r.done)
		r.done = nil
	}
	r.mu.Unlock()
}

// Get returns the session with the given id.
func (r *Registry) Get(id string) (*Session, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if s, ok := r.sessions[id]; ok {
		return s, nil
	}
	return nil, &NotFoundError{ID: id}
}

// Filter selects sessions in List; zero fields match everything.
type Filter struct {
	Kind   Kind
	State  State
	Target string
}

// List returns snapshots of the matching sessions, oldest first.
func (r *Registry) List(f Filter) []Info {
	r.mu.Lock()
	r.sweep()
	all := make([]*Session, 0, len(r.sessions))
	for _, s := range r.sessions {
		all = append(all, s)
	}
	r.mu.Unlock()
	var out []Info
	for _, s := range all {
		info := s.Info()
		if (f.Kind == "" || info.Kind == f.Kind) && (f.State == "" || info.State == f.State) &&
			(f.Target == "" || info.Target == f.Target) {
			out = append(out, info)
		}
	}
	slices.SortFunc(out, func(a, b Info) int {
		if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out
}

// Close asks the session's stream to end with cause (ErrClosedByAPI when
// nil) and returns without waiting for it. Closing a closed session is
// ErrClosed.
func (r *Registry) Close(id string, cause error) error {
	s, err := r.Get(id)
	if err != nil {
		return err
	}
	if cause == nil {
		cause = ErrClosedByAPI
	}
	return s.close(cause)
}

// CloseTarget asks every live session of a container or sandbox to end.
func (r *Registry) CloseTarget(target string, cause error) {
	for _, info := range r.List(Filter{Target: target}) {
		if info.State != Closed {
			_ = r.Close(info.ID, cause)
		}
	}
}

// Counts reports the live (pending or active) sessions, and how many were
// ever registered.
func (r *Registry) Counts() (live int, opened uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.live, r.opened
}

// CountActive reports the live (pending or active) sessions.
func (r *Registry) CountActive() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.live
}

// CloseAll asks every live session to end with ErrShutdown and waits until
// all have finished or ctx is done.
func (r *Registry) CloseAll(ctx context.Context) error {
	r.mu.Lock()
	if r.live == 0 {
		r.mu.Unlock()
		return nil
	}
	if r.done == nil {
		r.done = make(chan struct{})
	}
	done := r.done
	live := make([]*Session, 0, r.live)
	for _, s := range r.sessions {
		live = append(live, s)
	}
	r.mu.Unlock()
	for _, s := range live {
		_ = s.close(ErrShutdown)
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("close sessions: %d still open: %w", r.CountActive(), ctx.Err())
	}
}

// sweep drops the closed sessions older than the retention period, and
// the oldest beyond the history bound. r.mu is held.
func (r *Registry) sweep() {
	cutoff := r.now().Add(-r.cfg.Retention)
	n := 0
	for n < len(r.closed) {
		s := r.closed[n]
		s.mu.Lock()
		old := s.closedAt.Before(cutoff)
		s.mu.Unlock()
		if !old && len(r.closed)-n <= r.cfg.History {
			break
		}
		r.dropOutput(s)
		delete(r.sessions, s.ID)
		n++
	}
	if n > 0 {
		clear(r.closed[:n])
		r.closed = r.closed[n:]
	}
}

// dropOutput releases a closed session's output. r.mu is held.
func (r *Registry) dropOutput(s *Session) {
	if s.output.Swap(nil) != nil {
		r.kept -= s.keptLen
	}
}

var idEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

// newID returns 128 random bits as 26 lowercase characters.
func newID() string {
	var b [16]byte
	rand.Read(b[:]) // never fails (crypto/rand)
	return strings.ToLower(idEncoding.EncodeToString(b[:]))
}
