package stream

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"gateway/container"
	"gateway/internal/chunkio"
	"gateway/internal/park"
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
	// Info asks for the session information frame (see wsproto.Info).
	Info bool `json:"info,omitempty"`
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
		Info:   wsproto.ParseBool(q["info"]),
	}
}

func flag(q url.Values, name, kubeletName string) bool {
	if v, ok := q[name]; ok {
		return wsproto.ParseBool(v)
	}
	return wsproto.ParseBool(q[kubeletName])
}

// validate normalizes the streams and checks them, as the kubelet does:
// with a tty, stderr is part of the pty's output, so it is turned off, and
// then at least one stream must be left.
func (o *Streams) validate() error {
	if o.TTY {
		o.Stderr = false
	}
	if !o.Stdin && !o.Stdout && !o.Stderr {
		return badRequest("at least one of stdin, stdout or stderr must be requested (with a tty, stderr is stdout)")
	}
	return nil
}

// ExecOptions are the parameters of an exec: the query of a WebSocket
// request, or the JSON body that mints a single-use URL.
type ExecOptions struct {
	Command []string `json:"command"`
	Streams
	// Detach, when positive, keeps the process running for that long
	// after its last client leaves (see Server.Join); the server's
	// Config.MaxDetach caps it. Without it the process ends with its
	// client, as in the kubelet.
	Detach Duration `json:"detach,omitempty"`
}

// ParseExecQuery reads exec parameters: command (repeated), the streams,
// and detach (a duration: "90s", "1h", or seconds).
func ParseExecQuery(q url.Values) ExecOptions {
	o := ExecOptions{Command: q["command"], Streams: parseStreams(q)}
	if v := q.Get("detach"); v != "" {
		o.Detach.parse(v)
	}
	return o
}

// Duration is a duration given as Go writes them ("90s", "1h30m") or in
// seconds, in a query or in JSON (a string or a number).
type Duration struct {
	time.Duration
	err error // why the text did not parse
}

func (d *Duration) parse(s string) {
	if n, err := strconv.ParseFloat(s, 64); err == nil {
		if !(math.Abs(n) < maxSeconds) { // also NaN and ±Inf, which ParseFloat reads
			d.err = fmt.Errorf("%q seconds is out of range", s)
			return
		}
		d.Duration = time.Duration(n * float64(time.Second))
	} else if d.Duration, err = time.ParseDuration(s); err != nil {
		d.err = fmt.Errorf("%q is not a duration (say 90s, 15m or 1h)", s)
	}
	if d.err == nil && d.Duration < 0 {
		d.err = fmt.Errorf("%q is negative", s)
	}
}

// maxSeconds bounds a duration given in seconds: a time.Duration holds
// about 292 years.
const maxSeconds = float64(math.MaxInt64 / time.Second)

// UnmarshalJSON reads "90s" or 90.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		var n float64
		if err := json.Unmarshal(b, &n); err != nil {
			return fmt.Errorf("a duration is a string such as \"15m\" or a number of seconds")
		}
		s = strconv.FormatFloat(n, 'f', -1, 64)
	}
	d.parse(s)
	return d.err
}

// MarshalJSON writes the duration as Go does.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.Duration.String()) }

// Validate checks the options and normalizes them (see Streams).
func (o *ExecOptions) Validate(needCommand bool) error {
	if needCommand && len(o.Command) == 0 {
		return badRequest("command is required: add one command parameter per argument, e.g. ?command=sh&command=-c&command=date")
	}
	if needCommand {
		if err := container.CheckCommand(o.Command); err != nil {
			return badRequest("%v", err)
		}
	}
	if o.Detach.err != nil {
		return badRequest("detach: %v", o.Detach.err)
	}
	return o.Streams.validate()
}

// Exec serves an exec WebSocket: it validates the request, upgrades, and
// starts the stream, which runs the command in the container until it
// exits or the client leaves. An error means the request was refused
// before the upgrade and nothing was written. Exec returns once the stream
// runs.
func (s *Server) Exec(w http.ResponseWriter, r *http.Request, containerID string, opts ExecOptions) error {
	c, err := s.ExecTarget(containerID, &opts)
	if err != nil {
		return err
	}
	cl, err := s.openStream(w, r, session.Exec, containerID, opts.Streams)
	if err != nil {
		return err
	}
	cl.command = opts.Command
	cl.primeReady(opts.Stdout, opts.Stderr)
	if opts.Detach.Duration > 0 && s.cfg.MaxDetach > 0 {
		s.serveShared(cl, c, opts)
		return nil
	}
	e := &execStream{client: cl, c: c, opts: opts, stdin: newInputQueue()}
	s.serve(cl, e.onFrame, e.run)
	return nil
}

