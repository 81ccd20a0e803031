package stream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"gateway/audit"
	"gateway/container"
	"gateway/internal/reqerr"
	"gateway/metrics"
	"gateway/sandbox"
	"gateway/session"
	"gateway/stream/wsproto"
)

// Config tunes streams. DefaultConfig documents the defaults.
type Config struct {
	// MaxMessageSize is the read limit: a client message over it ends the
	// stream with close code 1009.
	MaxMessageSize int64
	// IdleTimeout ends a stream that carried no data for so long; 0 never.
	IdleTimeout time.Duration
	// PingPeriod is how often the gateway pings the client; PongWait is how
	// long the client may stay silent (it must answer pings within it).
	// PingPeriod < PongWait.
	PingPeriod, PongWait time.Duration
	// StreamCreationTimeout bounds how long a SPDY client may take to open
	// the streams of an exec or attach, and those of a port-forward pair,
	// as in the kubelet.
	StreamCreationTimeout time.Duration
	// MaxDetach caps how long an exec opened with detach outlives its last
	// client.
	MaxDetach time.Duration
	// SharedKeep is how many bytes of a shared exec's output are kept for
	// clients that rejoin from where they were (since=).
	SharedKeep int
	// MaxShares bounds the share links of one session, and MaxShareTTL
	// their life.
	MaxShares   int
	MaxShareTTL time.Duration
	// Record says where and which sessions are recorded; Audit is the
	// audit trail (nil: none).
	Record RecordConfig
	Audit  *audit.Log
}

// DefaultConfig returns the defaults: pings every 25 s (which also keeps
// proxies with 60 s idle timeouts open), 60 s to answer, a 1 MiB read limit
// and the kubelet's 4 h idle timeout.
func DefaultConfig() Config {
	return Config{
		MaxMessageSize: 1 << 20,
		IdleTimeout:    4 * time.Hour,
		PingPeriod:     25 * time.Second,
		PongWait:       60 * time.Second,

		StreamCreationTimeout: 30 * time.Second,

		MaxDetach:   time.Hour,
		SharedKeep:  256 << 10,
		MaxShares:   10,
		MaxShareTTL: 24 * time.Hour,
	}
}

// Close codes the gateway uses besides 1000 (normal end, after the final
// Status), 1001 (gateway shutting down), 1002 (protocol error) and 1009
// (message over the read limit).
const (
	CloseByAPI        = 4000 // DELETE /api/v1/sessions/{id}
	CloseSlowConsumer = 4001 // an attacher fell too far behind
	CloseIdle         = 4002 // no traffic for the idle timeout
	CloseShareRevoked = 4003 // the share link that let the client in was revoked
)

func badRequest(format string, args ...any) error {
	return reqerr.New(reqerr.ErrBadRequest, format, args...)
}

// Server serves streams. Streams outlive their HTTP requests: a handler
// returns as soon as its stream runs (so net/http releases the request,
// its buffers and the handler's stack), and the stream's goroutines belong
// to the Server. Streams run under the server's base context and end on
// Registry.CloseAll; Wait waits for them.
type Server struct {
	cfg       Config
	log       *slog.Logger
	runtime   *container.Runtime
	sandboxes *sandbox.Registry
	sessions  *session.Registry
	metrics   *metrics.Metrics
	upgrader  websocket.Upgrader
	base      context.Context
	bufs      *bufferPool
	streams   sync.WaitGroup // one per running stream, and one per shared exec's process

	sharedMu sync.Mutex
	shared   map[string]*shared // shared execs by session id
	shares   map[string]*share  // their share links by id
}

// Wait blocks until every stream has ended, or ctx ends.
func (s *Server) Wait(ctx context.Context) error {
	done := make(chan struct{})
	go func() { s.streams.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("streams still running: %w", ctx.Err())
	}
}

// NewServer returns a stream server. base is the parent of every stream's
// context; streams are not tied to their request's context.
func NewServer(base context.Context, cfg Config, log *slog.Logger, rt *container.Runtime, sb *sandbox.Registry,
	sessions *session.Registry, m *metrics.Metrics) *Server {
	return &Server{
		cfg: cfg, log: log, runtime: rt, sandboxes: sb, sessions: sessions, metrics: m, base: base,
		bufs:   newBufferPool(),
		shared: make(map[string]*shared),
		shares: make(map[string]*share),
		upgrader: websocket.Upgrader{
			HandshakeTimeout: 10 * time.Second,
			// A small read buffer: it holds frame headers and small frames,
			// and large frames bypass it. Write buffers come from a pool, so
			// idle streams hold none.
			ReadBufferSize:  readBufferSize,
			WriteBufferSize: writeBufferSize,
			WriteBufferPool: &sync.Pool{},
			// Origins are checked by checkOrigin, with a Status body.
			CheckOrigin: func(*http.Request) bool { return true },
			Error:       func(http.ResponseWriter, *http.Request, int, error) {},
		},
	}
}

