package stream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"gateway/container"
	"gateway/metrics"
	"gateway/sandbox"
	"gateway/session"
	"gateway/stream/wsproto"
)

// Config tunes streams. DefaultConfig documents the defaults.
type Config struct {
	// AllowedOrigins may open WebSockets besides the gateway's own origin
	// (scheme://host:port, or "*" for any).
	AllowedOrigins []string
	// MaxMessageSize is the read limit: a client message over it ends the
	// stream with close code 1009.
	MaxMessageSize int64
	// IdleTimeout ends a stream that carried no data for so long; 0 never.
	IdleTimeout time.Duration
	// PingPeriod is how often the gateway pings the client; PongWait is how
	// long the client may stay silent (it must answer pings within it).
	// PingPeriod < PongWait.
	PingPeriod, PongWait time.Duration
	// InitialSizeWait is how long a tty exec waits for the client's first
	// resize before it starts the process at 80x24, so that programs start
	// at the right size.
	InitialSizeWait time.Duration
}

// DefaultConfig returns the defaults: pings every 25 s (which also keeps
// proxies with 60 s idle timeouts open), 60 s to answer, a 1 MiB read limit
// and the kubelet's 4 h idle timeout.
func DefaultConfig() Config {
	return Config{
		MaxMessageSize:  1 << 20,
		IdleTimeout:     4 * time.Hour,
		PingPeriod:      25 * time.Second,
		PongWait:        60 * time.Second,
		InitialSizeWait: 100 * time.Millisecond,
	}
}

// Close codes the gateway uses besides 1000 (normal end, after the final
// Status), 1001 (gateway shutting down), 1002 (protocol error) and 1009
// (message over the read limit).
const (
	CloseByAPI        = 4000 // DELETE /api/v1/sessions/{id}
	CloseSlowConsumer = 4001 // an attacher fell too far behind
	CloseIdle         = 4002 // no traffic for the idle timeout
)

// Errors before the upgrade.
var (
	ErrBadRequest = errors.New("bad request")
	ErrForbidden  = errors.New("forbidden")
)

// RequestError is a refused request: Err is ErrBadRequest or ErrForbidden,
// Msg says why.
type RequestError struct {
	Err error
	Msg string
}

func (e *RequestError) Error() string { return e.Msg }
func (e *RequestError) Unwrap() error { return e.Err }

func badRequest(format string, args ...any) error {
	return &RequestError{Err: ErrBadRequest, Msg: fmt.Sprintf(format, args...)}
}

func forbidden(format string, args ...any) error {
	return &RequestError{Err: ErrForbidden, Msg: fmt.Sprintf(format, args...)}
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
	streams   sync.WaitGroup // one per running stream
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
		bufs: newBufferPool(),
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
	readBufferSize = 1 << 10
)

// negotiate checks an upgrade request and picks its subprotocol, in the
// client's order, as the kubelet does.
func (s *Server) negotiate(r *http.Request, supported []wsproto.Protocol) (wsproto.Protocol, error) {
	if !websocket.IsWebSocketUpgrade(r) {
		return wsproto.Protocol{}, badRequest("this endpoint streams over WebSocket: send GET with Connection: Upgrade and Upgrade: websocket")
	}
	if err := s.checkOrigin(r); err != nil {
		return wsproto.Protocol{}, err
	}
	offered := wsproto.Offered(r.Header)
	p, ok := wsproto.Negotiate(offered, supported)
	if !ok {
		return p, badRequest("none of the offered subprotocols %q is supported; use one of %q", offered, wsproto.Names(supported))
	}
	return p, nil
}

// checkOrigin admits requests without Origin (non-browser clients), from
// the gateway's own origin, or from an allowed one.
func (s *Server) checkOrigin(r *http.Request) error {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return nil
	}
	u, err := url.Parse(origin)
	if err == nil && strings.EqualFold(u.Host, r.Host) {
		return nil
	}
	for _, a := range s.cfg.AllowedOrigins {
		if a == "*" || strings.EqualFold(strings.TrimSuffix(a, "/"), origin) {
			return nil
		}
	}
	return forbidden("origin %q may not open streams on %s", origin, r.Host)
}

// accept upgrades the connection, echoing the chosen protocol (none when
// the client offered none).
func (s *Server) accept(w http.ResponseWriter, r *http.Request, p wsproto.Protocol) (*websocket.Conn, error) {
	var h http.Header
	if p.Name != "" {
		h = http.Header{"Sec-Websocket-Protocol": {p.Name}}
	}
	conn, err := s.upgrader.Upgrade(w, r, h)
	if err != nil {
		return nil, &RequestError{Err: ErrBadRequest, Msg: "websocket handshake: " + err.Error()}
	}
	return conn, nil
}

// open registers a session for a checked request, upgrades it, and
// returns the stream's Pump (with the page's flow control if asked). On
// error nothing was written and no session remains.
func (s *Server) open(w http.ResponseWriter, r *http.Request, kind session.Kind, target string, proto wsproto.Protocol, flow bool) (*Pump, error) {
	sess, err := s.sessions.Register(kind, target, r.RemoteAddr)
	if err != nil {
		return nil, err
	}
	conn, err := s.accept(w, r, proto)
	if err != nil {
		sess.Finish(nil)
		return nil, err
	}
	p := s.newPump(conn, proto, sess, s.metrics.For(string(kind)))
	if flow {
		p.flow = newFlowControl()
	}
	return p, nil
}

// serve runs a pump as a session, on a goroutine of the Server's: metrics,
// registry and the closing log line. outcome reports, once Run has
// returned, the process's exit code (nil when there is none) and whether
// the stream failed on the gateway's side after reporting it to the client.
// It returns at once.
func (s *Server) serve(p *Pump, onFrame func(context.Context, wsproto.Frame) error, work func(context.Context) error, outcome func() (*int, bool)) {
	s.streams.Go(func() { s.run(p, onFrame, work, outcome) })
}

func (s *Server) run(p *Pump, onFrame func(context.Context, wsproto.Frame) error, work func(context.Context) error, outcome func() (*int, bool)) {
	start := time.Now()
	p.km.Active.Inc()
	p.sess.Activate(p)
	p.log.Info("session opened", "remote", p.sess.RemoteAddr)
	cause := p.Run(onFrame, work)
	code, failed := outcome()
	result := resultOf(cause, code)
	if cause == nil && failed {
		result = metrics.ResultError
	}
	p.km.Active.Dec()
	p.km.Ended(result, time.Since(start))
	p.sess.Finish(code)
	info := p.sess.Info()
	attrs := []any{"result", result, "bytes_in", info.BytesIn, "bytes_out", info.BytesOut,
		"duration", time.Since(start).Round(time.Millisecond)}
	if code != nil {
		attrs = append(attrs, "exit_code", *code)
	}
	if cause != nil {
		attrs = append(attrs, "cause", cause.Error())
	}
	p.log.Info("session closed", attrs...)
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
