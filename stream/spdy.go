package stream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/streaming/pkg/httpstream"
	"k8s.io/streaming/pkg/httpstream/spdy"

	"gateway/metrics"
	"gateway/session"
	"gateway/stream/wsproto"
)

// SPDY/3.1, the transport of kubectl when WebSockets are off or refused,
// of kubectl before 1.30 and of client-go's SPDY executor (k9s, Lens,
// operators): the client opens one SPDY stream per channel, each with a
// streamType header (error, stdin, stdout, stderr, resize), after a POST
// with Upgrade: SPDY/3.1 whose X-Stream-Protocol-Version lists the
// versions it speaks. The framing is k8s.io/streaming's (moby/spdystream);
// spdyConn maps the streams onto Conn, so that exec and attach run on it
// unchanged.

// spdyProtocols are the versions served over SPDY, as the kubelet serves
// them: v4 carries the JSON Status, v3 adds resize; there is no v5 over
// SPDY. The client's order picks.
var spdyProtocols = []wsproto.Protocol{
	{Name: "v4.channel.k8s.io", Status: true},
	{Name: "v3.channel.k8s.io"},
	{Name: "v2.channel.k8s.io"},
	{Name: "channel.k8s.io"},
}

// IsSPDYUpgrade reports whether r asks for SPDY/3.1.
func IsSPDYUpgrade(r *http.Request) bool {
	return httpstream.IsUpgradeRequest(r) && strings.Contains(strings.ToLower(r.Header.Get("Upgrade")), "spdy/3.1")
}

// spdyResize reports whether a version has the resize stream.
func spdyResize(p wsproto.Protocol) bool {
	return p.Name == "v4.channel.k8s.io" || p.Name == "v3.channel.k8s.io"
}

// spdyConn is the SPDY transport of an exec or an attach: it implements
// Conn for the kinds over one SPDY connection. Each output channel is a
// stream of its own, written by its producer (spdystream serializes the
// frames); the client's stdin and resize streams are read by one goroutine
// each, which hand their frames to the FrameHandler.
type spdyConn struct {
	// Static after construction.
	conn   httpstream.Connection
	proto  wsproto.Protocol
	want   Streams
	wait   time.Duration // for the client's streams
	log    *slog.Logger
	bufs   *bufferPool
	opened chan httpstream.Stream // streams, while the client opens them

	ctx    context.Context
	cancel context.CancelCauseFunc

	streams   map[string]httpstream.Stream // by streamType, once all are open
	sized     chan struct{}                // closed when the first size was handled, or none can come
	sizedOnce sync.Once
	normalEnd atomic.Bool
}

var _ transport = (*spdyConn)(nil)

// acceptSPDY negotiates the version (answering a refusal itself, as
// httpstream.Handshake does) and upgrades the connection. On error the
// client already has its answer.
func (s *Server) acceptSPDY(w http.ResponseWriter, r *http.Request, want Streams) (*spdyConn, error) {
	proto, err := httpstream.Handshake(r, w, wsproto.Names(spdyProtocols))
	if err != nil {
		return nil, &answeredError{err}
	}
	c := &spdyConn{want: want, wait: s.cfg.StreamCreationTimeout, bufs: s.bufs, opened: make(chan httpstream.Stream, 8), sized: make(chan struct{}),
		streams: map[string]httpstream.Stream{}}
	for _, p := range spdyProtocols {
		if p.Name == proto {
			c.proto = p
		}
	}
	c.conn = spdy.NewResponseUpgrader().UpgradeResponse(w, r, func(st httpstream.Stream, _ <-chan struct{}) error {
		select {
		case c.opened <- st:
			return nil
		default:
			return errors.New("more streams than asked for")
		}
	})
	if c.conn == nil {
		return nil, &answeredError{errors.New("SPDY upgrade failed")}
	}
	c.conn.SetIdleTimeout(s.cfg.IdleTimeout)
	c.ctx, c.cancel = context.WithCancelCause(s.base)
	return c, nil
}

// answeredError is a refusal that was already written to the client.
type answeredError struct{ err error }

func (e *answeredError) Error() string { return e.err.Error() }

// IsAnswered reports whether a refusal was already answered to the client
// (so the caller writes nothing more).
func IsAnswered(err error) bool {
	var a *answeredError
	return errors.As(err, &a)
}

