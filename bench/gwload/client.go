package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"gateway/internal/chunkio"
	"gateway/stream/wsproto"
)

// stream is one WebSocket of a channel protocol (binary flavours only).
// Only one goroutine reads it and only one writes it.
type stream struct {
	conn      *websocket.Conn
	proto     wsproto.Protocol
	buf       []byte // the last message read
	closeCode int    // the server's close code, once read; 0 before
	t         timing
}

// timing is how a flow's set-up went, as its client saw it.
type timing struct {
	mint     time.Duration // minting its URL (the CRI), or 0
	upgraded time.Duration // from the dial to the upgrade's answer
	first    time.Duration // from the dial to its first frames (ready, port prefixes)
}

func newStream(conn *websocket.Conn, proto wsproto.Protocol, timeout time.Duration) stream {
	_ = conn.SetReadDeadline(time.Now().Add(timeout))
	_ = conn.SetWriteDeadline(time.Now().Add(timeout))
	return stream{conn: conn, proto: proto, buf: make([]byte, 0, 4096)}
}

// errClosed: the server's close frame arrived; closeCode says which.
var errClosed = errors.New("websocket closed by the server")

// frame reads one message: its frame, whose payload is valid until the
// next call. At the server's close frame it returns errClosed.
func (s *stream) frame() (wsproto.Frame, error) {
	mt, r, err := s.conn.NextReader()
	if err != nil {
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			s.closeCode = ce.Code
			return wsproto.Frame{}, errClosed
		}
		return wsproto.Frame{}, err
	}
	if mt != websocket.BinaryMessage {
		return wsproto.Frame{}, fmt.Errorf("server sent a message of type %d, want binary", mt)
	}
	if s.buf, err = chunkio.AppendAll(s.buf[:0], r); err != nil {
		return wsproto.Frame{}, err
	}
	f, err := s.proto.ParseFrame(s.buf)
	if err != nil {
		return wsproto.Frame{}, fmt.Errorf("message % x: %w", s.buf[:min(len(s.buf), 8)], err)
	}
	return f, nil
}

// send writes one frame; the payload is not copied.
func (s *stream) send(ch wsproto.Channel, p []byte) error {
	w, err := s.conn.NextWriter(websocket.BinaryMessage)
	if err != nil {
		return err
	}
	var hdr [1]byte
	if _, err := w.Write(s.proto.AppendFrame(hdr[:0], ch, nil)); err != nil {
		return err
	}
	if _, err := w.Write(p); err != nil {
		return err
	}
	return w.Close()
}

func (s *stream) timing() timing { return s.t }

// flow is one byte stream that gwload measures, as its client sees it: an
// exec session or a tunnel through a server, or directly the process or
// the TCP connection (the ceilings). A scenario's arms differ only in how
// they start their flows.
type flow interface {
	write(p []byte) error
	// next returns the next chunk that arrives, valid until the next call,
	// or io.EOF at a normal end: for a session, a Success status and close
	// code 1000 after the output; for a tunnel, close code 1000; for a
	// process, its exit with code 0.
	next() ([]byte, error)
	// close ends the flow from this side: a tunnel with a close frame and
	// the server's answer 1000 (checked), the others at once.
	close() error
	timing() timing // how its set-up went; zero where there is none
}

// readEnd reads f to its end and returns how many bytes came.
func readEnd(f flow) (int64, error) {
	var n int64
	for {
		p, err := f.next()
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			f.close()
			return n, err
		}
		n += int64(len(p))
	}
}

// --- exec and attach ------------------------------------------------------------

// session is one exec or attach stream.
type session struct {
	stream
	stderr    int64 // payload bytes received on stderr
	status    *wsproto.Status
	rawStatus []byte
}

