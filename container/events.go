package container

import (
	"cmp"
	"fmt"
	"slices"
	"sync"
	"time"

	"gateway/internal/notify"
)

// Event is a moment in a container's life worth telling its user, as a
// kubelet reports them (kubectl describe pod shows them): Started,
// Killing, BackOff, Failed. One that repeats an earlier one of its
// container (a crash loop's) counts up that one instead, as the kubelet's
// do, and becomes the newest.
type Event struct {
	// The runtime's count of events added or counted up, at this one's
	// first and last: Added is unique, in order.
	Added, Version     uint64
	Container, Sandbox string
	Reason, Message    string
	Warning            bool
	First, Last        time.Time
	Count              int
}

// maxEvents is how many events the runtime keeps, the newest.
const maxEvents = 1000

// events is the runtime's last events.
type events struct {
	changes notify.Signal // an event added or counted up

	mu      sync.Mutex
	version uint64
	list    []Event // by Version, oldest first
}

func (e *events) add(c *Container, warning bool, reason, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	now := time.Now()
	defer e.changes.Notify()
	e.mu.Lock()
	defer e.mu.Unlock()
	e.version++
	for i := len(e.list) - 1; i >= 0; i-- {
		if ev := e.list[i]; ev.Container == c.spec.ID && !ev.First.Before(c.created) && ev.Reason == reason && ev.Message == msg {
			ev.Last, ev.Count, ev.Version = now, ev.Count+1, e.version
			e.list = append(append(e.list[:i], e.list[i+1:]...), ev)
			return
		}
	}
	e.list = append(e.list, Event{Added: e.version, Version: e.version, Container: c.spec.ID, Sandbox: c.spec.Sandbox, Reason: reason,
		Message: msg, Warning: warning, First: now, Last: now, Count: 1})
	if n := len(e.list) - maxEvents; n > 0 {
		e.list = append(e.list[:0], e.list[n:]...)
	}
}

// Events returns the events kept that were added or counted up after
// version v (0: all), oldest first, and the version they are at.
func (r *Runtime) Events(v uint64) ([]Event, uint64) {
	e := &r.events
	e.mu.Lock()
	defer e.mu.Unlock()
	i, _ := slices.BinarySearchFunc(e.list, v+1, func(ev Event, v uint64) int { return cmp.Compare(ev.Version, v) })
	return slices.Clone(e.list[i:]), e.version
}

// EventsChanged returns a channel closed at the next event added or
// counted up.
func (r *Runtime) EventsChanged() <-chan struct{} { return r.events.changes.C() }

// event records an event of the container's.
func (c *Container) event(warning bool, reason, format string, args ...any) {
	c.rt.events.add(c, warning, reason, format, args...)
}
