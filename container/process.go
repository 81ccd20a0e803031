package container

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"gateway/internal/chunkio"
	"gateway/internal/ptyio"
)

// Size is a terminal size in character cells.
type Size struct{ Cols, Rows uint16 }

// DefaultSize is the size of a pty whose client has not said otherwise.
var DefaultSize = Size{Cols: 80, Rows: 24}

// ExecSpec describes a process to start in a container's context.
type ExecSpec struct {
	Command []string
	// TTY runs the process in a new pty: stdin, stdout and stderr are all
	// the pty, and Stdout reads everything it prints.
	TTY bool
	// Stdin keeps a writer to the process's input; without it the process
	// reads /dev/null (or a pty nobody types into).
	Stdin bool
	// Stdout and Stderr keep readers of the process's output; without them
	// it goes to /dev/null. Ignored with TTY.
	Stdout, Stderr bool
	// Size is the initial pty size; zero means DefaultSize.
	Size Size
}

// Process is a started process, the leader of a process group (with a
// tty, of a session). It is reaped as soon as it exits, whoever waits.
// Ending it ends its whole group: Terminate signals the group, and the
// SIGKILL after the grace period reaches whatever is left of it (and, with
// a tty, of its session), whatever the leader did meanwhile. Its files are
// non-blocking: a read blocked on Stdout or Stderr ends when the file is
// closed or its read deadline passes. The caller calls Close when done.
type Process struct {
	// Stdin writes to the process: the pty master with TTY, else a pipe;
	// nil when not requested.
	Stdin *os.File
	// Stdout reads the process's output (the pty master with TTY); nil when
	// not requested.
	Stdout *os.File
	// Stderr reads its error output; nil with TTY or when not requested.
	Stderr *os.File

	proc  *os.Process
	state *os.ProcessState // set by exit, before exited is closed
	pty   *os.File
	grace time.Duration
	exits *exitWatcher

	exited  chan struct{} // closed when the process has exited and been reaped
	waitErr error         // set before exited is closed

	mu          sync.Mutex
	afterExit   []*func() // see AfterExit; nil once exited
	terminating bool
	killTimer   *time.Timer // the SIGKILL after the grace; nil once it is done
	stdinClosed bool
}

// startProcess starts the program at path, with args (args[0] first),
// as spec asks, watched by exits. attr gives its directory and its
// environment, which must hold each variable once (os/exec's Cmd.Start
// copies the environment to remove duplicates on every start: ours are
// built from a map, so the processes start with os.StartProcess); start
// runs the given start in the right network namespace.
func startProcess(path string, args []string, attr os.ProcAttr, spec ExecSpec, grace time.Duration, exits *exitWatcher, start func(func() error) error) (_ *Process, err error) {
	p := &Process{grace: grace, exits: exits}
	var childEnds []*os.File
	defer func() {
		for _, f := range childEnds {
			f.Close() // the child has its copies, or failed to start
		}
		if err != nil {
			p.Close()
		}
	}()

	var stdio [3]*os.File // the child's 0, 1 and 2
	if spec.TTY {
		size := spec.Size
		if size.Cols == 0 || size.Rows == 0 {
			size = DefaultSize
		}
		ptmx, tty, err := ptyio.Open(size.Cols, size.Rows)
		if err != nil {
			return nil, err
		}
		p.pty = ptmx
		childEnds = append(childEnds, tty)
		stdio = [3]*os.File{tty, tty, tty}
		// A new session whose controlling terminal is the pty (child fd 0):
		// the process group gets the pty's signals, and ours reach it.
		attr.Sys = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
		if spec.Stdin {
			p.Stdin = ptmx
		}
		p.Stdout = ptmx
	} else {
		if spec.Stdin {
			r, w, err := os.Pipe()
			if err != nil {
				return nil, err
			}
			childEnds = append(childEnds, r)
			stdio[0], p.Stdin = r, w
		}
		if spec.Stdout {
			r, w, err := os.Pipe()
			if err != nil {
				return nil, err
			}
			childEnds = append(childEnds, w)
			stdio[1], p.Stdout = w, r
		}
		if spec.Stderr {
			r, w, err := os.Pipe()
			if err != nil {
				return nil, err
			}
			childEnds = append(childEnds, w)
			stdio[2], p.Stderr = w, r
		}
		if !spec.Stdin || !spec.Stdout || !spec.Stderr {
			null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
			if err != nil {
				return nil, err
			}
			childEnds = append(childEnds, null)
			for i, f := range stdio {
				if f == nil {
					stdio[i] = null
				}
			}
		}
		attr.Sys = &syscall.SysProcAttr{Setpgid: true}
	}
	attr.Files = stdio[:]
	if err := start(func() (err error) {
		p.proc, err = os.StartProcess(path, args, &attr)
		return err
	}); err != nil {
		return nil, err
	}
	p.exited = make(chan struct{})
	exits.watch(p.proc.Pid, p.exit)
	return p, nil
}