// open starts an exec: it gets the URL, dials, sends the initial size
// (tty, unless r.noSize) so that the server starts the process at once
// rather than after a wait for it (kubectl sends it too), and reads the
// empty ready frame.
func (e *endpoint) open(ctx context.Context, d *websocket.Dialer, r execReq) (*session, error) {
	u, mint, err := e.execURL(ctx, r)
	if err != nil {
		return nil, err
	}
	t0 := time.Now()
	conn, err := e.dial(ctx, d, u)
	if err != nil {
		return nil, err
	}
	s := &session{stream: newStream(conn, e.proto, e.timeout)}
	s.t = timing{mint: mint, upgraded: time.Since(t0)}
	if r.TTY && !r.noSize {
		cols, rows := r.cols, r.rows
		if cols == 0 {
			cols, rows = 80, 24
		}
		if err := s.resize(cols, rows); err != nil {
			conn.Close()
			return nil, err
		}
	}
	want := wsproto.Stdout
	switch {
	case r.Stdout:
	case r.Stderr:
		want = wsproto.Stderr
	default:
		want = wsproto.Error
	}
	if err := s.readReady(want); err != nil {
		conn.Close()
		return nil, err
	}
	s.t.first = time.Since(t0)
	return s, nil
}

// execFlow returns a starter of r's sessions on e.
func (e *endpoint) execFlow(ctx context.Context, d *websocket.Dialer, r execReq) func() (flow, error) {
	return func() (flow, error) {
		s, err := e.open(ctx, d, r)
		if err != nil {
			return nil, err
		}
		return s, nil
	}
}

// readReady reads the first message, which must be the empty ready frame
// on channel want.
func (s *session) readReady(want wsproto.Channel) error {
	ch, p, err := s.read()
	if err != nil {
		return fmt.Errorf("ready frame: %w", err)
	}
	if ch != want || len(p) != 0 {
		return fmt.Errorf("first message is %s with %d bytes, want the empty ready frame on %s", ch, len(p), want)
	}
	return nil
}

func (s *session) resize(w, h uint16) error {
	b, _ := json.Marshal(wsproto.TerminalSize{Width: w, Height: h})
	return s.send(wsproto.Resize, b)
}

// write sends bytes on stdin.
func (s *session) write(p []byte) error { return s.send(wsproto.Stdin, p) }

// read reads one message, counts its stderr payload and keeps the
// status. The payload is valid until the next call.
func (s *session) read() (wsproto.Channel, []byte, error) {
	f, err := s.frame()
	if err != nil {
		return 0, nil, err
	}
	switch f.Channel {
	case wsproto.Stdout:
	case wsproto.Stderr:
		s.stderr += int64(len(f.Payload))
	case wsproto.Error:
		if s.status != nil {
			return 0, nil, errors.New("second status message")
		}
		if len(f.Payload) == 0 { // the ready frame of a session without output
			break
		}
		s.rawStatus = bytes.Clone(f.Payload)
		var st wsproto.Status
		if err := json.Unmarshal(f.Payload, &st); err != nil {
			return 0, nil, fmt.Errorf("status %q: %w", f.Payload, err)
		}
		s.status = &st
	default:
		return 0, nil, fmt.Errorf("message on unexpected channel %s", f.Channel)
	}
	return f.Channel, f.Payload, nil
}

// next returns the next stdout payload (see flow); output on stderr is an
// error.
func (s *session) next() ([]byte, error) {
	for {
		ch, p, err := s.read()
		switch {
		case errors.Is(err, errClosed):
			s.conn.Close()
			if err := s.checkSuccess(); err != nil {
				return nil, err
			}
			return nil, io.EOF
		case err != nil:
			return nil, err
		case ch == wsproto.Stderr:
			return nil, fmt.Errorf("output on stderr: %q", p)
		case ch == wsproto.Stdout && len(p) > 0:
			return p, nil
		}
	}
}

func (s *session) close() error { return s.conn.Close() }

func (s *session) checkSuccess() error {
	switch {
	case s.status == nil:
		return fmt.Errorf("closed with code %d and no status", s.closeCode)
	case s.status.Status != wsproto.StatusSuccess:
		return fmt.Errorf("status %s", s.rawStatus)
	case s.closeCode != websocket.CloseNormalClosure:
		return fmt.Errorf("close code %d after the status, want 1000", s.closeCode)
	}
	return nil
}

