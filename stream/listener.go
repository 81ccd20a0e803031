package stream

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"gateway/internal/chunkio"
	"gateway/internal/park"
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

	wmu    sync.Mutex  // writes, and the cork
	corked atomic.Bool // see cork; set and cleared under wmu
	pend   []byte      // written while corked

	rest park.Slot // where the reader rests (see park)
}

// park has resume run, on a goroutine of its own, once the connection is
// readable or hung up, once it is closed, or at deadline (zero: none): no
// goroutine waits for the client meanwhile. The caller's reader must have
// taken every byte the client sent (nothing is buffered above this
// connection). It reports false, having done nothing, once the
// connection is closed or when it cannot be parked.
func (c *watchedConn) park(deadline time.Time, resume func()) bool {
	c.flushHeld()
	return c.rest.Park(c.TCPConn, deadline, func() {
		c.reading.Store(true) // a rest is a read waiting on the kernel, for caughtUp
		if c.waiting.Load() {
			c.wake()
		}
	}, func() {
		c.reading.Store(false)
		resume()
	})
}

// Close closes the connection, first waking a resting reader (whose
// descriptor must leave the park set before it is closed).
func (c *watchedConn) Close() error {
	c.rest.End()
	return c.TCPConn.Close()
}

// peekWait copies what the kernel holds, up to len(p), without taking
// it; with d > 0 it first waits at most d for the client to send something
// (or hang up), and then sets the read deadline to restore. Nothing sent
// is unix.EAGAIN.
func (c *watchedConn) peekWait(p []byte, d time.Duration, restore time.Time) (n int, err error) {
	if d <= 0 {
		return c.recv(p, unix.MSG_PEEK)
	}
	c.flushHeld()
	c.reading.Store(true)
	if c.waiting.Load() {
		c.wake()
	}
	defer c.reading.Store(false)
	n, err = 0, unix.EAGAIN
	// The check that ends the wait is the peek itself: no extra system call.
	chunkio.WaitFor(c.TCPConn, d, restore, func(fd uintptr) bool {
		n, err = recvfrom(fd, p, unix.MSG_PEEK)
		return err != unix.EAGAIN
	})
	return n, err
}

// take reads up to len(p) bytes the kernel holds, without waiting.
func (c *watchedConn) take(p []byte) (int, error) {
	n, err := c.recv(p, 0)
	c.read.Add(int64(n))
	return n, err
}

func (c *watchedConn) recv(p []byte, flags int) (int, error) {
	c.flushHeld()
	rc, err := c.TCPConn.SyscallConn()
	if err != nil {
		return 0, err
	}
	n := 0
	var rerr error
	if err := rc.Control(func(fd uintptr) { n, rerr = recvfrom(fd, p, flags) }); err != nil {
		return 0, err
	}
	return n, rerr
}

// recvfrom receives without waiting; n is never negative.
func recvfrom(fd uintptr, p []byte, flags int) (int, error) {
	for {
		n, _, err := unix.Recvfrom(int(fd), p, flags|unix.MSG_DONTWAIT)
		if err != unix.EINTR {
			return max(n, 0), err
		}
	}
}

func (c *watchedConn) Read(p []byte) (int, error) {
	c.flushHeld()
	c.reading.Store(true)
	if c.waiting.Load() {
		c.wake()
	}
	n, err := c.TCPConn.Read(p)
	c.read.Add(int64(n))
	c.reading.Store(false)
	return n, err
}

// cork holds what is written from now on until flush: from the upgrade
// (see checkingWriter), so that the handshake leaves with the stream's
// first frames, and for the last frame before the close. The writer
// flushes when it has nothing more to write, the reader before it waits
// for the client (who sends nothing before it has the handshake).
func (c *watchedConn) cork() {
	c.wmu.Lock()
	c.corked.Store(true)
	c.wmu.Unlock()
}

// Write writes p, or holds it while corked. Writes keep their order: a
// write waits for a flush under way.
func (c *watchedConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.corked.Load() {
		c.pend = append(c.pend, p...)
		return len(p), nil
	}
	return c.TCPConn.Write(p)
}

// flushHeld flushes what a cork holds, if any; a failure shows at the
// next write or read.
func (c *watchedConn) flushHeld() { _ = c.flush() }

// flush writes what was held since cork, in one write, and ends the cork.
func (c *watchedConn) flush() error { return c.uncork(false) }

// release is flush for a cork that holds something, ahead of a write
// that does not pass through Write: gorilla hands a frame larger than its
// write buffer to writev (net.Buffers finds the TCP connection's own
// method), which would overtake the held bytes. A cork that holds nothing
// stays on.
func (c *watchedConn) release() error { return c.uncork(true) }

func (c *watchedConn) uncork(onlyHeld bool) error {
	if !c.corked.Load() {
		return nil
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	pend := c.pend
	if onlyHeld && len(pend) == 0 {
		return nil
	}
	c.pend = nil
	c.corked.Store(false)
	if len(pend) == 0 {
		return nil
	}
	_, err := c.TCPConn.Write(pend)
	return err
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