// waitStreams waits until the client has opened every stream it asked
// for. Streams of the known types that it did not ask for are kept and
// left unused, as by the kubelet.
func (c *spdyConn) waitStreams() error {
	need := map[string]bool{"error": true, "stdin": c.want.Stdin, "stdout": c.want.Stdout,
		"stderr": c.want.Stderr && !c.want.TTY, "resize": c.want.TTY && spdyResize(c.proto)}
	missing := 0
	for _, n := range need {
		if n {
			missing++
		}
	}
	timer := time.NewTimer(c.wait)
	defer timer.Stop()
	for missing > 0 {
		select {
		case st := <-c.opened:
			t := st.Headers().Get("streamType")
			if _, known := need[t]; !known || c.streams[t] != nil {
				st.Reset()
				return &protocolError{err: fmt.Errorf("unexpected stream of type %q", t)}
			}
			c.streams[t] = st
			if need[t] {
				missing--
			}
		case <-timer.C:
			return &protocolError{err: errors.New("timed out waiting for the client to create its streams")}
		case <-c.conn.CloseChan():
			return errClientGone
		case <-c.ctx.Done():
			return context.Cause(c.ctx)
		}
	}
	if !need["resize"] {
		c.sizedOnce.Do(func() { close(c.sized) })
	}
	return nil
}

// Protocol implements Conn.
func (c *spdyConn) Protocol() wsproto.Protocol { return c.proto }

// Close ends the stream with cause; it implements session.Closer.
func (c *spdyConn) Close(cause error) { c.cancel(cause) }

// Fail implements Conn.
func (c *spdyConn) Fail(cause error) { c.cancel(cause) }

// Send implements Conn: the frame's data goes to its channel's stream,
// written by the caller; an empty frame (the ready frame) has nothing to
// carry here.
func (c *spdyConn) Send(ctx context.Context, f outFrame) bool {
	checkNotHandler(ctx)
	defer c.release(f)
	if ctx.Err() != nil {
		return false
	}
	if f.end {
		c.normalEnd.Store(true)
		c.cancel(nil)
		return true
	}
	var name string
	switch f.ch {
	case wsproto.Stdout:
		name = "stdout"
	case wsproto.Stderr:
		name = "stderr"
	case wsproto.Error:
		name = "error"
	}
	st := c.streams[name]
	if st == nil || len(f.data()) == 0 {
		return true
	}
	if _, err := st.Write(f.data()); err != nil {
		if ctx.Err() == nil {
			c.cancel(fmt.Errorf("%w: write %s: %w", errClientGone, name, err))
		}
		return false
	}
	return true
}

func (c *spdyConn) release(f outFrame) {
	if f.pooled {
		c.bufs.Put(f.b[:cap(f.b)])
	}
}

// Finish implements Conn.
func (c *spdyConn) Finish(ctx context.Context, st *wsproto.Status) bool {
	if st != nil {
		if payload := c.proto.StatusPayload(*st); payload != nil {
			if !c.Send(ctx, outFrame{ch: wsproto.Error, b: payload}) {
				return false
			}
		}
	}
	return c.Send(ctx, outFrame{end: true})
}

// SyncInput implements Conn: a client with a tty sends its size on the
// resize stream as soon as it exists; this waits for that first size, at
// most syncInputMax.
func (c *spdyConn) SyncInput(ctx context.Context) { waitSized(ctx, c.sized) }