// DrainGrace is how long output is still read after a process exits, for
// children that keep it open.
const DrainGrace = 2 * time.Second

// exit runs when the process has exited, on the exit watcher's goroutine:
// it is reaped (at once: it is gone), output a lingering child keeps open
// is read for DrainGrace more, then its readers stop. If it was being
// terminated and nothing is left of it, the SIGKILL is called off.
func (p *Process) exit() {
	p.state, p.waitErr = p.proc.Wait()
	p.StopReadingAfter(DrainGrace)
	close(p.exited)
	p.mu.Lock()
	hooks := p.afterExit
	p.afterExit = nil
	if p.killTimer != nil {
		p.callOffKillIfGone()
	}
	p.mu.Unlock()
	for _, f := range hooks {
		if f != nil {
			(*f)()
		}
	}
}

// AfterExit arranges for fn to run, on the exit watcher's goroutine (it
// must not block), once the process has exited and been reaped; at once,
// on this goroutine, if it already has. stop cancels that, and reports
// whether it did, as for context.AfterFunc. A reader that waits for the
// process's output without a goroutine of its own (see package park)
// learns this way that the output may now end only at its deadline.
func (p *Process) AfterExit(fn func()) (stop func() bool) {
	p.mu.Lock()
	select {
	case <-p.exited:
		p.mu.Unlock()
		fn()
		return func() bool { return false }
	default:
	}
	key := &fn
	p.afterExit = append(p.afterExit, key)
	p.mu.Unlock()
	return func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		for i, f := range p.afterExit {
			if f == key {
				p.afterExit[i] = nil
				return true
			}
		}
		return false
	}
}

// Exited reports whether the process has exited and been reaped.
func (p *Process) Exited() bool {
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

// groupAlive reports whether a process of the leader's group is left.
// p.mu is held.
func (p *Process) groupAlive() bool {
	pgid := p.proc.Pid
	return !p.exits.watching(pgid) && unix.Kill(-pgid, 0) == nil // the id may be a new process's
}

// callOffKillIfGone calls off the pending SIGKILL once nothing is left:
// of the group, and with a tty of the session, which the exit watcher's
// sweep looks for (one scan of /proc for all the sessions that ask at
// about the same time). p.mu is held.
func (p *Process) callOffKillIfGone() {
	switch {
	case p.groupAlive():
	case p.pty == nil:
		p.stopKill()
	default:
		p.exits.sweep(p.proc.Pid, func(members []int) {
			if len(members) > 0 {
				return
			}
			p.mu.Lock()
			if p.killTimer != nil && !p.groupAlive() {
				p.stopKill()
			}
			p.mu.Unlock()
		})
	}
}

// stopKill calls off the pending SIGKILL. p.mu is held.
func (p *Process) stopKill() {
	if p.killTimer.Stop() {
		p.exits.killDone()
	}
	p.killTimer = nil
}

// Pid returns the process id, which is also its process group id.
func (p *Process) Pid() int { return p.proc.Pid }

// TTY reports whether the process runs in a pty.
func (p *Process) TTY() bool { return p.pty != nil }

// Resize sets the pty size; the kernel signals SIGWINCH to the foreground
// job. Without a pty it does nothing.
func (p *Process) Resize(s Size) error {
	if p.pty == nil {
		return nil
	}
	return ptyio.SetSize(p.pty, s.Cols, s.Rows)
}

// CloseStdin tells the process there is no more input: the pipe is closed,
// or with a pty the end-of-file character (^D) is typed, as a terminal
// would. Repeated calls do nothing.
func (p *Process) CloseStdin() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stdinClosed || p.Stdin == nil {
		return nil
	}
	p.stdinClosed = true
	if p.pty != nil {
		_, err := p.pty.Write([]byte{4})
		return err
	}
	return p.Stdin.Close()
}

// Terminate asks the process group to end: SIGHUP and SIGTERM with a pty
// (as when a terminal hangs up), SIGTERM without; SIGKILL follows after the
// grace period, to the group and, with a tty, the session, unless nothing
// is left of them by then. It returns at once, and does nothing once
// already terminating.
func (p *Process) Terminate() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.terminating {
		return
	}
	p.terminating = true
	pgid := p.proc.Pid
	if !p.Exited() || p.groupAlive() {
		if p.pty != nil {
			_ = unix.Kill(-pgid, unix.SIGHUP) // best effort: the group may be gone
		}
		_ = unix.Kill(-pgid, unix.SIGTERM)
	} else if p.pty == nil {
		return // nothing is left
	}
	p.exits.killPending()
	p.killTimer = time.AfterFunc(p.grace, func() {
		p.Kill()
		p.mu.Lock()
		p.killTimer = nil
		p.mu.Unlock()
		p.exits.killDone()
	})
	if p.Exited() {
		p.callOffKillIfGone()
	}
}