const (
	// readChunk is the size replayed scrollback is cut into frames at;
	// readLoop keeps a message buffer of up to four of them.
	readChunk = 32 << 10
	// bufferSize is the size of pooled buffers: a read of process or
	// socket output with its channel byte, or a batch of frames.
	bufferSize = maxBatch + 1
	// writeBufferSize is gorilla's write buffer: small frames are copied
	// into it, large ones mostly go straight from our buffers (writev).
	writeBufferSize = 512
	// readBufferSize is what each stream keeps for reading while idle.
	readBufferSize = 256
)

// negotiate picks an upgrade request's subprotocol, in the client's
// order, as the kubelet does. A client that offers only protocols the
// gateway does not speak is refused with 403, as by the kubelet and the
// API server (the wsstream handshake).
func negotiate(r *http.Request, supported []wsproto.Protocol) (wsproto.Protocol, error) {
	offered := wsproto.Offered(r.Header)
	p, ok := wsproto.Negotiate(offered, supported)
	if !ok {
		return p, reqerr.New(reqerr.ErrForbidden, "none of the offered subprotocols %q is supported; use one of %q", offered, wsproto.Names(supported))
	}
	return p, nil
}

// LogPath is a request path as logs show it: the token of a single-use
// stream URL (/stream/TOKEN) is a credential until it is used, and is
// left out.
func LogPath(path string) string {
	if strings.HasPrefix(path, "/stream/") {
		return "/stream/…"
	}
	return path
}

// CheckProtocols refuses, as the handler would (403), a WebSocket
// request that offers no subprotocol of its kind: for a caller that must
// know before it commits to serving the request.
func CheckProtocols(r *http.Request, portForward bool) error {
	supported := wsproto.ExecProtocols
	if portForward {
		supported = wsproto.PortForwardProtocols
	}
	_, err := negotiate(r, supported)
	return err
}

// accept upgrades the connection, echoing the chosen protocol (none when
// the client offered none), with a frameCheck on what the client sends.
func (s *Server) accept(w http.ResponseWriter, r *http.Request, p wsproto.Protocol) (*websocket.Conn, *frameCheck, error) {
	var h http.Header
	if p.Name != "" {
		h = http.Header{"Sec-Websocket-Protocol": {p.Name}}
	}
	fc := &frameCheck{}
	conn, err := s.upgrader.Upgrade(checkingWriter{ResponseWriter: w, fc: fc}, r, h)
	if err != nil {
		return nil, nil, badRequest("websocket handshake: %v", err)
	}
	return conn, fc, nil
}

// transport is what serve runs: a Conn that also runs the stream, and
// that the registry can close.
type transport interface {
	Conn
	session.Closer
	// Run serves the stream until it ends, then calls done; it may return
	// before (see Pump.Run).
	Run(onFrame FrameHandler, work func(context.Context) error, ended func(cause error), done func())
}

// open registers a session for a checked request, upgrades it to a
// WebSocket (with the page's flow control if asked), and returns the
// stream's client. On error nothing was written and no session remains.
func (s *Server) open(w http.ResponseWriter, r *http.Request, kind session.Kind, target string, proto wsproto.Protocol, flow bool) (*client, error) {
	sess, err := s.sessions.Register(kind, target, r.RemoteAddr)
	if err != nil {
		return nil, err
	}
	c, err := s.upgrade(w, r, sess, proto, flow)
	if err != nil {
		sess.Abandon()
		return nil, err
	}
	c.from(r)
	return c, nil
}

// upgrade upgrades a checked request to a WebSocket for a session, as
// open does.
func (s *Server) upgrade(w http.ResponseWriter, r *http.Request, sess *session.Session, proto wsproto.Protocol, flow bool) (*client, error) {
	conn, fc, err := s.accept(w, r, proto)
	if err != nil {
		return nil, err
	}
	c := s.newClient(sess, proto)
	c.km.Opened(metrics.TransportWebSocket)
	p := s.newPump(conn, fc, proto, c.km, c.log)
	if sendsSize(r) {
		p.sized = make(chan struct{})
	}
	if flow {
		p.flow = newFlowControl()
	}
	c.Conn, c.t = p, p
	return c, nil
}

// openStream registers an exec or an attach and opens it on the transport
// the request asks for (see openFor). On error nothing was written and no
// session remains.
func (s *Server) openStream(w http.ResponseWriter, r *http.Request, kind session.Kind, target string, want Streams) (*client, error) {
	sess, err := s.sessions.Register(kind, target, r.RemoteAddr)
	if err != nil {
		return nil, err
	}
	c, err := s.openFor(w, r, sess, want)
	if err != nil {
		sess.Abandon()
		return nil, err
	}
	c.from(r)
	c.tty = audit.Bool(want.TTY)
	return c, nil
}

