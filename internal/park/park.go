// Package park lets a goroutine that waits for a file to become readable
// end instead, and a new one start when it does: a stream at rest holds
// no goroutine, and so no stack.
//
// Go's poller parks one goroutine per waiting read. Here every parked
// file is in one epoll set of the package's own, whose descriptor is in
// Go's poller: a single goroutine runs while some file is parked, and
// hands each file that becomes readable to a new goroutine. A goroutine
// parked in a read keeps a stack of at least 4 KiB (the runtime halves a
// parked stack only while its frames use under a quarter of it); a
// parked file costs a map entry.
package park

import (
	"errors"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Wait is one parked file.
type Wait struct {
	fd  int
	gen int32
	fn  func()
}

var set struct {
	mu      sync.Mutex
	file    *os.File // the epoll set, in Go's poller; nil until first used
	waits   map[int]*Wait
	gen     int32
	running bool // loop runs
}

// Add parks fd (a descriptor in non-blocking mode that stays open until
// fn has run or Wake has returned): fn runs once, on a goroutine of its
// own, when fd is readable or hung up, or when Wake is called. A file is
// parked at most once at a time.
func Add(fd int, fn func()) (*Wait, error) {
	set.mu.Lock()
	defer set.mu.Unlock()
	if set.file == nil {
		epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
		if err != nil {
			return nil, os.NewSyscallError("epoll_create1", err)
		}
		if err := unix.SetNonblock(epfd, true); err != nil {
			unix.Close(epfd)
			return nil, os.NewSyscallError("fcntl", err)
		}
		set.file = os.NewFile(uintptr(epfd), "park-epoll") // non-blocking: in Go's poller
		set.waits = map[int]*Wait{}
	}
	if set.waits[fd] != nil {
		return nil, errors.New("park: file already parked")
	}
	set.gen++
	w := &Wait{fd: fd, gen: set.gen, fn: fn}
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT, Fd: int32(fd), Pad: w.gen}
	if err := control(unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		return nil, err
	}
	set.waits[fd] = w
	if !set.running {
		set.running = true
		go loop()
	}
	return w, nil
}

// Wake runs the wait's fn now, on a goroutine of its own, unless it has
// already run. Once it returns, fd is no longer in the set: it may be
// closed.
func (w *Wait) Wake() {
	set.mu.Lock()
	if set.waits[w.fd] != w {
		set.mu.Unlock()
		return
	}
	forgetLocked(w)
	set.mu.Unlock()
	go w.fn()
}

// forgetLocked takes w out of the set; the last one out ends the loop.
func forgetLocked(w *Wait) {
	delete(set.waits, w.fd)
	_ = control(unix.EPOLL_CTL_DEL, w.fd, nil)
	if len(set.waits) == 0 {
		_ = set.file.SetReadDeadline(time.Now()) // the loop wakes and ends
	}
}

func control(op, fd int, ev *unix.EpollEvent) error {
	rc, err := set.file.SyscallConn()
	if err != nil {
		return err
	}
	var cerr error
	if err := rc.Control(func(epfd uintptr) { cerr = unix.EpollCtl(int(epfd), op, fd, ev) }); err != nil {
		return err
	}
	return os.NewSyscallError("epoll_ctl", cerr)
}

// loop hands ready files to their fn until none is parked.
func loop() {
	rc, err := set.file.SyscallConn()
	if err != nil {
		panic(err) // set.file is an open *os.File
	}
	var events [64]unix.EpollEvent
	var ready []*Wait
	for {
		ready = ready[:0]
		err := rc.Read(func(epfd uintptr) bool {
			n, err := unix.EpollWait(int(epfd), events[:], 0)
			if err != nil || n <= 0 {
				return false // nothing ready: Go's poller waits for the set
			}
			set.mu.Lock()
			for _, ev := range events[:n] {
				if w := set.waits[int(ev.Fd)]; w != nil && w.gen == ev.Pad {
					forgetLocked(w)
					ready = append(ready, w)
				}
			}
			set.mu.Unlock()
			return true
		})
		for _, w := range ready {
			go w.fn()
		}
		set.mu.Lock()
		if len(set.waits) == 0 {
			set.running = false
			set.mu.Unlock()
			return
		}
		if err != nil { // the deadline of a set that emptied, and filled again
			_ = set.file.SetReadDeadline(time.Time{})
		}
		set.mu.Unlock()
	}
}

// Parked reports how many files are parked.
func Parked() int {
	set.mu.Lock()
	defer set.mu.Unlock()
	return len(set.waits)
}
