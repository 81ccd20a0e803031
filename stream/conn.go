package stream

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"os"
	"sync/atomic"
	"syscall"

	"gateway/container"
	"gateway/internal/chunkio"
	"gateway/metrics"
	"gateway/session"
	"gateway/stream/wsproto"
)

// Conn is a stream's client as exec, attach and port-forward see it: the
// one interface between the stream kinds and their transport. The
// WebSocket Pump implements it; the kinds never see a frame's wire form.
//
// Output goes through Send, in order, with backpressure: a slow client
// slows its producer down. Client frames reach the kind's FrameHandler,
// called by the transport's reading goroutine.
type Conn interface {
	// Protocol is the negotiated protocol.
	Protocol() wsproto.Protocol
	// Send queues an output frame. It blocks while the transport's queue
	// is full, and returns false, having released the frame, once the
	// stream is over or ctx ends. A FrameHandler must not call it: Send
	// panics when given the handler's context.
	Send(ctx context.Context, f outFrame) bool
	// Finish ends the stream normally: the final status st (none when
	// nil, or when the protocol carries none), then the close. It returns
	// false when the stream had already ended.
	Finish(ctx context.Context, st *wsproto.Status) bool
	// Fail ends the stream at once with cause (no status). It does not
	// wait.
	Fail(cause error)
	// SyncInput returns once every client frame that had reached the
	// gateway when it was called has been handled (from a client that
	// always sends its size first: once that size has), or after a short
	// bound: a tty exec calls it so that a size the client has already
	// sent applies before its process starts.
	SyncInput(ctx context.Context)
}

// FrameHandler handles one client frame, on the transport's reading
// goroutine. The payload is valid only during the call, and an error ends
// the stream. It must not block for long or call Send: the reading
// goroutine is what answers the client's pings.
type FrameHandler func(ctx context.Context, f wsproto.Frame) error

// handlerCtx is the context a FrameHandler gets, so that Send can refuse
// it.
type handlerCtx struct{ context.Context }

// checkNotHandler enforces FrameHandler's contract.
func checkNotHandler(ctx context.Context) {
	if _, ok := ctx.(handlerCtx); ok {
		panic("stream: a FrameHandler called Send: it would stall the reads that answer pings")
	}
}

// outFrame is one piece of output for the client. It is small: queues of
// them sit in every stream.
type outFrame struct {
	// b is the payload; with headroom, b[0] is free for the channel byte
	// and the payload is b[1:], so that a WebSocket frame goes out
	// without a copy.
	b        []byte
	ch       wsproto.Channel
	headroom bool
	pooled   bool // b starts a pooled buffer: return it once written
	end      bool // the stream is over: the transport closes normally
}

// data is the frame's payload.
func (f *outFrame) data() []byte {
	if f.headroom {
		return f.b[1:]
	}
	return f.b
}

// client is what every stream kind holds of its client: the transport,
// and the session's counters and log.
type client struct {
	Conn
	t    transport // the same transport, for the server
	srv  *Server
	sess *session.Session
	km   *metrics.Kind
	log  *slog.Logger
	bufs *bufferPool

	// What the kind reports before it finishes the stream.
	exit   atomic.Pointer[int] // the process's exit code, when it exited by itself
	failed atomic.Bool         // the gateway failed after the stream began (a start, a wait)
	// readyPrimed: the ready frame went out with the handshake.
	readyPrimed bool

	// Of a client of a shared exec (see shared): the session it is in,
	// set once the process runs (or it is admitted); whether it joined
	// one (admitted or refused, it is never a session of its own); whether
	// it only watches (a view share), and the share that let it in.
	shared   atomic.Pointer[shared]
	joined   bool
	viewOnly bool
	share    string

	// For the audit trail: how the request authenticated and who sent it;
	// the command and tty of an exec or attach.
	auth, userAgent string
	command         []string
	tty             *bool
}

// exited records the exit code of the stream's process.
func (c *client) exited(code *int) {
	if code != nil {
		c.exit.Store(code)
	}
}

// fail ends a stream whose work failed after it began (a start, a wait,
// a required recording): the status says why, and the session's result is
// an error.
func (c *client) fail(ctx context.Context, err error) {
	c.failed.Store(true)
	st := wsproto.InternalError(err)
	c.Finish(ctx, &st)
}

// startFailed is fail for a process that could not start.
func (c *client) startFailed(ctx context.Context, err error) {
	c.km.Error(metrics.ReasonStart)
	c.log.Warn("exec failed to start", "error", err)
	c.fail(ctx, err)
}

// input counts client payload bytes for the process or port: the one
// place they pass.
func (c *client) input(p []byte) {
	c.sess.RecordIn(p)
	c.km.BytesIn.Add(float64(len(p)))
}

// output counts payload bytes for the client and sends them: the one
// place they pass. (A shared session counts its process's output once, as
// it is printed: see shared.)
func (c *client) output(ctx context.Context, f outFrame) bool {
	d := f.data()
	if c.shared.Load() == nil {
		c.sess.RecordOut(d)
	}
	c.km.BytesOut.Add(float64(len(d)))
	return c.Send(ctx, f)
}