// openFor upgrades a checked request for a session, to a WebSocket (its
// subprotocol negotiated) or SPDY/3.1.
func (s *Server) openFor(w http.ResponseWriter, r *http.Request, sess *session.Session, want Streams) (*client, error) {
	if IsSPDYUpgrade(r) {
		return s.openSPDY(w, r, sess, want)
	}
	proto, err := negotiate(r, wsproto.ExecProtocols)
	if err != nil {
		return nil, err
	}
	return s.upgrade(w, r, sess, proto, want.Flow)
}

// newClient is a session's client, before its transport is set.
func (s *Server) newClient(sess *session.Session, proto wsproto.Protocol) *client {
	return &client{srv: s, sess: sess, km: s.metrics.For(string(sess.Kind)), log: s.sessionLog(sess, proto), bufs: s.bufs}
}

// serve runs a client's transport as its session, on a goroutine of the
// Server's: metrics, registry and the closing log line. It returns at
// once.
//
// The log line and the audit record are written here, on the caller's
// goroutine, which is about to end: writing them grows a stack past
// 4 KiB, and the stream's goroutine would keep the 8 KiB for its whole
// life (the runtime halves a parked stack only while its frames use under
// a quarter of it; parked in a read, ours use 1.5 to 2.5 KiB).
func (s *Server) serve(c *client, onFrame FrameHandler, work func(context.Context) error) {
	start := time.Now()
	if !c.joined { // a client joining a shared exec is not a session of its own
		c.km.Active.Inc()
		c.sess.Activate(c.t)
		c.log.Info("session opened", "remote", c.sess.RemoteAddr)
		c.auditStart()
	}
	s.streams.Add(1)
	go c.t.Run(onFrame, work, func(cause error) { c.ended(cause, start) }, s.streams.Done)
}

// onFreshStack runs fn on a goroutine of its own and waits for it: deep
// one-off work (a dial, decoding JSON) on a stream's long-lived goroutine
// would leave it the larger stack for good (see serve), while this one's
// goes back to the runtime's pool when fn returns.
func onFreshStack(fn func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn()
	}()
	<-done
}

// ended records the end of a client's session: its result, from why the
// stream ended and what the kind reported (see client.exited). The client
// of a shared exec leaves it instead, and one refused by it has nothing to
// end: the session goes on.
func (c *client) ended(cause error, start time.Time) {
	if sh := c.shared.Load(); sh != nil {
		sh.leave(c, cause)
		return
	}
	if c.joined {
		return // refused after the upgrade: the session goes on without it
	}
	code := c.exit.Load()
	result := resultOf(cause, code)
	if cause == nil && c.failed.Load() {
		result = metrics.ResultError
	}
	c.srv.finished(c.sess, c.km, c.log, result, code, cause, time.Since(start))
}

// finished records the end of a session: metrics, registry (its
// recording ends there), log and audit trail.
func (s *Server) finished(sess *session.Session, km *metrics.Kind, log *slog.Logger, result string, code *int, cause error, d time.Duration) {
	km.Active.Dec()
	km.Ended(result, d)
	sess.Finish(code)
	info := sess.Info()
	auditEnd(s.cfg.Audit, sess, info, result, cause)
	attrs := []any{"result", result, "bytes_in", info.BytesIn, "bytes_out", info.BytesOut,
		"duration", d.Round(time.Millisecond)}
	if code != nil {
		attrs = append(attrs, "exit_code", *code)
	}
	if cause != nil {
		attrs = append(attrs, "cause", cause.Error())
	}
	log.Info("session closed", attrs...)
}

func resultOf(cause error, exitCode *int) string {
	var pe *protocolError
	var de *dialError
	switch {
	case cause == nil && exitCode != nil && *exitCode != 0:
		return metrics.ResultNonZeroExit
	case cause == nil:
		return metrics.ResultSuccess
	case errors.As(cause, &pe), errors.As(cause, &de), errors.Is(cause, wsproto.ErrFrameTooLarge):
		return metrics.ResultError
	case errors.Is(cause, errClientGone):
		return metrics.ResultClientDisconnect
	default:
		return metrics.ResultTerminated
	}
}

// sessionLog is the logger of one session.
func (s *Server) sessionLog(sess *session.Session, proto wsproto.Protocol) *slog.Logger {
	return s.log.With("session", sess.ID, "kind", string(sess.Kind), "target", sess.Target, "protocol", proto.Name)
}