// Kill sends SIGKILL to the process group and, with a tty, to every
// process left in its session.
func (p *Process) Kill() {
	p.mu.Lock()
	defer p.mu.Unlock()
	pgid := p.proc.Pid
	if p.Exited() && p.exits.watching(pgid) {
		return // the leader is gone and its id is a new process's
	}
	_ = unix.Kill(-pgid, unix.SIGKILL)
	if p.pty != nil {
		p.exits.sweep(pgid, func(members []int) {
			for _, pid := range members {
				_ = unix.Kill(pid, unix.SIGKILL)
			}
		})
	}
}

// Wait waits for the process to exit and returns its exit code: its exit
// status, or 128+n when signal n ended it, as shells and container
// runtimes report. The wait parks the goroutine, not an OS thread: the exit
// watcher says when the process is gone. A process that has exited already
// (its output has ended, say) is reaped at once, on this goroutine, ahead
// of the watcher's SIGCHLD.
func (p *Process) Wait() (int, error) {
	select {
	case <-p.exited:
	default:
		p.exits.poll(p.proc.Pid)
		<-p.exited
	}
	if st := p.state; st != nil {
		return exitCode(st), nil
	}
	return -1, fmt.Errorf("wait: %w", p.waitErr)
}

// StopReadingAfter sets a read deadline on the output files. The process
// sets one of DrainGrace when it exits, so that output still held open by
// a lingering child does not keep a reader waiting forever; this moves it.
func (p *Process) StopReadingAfter(d time.Duration) {
	t := time.Now().Add(d)
	for _, f := range []*os.File{p.Stdout, p.Stderr} {
		if f != nil {
			_ = f.SetReadDeadline(t) // pipes and ptys support deadlines
		}
	}
}

// Close releases the process's files. When the leader has exited and
// members of its group are left (a background child), they are terminated
// as the leader would have been.
func (p *Process) Close() error {
	if p.exited != nil && p.Exited() {
		p.mu.Lock()
		left := !p.terminating && p.groupAlive()
		p.mu.Unlock()
		if left {
			p.Terminate()
		}
	}
	var errs []error
	closed := map[*os.File]bool{}
	for _, f := range []*os.File{p.pty, p.Stdin, p.Stdout, p.Stderr} {
		if f != nil && !closed[f] {
			closed[f] = true
			if err := f.Close(); err != nil && !errors.Is(err, os.ErrClosed) {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

func exitCode(st *os.ProcessState) int {
	if ws, ok := st.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return st.ExitCode()
}

// lookPath finds name as a shell would, using the PATH of env and, for
// relative names with a slash, the working directory dir.
func lookPath(name string, env []string, dir string) (string, error) {
	if strings.Contains(name, "/") {
		path := name
		if !filepath.IsAbs(path) {
			path = filepath.Join(dir, path)
		}
		if err := executable(path); err != nil {
			return "", fmt.Errorf("%q: %w", name, err)
		}
		return path, nil
	}
	pathEnv := "/usr/local/bin:/usr/bin:/bin"
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			pathEnv = v
		}
	}
	for d := range strings.SplitSeq(pathEnv, ":") {
		if d == "" {
			d = "."
		}
		if !filepath.IsAbs(d) {
			d = filepath.Join(dir, d)
		}
		path := filepath.Join(d, name)
		if executable(path) == nil {
			return path, nil
		}
	}
	return "", fmt.Errorf("%q: %w", name, exec.ErrNotFound)
}

// executable checks that path is a file with an execute bit. It is called
// for each directory of PATH on every exec, so it allocates nothing for a
// file that is not there (os.Stat allocates its result and its error).
func executable(path string) error {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		return fmt.Errorf("is a directory")
	}
	if st.Mode&0o111 == 0 {
		return os.ErrPermission
	}
	return nil
}

// Write writes to the process's input; see Stdin.
func (p *Process) Write(b []byte) (int, error) {
	if p.Stdin == nil {
		return 0, os.ErrClosed
	}
	return p.Stdin.Write(b)
}

// TryWrite writes what the process's input takes now, without blocking.
func (p *Process) TryWrite(b []byte) (int, error) {
	if p.Stdin == nil {
		return 0, os.ErrClosed
	}
	return chunkio.TryWrite(p.Stdin, b)
}
