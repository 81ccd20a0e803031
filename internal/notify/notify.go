// Package notify has Signal, a broadcast that something changed, for
// watchers that then read the new state themselves.
package notify

import "sync"

// Signal wakes every waiter at each Notify, and counts them. The zero
// value is ready; a Notify that no one waits for costs a lock and
// nothing else.
type Signal struct {
	mu  sync.Mutex
	ch  chan struct{} // closed by the next Notify; nil while no one waits
	gen uint64        // Notifies so far
}

// Gen returns how many Notifies there have been: a reader that saw the
// same count before its last read knows nothing changed since.
func (s *Signal) Gen() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.gen
}

// C returns a channel closed at the next Notify. A waiter takes it before
// it reads the state, so that no change after the read goes unseen.
func (s *Signal) C() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ch == nil {
		s.ch = make(chan struct{})
	}
	return s.ch
}

// Notify wakes the waiters.
func (s *Signal) Notify() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gen++
	if s.ch != nil {
		close(s.ch)
		s.ch = nil
	}
}
