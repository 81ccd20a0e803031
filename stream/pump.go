package stream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"
	"golang.org/x/sys/unix"

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

// protocolError ends a stream because the client broke the protocol: close
// code 1002, or code when set (1007 for a text message that is not UTF-8).
type protocolError struct {
	err  error
	code int
}

func (e *protocolError) Error() string { return "protocol error: " + e.err.Error() }
func (e *protocolError) Unwrap() error { return e.err }

func (e *protocolError) closeCode() int {
	if e.code != 0 {
		return e.code
	}
	return websocket.CloseProtocolError
}

// dialError ends a raw port-forward whose one dial failed: there is no
// error channel, so the close frame carries the message.
type dialError struct{ msg string }

func (e *dialError) Error() string { return e.msg }

// outQueueLen bounds the frames waiting for writeLoop. A full queue blocks
// the producer: backpressure reaches the process.
const outQueueLen = 16

// Pump is the WebSocket transport of a stream: it implements Conn for the
// stream kinds over one gorilla connection. Only readLoop reads the conn
// and only the holder of the write baton writes it (gorilla allows Close
// and WriteControl from elsewhere, nothing more).
//
// writeLoop runs only while there is something to write: a frame queued,
// a ping due, the stream ending. A producer that queues a frame takes the
// baton and writes it itself; the ping timer and the end of the stream
// kick a writer goroutine. So an idle stream parks no writer.
type Pump struct {
	// Static after construction.
	conn  *websocket.Conn
	proto wsproto.Protocol
	km    *metrics.Kind
	log   *slog.Logger
	cfg   *Config
	bufs  *bufferPool
	flow  *flowControl // the page's pacing (flow=1), or nil
	fc    *frameCheck  // follows the client's frames for what gorilla misses

	ctx    context.Context // the stream's context; its cause says why it ended
	cancel context.CancelCauseFunc

	out        chan outFrame // to writeLoop; never closed
	readDone   chan struct{} // closed when readLoop returns
	lastActive atomic.Int64  // unix nanoseconds of the last data frame either way

	sized chan struct{} // closed when the first resize was handled; nil unless the client always sends one (see sendsSize)

	b         *baton      // the right to write; ended once the conn is closed
	pingDue   atomic.Bool // the ping timer fired
	normalEnd atomic.Bool // set before the baton ends: the stream ended normally
	pingTimer *time.Timer

	works sync.WaitGroup // work, and what it goes on with (hold)

	// The reading, which may rest between messages (see rest): set by Run,
	// then used only by the goroutine that reads.
	onFrame     FrameHandler
	readEnded   func(error) // the rest of Run, once the reading is over
	msg         []byte      // the message being read
	messages    int64       // messages read to their end
	sizeSeen    bool        // the first resize was handled
	deadline    time.Time   // the read deadline last set
	lastMessage time.Time   // when the last message came (or the reading began)
}

var _ Conn = (*Pump)(nil)

func (s *Server) newPump(conn *websocket.Conn, fc *frameCheck, proto wsproto.Protocol, km *metrics.Kind, log *slog.Logger) *Pump {
	ctx, cancel := context.WithCancelCause(s.base)
	p := &Pump{
		conn: conn, fc: fc, proto: proto, km: km, log: log, cfg: &s.cfg, bufs: s.bufs,
		ctx: ctx, cancel: cancel,
		out:      make(chan outFrame, outQueueLen),
		readDone: make(chan struct{}),
		b:        newBaton(),
	}
	// Stopped until Run: a writer that ends first (see Prime) stops it.
	p.pingTimer = time.AfterFunc(time.Hour, p.pingFire)
	p.pingTimer.Stop()
	p.touch()
	return p
}

// Protocol implements Conn.
func (p *Pump) Protocol() wsproto.Protocol { return p.proto }

// Close ends the stream with cause (session.ErrClosedByAPI, ErrShutdown,
// ...). It does not wait. It implements session.Closer.
func (p *Pump) Close(cause error) { p.cancel(cause) }

