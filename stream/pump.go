package stream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"gateway/internal/chunkio"
	"gateway/metrics"
	"gateway/session"
	"gateway/stream/wsproto"
)

// Why a stream ended, besides the session package's causes.
var (
	// errClientGone: the client closed the WebSocket or vanished.
	errClientGone = errors.New("client went away")
	// errIdle: nothing flowed for the idle timeout.
	errIdle = errors.New("idle timeout")
	// errSlowConsumer: an attacher fell too far behind.
	errSlowConsumer = errors.New("client too slow: output queue overflowed")
)

// protocolError ends a stream because the client broke the protocol.
type protocolError struct{ err error }

func (e *protocolError) Error() string { return "protocol error: " + e.err.Error() }
func (e *protocolError) Unwrap() error { return e.err }

// outFrame is one message for writeLoop. It is small: queues of them
// sit in every stream.
type outFrame struct {
	// b is the payload; with headroom, b[0] is free for the channel byte
	// and the payload is b[1:], so the frame goes out without a copy.
	b        []byte
	ch       wsproto.Channel
	headroom bool
	pooled   bool // b starts a pooled buffer: return it after the write
	end      bool // the stream is over: send the normal close frame
}

// data is the frame's payload.
func (f *outFrame) data() []byte {
	if f.headroom {
		return f.b[1:]
	}
	return f.b
}

// outQueueLen bounds the frames waiting for writeLoop. A full queue blocks
// the producer: backpressure reaches the process.
const outQueueLen = 16

// Pump moves frames between one WebSocket and the work of a stream. Only
// readLoop reads the conn and only writeLoop writes it (gorilla allows
// Close and WriteControl from elsewhere, nothing more).
//
// writeLoop runs only while there is something to write: a frame queued,
// a ping due, the stream ending. Whoever gives it work starts it if it is
// not running (kick), and it exits when the queue is empty, so an idle
// stream parks no writer goroutine. At most one writeLoop runs at a time:
// writing is the baton.
type Pump struct {
	// Static after construction.
	conn  *websocket.Conn
	proto wsproto.Protocol
	sess  *session.Session
	km    *metrics.Kind
	log   *slog.Logger
	cfg   *Config
	bufs  *bufferPool

	ctx    context.Context // the stream's context; its cause says why it ended
	cancel context.CancelCauseFunc

	out        chan outFrame // to writeLoop; never closed
	readDone   chan struct{} // closed when readLoop returns
	lastActive atomic.Int64  // unix nanoseconds of the last data frame either way

	writing   atomic.Bool    // a writeLoop runs, or the stream has ended
	pingDue   atomic.Bool    // the ping timer fired
	writers   sync.WaitGroup // the writeLoop goroutines
	written   chan struct{}  // closed when the stream's writing is over and the conn closed
	normalEnd bool           // set before written is closed: finish ended the stream
	pingTimer *time.Timer

	flow *flowControl // the page's pacing (flow=1), or nil
}

// unknownChannel counts and ignores a frame on a channel the stream lacks.
func (p *Pump) unknownChannel(ch wsproto.Channel) {
	p.km.Error(metrics.ReasonUnknownChannel)
	p.log.Debug("frame on unknown channel ignored", "channel", ch)
}

func (s *Server) newPump(conn *websocket.Conn, proto wsproto.Protocol, sess *session.Session, km *metrics.Kind) *Pump {
	ctx, cancel := context.WithCancelCause(s.base)
	p := &Pump{
		conn: conn, proto: proto, sess: sess, km: km, log: s.sessionLog(sess, proto), cfg: &s.cfg, bufs: s.bufs,
		ctx: ctx, cancel: cancel,
		out:      make(chan outFrame, outQueueLen),
		readDone: make(chan struct{}),
		written:  make(chan struct{}),
	}
	p.touch()
	return p
}

// Close ends the stream with cause (session.ErrClosedByAPI, ErrShutdown,
// ...). It does not wait. It implements session.Closer.
func (p *Pump) Close(cause error) { p.cancel(cause) }

