package container

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"gateway/internal/notify"
	"gateway/sandbox"
)

// Config sets how the runtime treats its processes.
type Config struct {
	// StopGrace is the time between SIGTERM and SIGKILL.
	StopGrace time.Duration
	// Scrollback is how many bytes of each container's output are kept.
	Scrollback int
	// RestartBackoff is the first delay before a restart; it doubles with
	// each failed run, up to RestartBackoffMax.
	RestartBackoff, RestartBackoffMax time.Duration
	// AttachLagLimit is how long output waits for an attacher whose queue
	// is full before cutting it.
	AttachLagLimit time.Duration
	// Log receives lifecycle events; nil discards them.
	Log *slog.Logger
}

// DefaultConfig is what the gateway uses unless told otherwise.
func DefaultConfig() Config {
	return Config{StopGrace: 5 * time.Second, Scrollback: 1 << 20, RestartBackoff: time.Second, RestartBackoffMax: time.Minute,
		AttachLagLimit: time.Second}
}

// Runtime holds the containers. It is safe for concurrent use.
type Runtime struct {
	cfg       Config
	log       *slog.Logger
	sandboxes *sandbox.Registry
	exits     *exitWatcher // of every process the runtime starts

	changes notify.Signal // a container came, went, started or exited
	events  events        // the last things that happened to containers

	mu         sync.Mutex
	containers map[string]*Container
	closed     bool
}

// New returns an empty runtime whose containers run in sandboxes.
func New(cfg Config, sandboxes *sandbox.Registry) *Runtime {
	def := DefaultConfig()
	if cfg.RestartBackoff <= 0 {
		cfg.RestartBackoff = def.RestartBackoff
	}
	if cfg.RestartBackoffMax < cfg.RestartBackoff {
		cfg.RestartBackoffMax = max(def.RestartBackoffMax, cfg.RestartBackoff)
	}
	if cfg.AttachLagLimit <= 0 {
		cfg.AttachLagLimit = def.AttachLagLimit
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Runtime{cfg: cfg, log: log, sandboxes: sandboxes, exits: newExitWatcher(), containers: make(map[string]*Container)}
}

// Validate checks a spec without starting anything.
func Validate(spec Spec) error {
	if !sandbox.IDPattern.MatchString(spec.ID) {
		return fmt.Errorf("%w: id %q does not match %s", ErrInvalid, spec.ID, sandbox.IDPattern)
	}
	if spec.Sandbox != "" && !sandbox.IDPattern.MatchString(spec.Sandbox) {
		return fmt.Errorf("%w: sandbox %q does not match %s", ErrInvalid, spec.Sandbox, sandbox.IDPattern)
	}
	if len(spec.Command) > 0 {
		if err := CheckCommand(spec.Command); err != nil {
			return fmt.Errorf("%w: %v", ErrInvalid, err)
		}
	}
	for k, v := range spec.Env {
		if k == "" || strings.ContainsAny(k, "=\x00") {
			return fmt.Errorf("%w: env: bad variable name %q", ErrInvalid, k)
		}
		if strings.IndexByte(v, 0) >= 0 {
			return fmt.Errorf("%w: env: the value of %s holds a NUL byte", ErrInvalid, k)
		}
	}
	if spec.WorkingDir != "" && (!strings.HasPrefix(spec.WorkingDir, "/") || strings.IndexByte(spec.WorkingDir, 0) >= 0) {
		return fmt.Errorf("%w: workingDir %q: want an absolute path", ErrInvalid, spec.WorkingDir)
	}
	switch spec.RestartPolicy {
	case "", RestartNever, RestartOnFailure, RestartAlways:
	default:
		return fmt.Errorf("%w: restartPolicy %q: want never, on-failure or always", ErrInvalid, spec.RestartPolicy)
	}
	return nil
}

// CheckCommand reports what makes a command line impossible to run in any
// container: an empty program name, or a NUL byte, which no argument of
// execve can hold. (A command whose program is not found fails later,
// with ErrCannotStart.)
func CheckCommand(argv []string) error {
	if len(argv) == 0 || argv[0] == "" {
		return errors.New("command: the program name is empty")
	}
	for i, a := range argv {
		if strings.IndexByte(a, 0) >= 0 {
			return fmt.Errorf("command[%d] %q holds a NUL byte", i, a)
		}
	}
	return nil
}

// Create registers a container and starts its main process. The command
// must be found and the working directory must exist, or Create fails and
// nothing is registered.
func (r *Runtime) Create(spec Spec) (*Container, error) {
	if err := Validate(spec); err != nil {
		return nil, err
	}
	if spec.Sandbox == "" {
		spec.Sandbox = sandbox.HostID
	}
	sb, err := r.sandboxes.Get(spec.Sandbox)
	if err != nil {
		return nil, err
	}
	if len(spec.Command) == 0 {
		spec.Command = loginShell()
	}
	if spec.WorkingDir == "" {
		spec.WorkingDir = homeDir()
	}
	if spec.RestartPolicy == "" {
		spec.RestartPolicy = RestartNever
	}
	if fi, err := os.Stat(spec.WorkingDir); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("%w: workingDir %q is not a directory", ErrInvalid, spec.WorkingDir)
	}
	c := &Container{
		spec:    spec,
		env:     baseEnv(spec.Env),
		sb:      sb,
		rt:      r,
		log:     r.log.With("container", spec.ID),
		out:     newOutput(r.cfg.Scrollback, r.cfg.AttachLagLimit, nil),
		done:    make(chan struct{}),
		stdin:   make(chan []byte, stdinQueueLen),
		state:   Created,
		created: time.Now(),
	}
	c.stopped, c.stopNow = context.WithCancel(context.Background())
	c.ttyEnv = withTerm(c.env, spec.Env)
	if spec.TTY {
		c.out.term = newTerminal(DefaultSize)
	}
	env := c.env
	if spec.TTY {
		env = c.ttyEnv
	}
	if _, err := lookPath(spec.Command[0], env, spec.WorkingDir); err != nil {
		return nil, fmt.Errorf("%w: command: %w", ErrInvalid, err)
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, ErrClosed
	}
	if _, ok := r.containers[spec.ID]; ok {
		return nil, fmt.Errorf("%w: %q", ErrExists, spec.ID)
	}
	if now, err := r.sandboxes.Get(spec.Sandbox); err != nil || now != sb { // removed meanwhile (see RemoveSandbox)
		return nil, &sandbox.NotFoundError{ID: spec.Sandbox}
	}
	proc, err := c.startMain()
	if err != nil {
		return nil, fmt.Errorf("container %q: %w", spec.ID, err)
	}
	r.containers[spec.ID] = c
	r.changes.Notify()
	go c.supervise(proc) // owned by the container: stop waits on c.done
	return c, nil
}

