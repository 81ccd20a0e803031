package api

import (
	"context"
	"net/http"
	"sync"
	"time"
)

// A long response (a watch, a log or a recording that follows) writes
// with a deadline: a client that takes nothing for longWriteTimeout is
// cut, and once the gateway drains, one write under way has
// drainWriteGrace to finish, so that the shutdown waits on no stalled
// reader.
const (
	longWriteTimeout = time.Minute
	drainWriteGrace  = time.Second
)

// writeDeadline keeps a long response's write deadline (see above).
type writeDeadline struct {
	a       *API
	rc      *http.ResponseController
	mu      sync.Mutex // orders the deadlines: the drain's, a round's, stop's
	stopped bool
	unblock func() bool // stops the drain's
}

// newWriteDeadline starts the deadlines of a response whose handler runs
// until stop (net/http allows no deadline after the handler returns).
func (a *API) newWriteDeadline(rc *http.ResponseController) *writeDeadline {
	d := &writeDeadline{a: a, rc: rc}
	d.unblock = context.AfterFunc(a.drainCtx, func() {
		d.mu.Lock()
		defer d.mu.Unlock()
		if !d.stopped {
			_ = d.rc.SetWriteDeadline(time.Now().Add(drainWriteGrace))
		}
	})
	_ = rc.SetWriteDeadline(time.Now().Add(longWriteTimeout))
	return d
}

// extend gives the next round of writes longWriteTimeout, unless the
// gateway drains: then the drain's deadline stands.
func (d *writeDeadline) extend() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.a.drainCtx.Err() == nil && !d.stopped { // under mu: the drain's comes after this one
		_ = d.rc.SetWriteDeadline(time.Now().Add(longWriteTimeout))
	}
}

// stop ends the deadlines: the connection's next answer has none of them.
func (d *writeDeadline) stop() {
	d.unblock()
	d.mu.Lock()
	d.stopped = true
	d.mu.Unlock()
	_ = d.rc.SetWriteDeadline(time.Time{})
}