// ExecTarget validates opts (see Validate) and returns the container they
// may exec into: everything about an exec that can be checked before the
// upgrade.
func (s *Server) ExecTarget(containerID string, opts *ExecOptions) (*container.Container, error) {
	if err := opts.Validate(true); err != nil {
		return nil, err
	}
	c, err := s.runtime.Get(containerID)
	if err != nil {
		return nil, err
	}
	if st := c.State(); st != container.Running {
		return nil, badRequest("container %q is %s: cannot exec into it", containerID, st)
	}
	return c, nil
}

// execStream is one exec: the transport feeds it client frames (onFrame),
// and run owns the process.
type execStream struct {
	*client
	c     *container.Container
	opts  ExecOptions
	stdin *inputQueue // client input, in order, with the end of input

	mu          sync.Mutex
	proc        *container.Process // nil until started, or when the start failed
	pendingSize *wsproto.TerminalSize

	// Used by onFrame only.
	resize    resizes
	stdinDone bool // the client closed stdin
}

// onFrame handles one client frame. Input is queued for the process (see
// inputQueue); resizes apply at once.
func (e *execStream) onFrame(ctx context.Context, f wsproto.Frame) error {
	switch f.Channel {
	case wsproto.Stdin:
		if e.opts.Stdin && !e.stdinDone { // else dropped: not the session's input
			e.input(f.Payload)
			e.stdin.push(ctx, f.Payload)
		}
	case wsproto.Resize:
		if e.opts.TTY { // resize means nothing without a pty
			e.resize.handle(e.client, f.Payload, e.applySize)
		}
	case wsproto.Close:
		stdin, err := e.closesStdin(f)
		if err != nil {
			return err
		}
		if stdin && e.opts.Stdin && !e.stdinDone {
			e.stdinDone = true
			e.stdin.closeInput(ctx)
		}
	default:
		e.otherFrame(f)
	}
	return nil
}

// applySize resizes the pty, or holds the size for the start.
func (e *execStream) applySize(sz wsproto.TerminalSize) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.proc == nil {
		e.pendingSize = &sz
		return
	}
	if err := e.proc.Resize(container.Size{Cols: sz.Width, Rows: sz.Height}); err != nil {
		e.log.Warn("resize failed", "error", err)
	}
}

// run owns the process: it starts it at once (with a tty, at the size the
// client has already sent, if any: later sizes apply as they come, as in
// the kubelet), pumps its output, reaps it, and finishes the stream with
// its status. When ctx ends first, the process is terminated. Over a
// transport that lets work rest, run returns once the process is quiet,
// and the rest goes on on goroutines of its own (see readOutput).
func (e *execStream) run(ctx context.Context) error {
	proc := e.start(ctx)
	if proc == nil {
		e.stdin.close() // input that still comes is dropped
		return nil
	}
	stop := context.AfterFunc(ctx, proc.Terminate)
	e.log.Debug("process started", "pid", proc.Pid())
	if proc.Stdin != nil {
		e.stdin.start(proc, e.log)
	}
	e.readOutput(ctx, proc, func() { e.end(ctx, proc, stop) })
	return nil
}

