package container

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"gateway/record"
	"gateway/sandbox"
)

// State is where a container is in its life.
type State string

// The container states.
const (
	Created State = "created" // registered, main process not started yet
	Running State = "running"
	Exited  State = "exited"
)

// States lists every state, for metrics that must exist from the start.
var States = []State{Created, Running, Exited}

// Errors that callers tell apart.
var (
	ErrNotFound = errors.New("container not found")
	ErrExists   = errors.New("container already exists")
	ErrInvalid  = errors.New("invalid container")
	// ErrCannotStart: the command cannot run (no such program, no
	// permission, a missing interpreter): the caller's mistake.
	ErrCannotStart = errors.New("cannot start")
	ErrNotRunning  = errors.New("container not running")
	// ErrStopped: the container was stopped while the work ran.
	ErrStopped = errors.New("container stopped")
	ErrClosed  = errors.New("runtime shut down")
)

// NotFoundError names the missing container.
type NotFoundError struct{ ID string }

func (e *NotFoundError) Error() string                 { return fmt.Sprintf("container %q not found", e.ID) }
func (e *NotFoundError) Is(target error) bool          { return target == ErrNotFound }
func (e *NotFoundError) Resource() (kind, name string) { return "containers", e.ID }

// Spec describes a container: its main process and the context that
// processes exec'd into it share.
// The same type is read from the config file (YAML) and the REST API
// (JSON).
type Spec struct {
	ID      string `json:"id" yaml:"id"`
	Sandbox string `json:"sandbox" yaml:"sandbox"`
	// Command is the main process. Empty means the user's login shell:
	// $SHELL -l, or /bin/sh -l when SHELL is unset.
	Command    []string          `json:"command" yaml:"command"`
	Env        map[string]string `json:"env,omitempty" yaml:"env"`
	WorkingDir string            `json:"workingDir,omitempty" yaml:"workingDir"`
	TTY        bool              `json:"tty" yaml:"tty"`
	Stdin      bool              `json:"stdin" yaml:"stdin"`
	// RestartPolicy says when the main process is started again after it
	// exits: "never" (the default), "on-failure" (non-zero exit) or
	// "always", with exponential backoff.
	RestartPolicy string `json:"restartPolicy,omitempty" yaml:"restartPolicy"`
	// Record says whether its exec and attach sessions are recorded: true,
	// false, or required (a session that cannot be recorded is refused or
	// ended); unset follows the sandbox, then the server.
	Record record.Mode `json:"record,omitempty" yaml:"record"`
}

// Restart policies.
const (
	RestartNever     = "never"
	RestartOnFailure = "on-failure"
	RestartAlways    = "always"
)

// Info is a snapshot of a container, as the REST API shows it.
type Info struct {
	ID            string     `json:"id"`
	Sandbox       string     `json:"sandbox"`
	Command       []string   `json:"command"`
	WorkingDir    string     `json:"workingDir"`
	TTY           bool       `json:"tty"`
	Stdin         bool       `json:"stdin"`
	RestartPolicy string     `json:"restartPolicy"`
	State         State      `json:"state"`
	Pid           int        `json:"pid,omitempty"`
	Restarts      int        `json:"restarts"`
	OutputBytes   int64      `json:"outputBytes"` // all the main process ever printed
	ExitCode      *int       `json:"exitCode,omitempty"`
	Message       string     `json:"message,omitempty"`
	StartedAt     *time.Time `json:"startedAt,omitempty"`
	FinishedAt    *time.Time `json:"finishedAt,omitempty"`
}

// Container is a supervised main process and the context of its execs. Its
// spec, environment and sandbox are static after construction.
type Container struct {
	spec    Spec
	env     []string
	ttyEnv  []string // env with TERM, for processes in a pty
	sb      *sandbox.Sandbox
	rt      *Runtime
	log     *slog.Logger
	out     *output
	done    chan struct{} // closed when the supervisor has exited
	created time.Time

	mu         sync.Mutex
	state      State
	proc       *Process // the running main process
	pid        int
	exitCode   *int
	message    string
	startedAt  time.Time
	finishedAt time.Time
	restarts   int
	size       Size // the pty's, kept for the next run
	stopping   bool
	stopped    context.Context // done when the container is being stopped
	stopNow    context.CancelFunc

	// stdin carries attachers' input to the main process, written by one
	// goroutine per run, so that no attacher blocks on a process that does
	// not read. Never closed.
	stdin chan []byte
}