// Fail implements Conn.
func (p *Pump) Fail(cause error) { p.cancel(cause) }

// Run runs readLoop (on the calling goroutine), the writer (when needed)
// and work until they have all returned, then calls done. onFrame gets
// each client frame, on readLoop (see FrameHandler). work ends the stream
// normally by calling Finish and returning nil; an error from work ends
// it at once (no status). work must return soon after its context ends;
// what it goes on with on other goroutines it holds (see hold).
//
// ended is called once, when the stream is over for its session, with
// nil after a normal end or the cause that ended it: when the close frame
// has gone out, or, when a writer is stuck on a client that does not
// read, stuckWriterGrace after the stream was cancelled. Such a client
// still gets what was sent and then the close frame if it reads within
// closeLinger; then its connection is dropped.
//
// Run returns when the stream is over, or before, once the reading rests
// (see rest): the reading, and what follows it, go on on goroutines of
// their own, and done is called at the end all the same.
func (p *Pump) Run(onFrame FrameHandler, work func(context.Context) error, ended func(cause error), done func()) {
	var once sync.Once
	end := func() { once.Do(func() { ended(p.cause()) }) }
	p.pingTimer.Reset(p.cfg.PingPeriod)
	var (
		timers        sync.Mutex
		stuck, linger *time.Timer
		over          bool // Run is past the writing: no timers any more
	)
	stopWatch := context.AfterFunc(p.ctx, func() {
		p.b.kick(p.writeLoop) // sends the close frame, unless the writer is stuck
		lingerFor := closeLinger
		if errors.Is(context.Cause(p.ctx), session.ErrShutdown) {
			lingerFor = closeGrace // the gateway is going away
		}
		timers.Lock()
		if !over {
			stuck = time.AfterFunc(stuckWriterGrace, end)
			linger = time.AfterFunc(lingerFor, func() { p.conn.Close() })
		}
		timers.Unlock()
	})
	p.works.Go(func() {
		if err := work(p.ctx); err != nil {
			p.cancel(err)
		}
	})
	p.onFrame = onFrame
	p.readEnded = func(err error) {
		if err != nil {
			p.cancel(err)
		}
		close(p.readDone)
		// readLoop ends when the conn is closed: by the writer at the end, by
		// the linger timer, or by the client, in which case the stream is
		// cancelled just above (or was already) and a writer winds it up.
		<-p.b.Done()
		end()
		stopWatch()
		timers.Lock()
		over = true
		if stuck != nil {
			stuck.Stop()
			linger.Stop()
		}
		timers.Unlock()
		p.b.wait()
		p.works.Wait()
		p.cancel(nil)
		done()
	}
	p.conn.SetReadLimit(p.cfg.MaxMessageSize)
	p.setReadDeadline()
	p.conn.SetPongHandler(func(string) error { return p.setReadDeadline() })
	p.conn.SetCloseHandler(p.onClose)
	p.lastMessage = time.Now()
	p.read()
}

// hold keeps Run from ending until release is called: for work that goes
// on on a goroutine of its own (a process's output that rests while
// the process is quiet). Call it from work, before work returns.
func (p *Pump) hold() (release func()) {
	p.works.Add(1)
	return p.works.Done
}

// read runs readLoop, and the rest of Run once the reading is over.
func (p *Pump) read() {
	if err, rested := p.readLoop(); !rested {
		p.readEnded(err)
	}
}

// setReadDeadline gives the client PongWait from now to send something.
func (p *Pump) setReadDeadline() error {
	p.deadline = time.Now().Add(p.cfg.PongWait)
	return p.conn.SetReadDeadline(p.deadline)
}

// cause is why the stream ended: nil after a normal end.
func (p *Pump) cause() error {
	if p.normalEnd.Load() {
		return nil
	}
	return context.Cause(p.ctx)
}