// start starts the process, or reports why it could not and returns nil.
func (e *execStream) start(ctx context.Context) *container.Process {
	if !e.ready(ctx, e.opts.Stdout, e.opts.Stderr) {
		return nil
	}
	if e.opts.TTY {
		e.SyncInput(ctx)
	}
	if ctx.Err() != nil {
		return nil
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	spec := container.ExecSpec{Command: e.opts.Command, TTY: e.opts.TTY, Stdin: e.opts.Stdin, Stdout: e.opts.Stdout, Stderr: e.opts.Stderr}
	if e.pendingSize != nil {
		spec.Size = container.Size{Cols: e.pendingSize.Width, Rows: e.pendingSize.Height}
	}
	if err := e.record(e.c, spec.Command, spec.TTY, spec.Size); err != nil {
		e.fail(ctx, err)
		return nil
	}
	proc, err := e.c.Exec(spec)
	if err != nil {
		e.startFailed(ctx, err)
		return nil
	}
	e.proc = proc
	return proc
}

// end reaps the process, whose output has ended, and finishes the stream
// with its status.
func (e *execStream) end(ctx context.Context, proc *container.Process, stop func() bool) {
	code, err := proc.Wait()
	stop() // the leader is gone: Close takes care of what it left
	// Closing the files ends a stdin write blocked on a child that keeps
	// the input open without reading it.
	proc.Close()
	e.stdin.close()
	if err != nil {
		e.fail(ctx, err)
		return
	}
	e.exited(&code)
	st := wsproto.Success()
	if code != 0 {
		st = wsproto.ExitCode(code, e.opts.Command)
	}
	e.Finish(ctx, &st)
}

// readOutput streams the process's stdout and, when separate, stderr to
// the client, and calls then once both have ended. Over a transport that
// lets work rest (the WebSocket Pump), each reader ends its goroutine
// while the process is quiet (see restingOutput); elsewhere stdout is read
// on this goroutine and stderr on a second one, and readOutput returns
// after then.
func (e *execStream) readOutput(ctx context.Context, proc *container.Process, then func()) {
	type output struct {
		f       *os.File
		ch      wsproto.Channel
		deliver bool
	}
	var outs []output
	if proc.Stdout != nil {
		outs = append(outs, output{proc.Stdout, wsproto.Stdout, e.opts.Stdout})
	}
	if proc.Stderr != nil {
		outs = append(outs, output{proc.Stderr, wsproto.Stderr, true})
	}
	if len(outs) == 0 {
		then()
		return
	}
	h, rests := e.t.(interface{ hold() func() })
	if !rests {
		var wg sync.WaitGroup
		for _, o := range outs[1:] { // stderr, when separate, on a goroutine of its own
			wg.Go(func() { e.logOutput(ctx, o.f, o.ch, o.deliver) })
		}
		e.logOutput(ctx, outs[0].f, outs[0].ch, outs[0].deliver)
		wg.Wait()
		then()
		return
	}
	var left atomic.Int32
	left.Store(int32(len(outs)))
	read := func(o output, release func()) {
		e.restingOutput(ctx, proc, o.f, o.ch, o.deliver, func() {
			if left.Add(-1) == 0 {
				then()
			}
			release()
		})
	}
	// restingOutput returns once its output rests or ends: stderr, when
	// separate, starts on a goroutine of its own, or a busy stdout would
	// keep it unread.
	for _, o := range outs[1:] {
		release := h.hold()
		go read(o, release)
	}
	read(outs[0], h.hold())
}

// restingOutput is logOutput for a process's output f that holds no
// goroutine while the process is quiet: once f has had nothing to read
// for restAfter (to 2×restAfter: the wait starts again after output), it
// is parked (package park) and a new goroutine reads on when output
// comes, f ends, or the process exits (a child may then keep f open: it
// is read the usual way, to the deadline the exit set). done runs once
// the output has ended.
func (e *execStream) restingOutput(ctx context.Context, proc *container.Process, f *os.File, ch wsproto.Channel, deliver bool, done func()) {
	emit := e.emitter(ctx, ch, deliver)
	var rest park.Slot
	stopExit := proc.AfterExit(rest.End) // wakes a resting f; at once if it has exited
	var step func()
	step = func() {
		for {
			out := false
			quiet, err := chunkio.ReadFor(f, e.bufs, 1, restAfter, func(buf []byte, n int) error {
				out = true
				return emit(buf, n)
			})
			switch {
			case !quiet:
				e.outputEnded(ctx, ch, err)
			case proc.Exited() || ctx.Err() != nil:
				proc.StopReadingAfter(container.DrainGrace) // the wait above may have moved the exit's deadline
				e.logOutput(ctx, f, ch, deliver)
			case out:
				continue
			case rest.Park(f, time.Time{}, nil, step):
				return
			case proc.Exited():
				continue // it exited as f was to rest: the case above reads on
			default: // cannot park: wait the usual way
				e.logOutput(ctx, f, ch, deliver)
			}
			stopExit()
			done()
			return
		}
	}
	step()
}
