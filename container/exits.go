package container

import (
	"context"
	"os"
	"os/signal"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"gateway/internal/procfs"
)

// exitWatcher learns that child processes exited without a thread blocked
// in wait for each (os/exec's Wait blocks one OS thread per process until
// it exits). One goroutine waits for SIGCHLD and asks which children
// exited with waitid(WNOWAIT); the exited ones are handed to their
// callback, which reaps them at once. The goroutine runs only while some
// process is watched. Each Runtime owns one, for the processes it starts,
// and it also keeps count of the process groups still to be killed after
// their grace period, so that a shutdown can wait for them.
type exitWatcher struct {
	mu      sync.Mutex
	procs   map[int]func() // pid → called once when it exits
	sig     chan os.Signal // SIGCHLD, while the goroutine runs
	stop    chan struct{}  // closed to stop the goroutine
	running bool

	pendingKills int           // process groups to be killed after their grace (see Process.Terminate)
	killsDone    chan struct{} // closed when pendingKills falls to 0; nil when none waits

	sweeps     map[int][]func(members []int) // session id → what waits for its members
	sweepTimer *time.Timer                   // runs the next sweep; nil when none is due
}

func newExitWatcher() *exitWatcher { return &exitWatcher{procs: make(map[int]func())} }

// watch calls onExit (from the watcher's goroutine, or this one; it must
// not block) once pid has exited, and forgets pid. pid must be an
// unreaped child of this process.
func (w *exitWatcher) watch(pid int, onExit func()) {
	w.mu.Lock()
	if !w.running {
		w.sig, w.stop, w.running = make(chan os.Signal, 1), make(chan struct{}), true
		signal.Notify(w.sig, unix.SIGCHLD)
		go w.loop(w.sig, w.stop)
	}
	w.procs[pid] = onExit
	exited := w.checkLocked(pid, nil) // it may have exited before SIGCHLD was watched
	w.stopIfIdleLocked()
	w.mu.Unlock()
	for _, f := range exited {
		f()
	}
}

// poll hands pid to its callback now if it has exited (see watch), ahead
// of SIGCHLD.
func (w *exitWatcher) poll(pid int) {
	w.mu.Lock()
	exited := w.checkLocked(pid, nil)
	w.stopIfIdleLocked()
	w.mu.Unlock()
	for _, f := range exited {
		f()
	}
}

// watching reports whether pid is a live process of this watcher's.
func (w *exitWatcher) watching(pid int) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	_, ok := w.procs[pid]
	return ok
}

func (w *exitWatcher) loop(sig <-chan os.Signal, stop <-chan struct{}) {
	for {
		select {
		case <-sig:
			w.collect()
		case <-stop:
			return
		}
	}
}

// collect hands every exited child to its callback. It asks the kernel
// which children exited (waitid on any child, without reaping), so an
// exit costs the same with one process watched or thousands; each
// callback reaps its process, and the next ask finds the next one. A
// child it does not watch (started but not watched yet, or someone
// else's) would be found again and again: then it checks each watched
// process instead, as often as it must.
func (w *exitWatcher) collect() {
	last := 0
	for {
		var info unix.Siginfo
		err := unix.Waitid(unix.P_ALL, 0, &info, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil)
		if err != nil || info.Signo == 0 {
			break // no child has exited (or there are none)
		}
		pid := siginfoPid(&info)
		w.mu.Lock()
		onExit, ok := w.procs[pid]
		if !ok || pid == last { // not ours, or its callback did not reap it
			w.mu.Unlock()
			w.checkAll()
			return
		}
		delete(w.procs, pid)
		w.stopIfIdleLocked()
		w.mu.Unlock()
		onExit() // outside the lock: it reaps, and may signal
		last = pid
	}
}

// checkAll looks at each watched process in turn.
func (w *exitWatcher) checkAll() {
	var exited []func()
	w.mu.Lock()
	for pid := range w.procs {
		exited = w.checkLocked(pid, exited)
	}
	w.stopIfIdleLocked()
	w.mu.Unlock()
	for _, f := range exited {
		f()
	}
}

// siginfoPid returns si_pid of a child's siginfo: the first field of the
// union after three ints, which starts at a multiple of the pointer size.
func siginfoPid(info *unix.Siginfo) int {
	const ptr = unsafe.Sizeof(uintptr(0))
	off := (3*unsafe.Sizeof(int32(0)) + ptr - 1) &^ (ptr - 1)
	return int(*(*int32)(unsafe.Add(unsafe.Pointer(info), off)))
}

// stopIfIdleLocked stops the goroutine once no process is watched. w.mu
// is held.
func (w *exitWatcher) stopIfIdleLocked() {
	if w.running && len(w.procs) == 0 {
		signal.Stop(w.sig)
		close(w.stop)
		w.running = false
	}
}

// checkLocked forgets pid if it exited, and appends its onExit to
// exited. w.mu is held.
func (w *exitWatcher) checkLocked(pid int, exited []func()) []func() {
	onExit, ok := w.procs[pid]
	if !ok {
		return exited
	}
	// With WNOHANG, Linux leaves si_signo 0 while the child runs; any
	// error (ECHILD: reaped elsewhere) also means there is nothing to wait.
	var info unix.Siginfo
	err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil)
	if err == nil && info.Signo == 0 {
		return exited // still running
	}
	delete(w.procs, pid)
	return append(exited, onExit)
}

// sweepDelay gathers the sessions to look for into one scan of /proc
// (about a millisecond per hundred processes).
const sweepDelay = 20 * time.Millisecond

// sweep calls fn, within about sweepDelay, with the live processes of
// session sid. Calls made meanwhile share one scan. The pending kills wait
// for it: a shutdown does not end before the sessions are swept.
func (w *exitWatcher) sweep(sid int, fn func(members []int)) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.sweeps == nil {
		w.sweeps = make(map[int][]func([]int))
	}
	w.sweeps[sid] = append(w.sweeps[sid], fn)
	if w.sweepTimer == nil {
		w.pendingKills++ // the sweep itself
		w.sweepTimer = time.AfterFunc(sweepDelay, w.runSweep)
	}
}

func (w *exitWatcher) runSweep() {
	w.mu.Lock()
	sweeps := w.sweeps
	w.sweeps, w.sweepTimer = nil, nil
	w.mu.Unlock()
	members := map[int][]int{}
	for _, p := range procfs.All() {
		if _, ok := sweeps[p.Session]; ok && p.State != "Z" {
			members[p.Session] = append(members[p.Session], p.Pid)
		}
	}
	for sid, fns := range sweeps {
		for _, fn := range fns {
			fn(members[sid])
		}
	}
	w.killDone()
}

// killPending counts a process group to be killed after its grace; each
// call is matched by one of killDone.
func (w *exitWatcher) killPending() {
	w.mu.Lock()
	w.pendingKills++
	w.mu.Unlock()
}

func (w *exitWatcher) killDone() {
	w.mu.Lock()
	w.pendingKills--
	if w.pendingKills == 0 && w.killsDone != nil {
		close(w.killsDone)
		w.killsDone = nil
	}
	w.mu.Unlock()
}

// waitKills waits until no process group waits to be killed, or ctx ends.
func (w *exitWatcher) waitKills(ctx context.Context) error {
	w.mu.Lock()
	if w.pendingKills == 0 {
		w.mu.Unlock()
		return nil
	}
	if w.killsDone == nil {
		w.killsDone = make(chan struct{})
	}
	done := w.killsDone
	w.mu.Unlock()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
