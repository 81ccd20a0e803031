package stream

import (
	"context"
	"errors"
	"net/http"
	"net/url"

	"gateway/container"
	"gateway/metrics"
	"gateway/session"
	"gateway/stream/wsproto"
)

// AttachOptions are the parameters of an attach: the query of a WebSocket
// request, or the JSON body that mints a single-use URL.
type AttachOptions struct {
	Streams
	// Replay sends the container's scrollback before the live output;
	// absent means true.
	Replay *bool `json:"replay,omitempty"`
}

// ParseAttachQuery reads attach parameters: the streams as for exec, and
// replay (default on; replay=0 for live output only).
func ParseAttachQuery(q url.Values) AttachOptions {
	o := AttachOptions{Streams: parseStreams(q)}
	if v, ok := q["replay"]; ok {
		r := wsproto.ParseBool(v)
		o.Replay = &r
	}
	return o
}

// Validate checks the options and normalizes them (see Streams).
func (o *AttachOptions) Validate() error { return o.Streams.validate() }

func (o *AttachOptions) replay() bool { return o.Replay == nil || *o.Replay }

// Attach serves an attach WebSocket: the client joins the container's main
// process, first receiving what there is to see (unless replay is off: a
// tty's screen as it is, else the kept output), then its live output; its
// input and resizes go to the process. When the process exits, the client
// gets its status and a normal close. An error means the request was
// refused before the upgrade. Attach returns once the stream runs.
func (s *Server) Attach(w http.ResponseWriter, r *http.Request, containerID string, opts AttachOptions) error {
	c, err := s.AttachTarget(containerID, &opts)
	if err != nil {
		return err
	}
	cl, err := s.openStream(w, r, session.Attach, containerID, opts.Streams)
	if err != nil {
		return err
	}
	join := container.Live
	if opts.replay() {
		join = container.Replay
	}
	cl.command = c.Command()
	a := &attachStream{client: cl, src: c, join: join, opts: opts.Streams, stdin: newInputQueue(), recorded: c}
	s.serve(cl, a.onFrame, a.run)
	return nil
}

// AttachTarget validates opts (see Validate) and returns the container
// they may attach to: everything about an attach that can be checked
// before the upgrade.
func (s *Server) AttachTarget(containerID string, opts *AttachOptions) (*container.Container, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	c, err := s.runtime.Get(containerID)
	if err != nil {
		return nil, err
	}
	if opts.Stdin && !c.Spec().Stdin {
		return nil, badRequest("container %q was started without stdin: attach without stdin", containerID)
	}
	return c, nil
}

// source is a process that clients share and attach to: a container's
// main process, or the Job of a shared exec.
type source interface {
	Attach(j container.Join, onCut func()) (*container.Attachment, error)
	WriteStdin(p []byte, done <-chan struct{}) error
	Resize(s container.Size) error
	TTY() bool
	Command() []string
}

// attachStream is one client of a shared process: the transport feeds it
// client frames (onFrame), and run forwards the process's output.
type attachStream struct {
	*client
	src   source
	join  container.Join
	opts  Streams
	stdin *inputQueue
	// closeStdin, when set, is what the client's end of input does (the
	// shared exec's first client closes the process's input); else it ends
	// only this client's input.
	closeStdin func(done <-chan struct{}) error
	// recorded is the container whose main process this attach records
	// (nil for a client joining a shared exec: its session is recorded
	// already).
	recorded *container.Container

	// Used by onFrame only.
	resize    resizes
	stdinDone bool
}

// onFrame handles one client frame. A resize applies to the pty at once:
// with several clients, the last one to resize sets the size. A view-only
// client's input and resizes are counted as ignored and dropped: neither
// is the session's, nor recorded.
func (a *attachStream) onFrame(ctx context.Context, f wsproto.Frame) error {
	switch f.Channel {
	case wsproto.Stdin:
		if a.viewOnly {
			a.ignored("input")
			return nil
		}
		if a.opts.Stdin && !a.stdinDone { // else dropped: not the session's input
			a.input(f.Payload)
			a.stdin.push(ctx, f.Payload)
		}
	case wsproto.Resize:
		if a.viewOnly {
			a.ignored("resize")
			return nil
		}
		if a.src.TTY() {
			a.resize.handle(a.client, f.Payload, func(sz wsproto.TerminalSize) {
				if err := a.src.Resize(container.Size{Cols: sz.Width, Rows: sz.Height}); err != nil {
					a.log.Warn("resize failed", "error", err)
				}
			})
		}
	case wsproto.Close:
		stdin, err := a.closesStdin(f)
		if err != nil {
			return err
		}
		if stdin && !a.stdinDone {
			a.stdinDone = true
			if a.closeStdin != nil && a.opts.Stdin && !a.viewOnly {
				a.stdin.closeInput(ctx)
			}
		}
	default:
		a.otherFrame(f)
	}
	return nil
}