// --- port-forward ---------------------------------------------------------------

// pfSandbox is the gateway's sandbox of the tunnels: its own network,
// where gwload's servers listen on 127.0.0.1.
const pfSandbox = "host"

// tunnel is one port-forward WebSocket of one port: data on its first
// channel pair.
type tunnel struct{ stream }

// pfDialer returns a dialer whose buffers hold a whole frame of bufSize
// bytes, so that a frame is one read and one write.
func pfDialer(bufSize int) *websocket.Dialer { return dialer(v4, bufSize+64, bufSize+64) }

// portForward opens a tunnel to port on 127.0.0.1 and checks its first
// two messages: the port prefix on the data and the error channel.
func (e *endpoint) portForward(ctx context.Context, d *websocket.Dialer, port int) (*tunnel, error) {
	u, mint, err := e.pfURL(ctx, port)
	if err != nil {
		return nil, err
	}
	t0 := time.Now()
	conn, err := e.dial(ctx, d, u)
	if err != nil {
		return nil, err
	}
	t := &tunnel{newStream(conn, v4, e.timeout)}
	t.t = timing{mint: mint, upgraded: time.Since(t0)}
	want := wsproto.PortPrefix(uint16(port))
	for _, ch := range []wsproto.Channel{wsproto.DataChannel(0), wsproto.ErrorChannel(0)} {
		f, err := t.frame()
		if err == nil && (f.Channel != ch || !bytes.Equal(f.Payload, want[:])) {
			err = fmt.Errorf("channel %d carried % x", f.Channel, f.Payload)
		}
		if err != nil {
			conn.Close()
			return nil, fmt.Errorf("port prefix % x on channel %d: %w", want, ch, err)
		}
	}
	t.t.first = time.Since(t0)
	return t, nil
}

// next returns the next bytes of the TCP connection (see flow); text on
// the error channel says why forwarding failed.
func (t *tunnel) next() ([]byte, error) {
	f, err := t.frame()
	switch {
	case errors.Is(err, errClosed) && t.closeCode == websocket.CloseNormalClosure:
		return nil, io.EOF
	case errors.Is(err, errClosed):
		return nil, fmt.Errorf("close code %d, want 1000", t.closeCode)
	case err != nil:
		return nil, err
	case f.Channel == wsproto.DataChannel(0):
		return f.Payload, nil
	case f.Channel == wsproto.ErrorChannel(0):
		return nil, fmt.Errorf("error channel: %q", f.Payload)
	}
	return nil, fmt.Errorf("message on unexpected channel %d", f.Channel)
}

// write sends p on the data channel, as one frame.
func (t *tunnel) write(p []byte) error { return t.send(wsproto.DataChannel(0), p) }

// close hangs up: a close frame, then the server's (bounded), then the
// connection. The server must answer 1000.
func (t *tunnel) close() error {
	defer t.conn.Close()
	if t.closeCode != 0 { // the server closed first
		return nil
	}
	const wait = 5 * time.Second
	msg := websocket.FormatCloseMessage(websocket.CloseNormalClosure, "")
	if err := t.conn.WriteControl(websocket.CloseMessage, msg, time.Now().Add(wait)); err != nil {
		return err
	}
	_ = t.conn.SetReadDeadline(time.Now().Add(wait))
	for {
		_, err := t.frame()
		if errors.Is(err, errClosed) {
			break
		}
		if err != nil {
			return fmt.Errorf("waiting for the server's close frame: %w", err)
		}
	}
	if t.closeCode != websocket.CloseNormalClosure {
		return fmt.Errorf("server answered the close with code %d, want 1000", t.closeCode)
	}
	return nil
}

// tunnelFlow returns a starter of tunnels to port on e.
func (e *endpoint) tunnelFlow(ctx context.Context, d *websocket.Dialer, port int) func() (flow, error) {
	return func() (flow, error) {
		t, err := e.portForward(ctx, d, port)
		if err != nil {
			return nil, err
		}
		return t, nil
	}
}

