// Package chunkio reads files and sockets in chunks without holding a
// buffer while they are idle: a goroutine blocked on a quiet pty or TCP
// connection costs its stack and nothing more.
package chunkio

import (
	"errors"
	"io"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// BufferPool supplies read buffers to Read.
type BufferPool interface {
	Get() []byte
	Put([]byte)
}

// Read reads f (an *os.File or a *net.TCPConn in non-blocking mode, as Go
// opens them) until end of file and hands each chunk to fn, which owns the
// buffer from then on (and may Put it back). A reader blocked on an idle f
// holds no buffer: one taken for a read that finds nothing goes back to
// pool before the reader parks. A pty
// master's EIO (its other end is gone) is end of file. When f's read
// deadline passes, whatever the kernel still buffers is read without
// waiting and Read returns nil, so nothing already written is lost. It
// returns the first error of f (os.ErrClosed or net.ErrClosed once f is
// closed) or of fn.
func Read(f syscall.Conn, pool BufferPool, fn func(buf []byte, n int) error) error {
	return ReadAt(f, pool, 0, fn)
}

// ReadAt is Read leaving the first headroom bytes of every buffer free (for
// a frame header, say): data is read into buf[headroom:], and fn receives
// the whole buffer with n bytes at buf[headroom:headroom+n].
func ReadAt(f syscall.Conn, pool BufferPool, headroom int, fn func(buf []byte, n int) error) error {
	_, err := readAt(f, pool, headroom, fn, false)
	return err
}

// ReadFor is ReadAt waiting at most d for f, so that the caller can wait
// for a quiet f another way (see package park): once d has passed (f's
// read deadline, which it sets) it reads what f still holds without
// waiting and reports quiet, having cleared the deadline. It returns as
// ReadAt does at the end of file or an error. A read deadline set meanwhile
// by someone else ends the wait the same way.
func ReadFor(f Deadliner, pool BufferPool, headroom int, d time.Duration, fn func(buf []byte, n int) error) (quiet bool, err error) {
	if err := f.SetReadDeadline(time.Now().Add(d)); err != nil {
		return false, err
	}
	if quiet, err = readAt(f, pool, headroom, fn, true); quiet {
		err = f.SetReadDeadline(time.Time{})
	}
	return quiet, err
}

// readAt reads f to its end or its error. At f's read deadline it drains
// what f holds, then ends (quiet reports that to ReadFor).
func readAt(f syscall.Conn, pool BufferPool, headroom int, fn func(buf []byte, n int) error, quiet bool) (bool, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return false, err
	}
	var (
		buf  []byte
		n    int
		rerr error
	)
	read := func(fd uintptr) bool {
		if buf == nil {
			buf = pool.Get()
		}
		for {
			n, rerr = unix.Read(int(fd), buf[headroom:])
			if rerr != unix.EINTR {
				break
			}
		}
		if rerr == unix.EAGAIN {
			pool.Put(buf)
			buf = nil
			return false
		}
		return true
	}
	draining := false
	for {
		if draining {
			empty := false
			err = rc.Control(func(fd uintptr) { empty = !read(fd) })
			if err == nil && empty {
				return quiet, nil
			}
		} else {
			err = rc.Read(read)
		}
		if err != nil {
			if buf != nil {
				pool.Put(buf)
				buf = nil
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				// A deadline passes on os and net files alike.
				draining = true
				continue
			}
			return false, closedError(f, err)
		}
		if rerr == unix.EIO || (rerr == nil && n == 0) {
			pool.Put(buf)
			buf = nil
			return false, nil
		}
		if rerr != nil {
			pool.Put(buf)
			buf = nil
			return false, rerr
		}
		b := buf
		buf = nil
		if err := fn(b, n); err != nil {
			return false, err
		}
	}
}

// closedError turns the poller's error for a closed *os.File ("use of
// closed file", which only os.File's own methods translate) into
// os.ErrClosed; sockets already give net.ErrClosed.
func closedError(f syscall.Conn, err error) error {
	if file, ok := f.(*os.File); ok {
		if _, serr := file.Stat(); errors.Is(serr, os.ErrClosed) {
			return os.ErrClosed
		}
	}
	return err
}

// TryWrite writes as much of p as f takes now, without waiting, and
// returns how much that was. f must be in non-blocking mode (as Go opens
// files and sockets).
func TryWrite(f syscall.Conn, p []byte) (int, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return 0, err
	}
	written := 0
	var werr error
	err = rc.Write(func(fd uintptr) bool {
		for written < len(p) {
			n, err := unix.Write(int(fd), p[written:])
			switch {
			case err == unix.EINTR:
				continue
			case err == unix.EAGAIN:
				return true // full: stop here, the caller queues the rest
			case err != nil:
				werr = err
				return true
			}
			written += n
		}
		return true
	})
	if err != nil {
		return written, err
	}
	return written, werr
}

// AppendAll reads r to its end, appending to buf, and returns the result:
// like io.ReadAll, but into a buffer the caller reuses (one per WebSocket
// message, say), which grows only when a read finds it full.
func AppendAll(buf []byte, r io.Reader) ([]byte, error) {
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}

// Deadliner is a file or socket with a read deadline.
type Deadliner interface {
	syscall.Conn
	SetReadDeadline(t time.Time) error
}

// WaitFor waits, in Go's poller, at most d until ready(fd) reports true
// (it is asked at once, and again each time f becomes readable), and
// reports whether it did; it then sets f's read deadline to restore.
func WaitFor(f Deadliner, d time.Duration, restore time.Time, ready func(fd uintptr) bool) bool {
	rc, err := f.SyscallConn()
	if err != nil {
		return false
	}
	if err := f.SetReadDeadline(time.Now().Add(d)); err != nil {
		return false
	}
	err = rc.Read(ready)
	_ = f.SetReadDeadline(restore)
	return err == nil
}
