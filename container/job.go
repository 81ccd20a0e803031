package container

import (
	"errors"
	"fmt"
	"slices"
	"sync"
)

// Job is a process exec'd into a container that clients share and that
// outlives them: its output goes to an output hub like the main process's
// (kept for clients that join later, with a tty its screen), and the input
// of every client is queued for it. Attach the first clients, then Run it;
// it ends when its process exits and its output is read.
type Job struct {
	c       *Container
	command []string
	proc    *Process
	out     *output
	stdin   chan []byte // never closed: a nil chunk closes the process's input
	done    chan struct{}

	mu   sync.Mutex
	size Size // of the pty

	// Set before done is closed.
	code int
	err  error
}

// JobConfig sets what a Job keeps.
type JobConfig struct {
	// Keep is how many bytes of output are kept for joins from an offset
	// (see Join.From).
	Keep int
	// OnOutput, when not nil, sees every chunk of output, in order, as it
	// is published (it must not block or keep the slice).
	OnOutput func(data []byte)
}

// StartJob starts a process in the container's context, as Exec does, and
// returns it as a Job: nothing of its output is lost until Run.
func (c *Container) StartJob(spec ExecSpec, cfg JobConfig) (*Job, error) {
	proc, err := c.Exec(spec)
	if err != nil {
		return nil, err
	}
	size := spec.Size
	if size.Cols == 0 || size.Rows == 0 {
		size = DefaultSize
	}
	j := &Job{c: c, command: slices.Clone(spec.Command), proc: proc, stdin: make(chan []byte, stdinQueueLen),
		done: make(chan struct{}), size: size}
	j.out = newOutput(cfg.Keep, c.rt.cfg.AttachLagLimit, nil)
	if spec.TTY {
		j.out.term = newTerminal(size)
	}
	j.out.onPublish = cfg.OnOutput
	return j, nil
}

// Run pumps the process until it exits and is reaped, then ends every
// attachment with its exit code. The caller owns the goroutine it runs on.
func (j *Job) Run() {
	code, err := j.out.pump(j.proc, j.stdin, j.c.log)
	j.code, j.err = code, err
	j.out.end(code, true)
	close(j.done)
}

// Attach subscribes to the job's output; see Container.Attach.
func (j *Job) Attach(join Join, onCut func()) (*Attachment, error) {
	return j.out.attach(join, onCut)
}

// CheckJoin reports whether Attach would refuse the join now.
func (j *Job) CheckJoin(join Join) error {
	j.out.mu.Lock()
	defer j.out.mu.Unlock()
	return j.out.check(join)
}

// Tail returns a copy of the last n bytes of output it keeps for joins
// (at most JobConfig.Keep), of every stream, as they came.
func (j *Job) Tail(n int) []byte { return j.out.tail(n) }

// Done is closed once the job has ended.
func (j *Job) Done() <-chan struct{} { return j.done }

// Wait waits for the end and returns the exit code.
func (j *Job) Wait() (int, error) {
	<-j.done
	return j.code, j.err
}

// HasStdin reports whether the process takes input.
func (j *Job) HasStdin() bool { return j.proc.Stdin != nil }

// Pid is the process's id.
func (j *Job) Pid() int { return j.proc.Pid() }

// TTY reports whether the process runs in a pty.
func (j *Job) TTY() bool { return j.proc.TTY() }

// Command is the process's command.
func (j *Job) Command() []string { return slices.Clone(j.command) }

// OutputBytes is how many bytes the process has printed.
func (j *Job) OutputBytes() int64 {
	j.out.mu.Lock()
	defer j.out.mu.Unlock()
	return j.out.total
}

// Size is the pty's size.
func (j *Job) Size() Size {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.size
}

// Resize sets the pty's size (nothing without a pty).
func (j *Job) Resize(s Size) error {
	if !j.proc.TTY() {
		return nil
	}
	j.mu.Lock()
	j.size = s
	j.mu.Unlock()
	j.out.resize(s)
	return j.proc.Resize(s)
}

// ErrJobEnded refuses input for a job that has ended.
var ErrJobEnded = errors.New("the process has ended")

// WriteStdin queues input for the process, as Container.WriteStdin does.
func (j *Job) WriteStdin(p []byte, done <-chan struct{}) error {
	if j.proc.Stdin == nil {
		return fmt.Errorf("%w: the process was started without stdin", ErrInvalid)
	}
	if p == nil {
		p = []byte{}
	}
	return j.queue(p, done)
}

// CloseStdin closes the process's input, after the input queued before.
func (j *Job) CloseStdin(done <-chan struct{}) error {
	if j.proc.Stdin == nil {
		return nil
	}
	return j.queue(nil, done)
}

func (j *Job) queue(p []byte, done <-chan struct{}) error {
	select {
	case j.stdin <- p:
		return nil
	case <-done:
		return ErrNotRunning
	case <-j.done:
		return ErrJobEnded
	}
}

// Terminate ends the process as Process.Terminate does (SIGHUP and SIGTERM
// with a pty, the SIGKILL after the grace).
func (j *Job) Terminate() { j.proc.Terminate() }
