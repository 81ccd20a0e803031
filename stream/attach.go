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
// process, first receiving its scrollback (unless replay is off), then its
// live output; its input and resizes go to the process. When the process
// exits, the client gets its status and a normal close. An error means the
// request was refused before the upgrade. Attach returns once the stream
// runs.
func (s *Server) Attach(w http.ResponseWriter, r *http.Request, containerID string, opts AttachOptions) error {
	c, err := s.AttachTarget(containerID, &opts)
	if err != nil {
		return err
	}
	cl, err := s.openStream(w, r, session.Attach, containerID, opts.Streams)
	if err != nil {
		return err
	}
	a := &attachStream{client: cl, c: c, tty: c.Spec().TTY, opts: opts, stdin: newInputQueue()}
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

// attachStream is one attacher: the transport feeds it client frames
// (onFrame), and run forwards the container's output.
type attachStream struct {
	*client
	c     *container.Container
	tty   bool // the container has a pty
	opts  AttachOptions
	stdin *inputQueue

	// Used by onFrame only.
	resize    resizes
	stdinDone bool
}

// onFrame handles one client frame. A resize applies to the container's
// pty at once: with several attachers, the last one to resize sets the
// size.
func (a *attachStream) onFrame(ctx context.Context, f wsproto.Frame) error {
	switch f.Channel {
	case wsproto.Stdin:
		a.input(f.Payload)
		if a.opts.Stdin && !a.stdinDone {
			a.stdin.push(ctx, f.Payload)
		}
	case wsproto.Resize:
		if a.tty {
			a.resize.handle(a.client, f.Payload, func(sz wsproto.TerminalSize) {
				if err := a.c.Resize(container.Size{Cols: sz.Width, Rows: sz.Height}); err != nil {
					a.log.Warn("resize failed", "error", err)
				}
			})
		}
	case wsproto.Close:
		// Only this attacher's input ends: the process's stdin is shared.
		stdin, err := a.closesStdin(f)
		if err != nil {
			return err
		}
		a.stdinDone = a.stdinDone || stdin
	default:
		a.otherFrame(f)
	}
	return nil
}

// attachInput sends one attacher's input to the container, giving up when
// the attacher leaves.
type attachInput struct {
	c    *container.Container
	done <-chan struct{}
}

func (in attachInput) Write(p []byte) (int, error) {
	if err := in.c.WriteStdin(p, in.done); err != nil {
		return 0, err
	}
	return len(p), nil
}

// CloseStdin does nothing: one attacher's end of input is not the
// process's.
func (attachInput) CloseStdin() error { return nil }

// run forwards the scrollback and then the live output until the process
// exits (status, then a normal close), the attacher falls too far behind
// (close 4001: the output hub cuts it, which ends the stream at once), or
// the stream ends.
func (a *attachStream) run(ctx context.Context) error {
	defer a.stdin.close()
	// Subscribe first: once the client has the ready frame, it misses
	// nothing, even without a replay, and no output of its own input.
	att := a.c.Attach(a.opts.replay(), a.cut)
	defer att.Detach()
	if a.opts.Stdin {
		a.stdin.start(attachInput{c: a.c, done: a.stdin.stop}, a.log)
	}
	if !a.ready(ctx, a.opts.Stdout, a.opts.Stderr) {
		return nil
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

// cut ends the stream of an attacher that fell too far behind.
func (a *attachStream) cut() {
	a.km.Error(metrics.ReasonSlowConsumer)
	a.log.Warn("attacher cut: it fell too far behind")
	a.Fail(errSlowConsumer)
}

// forward sends a chunk on the channel the attacher asked for, or drops it
// when it asked for none.
func (a *attachStream) forward(ctx context.Context, ch container.Chunk) bool {
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
// unless the attacher was cut (the stream is ending already).
func (a *attachStream) end(ctx context.Context, att *container.Attachment) error {
	if errors.Is(att.Err(), container.ErrSlowConsumer) {
		return nil
	}
	code := att.ExitCode()
	a.exited(code)
	st := wsproto.Success()
	if code != nil && *code != 0 {
		st = wsproto.ExitCode(*code, a.c.Spec().Command)
	}
	a.Finish(ctx, &st)
	return nil
}