// pingFire marks a ping due and re-arms the timer, until the end.
func (p *Pump) pingFire() {
	select {
	case <-p.b.Done():
		return
	default:
	}
	p.pingDue.Store(true)
	p.b.kick(p.writeLoop)
	p.pingTimer.Reset(p.cfg.PingPeriod)
}

// pending reports whether the writer has work.
func (p *Pump) pending() bool {
	return len(p.out) > 0 || p.pingDue.Load() || p.ctx.Err() != nil
}

// endWrites ends the stream's writing: the baton is never handed back, so
// no writer starts again.
func (p *Pump) endWrites(normal bool) {
	p.pingTimer.Stop()
	_ = p.flush()  // a corked frame whose close frame was not sent
	p.conn.Close() // ends readLoop
	p.normalEnd.Store(normal)
	p.b.end()
}

// Finish implements Conn. A nil st sends no status (port-forward).
func (p *Pump) Finish(ctx context.Context, st *wsproto.Status) bool {
	if st != nil && !p.proto.Raw {
		if payload := p.proto.StatusPayload(*st); payload != nil {
			// Queued before the end, for the writer to write the two at
			// once (see writeFrame).
			if !p.queue(ctx, outFrame{ch: wsproto.Error, b: payload}) {
				return false
			}
		}
	}
	return p.Send(ctx, outFrame{end: true})
}

// Send implements Conn: it queues f and, unless a writer runs, writes it
// on the calling goroutine. With the page's flow control, it then waits
// while the page is too far behind.
func (p *Pump) Send(ctx context.Context, f outFrame) bool {
	checkNotHandler(ctx)
	n := len(f.data())
	if !p.queue(ctx, f) {
		return false
	}
	p.b.run(p.writeLoop)
	if p.flow != nil && n > 0 && (f.ch == wsproto.Stdout || f.ch == wsproto.Stderr) {
		p.flow.sentBytes(n)
		return p.flow.wait(ctx)
	}
	return true
}

// Prime writes fs, on the calling goroutine, in the handshake's write
// (see watchedConn.cork): for first frames known at the upgrade, before
// Run.
func (p *Pump) Prime(fs ...outFrame) {
	for _, f := range fs {
		select {
		case p.out <- f:
		default: // full: written out, the rest queued
			p.b.run(p.writeLoop)
			p.queue(p.ctx, f)
		}
	}
	p.b.run(p.writeLoop)
}

// queue queues f, unless ctx ends first. A full queue has a writer
// running, which empties it.
func (p *Pump) queue(ctx context.Context, f outFrame) bool {
	if ctx.Err() != nil { // select would pick at random were both ready
		p.release(f)
		return false
	}
	select {
	case p.out <- f:
		return true
	case <-ctx.Done():
		p.release(f)
		return false
	}
}

// queued is the number of frames waiting for the writer.
func (p *Pump) queued() int { return len(p.out) }

func (p *Pump) release(f outFrame) {
	if f.pooled {
		p.bufs.Put(f.b[:cap(f.b)])
	}
}

// SyncInput implements Conn for connections from a Listener; elsewhere it
// returns at once. The first size of a client known to send one (see
// sendsSize) is waited for instead, at most syncInputMax, as spdyConn
// waits.
func (p *Pump) SyncInput(ctx context.Context) {
	if p.sized != nil {
		waitSized(ctx, p.sized)
		return
	}
	if w := watched(p.conn.NetConn()); w != nil {
		w.caughtUp(ctx, syncInputMax)
	}
}

// sendsSize reports whether the client always sends its terminal size
// right after it connects, when it asks for a tty: kubectl does (it asks
// for a tty only when its own input and output are terminals, and sends
// their size then), but a moment later, from a goroutine of its own, so
// the size may not have reached the gateway when the stream starts. Other
// clients may send none, and their process starts at once.
func sendsSize(r *http.Request) bool {
	return strings.HasPrefix(r.UserAgent(), "kubectl/")
}

// syncInputMax bounds SyncInput, for a reader held up by a full input
// queue (a client that sent much input before its process exists).
const syncInputMax = 250 * time.Millisecond