// Run runs readLoop (on the calling goroutine), writeLoop (when needed)
// and work until the stream is over, and returns only after all of them
// have returned. onFrame is called by readLoop for each client frame; the
// frame's payload is valid only during the call, and an error from
// onFrame ends the stream. work ends the stream normally by calling finish
// and returning nil; an error from work ends it at once (no Status). work
// must return soon after its context ends. Run returns nil after a normal
// end, or the cause that ended the stream.
func (p *Pump) Run(onFrame func(context.Context, wsproto.Frame) error, work func(context.Context) error) error {
	p.pingTimer = time.AfterFunc(p.cfg.PingPeriod, p.pingFire)
	// When the stream is cancelled, a writer sends the close frame; if the
	// writer is stuck on a stalled client, the conn is closed under it.
	stopWatch := context.AfterFunc(p.ctx, func() {
		p.kick()
		time.AfterFunc(stuckWriterGrace, func() {
			select {
			case <-p.written:
			default:
				p.conn.Close()
			}
		})
	})
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := work(p.ctx); err != nil {
			p.cancel(err)
		}
	})
	if err := p.readLoop(onFrame); err != nil {
		p.cancel(err)
	}
	close(p.readDone)
	// readLoop ends when the conn is closed: by the writer at the end, or
	// by the client, in which case the stream is cancelled just above (or
	// was already) and the writer is kicked to wind it up.
	<-p.written
	stopWatch()
	p.writers.Wait()
	wg.Wait()
	cause := context.Cause(p.ctx)
	p.cancel(nil)
	if p.normalEnd {
		return nil
	}
	return cause
}

// kick starts writeLoop on a goroutine of its own unless it runs (or the
// stream has ended).
func (p *Pump) kick() {
	if p.writing.CompareAndSwap(false, true) {
		p.writers.Go(p.writeLoop)
	}
}

// write runs writeLoop on the calling goroutine unless it runs elsewhere:
// a producer that just queued a frame writes it itself, with no hand-off,
// and goes back to its source once the queue is empty.
func (p *Pump) write() {
	if p.writing.CompareAndSwap(false, true) {
		p.writers.Add(1)
		p.writeLoop()
		p.writers.Done()
	}
}

// pingFire marks a ping due and re-arms the timer, until the end.
func (p *Pump) pingFire() {
	select {
	case <-p.written:
		return
	default:
	}
	p.pingDue.Store(true)
	p.kick()
	p.pingTimer.Reset(p.cfg.PingPeriod)
}

// idle hands the baton back when there is nothing to write. It returns
// false if work came in meanwhile and this writer must go on.
func (p *Pump) idle() bool {
	p.writing.Store(false)
	// A producer that queued work after our last look either sees writing
	// false and starts a writer, or we see its work here and take the
	// baton back (if no one else did).
	if len(p.out) == 0 && !p.pingDue.Load() && p.ctx.Err() == nil {
		return true
	}
	return !p.writing.CompareAndSwap(false, true)
}

// endWrites ends the stream's writing: the baton is never handed back, so
// no writer starts again.
func (p *Pump) endWrites(normal bool) {
	p.pingTimer.Stop()
	p.conn.Close() // ends readLoop
	p.normalEnd = normal
	close(p.written)
}

// finish queues the final Status (if the protocol sends one) and the normal
// close. It returns false when the stream already ended.
func (p *Pump) finish(ctx context.Context, st wsproto.Status) bool {
	if payload := p.proto.StatusPayload(st); payload != nil && !p.proto.Raw {
		if !p.send(ctx, outFrame{ch: wsproto.Error, b: payload}) {
			return false
		}
	}
	return p.send(ctx, outFrame{end: true})
}

// send queues a frame for writeLoop, waiting while the queue is full. It
// returns false, and releases the frame, when the stream is over.
func (p *Pump) send(ctx context.Context, f outFrame) bool {
	select {
	case p.out <- f:
		p.write()
		return true
	case <-ctx.Done():
		p.release(f)
		return false
	}
}

func (p *Pump) release(f outFrame) {
	if f.pooled {
		p.bufs.Put(f.b[:cap(f.b)])
	}
}

func (p *Pump) touch() { p.lastActive.Store(time.Now().UnixNano()) }