// ID returns the container id.
func (c *Container) ID() string { return c.spec.ID }

// Spec returns the container's spec, with defaults filled in.
func (c *Container) Spec() Spec {
	s := c.spec
	s.Command = slices.Clone(s.Command)
	s.Env = maps.Clone(s.Env)
	return s
}

// Created is when the container was created.
func (c *Container) Created() time.Time { return c.created }

// Sandbox returns the sandbox the container runs in.
func (c *Container) Sandbox() *sandbox.Sandbox { return c.sb }

// State reports the container's state.
func (c *Container) State() State {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state
}

// Info returns a snapshot of the container.
func (c *Container) Info() Info {
	c.mu.Lock()
	defer c.mu.Unlock()
	info := Info{
		ID: c.spec.ID, Sandbox: c.spec.Sandbox, Command: slices.Clone(c.spec.Command),
		WorkingDir: c.spec.WorkingDir, TTY: c.spec.TTY, Stdin: c.spec.Stdin, RestartPolicy: c.spec.RestartPolicy,
		State: c.state, Pid: c.pid, Message: c.message, Restarts: c.restarts,
	}
	if c.exitCode != nil {
		code := *c.exitCode
		info.ExitCode = &code
	}
	c.out.mu.Lock()
	info.OutputBytes = c.out.total
	c.out.mu.Unlock()
	if !c.startedAt.IsZero() {
		t := c.startedAt
		info.StartedAt = &t
	}
	if !c.finishedAt.IsZero() {
		t := c.finishedAt
		info.FinishedAt = &t
	}
	return info
}

// Exec starts a process in the container's context: its sandbox's network,
// working directory and environment. The container must be running.
func (c *Container) Exec(spec ExecSpec) (*Process, error) {
	if err := CheckCommand(spec.Command); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	c.mu.Lock()
	st, stopping := c.state, c.stopping
	c.mu.Unlock()
	switch {
	case stopping:
		return nil, fmt.Errorf("%w: container %q is stopping", ErrNotRunning, c.spec.ID)
	case st != Running:
		return nil, fmt.Errorf("%w: container %q is %s", ErrNotRunning, c.spec.ID, st)
	}
	return c.start(spec)
}

func (c *Container) start(spec ExecSpec) (*Process, error) {
	env := c.env
	if spec.TTY {
		env = c.ttyEnv
	}
	path, err := lookPath(spec.Command[0], env, c.spec.WorkingDir)
	if err != nil {
		return nil, fmt.Errorf("%w %s", ErrCannotStart, err)
	}
	attr := os.ProcAttr{Dir: c.spec.WorkingDir, Env: env}
	p, err := startProcess(path, spec.Command, attr, spec, c.rt.cfg.StopGrace, c.rt.exits, c.sb.Do)
	if err != nil {
		return nil, startError(spec.Command[0], path, err)
	}
	return p, nil
}

// startError says why a program that was found did not start: the
// caller's mistake (ErrCannotStart) when the kernel refused the program
// itself, the gateway's own fault otherwise.
func startError(name, path string, err error) error {
	for _, e := range []syscall.Errno{syscall.ENOENT, syscall.EACCES, syscall.ENOEXEC, syscall.ENOTDIR, syscall.ELOOP, syscall.E2BIG, syscall.ETXTBSY} {
		if !errors.Is(err, e) {
			continue
		}
		if e == syscall.ENOENT { // the file exists: its interpreter does not
			if interp := interpreter(path); interp != "" {
				return fmt.Errorf("%w %q: its interpreter %s is missing", ErrCannotStart, name, interp)
			}
		}
		return fmt.Errorf("%w %q: %v", ErrCannotStart, name, e)
	}
	return fmt.Errorf("start %q: %w", name, err)
}