// attachInput sends one client's input to the shared process, giving up
// when the client leaves.
type attachInput struct {
	a    *attachStream
	done <-chan struct{}
}

// keepsInput: the process's stdin queue holds p (see keeper).
func (attachInput) keepsInput() {}

func (in attachInput) Write(p []byte) (int, error) {
	if err := in.a.src.WriteStdin(p, in.done); err != nil {
		return 0, err
	}
	return len(p), nil
}

// CloseStdin ends the process's input only for the client that owns it:
// one attacher's end of input is not the process's.
func (in attachInput) CloseStdin() error {
	if in.a.closeStdin == nil {
		return nil
	}
	return in.a.closeStdin(in.done)
}

// run subscribes, sends the replay, then the live output until the
// process exits (status, then a normal close), the client falls too far
// behind (close 4001: the output hub cuts it, which ends the stream at
// once), or the stream ends.
func (a *attachStream) run(ctx context.Context) error {
	defer a.stdin.close()
	// Subscribe first: once the client has the ready frame, it misses
	// nothing, even without a replay, and no output of its own input.
	att, err := a.src.Attach(a.join, a.cut)
	if err != nil { // an offset dropped since Join checked it
		a.fail(ctx, err)
		return nil
	}
	defer att.Detach()
	if a.recorded != nil {
		if err := a.record(a.recorded, a.recorded.Command(), a.src.TTY(), att.Size); err != nil {
			a.fail(ctx, err)
			return nil
		}
	}
	if a.opts.Stdin && !a.viewOnly {
		a.stdin.start(attachInput{a: a, done: a.stdin.stop}, a.log)
	}
	if !a.ready(ctx, a.opts.Stdout, a.opts.Stderr) {
		return nil
	}
	return a.follow(ctx, att)
}

// follow sends an attachment's replay and live output; see run.
func (a *attachStream) follow(ctx context.Context, att *container.Attachment) error {
	if a.opts.Info {
		if !a.sendInfo(ctx, att, a.join) {
			return nil
		}
	}
	for _, ch := range att.Replay {
		for data := ch.Data; len(data) > 0; {
			n := min(len(data), readChunk)
			if !a.forward(ctx, container.Chunk{Stream: ch.Stream, Data: data[:n]}) {
				return nil
			}
			data = data[n:]
		}
	}
	for {
		select {
		case ch, ok := <-att.C:
			if !ok {
				return a.end(ctx, att)
			}
			if !a.forward(ctx, ch) {
				return nil
			}
		case <-ctx.Done():
			return nil
		}
	}
}

// cut ends the stream of a client that fell too far behind.
func (a *attachStream) cut() {
	a.km.Error(metrics.ReasonSlowConsumer)
	a.log.Warn("attacher cut: it fell too far behind")
	a.Fail(errSlowConsumer)
}

// forward sends a chunk on the channel the client asked for, or drops it
// when it asked for none; a resize becomes an info frame for a client that
// asked for them, and an event of the attach's recording, whoever made it.
func (a *attachStream) forward(ctx context.Context, ch container.Chunk) bool {
	if ch.Stream == container.Resized {
		if a.recorded != nil {
			a.sess.Resized(int(ch.Size.Cols), int(ch.Size.Rows))
		}
		return !a.opts.Info || a.sendInfoFrame(ctx, a.info("resize", ch.Size))
	}
	wch := wsproto.Stdout
	want := a.opts.Stdout
	if ch.Stream == container.Stderr {
		wch, want = wsproto.Stderr, a.opts.Stderr
	}
	if !want {
		return true
	}
	return a.output(ctx, a.frame(wch, ch))
}

// frame is the outgoing frame of a chunk: without a copy when the chunk
// carries its channel byte (the container's stream numbers are the
// channels), else its data alone.
func (a *attachStream) frame(wch wsproto.Channel, ch container.Chunk) outFrame {
	if fr := ch.Framed(); fr != nil && fr[0] == byte(wch) {
		return outFrame{ch: wch, b: fr, headroom: true}
	}
	return outFrame{ch: wch, b: ch.Data}
}

// end finishes the stream when the attachment ended: with the exit status,
// unless the client was cut (the stream is ending already).
func (a *attachStream) end(ctx context.Context, att *container.Attachment) error {
	if errors.Is(att.Err(), container.ErrSlowConsumer) {
		return nil
	}
	code := att.ExitCode()
	a.exited(code)
	st := wsproto.Success()
	if code != nil && *code != 0 {
		st = wsproto.ExitCode(*code, a.src.Command())
	}
	a.Finish(ctx, &st)
	return nil
}
