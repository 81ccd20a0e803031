package stream

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Listener wraps ln so that streams on its connections can tell when they
// have read everything their client has sent (Conn.SyncInput). Serve the
// gateway's HTTP on it; streams on other listeners work the same, without
// that knowledge.
func Listener(ln net.Listener) net.Listener { return watchedListener{ln} }

type watchedListener struct{ net.Listener }

func (l watchedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok && err == nil {
		return &watchedConn{TCPConn: tc}, nil
	}
	return c, err
}

// watchedConn knows whether its reader is waiting on the kernel. A read
// reaches it only when the buffers above it (TLS records, the HTTP
// server's and gorilla's readers) are empty, so "the reader waits here and
// the socket holds nothing" means every complete frame the client sent has
// been read. It embeds the *net.TCPConn itself, not a net.Conn, so that
// gorilla's frames still go out with one writev (net.Buffers finds the
// TCP connection's own method through it).
type watchedConn struct {
	*net.TCPConn
	reading atomic.Bool  // a Read is waiting on the kernel
	waiting atomic.Bool  // someone waits for the next Read
	read    atomic.Int64 // bytes read from the kernel so far

	mu      sync.Mutex
	waiters []chan struct{}
}

func (c *watchedConn) Read(p []byte) (int, error) {
	c.reading.Store(true)
	if c.waiting.Load() {
		c.wake()
	}
	n, err := c.TCPConn.Read(p)
	c.read.Add(int64(n))
	c.reading.Store(false)
	return n, err
}

func (c *watchedConn) wake() {
	c.mu.Lock()
	for _, w := range c.waiters {
		close(w)
	}
	c.waiters = nil
	c.waiting.Store(false)
	c.mu.Unlock()
}

// NetConn returns the connection it wraps.
func (c *watchedConn) NetConn() net.Conn { return c.TCPConn }

// caughtUp returns once the reader has taken every byte the kernel held
// when it was called and waits for more, or after max (a reader held up
// elsewhere, by a full input queue say), or when ctx ends. Waiters
// announce themselves before they look at the reader, and the reader
// looks for waiters after it says it reads, so one of the two always sees
// the other.
func (c *watchedConn) caughtUp(ctx context.Context, max time.Duration) {
	target := c.read.Load() + int64(c.queued())
	var timer *time.Timer
	for {
		w := make(chan struct{})
		c.mu.Lock()
		c.waiters = append(c.waiters, w)
		c.waiting.Store(true)
		c.mu.Unlock()
		if c.reading.Load() && c.read.Load() >= target {
			c.wake()
			return
		}
		if timer == nil {
			timer = time.NewTimer(max)
			defer timer.Stop()
		}
		select {
		case <-w:
		case <-timer.C:
			return
		case <-ctx.Done():
			return
		}
	}
}

// queued is the number of bytes the kernel holds for the reader (0 when
// that cannot be told).
func (c *watchedConn) queued() int {
	rc, err := c.TCPConn.SyscallConn()
	if err != nil {
		return 0
	}
	n := 0
	_ = rc.Control(func(fd uintptr) { n, _ = unix.IoctlGetInt(int(fd), unix.SIOCINQ) })
	return n
}

// watched finds the watchedConn under a connection, through the wrappers
// that expose what they wrap (TLS, gorilla's handshake reader).
func watched(c net.Conn) *watchedConn {
	for range 4 {
		switch v := c.(type) {
		case *watchedConn:
			return v
		case interface{ NetConn() net.Conn }:
			c = v.NetConn()
		default:
			return nil
		}
	}
	return nil
}
