package stream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
	"k8s.io/streaming/pkg/httpstream"
	"k8s.io/streaming/pkg/httpstream/spdy"

	"gateway/internal/chunkio"
	"gateway/metrics"
	"gateway/sandbox"
	"gateway/session"
	"gateway/stream/wsproto"
)

// kubectl's port-forward: SPDY/3.1 inside a WebSocket (subprotocol
// SPDY/3.1+portforward.k8s.io, kubectl's default since 1.31), or plain
// SPDY/3.1 (its fallback, and older clients). Many local connections share
// one SPDY connection: for each, the client opens an error stream and a
// data stream, both with headers port and requestID; the gateway pairs
// them, dials the port in the sandbox, and copies both ways. A failure is
// text on the pair's error stream (which kubectl takes as the end of the
// whole forward, as it does with the kubelet).

// SPDYPortForwardProtocol is the WebSocket subprotocol of SPDY inside a
// WebSocket; portForwardSPDYVersion is the SPDY protocol it carries.
const (
	SPDYPortForwardProtocol = "SPDY/3.1+" + portForwardSPDYVersion
	portForwardSPDYVersion  = "portforward.k8s.io"
)

// IsSPDYPortForward reports whether r asks for kubectl's port-forward:
// SPDY, plain or inside a WebSocket.
func IsSPDYPortForward(r *http.Request) bool {
	if IsSPDYUpgrade(r) {
		return true
	}
	for _, p := range websocketProtocols(r) {
		if p == SPDYPortForwardProtocol {
			return true
		}
	}
	return false
}

// PortForwardSPDY serves kubectl's port-forward into a sandbox. An error
// means the request was refused before the upgrade (IsAnswered: and
// answered). It returns once the stream runs.
func (s *Server) PortForwardSPDY(w http.ResponseWriter, r *http.Request, sandboxID string) error {
	sb, err := s.sandboxes.Get(sandboxID)
	if err != nil {
		return err
	}
	sess, err := s.sessions.Register(session.PortForward, sandboxID, r.RemoteAddr)
	if err != nil {
		return err
	}
	transport := metrics.TransportSPDYWebSocket
	if IsSPDYUpgrade(r) {
		transport = metrics.TransportSPDY
	}
	// Ready before the connection: spdystream hands over streams at once.
	f := &spdyForward{client: s.newClient(sess, wsproto.Protocol{Name: transport + "/" + portForwardSPDYVersion}),
		sb: sb, wait: s.cfg.StreamCreationTimeout, pairs: map[string]*streamPair{}, opened: make(chan httpstream.Stream, 1)}
	f.ctx, f.cancel = context.WithCancelCause(s.base)
	if transport == metrics.TransportSPDY {
		if _, err := httpstream.Handshake(r, w, []string{portForwardSPDYVersion}); err != nil {
			sess.Abandon()
			return &answeredError{err}
		}
		f.conn = spdy.NewResponseUpgrader().UpgradeResponse(w, r, f.accept)
		if f.conn == nil {
			sess.Abandon()
			return &answeredError{errors.New("SPDY upgrade failed")}
		}
	} else {
		ws, err := s.upgrader.Upgrade(w, r, http.Header{"Sec-Websocket-Protocol": {SPDYPortForwardProtocol}})
		if err != nil {
			sess.Abandon()
			return badRequest("websocket handshake: %v", err)
		}
		ws.SetReadLimit(s.cfg.MaxMessageSize)
		if f.conn, err = spdy.NewServerConnection(&wsNetConn{ws: ws}, f.accept); err != nil {
			sess.Abandon()
			return err
		}
	}
	f.conn.SetIdleTimeout(s.cfg.IdleTimeout)
	f.km.Opened(transport)
	s.streams.Go(f.run)
	return nil
}

// websocketProtocols lists the subprotocols a WebSocket upgrade offers.
func websocketProtocols(r *http.Request) []string {
	if !websocket.IsWebSocketUpgrade(r) {
		return nil
	}
	return websocket.Subprotocols(r)
}

// spdyForward is one port-forward connection over SPDY.
type spdyForward struct {
	*client
	sb     *sandbox.Sandbox
	wait   time.Duration // for the second stream of a pair
	conn   httpstream.Connection
	opened chan httpstream.Stream // checked streams, for run

	ctx    context.Context
	cancel context.CancelCauseFunc

	mu    sync.Mutex
	pairs map[string]*streamPair // by requestID, until complete or timed out
	work  sync.WaitGroup         // the pairs' goroutines
}