// waitSized waits until sized is closed (the client's first size was
// handled), at most syncInputMax, or until ctx ends.
func waitSized(ctx context.Context, sized <-chan struct{}) {
	t := time.NewTimer(syncInputMax)
	defer t.Stop()
	select {
	case <-sized:
	case <-t.C:
	case <-ctx.Done():
	}
}

func (p *Pump) touch() { p.lastActive.Store(time.Now().UnixNano()) }

// readLoop does every read of the conn until the client leaves, the conn is
// closed, or onFrame fails; or until it rests between two messages (see
// rest), and reports so. It keeps reading while the stream lives, so
// pings are answered even when the process is busy.
func (p *Pump) readLoop() (err error, rested bool) {
	hctx := handlerCtx{p.ctx}
	for {
		if p.rest() {
			return nil, true
		}
		typ, r, err := p.conn.NextReader()
		if err != nil {
			return p.readError(err), false
		}
		if p.msg, err = chunkio.AppendAll(p.msg[:0], r); err != nil { // gorilla enforces the limit
			return p.readError(err), false
		}
		p.messages++
		p.lastMessage = time.Now()
		msg := p.msg
		if cap(msg) > 4*readChunk { // do not keep a huge paste around
			p.msg = nil
		}
		if typ == websocket.TextMessage && !utf8.Valid(msg) { // gorilla does not check
			p.km.Error(metrics.ReasonProtocol)
			return &protocolError{err: errors.New("a text message that is not UTF-8"), code: websocket.CloseInvalidFramePayloadData}, false
		}
		_ = p.setReadDeadline()
		p.touch()
		f, err := p.proto.ParseFrame(msg)
		switch {
		case errors.Is(err, wsproto.ErrEmpty):
			continue // ignored, as by the kubelet
		case errors.Is(err, wsproto.ErrBadCloseSignal):
			p.km.Error(metrics.ReasonProtocol)
			return &protocolError{err: err}, false
		case errors.Is(err, wsproto.ErrUnknownChannel):
			p.km.Error(metrics.ReasonUnknownChannel) // ignored, as by the kubelet
			continue
		case err != nil: // a bad base64 frame is dropped, the stream goes on
			p.km.Error(metrics.ReasonProtocol)
			p.log.Warn("dropped malformed frame", "error", err)
			continue
		}
		if f.Channel == wsproto.Ack && p.flow != nil {
			p.onAck(f)
		} else if err := p.onFrame(hctx, f); err != nil {
			return err, false
		}
		if f.Channel == wsproto.Resize && p.sized != nil && !p.sizeSeen {
			close(p.sized)
			p.sizeSeen = true
		}
	}
}

// rest ends the reading goroutine once the client has sent no message
// for restAfter, so that an idle stream holds none: when gorilla holds none of the client's bytes
// (the frame scanner shows every byte read belongs to messages read to
// their end) on a connection from a Listener, it parks the connection,
// and read runs again on a new goroutine once the client sends something,
// hangs up or the connection is closed (or at the read deadline, where
// gorilla's read fails as it would have). Pings and pongs that come
// meanwhile are answered here, without gorilla: it would read them and
// then wait for a message. It reports whether the connection was parked.
func (p *Pump) rest() bool {
	ct, ok := p.conn.NetConn().(*checkedTCP)
	if !ok || len(ct.pre) > 0 || !p.fc.rests(p.messages) {
		return false
	}
	for p.ctx.Err() == nil && time.Now().Before(p.deadline) {
		var b [2 + 4 + 125]byte // header, mask key, the largest control payload
		n, err := ct.peekWait(b[:], restAfter-time.Since(p.lastMessage), p.deadline)
		switch p.controlFrame(ct.watchedConn, b[:n], err) {
		case nothingSent: // for restAfter
			p.msg = nil // nothing of the goroutine's may be touched once parked
			return ct.park(p.deadline, p.read)
		case answered:
			continue
		default:
			return false
		}
	}
	return false
}

