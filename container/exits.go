package container

import (
	"os"
	"os/signal"
	"sync"

	"golang.org/x/sys/unix"
)

// exitWatcher learns that child processes exited without a thread blocked
// in wait for each (os/exec's Wait blocks one OS thread per process until
// it exits). One goroutine waits for SIGCHLD and checks the watched
// processes with waitid(WNOWAIT), which leaves them unreaped for their
// owner's Wait, which then returns at once. The goroutine runs only while
// some process is watched. Each Runtime owns one, for the processes it
// starts.
type exitWatcher struct {
	mu    sync.Mutex
	procs map[int]func() // pid → called once when it exits
	sig   chan os.Signal
	stop  chan struct{}
	done  chan struct{}
}

func newExitWatcher() *exitWatcher { return &exitWatcher{procs: make(map[int]func())} }

// watch calls onExit (from the watcher's goroutine; it must not block)
// once pid has exited. pid must be an unreaped child of this process.
func (w *exitWatcher) watch(pid int, onExit func()) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.procs) == 0 {
		w.sig = make(chan os.Signal, 1)
		w.stop = make(chan struct{})
		w.done = make(chan struct{})
		signal.Notify(w.sig, unix.SIGCHLD)
		go w.loop(w.sig, w.stop, w.done)
	}
	w.procs[pid] = onExit
	w.checkLocked(pid) // it may have exited before SIGCHLD was watched
}

// forget stops watching pid (after its Wait). The last forget stops the
// goroutine and waits for it.
func (w *exitWatcher) forget(pid int) {
	w.mu.Lock()
	_, ok := w.procs[pid]
	delete(w.procs, pid)
	if !ok || len(w.procs) > 0 {
		w.mu.Unlock()
		return
	}
	signal.Stop(w.sig)
	close(w.stop)
	done := w.done
	w.mu.Unlock()
	<-done
}

func (w *exitWatcher) loop(sig <-chan os.Signal, stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	for {
		select {
		case <-sig:
			w.mu.Lock()
			for pid := range w.procs {
				w.checkLocked(pid)
			}
			w.mu.Unlock()
		case <-stop:
			return
		}
	}
}

// checkLocked calls pid's onExit if it exited, once. w.mu is held.
func (w *exitWatcher) checkLocked(pid int) {
	onExit, ok := w.procs[pid]
	if !ok || onExit == nil {
		return
	}
	// With WNOHANG, Linux leaves si_signo 0 while the child runs; any
	// error (ECHILD: reaped elsewhere) also means there is nothing to wait.
	var info unix.Siginfo
	err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil)
	if err == nil && info.Signo == 0 {
		return // still running
	}
	w.procs[pid] = nil // exited (or not ours any more): call once
	onExit()
}