// Close ends the forward with cause; it implements session.Closer.
func (f *spdyForward) Close(cause error) { f.cancel(cause) }

// accept checks a new stream's headers, as the kubelet does, before
// spdystream acknowledges it (it runs on spdystream's goroutine).
func (f *spdyForward) accept(st httpstream.Stream, _ <-chan struct{}) error {
	port, err := strconv.ParseUint(st.Headers().Get("port"), 10, 16)
	switch t := st.Headers().Get("streamType"); {
	case err != nil || port == 0:
		f.km.Error(metrics.ReasonProtocol)
		return fmt.Errorf("port header %q: want a port in 1..65535", st.Headers().Get("port"))
	case t != "error" && t != "data":
		f.km.Error(metrics.ReasonProtocol)
		return fmt.Errorf("streamType header %q: want error or data", t)
	}
	select {
	case f.opened <- st:
		return nil
	case <-f.ctx.Done():
		return context.Cause(f.ctx)
	}
}

// streamPair is one forwarded connection's two streams.
type streamPair struct {
	id          string
	data, error httpstream.Stream
	timer       *time.Timer
}

// run pairs streams until the connection ends, then waits for the pairs.
func (f *spdyForward) run() {
	start := time.Now()
	f.km.Active.Inc()
	f.sess.Activate(f)
	f.log.Info("session opened", "remote", f.sess.RemoteAddr)
	stop := context.AfterFunc(f.ctx, func() { f.conn.Close() })
	defer stop()
loop:
	for {
		select {
		case st := <-f.opened:
			f.add(st)
		case <-f.conn.CloseChan():
			f.cancel(errClientGone)
			break loop
		case <-f.ctx.Done():
			break loop
		}
	}
	f.conn.Close()
	f.mu.Lock()
	for _, p := range f.pairs {
		p.timer.Stop()
	}
	f.mu.Unlock()
	f.work.Wait()
	cause := context.Cause(f.ctx)
	if errors.Is(cause, errClientGone) {
		cause = nil // the client ends a port-forward by leaving
	}
	f.ended(cause, start)
}