// restAfter is how long a reader waits for its client, the usual way,
// before it rests: a busy stream keeps its goroutine, and its reads the
// one hop from Go's poller.
const restAfter = 200 * time.Millisecond

// What the client sent next, for rest.
const (
	nothingSent = iota // the kernel holds nothing
	answered           // a ping or a pong, taken and answered
	other              // anything else: gorilla reads it
)

// controlFrame takes a ping or a pong the client sent whole, and answers
// it as gorilla would: a ping with a pong, a pong by extending the read
// deadline. b and err are what a peek found.
func (p *Pump) controlFrame(wc *watchedConn, b []byte, err error) int {
	n := len(b)
	switch {
	case errors.Is(err, unix.EAGAIN):
		return nothingSent
	case err != nil || n < 6:
		return other
	}
	op, masked, size := b[0], b[1]&0x80 != 0, int(b[1]&0x7f)
	// Final, no reserved bits, a ping (9) or a pong (10); masked, as a
	// client's frames are; all of it there.
	if (op != 0x89 && op != 0x8a) || !masked || size > 125 || n < 6+size {
		return other
	}
	if k, err := wc.take(b[:6+size]); err != nil || k != 6+size {
		return other // cannot happen: the bytes were there
	}
	payload := b[6 : 6+size]
	for i := range payload {
		payload[i] ^= b[2+i%4]
	}
	if op == 0x8a {
		_ = p.setReadDeadline()
		return answered
	}
	err = p.conn.WriteControl(websocket.PongMessage, payload, time.Now().Add(closeGrace))
	if err != nil && !errors.Is(err, websocket.ErrCloseSent) {
		return other // gorilla's next read sees what is wrong
	}
	return answered
}

// onClose answers the client's close frame, as gorilla would (its code
// back), unless the frame broke the protocol: then with 1002.
func (p *Pump) onClose(code int, _ string) error {
	msg := websocket.FormatCloseMessage(code, "")
	if v := p.fc.violation(); v != "" {
		msg = websocket.FormatCloseMessage(websocket.CloseProtocolError, v)
	}
	_ = p.conn.WriteControl(websocket.CloseMessage, msg, time.Now().Add(closeGrace))
	return nil
}

// readError turns a read failure into the cause that ends the stream.
func (p *Pump) readError(err error) error {
	if v := p.fc.violation(); v != "" && p.ctx.Err() == nil {
		p.km.Error(metrics.ReasonProtocol)
		return &protocolError{err: errors.New(v)}
	}
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

// writeLoop does every write of the conn while it holds the baton: frames,
// pings, the close frame. It parks the baton when there is nothing to
// write, or ends it once the stream is over: then it has sent the close
// frame and closed the conn (which ends readLoop).
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
				if err := p.flush(); err != nil {
					p.cancel(p.writeError(err))
					continue
				}
				if p.b.park(p.pending) {
					return
				}
				continue
			}
		}
		if f.end {
			// A stream cancelled meanwhile (a shutdown, the API) ends as
			// cancelled: its process may have ended because of it, and
			// select picks at random between the two when both are ready.
			if p.ctx.Err() != nil {
				p.closeFor(context.Cause(p.ctx))
				p.endWrites(false)
				return
			}
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
		err := p.writeMessage(websocket.TextMessage, msg)
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
	if next != nil && next.end {
		p.cork() // this frame goes out with the close frame (see closeWith)
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
		err = p.writeMessage(websocket.BinaryMessage, wire)
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
		err = p.writeMessage(websocket.BinaryMessage, msg)
		p.bufs.Put(scratch)
	}
	p.release(f)
	for _, g := range batch {
		p.release(g)
	}
	return next, err
}