// interpreter is the program named by a script's #! line, or "".
func interpreter(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	b := make([]byte, 256)
	n, _ := f.Read(b)
	line, _, _ := strings.Cut(string(b[:n]), "\n")
	if rest, ok := strings.CutPrefix(line, "#!"); ok {
		if fields := strings.Fields(rest); len(fields) > 0 {
			return fields[0]
		}
	}
	return ""
}

// testHookStarting, when set, runs as startMain is about to fork.
var testHookStarting func(*Container)

// startMain starts the main process; the container is running when it
// returns nil. A process started while the container was being stopped
// is terminated at once: terminate found no process to signal.
func (c *Container) startMain() (*Process, error) {
	c.mu.Lock()
	size := c.size
	c.mu.Unlock()
	if testHookStarting != nil {
		testHookStarting(c)
	}
	proc, err := c.start(ExecSpec{
		Command: c.spec.Command, TTY: c.spec.TTY, Stdin: c.spec.Stdin, Stdout: true, Stderr: true, Size: size,
	})
	if err != nil {
		return nil, err
	}
	c.out.begin()
	c.mu.Lock()
	c.state, c.proc, c.pid, c.startedAt = Running, proc, proc.Pid(), time.Now()
	c.exitCode, c.message, c.finishedAt = nil, "", time.Time{}
	if c.stopping {
		proc.Terminate()
	}
	c.mu.Unlock()
	c.rt.changes.Notify()
	c.log.Info("container started", "pid", proc.Pid())
	c.event(false, "Started", "Started container %s", c.spec.ID)
	return proc, nil
}

// supervise owns the main process: it reads its output into the
// scrollback and to attachers, reaps it, and starts it again as the
// restart policy says, until the container is stopped. It exits by
// closing c.done.
func (c *Container) supervise(proc *Process) {
	defer close(c.done)
	failures := 0
	for {
		started := time.Now()
		code := c.runMain(proc)
		restart := c.shouldRestart(code)
		c.out.end(code, !restart)
		if !restart {
			return
		}
		if time.Since(started) >= stableRun {
			failures = 0 // a run that lasted resets the backoff
		}
		for proc = nil; proc == nil; {
			if !c.backoff(&failures) {
				c.out.end(code, true) // stopped: attachers that came meanwhile get the last exit
				return
			}
			var err error
			if proc, err = c.startMain(); err != nil {
				code = 127
				c.recordExit(code, err.Error())
				c.log.Warn("container failed to restart", "error", err)
				c.event(true, "Failed", "Error: %v", err)
				if !c.shouldRestart(code) {
					c.out.end(code, true)
					return
				}
			}
		}
		c.mu.Lock()
		c.restarts++
		c.mu.Unlock()
		c.rt.changes.Notify()
	}
}

// backoff waits before a restart: RestartBackoff doubled for each failure
// so far, up to RestartBackoffMax. It returns false if the container is
// stopped meanwhile.
func (c *Container) backoff(failures *int) bool {
	delay := min(c.rt.cfg.RestartBackoff<<min(*failures, 16), c.rt.cfg.RestartBackoffMax)
	*failures++
	c.log.Info("container restarting", "in", delay, "restarts", c.restartCount()+1)
	c.event(true, "BackOff", "Back-off restarting failed container %s in pod %s", c.spec.ID, c.spec.Sandbox)
	t := time.NewTimer(delay)
	defer t.Stop()
	select {
	case <-c.stopped.Done():
		return false
	case <-t.C:
		return true
	}
}

// stableRun is how long a run must last to reset the restart backoff.
const stableRun = 10 * time.Second

// runMain pumps one run of the main process until it exits and is reaped,
// and returns its exit code.
func (c *Container) runMain(proc *Process) int {
	code, err := c.out.pump(proc, c.stdin, c.log)
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	c.recordExit(code, msg)
	c.log.Info("container exited", "exit_code", code)
	return code
}

