package park

import (
	"sync"
	"syscall"
	"time"
)

// Slot is one reader's place in the park: its file rests there and is
// woken again, any number of times, until the slot is ended. It is the
// shape every resting reader has. The zero Slot is ready.
type Slot struct {
	mu    sync.Mutex
	w     *Wait
	timer *time.Timer
	ended bool
}

// Park parks c's descriptor (see Add) until it is readable or hung up,
// until deadline (zero: none) or until End; then resume runs, on a
// goroutine of its own. onParked, when not nil, runs once c is parked,
// before resume can. Park reports false, having done nothing, once the
// slot is ended or when c cannot be parked.
func (s *Slot) Park(c syscall.Conn, deadline time.Time, onParked, resume func()) bool {
	fd, err := FD(c)
	if err != nil {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended {
		return false
	}
	w, err := Add(fd, func() { s.resumed(); resume() })
	if err != nil {
		return false
	}
	s.w = w
	if !deadline.IsZero() {
		s.timer = time.AfterFunc(time.Until(deadline), w.Wake)
	}
	if onParked != nil {
		onParked()
	}
	return true
}

func (s *Slot) resumed() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.w = nil
	if s.timer != nil {
		s.timer.Stop()
		s.timer = nil
	}
}

// End wakes the file if it is parked, and parks it no more: once End
// returns, the file may be closed.
func (s *Slot) End() {
	s.mu.Lock()
	s.ended = true
	w := s.w
	s.w = nil
	s.mu.Unlock()
	if w != nil {
		w.Wake()
	}
}

// FD returns the descriptor of c.
func FD(c syscall.Conn) (int, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	fd := -1
	if err := rc.Control(func(d uintptr) { fd = int(d) }); err != nil {
		return 0, err
	}
	return fd, nil
}
