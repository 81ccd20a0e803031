package container

import (
	"fmt"
	"sync"
	"time"
)

// Event is a moment in a container's life worth telling its user, as a
// kubelet reports them (kubectl describe pod shows them): Started,
// Killing, BackOff, Failed. One that repeats an earlier one of its
// container (a crash loop's) counts up that one instead, as the kubelet's
// do, and becomes the newest.
type Event struct {
	Seq                uint64 // unique in the runtime, in order
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
	mu   sync.Mutex
	seq  uint64
	list []Event // oldest first
}

func (e *events) add(c *Container, warning bool, reason, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	now := time.Now()
	e.mu.Lock()
	defer e.mu.Unlock()
	for i := len(e.list) - 1; i >= 0; i-- {
		if ev := e.list[i]; ev.Container == c.spec.ID && !ev.First.Before(c.created) && ev.Reason == reason && ev.Message == msg {
			ev.Last, ev.Count = now, ev.Count+1
			e.list = append(append(e.list[:i], e.list[i+1:]...), ev)
			return
		}
	}
	e.seq++
	e.list = append(e.list, Event{Seq: e.seq, Container: c.spec.ID, Sandbox: c.spec.Sandbox, Reason: reason, Message: msg,
		Warning: warning, First: now, Last: now, Count: 1})
	if n := len(e.list) - maxEvents; n > 0 {
		e.list = append(e.list[:0], e.list[n:]...)
	}
}

// Events returns the events kept, oldest first.
func (r *Runtime) Events() []Event {
	r.events.mu.Lock()
	defer r.events.mu.Unlock()
	return append([]Event(nil), r.events.list...)
}

// event records an event of the container's.
func (c *Container) event(warning bool, reason, format string, args ...any) {
	c.rt.events.add(c, warning, reason, format, args...)
}