// tcpFlow is a direct TCP connection: the ceilings and references of the
// tunnels.
type tcpFlow struct {
	c   net.Conn
	buf []byte
}

// tcpStarter returns a starter of connections to addr, read bufSize bytes
// at a time.
func tcpStarter(addr string, bufSize int, timeout time.Duration) func() (flow, error) {
	return func() (flow, error) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			return nil, err
		}
		_ = c.SetDeadline(time.Now().Add(timeout))
		return &tcpFlow{c: c, buf: make([]byte, bufSize)}, nil
	}
}

func (t *tcpFlow) write(p []byte) error { _, err := t.c.Write(p); return err }
func (t *tcpFlow) close() error         { return t.c.Close() }
func (t *tcpFlow) timing() timing       { return timing{} }

func (t *tcpFlow) next() ([]byte, error) {
	n, err := t.c.Read(t.buf)
	if n > 0 {
		return t.buf[:n], nil
	}
	if err == io.EOF {
		t.c.Close()
	}
	return nil, err
}

// --- idle connections -------------------------------------------------------------

// held is a WebSocket kept open by a goroutine that reads it (answering
// pings) and counts the payload bytes that arrive: the idle sessions and
// tunnels.
type held struct {
	conn *websocket.Conn
	got  atomic.Int64  // payload bytes received after the opening frames
	done chan struct{} // closed when the reader goroutine ends
}

// openHeld opens n connections, conc at a time. open dials one and returns
// it with a function that reads one message and returns its payload
// length; what names them in errors ("sessions", "tunnels").
func openHeld(ctx context.Context, what string, n, conc int, open func() (*websocket.Conn, func() (int, error), error)) ([]*held, error) {
	var mu sync.Mutex
	var out []*held
	err := runConcurrently(n, conc, func(int) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		conn, read, err := open()
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			return fmt.Errorf("after %d %s: %w", len(out), what, err)
		}
		_ = conn.SetReadDeadline(time.Time{}) // held open; closeHeld bounds the end
		h := &held{conn: conn, done: make(chan struct{})}
		go func() {
			defer close(h.done)
			for {
				k, err := read()
				if err != nil {
					return
				}
				h.got.Add(int64(k))
			}
		}()
		out = append(out, h)
		return nil
	})
	return out, err
}

// closeHeld closes the connections from the client side: a close frame,
// the server's answer (bounded), then the connection.
func closeHeld(hs []*held) {
	for _, h := range hs {
		msg := websocket.FormatCloseMessage(websocket.CloseNormalClosure, "")
		_ = h.conn.WriteControl(websocket.CloseMessage, msg, time.Now().Add(5*time.Second))
	}
	deadline := time.After(10 * time.Second)
	for _, h := range hs {
		select {
		case <-h.done:
		case <-deadline:
		}
		h.conn.Close()
	}
	for _, h := range hs {
		<-h.done // Close ends the reader
	}
}

// received sums the bytes the held connections received.
func received(hs []*held) int64 {
	var n int64
	for _, h := range hs {
		n += h.got.Load()
	}
	return n
}

// openSessions opens n idle exec sessions, conc at a time.
func (e *endpoint) openSessions(ctx context.Context, d *websocket.Dialer, r execReq, n, conc int) ([]*held, error) {
	return openHeld(ctx, "sessions", n, conc, func() (*websocket.Conn, func() (int, error), error) {
		s, err := e.open(ctx, d, r)
		if err != nil {
			return nil, nil, err
		}
		return s.conn, func() (int, error) {
			_, p, err := s.read()
			return len(p), err
		}, nil
	})
}

// openTunnels opens n idle tunnels, conc at a time.
func (e *endpoint) openTunnels(ctx context.Context, d *websocket.Dialer, port, n, conc int) ([]*held, error) {
	return openHeld(ctx, "tunnels", n, conc, func() (*websocket.Conn, func() (int, error), error) {
		t, err := e.portForward(ctx, d, port)
		if err != nil {
			return nil, nil, err
		}
		return t.conn, func() (int, error) {
			f, err := t.frame()
			return len(f.Payload), err
		}, nil
	})
}