// writeMessage writes one data message. gorilla copies a payload of up
// to writeBufferSize into its buffer and writes it through the
// connection's Write, which a cork holds; a larger one leaves by writev,
// past the cork, so what the cork holds goes first (a raw tunnel's first
// frame, which no small frame precedes, would overtake the handshake).
func (p *Pump) writeMessage(typ int, b []byte) error {
	if len(b) > writeBufferSize {
		if wc := watched(p.conn.NetConn()); wc != nil {
			if err := wc.release(); err != nil {
				return err
			}
		}
	}
	return p.conn.WriteMessage(typ, b)
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
	if code, reason, tell := endFor(cause); tell {
		p.closeWith(code, reason)
	}
}

// endFor is how a stream cancelled by cause ends for its client: the
// WebSocket close code and its reason (over SPDY the reason is a failure
// Status's message); tell is false when no one is left to tell (the client
// closed) or gorilla already did (1009).
func endFor(cause error) (code int, reason string, tell bool) {
	var pe *protocolError
	var de *dialError
	switch {
	case errors.Is(cause, session.ErrClosedByAPI):
		return CloseByAPI, "session closed through the API", true
	case errors.Is(cause, session.ErrShutdown):
		return websocket.CloseGoingAway, "gateway shutting down", true
	case errors.Is(cause, errSlowConsumer):
		return CloseSlowConsumer, "client too slow: output queue overflowed", true
	case errors.Is(cause, errShareRevoked):
		return CloseShareRevoked, "the share link was revoked", true
	case errors.Is(cause, errIdle):
		return CloseIdle, "idle timeout", true
	case errors.Is(cause, errRecordingFailed):
		return websocket.CloseInternalServerErr, errRecordingFailed.Error(), true
	case errors.As(cause, &pe):
		return pe.closeCode(), pe.Error(), true
	case errors.As(cause, &de):
		// 1011 with the reason: 1014 ("bad gateway") would fit better,
		// but clients such as gorilla refuse to receive it.
		return websocket.CloseInternalServerErr, de.msg, true
	case errors.Is(cause, errClientGone), errors.Is(cause, wsproto.ErrFrameTooLarge):
		return 0, "", false
	}
	return websocket.CloseInternalServerErr, "internal error", true
}

// stuckWriterGrace bounds how long a cancelled stream's session waits for
// a writer blocked on a client that does not read; closeLinger, how long
// that client's connection is kept for the write to finish and the close
// frame to follow.
const (
	stuckWriterGrace = closeGrace
	closeLinger      = 10 * time.Second
)

// closeGrace is how long we wait for the client to answer our close frame
// before dropping the connection, so the last frames are not lost in flight.
const closeGrace = time.Second

// closeReason is reason as a close frame carries it: UTF-8 (clients fail
// the connection otherwise), cut to the control frame payload limit, less
// the code, at a character's start.
func closeReason(reason string) string {
	reason = strings.ToValidUTF8(reason, "\uFFFD")
	if len(reason) > 123 {
		cut := 123
		for !utf8.RuneStart(reason[cut]) {
			cut--
		}
		reason = reason[:cut]
	}
	return reason
}

// closeWith sends a close frame and waits briefly for readLoop to see the
// client's answer.
func (p *Pump) closeWith(code int, reason string) {
	msg := websocket.FormatCloseMessage(code, closeReason(reason))
	err := p.conn.WriteControl(websocket.CloseMessage, msg, time.Now().Add(closeGrace))
	if err = errors.Join(err, p.flush()); err != nil {
		return
	}
	t := time.NewTimer(closeGrace)
	defer t.Stop()
	select {
	case <-p.readDone:
	case <-t.C:
	}
}

// cork holds the connection's writes until flush, which writes them at
// once: the last frame and the close frame in one system call and one
// segment, and the client reads both in one wake-up.
func (p *Pump) cork() {
	if wc := watched(p.conn.NetConn()); wc != nil {
		wc.cork()
	}
}

// flush writes what cork held.
func (p *Pump) flush() error {
	if wc := watched(p.conn.NetConn()); wc != nil {
		return wc.flush()
	}
	return nil
}