func (c *Container) recordExit(code int, msg string) {
	c.mu.Lock()
	c.state, c.proc, c.exitCode, c.message, c.finishedAt = Exited, nil, &code, msg, time.Now()
	c.mu.Unlock()
	c.rt.changes.Notify()
}

func (c *Container) restartCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.restarts
}

func (c *Container) shouldRestart(code int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopping {
		return false
	}
	switch c.spec.RestartPolicy {
	case RestartAlways:
		return true
	case RestartOnFailure:
		return code != 0
	}
	return false
}

// stdinQueueLen bounds the input chunks waiting for the main process.
const stdinQueueLen = 16

// WriteStdin queues input for the main process; it reaches the process
// whole, never interleaved with other writers' input. It waits while the
// queue is full, until done is closed. p must not be modified afterwards.
func (c *Container) WriteStdin(p []byte, done <-chan struct{}) error {
	if !c.spec.Stdin {
		return fmt.Errorf("%w: container %q was started without stdin", ErrInvalid, c.spec.ID)
	}
	select {
	case c.stdin <- p:
		return nil
	case <-done:
		return ErrNotRunning
	case <-c.stopped.Done():
		return fmt.Errorf("%w: container %q is stopping", ErrNotRunning, c.spec.ID)
	}
}

// Resize sets the size of the main process's pty, if it has one (and of
// the runs after it).
func (c *Container) Resize(s Size) error {
	if !c.spec.TTY {
		return nil
	}
	c.mu.Lock()
	proc := c.proc
	c.size = s
	c.mu.Unlock()
	c.out.resize(s)
	if proc == nil {
		return nil
	}
	return proc.Resize(s)
}

// TTY reports whether the main process runs in a pty.
func (c *Container) TTY() bool { return c.spec.TTY }

// Command is the main process's command.
func (c *Container) Command() []string { return slices.Clone(c.spec.Command) }

// terminate stops the container: no more restarts, and the main process
// gets SIGTERM (SIGKILL after the grace period).
func (c *Container) terminate() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.stopping {
		c.stopping = true
		c.stopNow()
		if c.proc != nil {
			c.event(false, "Killing", "Stopping container %s", c.spec.ID)
		}
	}
	if c.proc != nil {
		c.proc.Terminate()
	}
}

// stopAndWait terminates the container and waits for the supervisor, or
// for ctx; then it kills the process group and waits.
func (c *Container) stopAndWait(ctx context.Context) error {
	c.terminate()
	select {
	case <-c.done:
		return nil
	case <-ctx.Done():
	}
	c.mu.Lock()
	if c.proc != nil {
		c.proc.Kill()
	}
	c.mu.Unlock()
	<-c.done
	return fmt.Errorf("stop container %q: %w", c.spec.ID, ctx.Err())
}

// baseEnv is the environment processes inherit: the gateway's own, without
// its configuration (GATEWAY_TOKEN must not leak into shells), plus the
// container's variables.
func baseEnv(extra map[string]string) []string {
	m := map[string]string{}
	for _, kv := range os.Environ() {
		k, v, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(k, "GATEWAY_") {
			m[k] = v
		}
	}
	maps.Copy(m, extra)
	out := make([]string, 0, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		out = append(out, k+"="+m[k])
	}
	return out
}

// Term is the TERM of its ptys.
func (c *Container) Term() string {
	if t, ok := c.spec.Env["TERM"]; ok {
		return t
	}
	return defaultTerm
}

const defaultTerm = "xterm-256color"

// withTerm sets TERM for a pty unless the container chose its own.
func withTerm(env []string, own map[string]string) []string {
	if _, ok := own["TERM"]; ok {
		return env
	}
	out := make([]string, 0, len(env)+1)
	for _, kv := range env {
		if !strings.HasPrefix(kv, "TERM=") {
			out = append(out, kv)
		}
	}
	return append(out, "TERM="+defaultTerm)
}