// readLoop does every read of the conn until the client leaves, the conn is
// closed, or onFrame fails. It keeps reading while the stream lives, so
// pings are answered even when the process is busy.
func (p *Pump) readLoop(onFrame func(context.Context, wsproto.Frame) error) error {
	p.conn.SetReadLimit(p.cfg.MaxMessageSize)
	_ = p.conn.SetReadDeadline(time.Now().Add(p.cfg.PongWait))
	p.conn.SetPongHandler(func(string) error {
		return p.conn.SetReadDeadline(time.Now().Add(p.cfg.PongWait))
	})
	var msg []byte
	for {
		_, r, err := p.conn.NextReader()
		if err != nil {
			return p.readError(err)
		}
		if msg, err = chunkio.AppendAll(msg[:0], r); err != nil { // gorilla enforces the limit
			return p.readError(err)
		}
		_ = p.conn.SetReadDeadline(time.Now().Add(p.cfg.PongWait))
		p.touch()
		f, err := p.proto.ParseFrame(msg)
		switch {
		case errors.Is(err, wsproto.ErrEmpty):
			continue // ignored, as by the kubelet
		case errors.Is(err, wsproto.ErrBadCloseSignal):
			p.km.Error(metrics.ReasonProtocol)
			return &protocolError{err}
		case err != nil: // a bad base64 frame is dropped, the stream goes on
			p.km.Error(metrics.ReasonProtocol)
			p.log.Warn("dropped malformed frame", "error", err)
			continue
		}
		if err := onFrame(p.ctx, f); err != nil {
			return err
		}
		if cap(msg) > 4*readChunk { // do not keep a huge paste around
			msg = nil
		}
	}
}

// readError turns a read failure into the cause that ends the stream.
func (p *Pump) readError(err error) error {
	switch {
	case p.ctx.Err() != nil: // we closed the conn
		return nil
	case errors.Is(err, websocket.ErrReadLimit):
		p.km.Error(metrics.ReasonFrameTooLarge)
		p.log.Warn("client message over the read limit", "limit", p.cfg.MaxMessageSize)
		return fmt.Errorf("%w: over %d bytes", wsproto.ErrFrameTooLarge, p.cfg.MaxMessageSize)
	case websocket.IsCloseError(err, websocket.CloseNormalClosure, websocket.CloseGoingAway, websocket.CloseNoStatusReceived):
		return errClientGone
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed):
		return errClientGone
	default:
		var ce *websocket.CloseError
		if !errors.As(err, &ce) {
			p.km.Error(metrics.ReasonRead)
		}
		return fmt.Errorf("%w: %w", errClientGone, err)
	}
}

// writeLoop does every write of the conn: frames, pings, the close frame.
// It runs until the queue is empty (then returns, see kick), or until the
// stream is over: then it sends the close frame, closes the conn (which
// ends readLoop) and closes p.written.
func (p *Pump) writeLoop() {
	var next *outFrame // a frame taken while batching, to write first
	for {
		var f outFrame
		if next != nil {
			f, next = *next, nil
		} else {
			select {
			case <-p.ctx.Done():
				p.closeFor(context.Cause(p.ctx))
				p.endWrites(false)
				return
			case f = <-p.out:
			default:
				if p.pingDue.Swap(false) {
					if err := p.ping(); err != nil {
						p.cancel(err)
					}
					continue
				}
				if p.idle() {
					return
				}
				continue
			}
		}
		if f.end {
			p.closeWith(websocket.CloseNormalClosure, "")
			p.endWrites(true)
			return
		}
		var err error
		if next, err = p.writeFrame(f); err != nil {
			p.cancel(p.writeError(err))
		}
	}
}

// ping sends a ping, or ends an idle stream.
func (p *Pump) ping() error {
	if idle := p.cfg.IdleTimeout; idle > 0 && time.Since(time.Unix(0, p.lastActive.Load())) > idle {
		p.km.Error(metrics.ReasonIdleTimeout)
		return errIdle
	}
	if err := p.conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(p.cfg.PongWait)); err != nil {
		return p.writeError(err)
	}
	return nil
}

// maxBatch bounds the payload of a message built from several queued frames.
const maxBatch = 64 << 10