// ignored counts a view-only client's frame that was dropped.
func (c *client) ignored(what string) {
	if sh := c.shared.Load(); sh != nil {
		sh.srv.metrics.ViewOnlyIgnored.WithLabelValues(what).Inc()
	}
}

// sendInfo sends the session information frame (see wsproto.Info).
func (c *client) sendInfo(ctx context.Context, att *container.Attachment, j container.Join) bool {
	info := c.info("live", att.Size)
	info.Offset = att.Offset
	switch {
	case j.From >= 0:
		info.Join = "since"
	case att.Screen:
		info.Join = "screen"
	case j.Replay:
		info.Join = "replay"
	}
	return c.sendInfoFrame(ctx, info)
}

// info is the session information of the client, as a join or a resize
// tells it.
func (c *client) info(join string, size container.Size) wsproto.SessionInfo {
	info := wsproto.SessionInfo{Session: c.sess.ID, ViewOnly: c.viewOnly, Join: join, Cols: size.Cols, Rows: size.Rows}
	if sh := c.shared.Load(); sh != nil {
		info.Detach = sh.detach.Seconds()
	}
	return info
}

func (c *client) sendInfoFrame(ctx context.Context, info wsproto.SessionInfo) bool {
	b, err := json.Marshal(info)
	if err != nil {
		return false
	}
	return c.Send(ctx, outFrame{ch: wsproto.Info, b: b})
}

// ready sends the empty frame that opens an exec or attach stream, on the
// lowest channel the client reads: stdout, else stderr, else the error
// channel.
func (c *client) ready(ctx context.Context, stdout, stderr bool) bool {
	if c.readyPrimed {
		return ctx.Err() == nil
	}
	return c.Send(ctx, outFrame{ch: readyChannel(stdout, stderr)})
}

// primeReady sends the ready frame with the handshake (see Pump.Prime),
// for a stream whose first frame it always is (an exec's); ready then
// sends nothing.
func (c *client) primeReady(stdout, stderr bool) {
	if p, ok := c.t.(*Pump); ok {
		p.Prime(outFrame{ch: readyChannel(stdout, stderr)})
		c.readyPrimed = true
	}
}

func readyChannel(stdout, stderr bool) wsproto.Channel {
	switch {
	case stdout:
		return wsproto.Stdout
	case stderr:
		return wsproto.Stderr
	}
	return wsproto.Error
}

// pumpOutput streams a process's output, or a socket's bytes, to the
// client until it ends, and returns why it ended (nil at end of file).
// Without deliver the bytes are read and dropped, so the process never
// blocks on them.
func (c *client) pumpOutput(ctx context.Context, src syscall.Conn, ch wsproto.Channel, deliver bool) error {
	return readEnd(ctx, chunkio.ReadAt(src, c.bufs, 1, c.emitter(ctx, ch, deliver)))
}

// pumpBulk is pumpOutput for a TCP source, read with r's buffers (see
// bulkReads): larger ones when the transport tells how many frames wait.
func (c *client) pumpBulk(ctx context.Context, src syscall.Conn, ch wsproto.Channel, r *bulkReads) error {
	return readEnd(ctx, chunkio.ReadAt(src, r, 1, c.bulkEmitter(ctx, ch, r)))
}

// bulkEmitter is the emitter of a source read with r's buffers; it sets r
// up for the transport.
func (c *client) bulkEmitter(ctx context.Context, ch wsproto.Channel, r *bulkReads) func(buf []byte, n int) error {
	r.bufs = c.bufs
	r.queue, _ = c.Conn.(queuer)
	emit := c.emitter(ctx, ch, true)
	return func(buf []byte, n int) error {
		r.full = n == len(buf)-1
		return emit(buf, n)
	}
}

// emitter is the chunkio function that sends each chunk read on ch (or
// drops it, without deliver).
func (c *client) emitter(ctx context.Context, ch wsproto.Channel, deliver bool) func(buf []byte, n int) error {
	return func(buf []byte, n int) error {
		if !deliver {
			c.bufs.Put(buf)
			return nil
		}
		if !c.output(ctx, outFrame{ch: ch, b: buf[:1+n], headroom: true, pooled: true}) {
			return ctx.Err()
		}
		return nil
	}
}

// readEnd is why a reading ended: nil at the end of file, and when the
// stream or the source was closed on purpose.
func readEnd(ctx context.Context, err error) error {
	if ctx.Err() != nil || errors.Is(err, os.ErrClosed) || errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// logOutput pumps a process output and logs a failure.
func (c *client) logOutput(ctx context.Context, f *os.File, ch wsproto.Channel, deliver bool) {
	c.outputEnded(ctx, ch, c.pumpOutput(ctx, f, ch, deliver))
}

// outputEnded logs why a process's output ended, when it failed.
func (c *client) outputEnded(ctx context.Context, ch wsproto.Channel, err error) {
	if err = readEnd(ctx, err); err != nil {
		c.log.Warn("read process output", "channel", ch, "error", err)
	}
}

// unknownChannel counts and ignores a frame on a channel the stream lacks.
func (c *client) unknownChannel(ch wsproto.Channel) {
	c.km.Error(metrics.ReasonUnknownChannel)
	c.log.Debug("frame on unknown channel ignored", "channel", ch)
}