// add puts a stream in its pair, and forwards the pair once complete; a
// pair left incomplete for StreamCreationTimeout is dropped, as by the
// kubelet.
func (f *spdyForward) add(st httpstream.Stream) {
	id := st.Headers().Get("requestID")
	if id == "" { // older clients: derived from the stream ids
		id = strconv.Itoa(int(st.Identifier()))
		if st.Headers().Get("streamType") == "data" {
			id = strconv.Itoa(int(st.Identifier()) - 2)
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	p := f.pairs[id]
	if p == nil {
		p = &streamPair{id: id}
		f.pairs[id] = p
		p.timer = time.AfterFunc(f.wait, func() { f.timeout(p) })
	}
	slot := &p.data
	if st.Headers().Get("streamType") == "error" {
		slot = &p.error
	}
	if *slot != nil {
		f.km.Error(metrics.ReasonProtocol)
		f.log.Warn("port-forward: a second stream of one type for a request", "request", id)
		st.Reset()
		return
	}
	*slot = st
	if p.data != nil && p.error != nil && p.timer.Stop() {
		delete(f.pairs, id)
		f.work.Go(func() { f.forward(p) })
	}
}

func (f *spdyForward) timeout(p *streamPair) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.pairs[p.id] != p {
		return
	}
	delete(f.pairs, p.id)
	f.km.Error(metrics.ReasonProtocol)
	f.log.Warn("port-forward: a request's streams did not both come", "request", p.id, "timeout", f.wait)
	for _, st := range []httpstream.Stream{p.data, p.error} {
		if st != nil {
			if st == p.error {
				fmt.Fprintf(st, "timed out waiting for the streams of request %s", p.id)
			}
			st.Reset()
			f.conn.RemoveStreams(st)
		}
	}
}

// forward dials the pair's port in the sandbox and copies both ways until
// both are done.
func (f *spdyForward) forward(p *streamPair) {
	defer f.conn.RemoveStreams(p.data, p.error)
	defer p.error.Close()
	port64, _ := strconv.ParseUint(p.data.Headers().Get("port"), 10, 16)
	port := uint16(port64)
	fail := func(format string, args ...any) {
		msg := fmt.Sprintf("error forwarding port %d to pod %s: ", port, f.sb.ID()) + fmt.Sprintf(format, args...)
		f.log.Warn("port-forward failed", "port", port, "request", p.id, "error", msg)
		fmt.Fprint(p.error, msg)
		p.data.Reset()
	}
	if !f.sb.AllowsPort(port) {
		f.km.Error(metrics.ReasonDial)
		fail("port %d is not allowed (allowed: %v)", port, f.sb.Spec().Ports)
		return
	}
	dctx, cancel := context.WithTimeout(f.ctx, dialTimeout)
	conn, err := f.sb.Dial(dctx, port)
	cancel()
	if err != nil {
		f.km.Error(metrics.ReasonDial)
		fail("%v", err)
		return
	}
	stop := context.AfterFunc(f.ctx, func() { conn.Close() })
	defer stop()
	defer conn.Close()
	var copies sync.WaitGroup
	copies.Go(func() { // client to remote; its end is the remote's end of file
		f.copy(conn, p.data, f.input)
		// A FIN is a half-close. A reset (the client's connection is gone)
		// ends the remote's too, else what it sends would flow on unread
		// (writes to a reset stream do not fail): spdystream marks the
		// stream finished just after it ends the reads, so that is looked
		// for a moment.
		if tc, ok := conn.(interface{ CloseWrite() error }); ok {
			_ = tc.CloseWrite()
		}
		st, ok := p.data.(interface{ IsFinished() bool })
		for i := 0; ok && i < 100; i++ {
			if st.IsFinished() {
				_ = conn.Close()
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
	f.copyOut(p.data, conn)
	_ = p.data.Close() // the remote is done: the client reads an end of file
	copies.Wait()
}

// copyOut copies the remote's bytes to the client until the remote ends
// or the client fails, counting each chunk. A quiet remote's reader holds
// no buffer (see chunkio.Read).
func (f *spdyForward) copyOut(dst io.Writer, conn net.Conn) {
	count := func(b []byte) { f.sess.RecordOut(b); f.km.BytesOut.Add(float64(len(b))) }
	sc, ok := conn.(syscall.Conn)
	if !ok {
		f.copy(dst, conn, count)
		return
	}
	_ = chunkio.Read(sc, f.bufs, func(buf []byte, n int) error {
		defer f.bufs.Put(buf)
		count(buf[:n])
		_, err := dst.Write(buf[:n])
		return err
	})
}

// copy copies until src ends or dst fails, counting each chunk.
func (f *spdyForward) copy(dst io.Writer, src io.Reader, count func([]byte)) {
	buf := f.bufs.Get()
	defer f.bufs.Put(buf)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			count(buf[:n])
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// wsNetConn is a WebSocket as a net.Conn for the SPDY connection inside
// it: Read returns the payloads of binary messages one after another (the
// boundaries mean nothing), Write sends one binary message per call. Only
// spdystream's reader reads it, and its framer writes it under its own
// lock, so gorilla's one-reader, one-writer rule holds.
type wsNetConn struct {
	ws *websocket.Conn
	r  io.Reader // the message being read
}

func (c *wsNetConn) Read(p []byte) (int, error) {
	for {
		if c.r == nil {
			typ, r, err := c.ws.NextReader()
			if err != nil {
				if websocket.IsCloseError(err, websocket.CloseNormalClosure, websocket.CloseGoingAway) {
					return 0, io.EOF
				}
				return 0, err
			}
			if typ != websocket.BinaryMessage {
				continue // nothing of SPDY travels in text messages
			}
			c.r = r
		}
		n, err := c.r.Read(p)
		if errors.Is(err, io.EOF) {
			c.r = nil
			if n == 0 {
				continue
			}
			err = nil
		}
		return n, err
	}
}

func (c *wsNetConn) Write(p []byte) (int, error) {
	if err := c.ws.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Close sends the normal close frame, then closes the connection.
func (c *wsNetConn) Close() error {
	msg := websocket.FormatCloseMessage(websocket.CloseNormalClosure, "")
	_ = c.ws.WriteControl(websocket.CloseMessage, msg, time.Now().Add(closeGrace))
	return c.ws.Close()
}

func (c *wsNetConn) LocalAddr() net.Addr                { return c.ws.LocalAddr() }
func (c *wsNetConn) RemoteAddr() net.Addr               { return c.ws.RemoteAddr() }
func (c *wsNetConn) SetDeadline(t time.Time) error      { return c.ws.NetConn().SetDeadline(t) }
func (c *wsNetConn) SetReadDeadline(t time.Time) error  { return c.ws.SetReadDeadline(t) }
func (c *wsNetConn) SetWriteDeadline(t time.Time) error { return c.ws.SetWriteDeadline(t) }
