package stream

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"sync"
	"syscall"
	"time"

	"gateway/container"
	"gateway/internal/chunkio"
	"gateway/metrics"
	"gateway/session"
	"gateway/stream/wsproto"
)

// Streams are the streams an exec or an attach asks for, and its web
// page options.
type Streams struct {
	Stdin  bool `json:"stdin"`
	Stdout bool `json:"stdout"`
	Stderr bool `json:"stderr"`
	TTY    bool `json:"tty"`
	// Flow turns on the web page's flow control (see wsproto.Ack).
	Flow bool `json:"flow,omitempty"`
}

// parseStreams reads the stream flags as the API server and the kubelet
// name them: stdin/input, stdout/output, stderr/error, tty; flags are true
// unless "0" or "false".
func parseStreams(q url.Values) Streams {
	return Streams{
		Stdin:  flag(q, "stdin", "input"),
		Stdout: flag(q, "stdout", "output"),
		Stderr: flag(q, "stderr", "error"),
		TTY:    flag(q, "tty", "tty"),
		Flow:   wsproto.ParseBool(q["flow"]),
	}
}

func flag(q url.Values, name, kubeletName string) bool {
	if v, ok := q[name]; ok {
		return wsproto.ParseBool(v)
	}
	return wsproto.ParseBool(q[kubeletName])
}

// validate checks the streams and normalizes them: with a tty, stderr is
// part of the pty's output, so it is turned off (as the kubelet does).
func (o *Streams) validate() error {
	if !o.Stdin && !o.Stdout && !o.Stderr {
		return badRequest("at least one of stdin, stdout or stderr must be requested")
	}
	if o.TTY {
		o.Stderr = false
	}
	return nil
}

// ExecOptions are the parameters of an exec: the query of a WebSocket
// request, or the JSON body that mints a single-use URL.
type ExecOptions struct {
	Command []string `json:"command"`
	Streams
}

// ParseExecQuery reads exec parameters: command (repeated) and the
// streams.
func ParseExecQuery(q url.Values) ExecOptions {
	return ExecOptions{Command: q["command"], Streams: parseStreams(q)}
}

// Validate checks the options and normalizes them (see Streams).
func (o *ExecOptions) Validate(needCommand bool) error {
	if needCommand && len(o.Command) == 0 {
		return badRequest("command is required: add one command parameter per argument, e.g. ?command=sh&command=-c&command=date")
	}
	if needCommand && o.Command[0] == "" {
		return badRequest("command: the program name is empty")
	}
	return o.Streams.validate()
}

// Exec serves an exec WebSocket: it validates the request, upgrades, and
// starts the stream, which runs the command in the container until it
// exits or the client leaves. An error means the request was refused
// before the upgrade and nothing was written. Exec returns once the stream
// runs.
func (s *Server) Exec(w http.ResponseWriter, r *http.Request, containerID string, opts ExecOptions) error {
	if err := opts.Validate(true); err != nil {
		return err
	}
	proto, err := s.negotiate(r, wsproto.ExecProtocols)
	if err != nil {
		return err
	}
	c, err := s.runtime.Get(containerID)
	if err != nil {
		return err
	}
	if st := c.State(); st != container.Running {
		return badRequest("container %q is %s: cannot exec into it", containerID, st)
	}
	p, err := s.open(w, r, session.Exec, containerID, proto, opts.Flow)
	if err != nil {
		return err
	}
	e := &execStream{p: p, c: c, opts: opts, log: p.log, km: p.km,
		sizeReady: make(chan struct{}, 1), stdin: newInputQueue()}
	s.serve(p, e.onFrame, e.run, func() (*int, bool) { return e.exitCode, e.failed })
	return nil
}

// execStream is one exec: readLoop feeds it client frames (onFrame), and
// run owns the process.
type execStream struct {
	p    *Pump
	c    *container.Container
	opts ExecOptions
	log  *slog.Logger
	km   *metrics.Kind

	sizeReady chan struct{} // a size arrived before the start (buffered, 1)
	stdin     *inputQueue   // client input, in order, with the end of input

	mu          sync.Mutex
	proc        *container.Process // nil until started, or when the start failed
	pendingSize *wsproto.TerminalSize

	// Used by readLoop only.
	resize    resizes
	stdinDone bool // the client closed stdin

	exitCode *int // set by run before it returns
	failed   bool // set by run: the process failed to start or to be waited for
}

// onFrame handles one client frame (readLoop). Input is queued for the
// process (see inputQueue); resizes apply at once.
func (e *execStream) onFrame(ctx context.Context, f wsproto.Frame) error {
	switch f.Channel {
	case wsproto.Stdin:
		e.p.sess.AddIn(len(f.Payload))
		e.km.BytesIn.Add(float64(len(f.Payload)))
		if e.opts.Stdin && !e.stdinDone {
			e.stdin.push(ctx, f.Payload)
		}
	case wsproto.Resize:
		if e.opts.TTY { // resize means nothing without a pty
			e.resize.handle(e.p, f.Payload, e.applySize)
		}
	case wsproto.Close:
		stdin, err := e.p.closesStdin(f)
		if err != nil {
			return err
		}
		if stdin && e.opts.Stdin && !e.stdinDone {
			e.stdinDone = true
			e.stdin.closeInput(ctx)
		}
	default:
		e.p.otherFrame(f)
	}
	return nil
}

