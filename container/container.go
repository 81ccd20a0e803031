package container

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"time"

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

// Errors that callers tell apart.
var (
	ErrNotFound   = errors.New("container not found")
	ErrExists     = errors.New("container already exists")
	ErrInvalid    = errors.New("invalid container")
	ErrNotRunning = errors.New("container not running")
	ErrClosed     = errors.New("runtime shut down")
)

// NotFoundError names the missing container.
type NotFoundError struct{ ID string }

func (e *NotFoundError) Error() string                 { return fmt.Sprintf("container %q not found", e.ID) }
func (e *NotFoundError) Is(target error) bool          { return target == ErrNotFound }
func (e *NotFoundError) Resource() (kind, name string) { return "containers", e.ID }

// Spec describes a container: its main process and the context that
// processes exec'd into it share.
type Spec struct {
	ID      string `json:"id"`
	Sandbox string `json:"sandbox"`
	// Command is the main process. Empty means the user's login shell:
	// $SHELL -l, or /bin/sh -l when SHELL is unset.
	Command    []string          `json:"command"`
	Env        map[string]string `json:"env,omitempty"`
	WorkingDir string            `json:"workingDir,omitempty"`
	TTY        bool              `json:"tty"`
	Stdin      bool              `json:"stdin"`
}

// Info is a snapshot of a container, as the REST API shows it.
type Info struct {
	ID         string     `json:"id"`
	Sandbox    string     `json:"sandbox"`
	Command    []string   `json:"command"`
	WorkingDir string     `json:"workingDir"`
	TTY        bool       `json:"tty"`
	Stdin      bool       `json:"stdin"`
	State      State      `json:"state"`
	Pid        int        `json:"pid,omitempty"`
	ExitCode   *int       `json:"exitCode,omitempty"`
	Message    string     `json:"message,omitempty"`
	StartedAt  *time.Time `json:"startedAt,omitempty"`
	FinishedAt *time.Time `json:"finishedAt,omitempty"`
}

// Container is a supervised main process and the context of its execs. Its
// spec, environment and sandbox are static after construction.
type Container struct {
	spec Spec
	env  []string
	sb   *sandbox.Sandbox
	rt   *Runtime
	log  *slog.Logger
	out  *output
	done chan struct{} // closed when the supervisor has exited

	mu         sync.Mutex
	state      State
	proc       *Process // the running main process
	pid        int
	exitCode   *int
	message    string
	startedAt  time.Time
	finishedAt time.Time
	stopping   bool
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
		WorkingDir: c.spec.WorkingDir, TTY: c.spec.TTY, Stdin: c.spec.Stdin,
		State: c.state, Pid: c.pid, Message: c.message,
	}
	if c.exitCode != nil {
		code := *c.exitCode
		info.ExitCode = &code
	}
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
	if len(spec.Command) == 0 {
		return nil, fmt.Errorf("%w: empty command", ErrInvalid)
	}
	if st := c.State(); st != Running {
		return nil, fmt.Errorf("%w: container %q is %s", ErrNotRunning, c.spec.ID, st)
	}
	return c.start(spec)
}

func (c *Container) start(spec ExecSpec) (*Process, error) {
	env := c.env
	if spec.TTY {
		env = withTerm(env, c.spec.Env)
	}
	path, err := lookPath(spec.Command[0], env, c.spec.WorkingDir)
	if err != nil {
		return nil, fmt.Errorf("start %q: %w", spec.Command[0], err)
	}
	cmd := &exec.Cmd{Path: path, Args: slices.Clone(spec.Command), Dir: c.spec.WorkingDir, Env: env}
	p, err := startProcess(cmd, spec, c.rt.cfg.StopGrace, func(cmd *exec.Cmd) error {
		return c.sb.Do(cmd.Start)
	})
	if err != nil {
		return nil, fmt.Errorf("start %q: %w", spec.Command[0], err)
	}
	return p, nil
}

// startMain starts the main process; the container is running when it
// returns nil.
func (c *Container) startMain() (*Process, error) {
	proc, err := c.start(ExecSpec{
		Command: c.spec.Command, TTY: c.spec.TTY, Stdin: c.spec.Stdin, Stdout: true, Stderr: true,
	})
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.state, c.proc, c.pid, c.startedAt = Running, proc, proc.Pid(), time.Now()
	c.exitCode, c.message, c.finishedAt = nil, "", time.Time{}
	c.mu.Unlock()
	c.log.Info("container started", "pid", proc.Pid())
	return proc, nil
}

// supervise owns the running main process: it reads its output into the
// scrollback, and reaps it.
func (c *Container) supervise(proc *Process) {
	defer close(c.done)
	var readers sync.WaitGroup
	for st, f := range map[Stream]*os.File{Stdout: proc.Stdout, Stderr: proc.Stderr} {
		if f == nil {
			continue
		}
		readers.Go(func() {
			err := ReadChunks(f, heapBuffers{}, func(buf []byte, n int) error {
				c.out.publish(st, buf[:n])
				return nil
			})
			if err != nil && !errors.Is(err, os.ErrClosed) {
				c.log.Warn("container output", "error", err)
			}
		})
	}
	code, err := proc.Wait()
	proc.StopReadingAfter(drainGrace)
	readers.Wait()
	proc.Close()

	c.mu.Lock()
	c.state, c.proc, c.exitCode, c.finishedAt = Exited, nil, &code, time.Now()
	if err != nil {
		c.message = err.Error()
	}
	c.mu.Unlock()
	c.log.Info("container exited", "exit_code", code)
}

// stop terminates the main process and waits for the supervisor, or for
// ctx; then it kills the process group.
func (c *Container) stop(ctx context.Context) error {
	c.mu.Lock()
	c.stopping = true
	if c.proc != nil {
		c.proc.Terminate()
	}
	c.mu.Unlock()
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

// drainGrace is how long output is still read after a process exits, for
// children that keep its output open.
const drainGrace = 2 * time.Second

// heapBuffers allocates a fresh buffer per chunk: published chunks are
// shared, never reused.
type heapBuffers struct{}

func (heapBuffers) Get() []byte { return make([]byte, 32<<10) }
func (heapBuffers) Put([]byte)  {}

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
	return append(out, "TERM=xterm-256color")
}