// idleSpec is how an idle-memory arm opens its connections.
type idleSpec struct {
	item    string // "session", "tunnel"
	n       int
	open    func(k int) ([]*held, error)
	settled func(k int) error // waits until the server shows k open (its children, the upstream connections)
	seen    string            // how that was counted, for the lines
	check   func() error      // after the close; may be nil
}

// idleArm measures e's VmRSS per idle connection (and its /metrics, the
// gateway's): it warms up with 16 connections, measures, opens n and
// measures, closes them and measures again. e should be a fresh process.
func (b *bench) idleArm(e *endpoint, s idleSpec) *arm {
	snapshot := func() map[string]float64 {
		if !e.metrics {
			return nil
		}
		m, _ := metricsSnapshot(e.addr)
		return m
	}
	return &arm{name: e.name, proc: e.proc, run: func(r *rep) error {
		warm, err := s.open(16)
		closeHeld(warm)
		if err == nil {
			err = s.settled(0)
		}
		if err != nil {
			return fmt.Errorf("warm-up: %w", err)
		}
		time.Sleep(2 * time.Second)
		rss0, err := vmRSS(e.pid)
		if err != nil {
			return err
		}
		m0 := snapshot()

		t0 := time.Now()
		hs, err := s.open(s.n)
		openTime := time.Since(t0)
		if err == nil {
			if err = s.settled(s.n); err != nil {
				err = fmt.Errorf("with %d open: %w", s.n, err)
			}
		}
		var rss1 int64
		if err == nil {
			time.Sleep(b.o.idleSettle)
			rss1, err = vmRSS(e.pid)
		}
		if err != nil {
			closeHeld(hs)
			return err
		}
		m1 := snapshot()
		waiting, threads := -1, 0
		if nr := sysWaitid(); nr != "" {
			waiting, threads = threadsIn(e.pid, nr)
		}
		got := received(hs)

		t1 := time.Now()
		closeHeld(hs)
		err = s.settled(0)
		closeTime := time.Since(t1)
		time.Sleep(2 * time.Second)
		rss2, _ := vmRSS(e.pid)
		m2 := snapshot()
		if err != nil {
			return fmt.Errorf("after closing the WebSockets: %w", err)
		}
		if got != 0 {
			return fmt.Errorf("idle %ss received %d bytes", s.item, got)
		}
		if s.check != nil {
			if err := s.check(); err != nil {
				return err
			}
		}

		per := float64(rss1-rss0) / float64(s.n)
		fmt.Printf("  %s: opened %d %ss in %.2fs (%s), closed them in %.2fs\n", e.name, s.n, s.item, openTime.Seconds(), s.seen, closeTime.Seconds())
		fmt.Printf("  %s VmRSS: before %d KiB, with %d idle %ss %d KiB, after closing them %d KiB\n", e.name, rss0, s.n, s.item, rss1, rss2)
		if m0 != nil && m1 != nil {
			dm := func(k string) float64 { return (m1[k] - m0[k]) / float64(s.n) }
			fmt.Printf("  per %s from /metrics: %.2f goroutines, %.1f KiB heap in use, %.1f KiB stacks, %.2f open fds; go_threads %g -> %g\n",
				s.item, dm("go_goroutines"), dm("go_memstats_heap_inuse_bytes")/1024, dm("go_memstats_stack_inuse_bytes")/1024,
				dm("process_open_fds"), m0["go_threads"], m1["go_threads"])
			if m2 != nil {
				fmt.Printf("  after closing: goroutines %g (before %g), open fds %g (before %g)\n",
					m2["go_goroutines"], m0["go_goroutines"], m2["process_open_fds"], m0["process_open_fds"])
			}
		}
		if waiting >= 0 {
			fmt.Printf("  %s threads: %d, of which %d blocked in waitid(2) (one per child process being waited for)\n", e.name, threads, waiting)
		}
		r.set("kib", per)
		r.say("%.1f KiB per idle %s", per, s.item)
		return nil
	}}
}