// applySize resizes the pty, or holds the size for the start.
func (e *execStream) applySize(sz wsproto.TerminalSize) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.proc == nil {
		e.pendingSize = &sz
		select {
		case e.sizeReady <- struct{}{}:
		default:
		}
		return
	}
	if err := e.proc.Resize(container.Size{Cols: sz.Width, Rows: sz.Height}); err != nil {
		e.log.Warn("resize failed", "error", err)
	}
}

// run owns the process: it starts it (with a tty, at the client's first
// size if that comes within InitialSizeWait), pumps its output, reaps it,
// and finishes the stream with its status. When ctx ends first, the process
// is terminated.
func (e *execStream) run(ctx context.Context) error {
	defer e.stdin.close() // input that still comes is dropped
	ready := e.p.readyFrame(e.opts.Stdout, e.opts.Stderr)
	if !e.p.send(ctx, ready) {
		return nil
	}
	if e.opts.TTY {
		t := time.NewTimer(e.p.cfg.InitialSizeWait)
		select {
		case <-e.sizeReady:
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
	}
	if ctx.Err() != nil {
		return nil
	}

	e.mu.Lock()
	spec := container.ExecSpec{Command: e.opts.Command, TTY: e.opts.TTY, Stdin: e.opts.Stdin, Stdout: e.opts.Stdout, Stderr: e.opts.Stderr}
	if e.pendingSize != nil {
		spec.Size = container.Size{Cols: e.pendingSize.Width, Rows: e.pendingSize.Height}
	}
	proc, err := e.c.Exec(spec)
	e.proc = proc
	e.mu.Unlock()
	if err != nil {
		e.km.Error(metrics.ReasonStart)
		e.log.Warn("exec failed to start", "error", err)
		e.failed = true
		e.p.finish(ctx, wsproto.InternalError(err))
		return nil
	}
	stop := context.AfterFunc(ctx, proc.Terminate)
	defer stop()
	e.log.Debug("process started", "pid", proc.Pid())
	if proc.Stdin != nil {
		e.stdin.start(proc, e.log)
	}

	// stdout is read here; stderr, when separate, by a second goroutine.
	var stderr sync.WaitGroup
	if proc.Stderr != nil {
		stderr.Go(func() { e.p.logOutput(ctx, proc.Stderr, wsproto.Stderr, true) })
	}
	if proc.Stdout != nil {
		e.p.logOutput(ctx, proc.Stdout, wsproto.Stdout, e.opts.Stdout)
	}
	stderr.Wait()
	code, err := proc.Wait()
	// Closing the files ends a stdin write blocked on a child that keeps
	// the input open without reading it.
	proc.Close()
	e.stdin.close()
	if err != nil {
		e.failed = true
		e.p.finish(ctx, wsproto.InternalError(err))
		return nil
	}
	e.exitCode = &code
	st := wsproto.Success()
	if code != 0 {
		st = wsproto.ExitCode(code, e.opts.Command)
	}
	e.p.finish(ctx, st)
	return nil
}

// readyFrame is the empty frame that opens the stream, on the lowest
// channel the client reads: stdout, else stderr, else the error channel.
func (p *Pump) readyFrame(stdout, stderr bool) outFrame {
	switch {
	case stdout:
		return outFrame{ch: wsproto.Stdout}
	case stderr:
		return outFrame{ch: wsproto.Stderr}
	}
	return outFrame{ch: wsproto.Error}
}

// pumpOutput streams a process's output, or a socket's bytes, to the
// client until it ends, and returns why it ended (nil at end of file).
// Without deliver the bytes are read and dropped, so the process never
// blocks on them.
func (p *Pump) pumpOutput(ctx context.Context, src syscall.Conn, ch wsproto.Channel, deliver bool) error {
	err := chunkio.ReadAt(src, p.bufs, 1, func(buf []byte, n int) error {
		if !deliver {
			p.bufs.Put(buf)
			return nil
		}
		p.sess.RecordOut(buf[1 : 1+n])
		p.km.BytesOut.Add(float64(n))
		if !p.send(ctx, outFrame{ch: ch, b: buf[:1+n], headroom: true, pooled: true}) {
			return ctx.Err()
		}
		p.flow.sentBytes(n)
		if !p.flow.wait(ctx) { // the page is too far behind
			return ctx.Err()
		}
		return nil
	})
	if ctx.Err() != nil || errors.Is(err, os.ErrClosed) || errors.Is(err, net.ErrClosed) {
		return nil // the stream or the source was closed on purpose
	}
	return err
}

// logOutput pumps a process output and logs a failure.
func (p *Pump) logOutput(ctx context.Context, f *os.File, ch wsproto.Channel, deliver bool) {
	if err := p.pumpOutput(ctx, f, ch, deliver); err != nil {
		p.log.Warn("read process output", "channel", ch, "error", err)
	}
}