// Get returns the container with the given id.
func (r *Runtime) Get(id string) (*Container, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if c, ok := r.containers[id]; ok {
		return c, nil
	}
	return nil, &NotFoundError{ID: id}
}

// List returns every container, by id.
func (r *Runtime) List() []*Container {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*Container, 0, len(r.containers))
	for _, c := range r.containers {
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b *Container) int { return strings.Compare(a.spec.ID, b.spec.ID) })
	return out
}

// Changed returns a channel closed at the next change: a container
// created, started, exited, restarted or removed.
func (r *Runtime) Changed() <-chan struct{} { return r.changes.C() }

// Changes counts the changes so far.
func (r *Runtime) Changes() uint64 { return r.changes.Gen() }

// Remove stops a container (SIGTERM, then SIGKILL after the grace period or
// when ctx ends) and forgets it.
func (r *Runtime) Remove(ctx context.Context, id string) error {
	c, err := r.Get(id)
	if err != nil {
		return err
	}
	err = c.stopAndWait(ctx)
	r.mu.Lock()
	if r.containers[id] == c {
		delete(r.containers, id)
	}
	r.mu.Unlock()
	r.changes.Notify()
	return err
}

// RemoveSandbox removes a sandbox that no container runs in (else
// sandbox.ErrInUse): in one step against Create, which could otherwise
// start a container in a sandbox removed meanwhile.
func (r *Runtime) RemoveSandbox(id string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range r.containers {
		if c.spec.Sandbox == id {
			return fmt.Errorf("%w: sandbox %q has containers: delete them first", sandbox.ErrInUse, id)
		}
	}
	return r.sandboxes.Remove(id)
}

// StateCounts returns how many containers are in each state.
func (r *Runtime) StateCounts() map[string]int {
	counts := map[string]int{}
	for _, c := range r.List() {
		counts[string(c.State())]++
	}
	return counts
}

// Shutdown stops every container and waits for them, and for the process
// groups still to be killed after their grace (of execs too), or for ctx.
func (r *Runtime) Shutdown(ctx context.Context) error {
	r.mu.Lock()
	r.closed = true
	r.mu.Unlock()
	var wg sync.WaitGroup
	errs := make([]error, 0)
	var mu sync.Mutex
	for _, c := range r.List() {
		wg.Go(func() {
			if err := c.stopAndWait(ctx); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if err := r.exits.waitKills(ctx); err != nil {
		errs = append(errs, fmt.Errorf("processes left to kill: %w", err))
	}
	return errors.Join(errs...)
}

func loginShell() []string {
	if sh := os.Getenv("SHELL"); sh != "" {
		return []string{sh, "-l"}
	}
	return []string{"/bin/sh", "-l"}
}

func homeDir() string {
	if h, err := os.UserHomeDir(); err == nil {
		if fi, err := os.Stat(h); err == nil && fi.IsDir() {
			return h
		}
	}
	return "/"
}