// writeFrame writes f as one message, adding frames of the same channel
// that are already queued (binary protocols). It returns a frame it took
// from the queue but could not add. A lone frame with headroom goes out
// without copying its payload: gorilla copies what fits in its small write
// buffer and hands the rest to writev.
func (p *Pump) writeFrame(f outFrame) (*outFrame, error) {
	_ = p.conn.SetWriteDeadline(time.Now().Add(p.cfg.PongWait))
	p.touch()
	if p.proto.Base64 {
		defer p.release(f)
		scratch := p.bufs.Get()
		msg := p.proto.AppendFrame(scratch[:0], f.ch, f.data())
		err := p.conn.WriteMessage(websocket.TextMessage, msg)
		p.bufs.Put(scratch)
		return nil, err
	}
	var batch []outFrame
	var next *outFrame
	// The empty ready frame stays a message of its own.
	for size := len(f.data()); size > 0 && size < maxBatch && next == nil; {
		select {
		case g := <-p.out:
			if g.end || g.ch != f.ch || len(g.data()) == 0 || size+len(g.data()) > maxBatch {
				next = &g
				break
			}
			batch = append(batch, g)
			size += len(g.data())
		default:
			size = maxBatch
		}
	}
	var err error
	switch {
	case len(batch) == 0 && f.headroom:
		wire := f.b
		if p.proto.Raw {
			wire = wire[1:]
		} else if wire[0] != byte(f.ch) { // no write when set: b may be shared
			wire[0] = byte(f.ch)
		}
		err = p.conn.WriteMessage(websocket.BinaryMessage, wire)
	default:
		scratch := p.bufs.Get()
		msg := scratch[:0]
		if !p.proto.Raw {
			msg = append(msg, byte(f.ch))
		}
		msg = append(msg, f.data()...)
		for _, g := range batch {
			msg = append(msg, g.data()...)
		}
		err = p.conn.WriteMessage(websocket.BinaryMessage, msg)
		p.bufs.Put(scratch)
	}
	p.release(f)
	for _, g := range batch {
		p.release(g)
	}
	return next, err
}

// writeError classifies a failed write.
func (p *Pump) writeError(err error) error {
	if errors.Is(err, websocket.ErrCloseSent) {
		// gorilla answered a failed read (a message over the limit, a
		// protocol error, the client's close) with a close frame: readLoop
		// is returning, and its error is the cause. (No write runs on
		// readLoop's goroutine.)
		<-p.readDone
	}
	if p.ctx.Err() != nil {
		return nil
	}
	p.km.Error(metrics.ReasonWrite)
	return fmt.Errorf("%w: write: %w", errClientGone, err)
}

// closeFor sends the close frame that tells the client why the stream
// ended, when the client is still there to read it.
func (p *Pump) closeFor(cause error) {
	var pe *protocolError
	var de *dialError
	switch {
	case errors.Is(cause, session.ErrClosedByAPI):
		p.closeWith(CloseByAPI, "session closed through the API")
	case errors.Is(cause, session.ErrShutdown):
		p.closeWith(websocket.CloseGoingAway, "gateway shutting down")
	case errors.Is(cause, errSlowConsumer):
		p.closeWith(CloseSlowConsumer, "client too slow: output queue overflowed")
	case errors.Is(cause, errIdle):
		p.closeWith(CloseIdle, "idle timeout")
	case errors.As(cause, &pe):
		p.closeWith(websocket.CloseProtocolError, pe.Error())
	case errors.As(cause, &de):
		// 1011 with the reason: 1014 ("bad gateway") would fit better,
		// but clients such as gorilla refuse to receive it.
		p.closeWith(websocket.CloseInternalServerErr, de.msg)
	case errors.Is(cause, errClientGone), errors.Is(cause, wsproto.ErrFrameTooLarge):
		// The client closed, or gorilla already sent 1009.
	default:
		p.closeWith(websocket.CloseInternalServerErr, "internal error")
	}
}

// stuckWriterGrace bounds how long a cancelled stream waits for a writer
// blocked on a client that does not read.
const stuckWriterGrace = 3 * closeGrace

// closeGrace is how long we wait for the client to answer our close frame
// before dropping the connection, so the last frames are not lost in flight.
const closeGrace = time.Second

// closeWith sends a close frame and waits briefly for readLoop to see the
// client's answer.
func (p *Pump) closeWith(code int, reason string) {
	if len(reason) > 123 { // the control frame payload limit, less the code
		reason = reason[:123]
	}
	msg := websocket.FormatCloseMessage(code, reason)
	if err := p.conn.WriteControl(websocket.CloseMessage, msg, time.Now().Add(closeGrace)); err != nil {
		return
	}
	t := time.NewTimer(closeGrace)
	defer t.Stop()
	select {
	case <-p.readDone:
	case <-t.C:
	}
}