// Run waits for the client's streams, then runs the readers and work until
// the stream ends (see Pump.Run for the contract). At a normal end the
// output streams are closed, the client gets closeGrace to close the
// connection, then the gateway closes it.
func (c *spdyConn) Run(onFrame FrameHandler, work func(context.Context) error, ended func(cause error), done func()) {
	defer done()
	var once sync.Once
	end := func() { once.Do(func() { ended(c.cause()) }) }
	var readers sync.WaitGroup
	defer func() {
		c.conn.Close()
		readers.Wait()
		end()
		c.cancel(nil)
	}()
	if err := c.waitStreams(); err != nil {
		c.cancel(err)
		return
	}
	// A cancelled stream whose work is held in a write by a client that
	// does not read ends for its session after stuckWriterGrace, and its
	// connection is closed after closeLinger, as a Pump's (see Pump.Run).
	workDone := make(chan struct{})
	stopWatch := context.AfterFunc(c.ctx, func() {
		lingerFor := closeLinger
		if errors.Is(context.Cause(c.ctx), session.ErrShutdown) {
			lingerFor = closeGrace
		}
		stuck := time.NewTimer(stuckWriterGrace)
		defer stuck.Stop()
		select {
		case <-workDone:
			return
		case <-stuck.C:
			end()
		}
		linger := time.NewTimer(lingerFor - stuckWriterGrace)
		defer linger.Stop()
		select {
		case <-workDone:
		case <-linger.C:
			c.conn.Close() // the write fails: work returns
		}
	})
	readers.Go(func() { // the client going away ends the stream
		select {
		case <-c.conn.CloseChan():
			c.cancel(errClientGone)
		case <-c.ctx.Done():
		}
	})
	// Every stream is read, so that data the client sends on one the
	// gateway does not use cannot hold spdystream's frame workers up.
	hctx := handlerCtx{c.ctx}
	for name, st := range c.streams {
		switch {
		case name == "stdin" && c.want.Stdin:
			readers.Go(func() { c.read(hctx, st, wsproto.Stdin, onFrame) })
		case name == "resize" && spdyResize(c.proto):
			readers.Go(func() {
				c.read(hctx, st, wsproto.Resize, onFrame)
				c.sizedOnce.Do(func() { close(c.sized) })
			})
		default:
			readers.Go(func() { _, _ = io.Copy(io.Discard, st) })
		}
	}
	err := work(c.ctx)
	close(workDone)
	stopWatch()
	if err != nil {
		c.cancel(err)
	}
	<-c.ctx.Done()
	var reason string
	if !c.normalEnd.Load() {
		var tell bool
		if _, reason, tell = endFor(context.Cause(c.ctx)); !tell {
			return
		}
	}
	// The output streams end (the client reads to their end), after a
	// failure Status when the stream was cancelled: without one, client-go
	// reads the error stream's end as success. A client that does not read
	// blocks these writes: closing the connection (after closeGrace) ends
	// them.
	readers.Go(func() {
		if st := c.streams["error"]; st != nil && reason != "" {
			if payload := c.proto.StatusPayload(wsproto.InternalError(errors.New(reason))); payload != nil {
				_, _ = st.Write(payload)
			}
		}
		for _, name := range []string{"stdout", "stderr", "error"} {
			if st := c.streams[name]; st != nil {
				st.Close()
			}
		}
	})
	t := time.NewTimer(closeGrace)
	defer t.Stop()
	select {
	case <-c.conn.CloseChan():
	case <-t.C:
	}
}

// read hands what the client sends on a stream to onFrame, as frames of
// ch; the end of stdin is the close signal.
func (c *spdyConn) read(ctx handlerCtx, st httpstream.Stream, ch wsproto.Channel, onFrame FrameHandler) {
	buf := make([]byte, inputChunk)
	for {
		n, err := st.Read(buf)
		if n > 0 {
			if ferr := onFrame(ctx, wsproto.Frame{Channel: ch, Payload: buf[:n]}); ferr != nil {
				c.cancel(ferr)
				return
			}
			if ch == wsproto.Resize {
				c.sizedOnce.Do(func() { close(c.sized) })
			}
		}
		if errors.Is(err, io.EOF) && ch == wsproto.Stdin {
			_ = onFrame(ctx, wsproto.Frame{Channel: wsproto.Close, Payload: []byte{byte(wsproto.Stdin)}})
		}
		if err != nil {
			return
		}
	}
}

func (c *spdyConn) cause() error {
	if c.normalEnd.Load() {
		return nil
	}
	return context.Cause(c.ctx)
}

// openSPDY is open for a SPDY request: the session, the upgrade, the
// client.
func (s *Server) openSPDY(w http.ResponseWriter, r *http.Request, sess *session.Session, want Streams) (*client, error) {
	sc, err := s.acceptSPDY(w, r, want)
	if err != nil {
		return nil, err
	}
	c := s.newClient(sess, sc.proto)
	c.km.Opened(metrics.TransportSPDY)
	sc.log = c.log
	c.Conn, c.t = sc, sc
	return c, nil
}
