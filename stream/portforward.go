package stream

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"gateway/internal/chunkio"
	"gateway/internal/park"
	"gateway/metrics"
	"gateway/sandbox"
	"gateway/session"
	"gateway/stream/wsproto"
)

// PortForwardOptions are the parameters of a port-forward: the port
// parameters of a WebSocket request, or the JSON body that mints a
// single-use URL.
type PortForwardOptions struct {
	Ports []uint16 `json:"ports"`
}

// ParsePortForwardQuery reads the port parameters, repeated and/or
// comma-separated, as the kubelet does.
func ParsePortForwardQuery(q url.Values) (PortForwardOptions, error) {
	ports, err := wsproto.ParsePorts(q["port"])
	if err != nil {
		return PortForwardOptions{}, badRequest("%v", err)
	}
	return PortForwardOptions{Ports: ports}, nil
}

// Validate checks the ports.
func (o *PortForwardOptions) Validate() error {
	switch {
	case len(o.Ports) == 0:
		return badRequest("at least one port is required: ?port=8080")
	case len(o.Ports) > wsproto.MaxPorts:
		return badRequest("%d ports: at most %d per connection", len(o.Ports), wsproto.MaxPorts)
	}
	for _, p := range o.Ports {
		if p == 0 {
			return badRequest("port 0: want a port in 1..65535")
		}
	}
	return nil
}

// dialTimeout bounds one dial into a sandbox.
const dialTimeout = 5 * time.Second

// PortForward serves a port-forward WebSocket into a sandbox: for each
// port, one TCP connection to the sandbox's loopback, its bytes on a data
// channel and dial failures as text on an error channel, each channel
// opened with the port number (the kubelet's protocol); or, with the
// "binary" subprotocol and one port, the raw bytes of the connection in
// binary messages (websockify's). An error means the request was refused
// before the upgrade. PortForward returns once the stream runs.
func (s *Server) PortForward(w http.ResponseWriter, r *http.Request, sandboxID string, opts PortForwardOptions) error {
	sb, err := s.PortForwardTarget(sandboxID, opts)
	if err != nil {
		return err
	}
	proto, err := negotiate(r, wsproto.PortForwardProtocols)
	if err != nil {
		return err
	}
	if proto.Raw && len(opts.Ports) != 1 {
		return badRequest("the binary subprotocol forwards exactly one port, not %d", len(opts.Ports))
	}
	// Each port is dialed while the upgrade is answered, on a goroutine
	// of its own (a dial would grow a stream's goroutine's stack for
	// good): the port prefixes leave with the handshake, and the
	// client's first bytes find the connection made or nearly. A failed
	// dial is reported on the port's error channel, as ever.
	ports := make([]*forwardedPort, len(opts.Ports))
	for i, port := range opts.Ports {
		fp := &forwardedPort{port: port, data: wsproto.DataChannel(i), errc: wsproto.ErrorChannel(i), in: newInputQueue()}
		dctx, cancel := context.WithTimeout(s.base, dialTimeout)
		fp.cancelDial = cancel
		fp.dialed.Go(func() {
			defer cancel()
			fp.conn, fp.dialErr = sb.Dial(dctx, port)
		})
		ports[i] = fp
	}
	cl, err := s.open(w, r, session.PortForward, sandboxID, proto, false)
	if err != nil {
		for _, fp := range ports {
			fp.cancelDial()
			fp.dialed.Wait()
			if fp.conn != nil {
				fp.conn.Close()
			}
		}
		return err
	}
	f := &forwardStream{client: cl, sb: sb, raw: proto.Raw, ports: ports}
	if p, ok := cl.t.(*Pump); ok && !f.raw {
		var prefixes []outFrame
		for _, fp := range ports {
			prefix := wsproto.PortPrefix(fp.port)
			prefixes = append(prefixes, outFrame{ch: fp.data, b: prefix[:]}, outFrame{ch: fp.errc, b: prefix[:]})
		}
		p.Prime(prefixes...)
	}
	s.serve(cl, f.onFrame, f.run)
	return nil
}

// PortForwardTarget validates opts and returns the sandbox whose ports
// they may reach: everything about a port-forward that can be checked
// before the upgrade, but the subprotocol.
func (s *Server) PortForwardTarget(sandboxID string, opts PortForwardOptions) (*sandbox.Sandbox, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	sb, err := s.sandboxes.Get(sandboxID)
	if err != nil {
		return nil, err
	}
	for _, p := range opts.Ports {
		if !sb.AllowsPort(p) {
			return nil, fmt.Errorf("%w: sandbox %q does not allow port %d (allowed: %v)", sandbox.ErrPort, sandboxID, p, sb.Spec().Ports)
		}
	}
	return sb, nil
}

// forwardStream is one port-forward connection.
type forwardStream struct {
	*client
	sb    *sandbox.Sandbox
	raw   bool // websockify's binary protocol: one port, no channels
	ports []*forwardedPort
}

type forwardedPort struct {
	port       uint16
	data       wsproto.Channel // 2i
	errc       wsproto.Channel // 2i+1
	in         *inputQueue     // client bytes for the TCP connection
	dialed     sync.WaitGroup  // the dial: then conn, or dialErr
	cancelDial context.CancelFunc
	conn       net.Conn
	dialErr    error
	reads      bulkReads // the buffers conn is read into

	rest park.Slot // where conn rests (see restingForward)
}

// onFrame queues client bytes for their port's connection (readLoop).
func (f *forwardStream) onFrame(ctx context.Context, fr wsproto.Frame) error {
	i := int(fr.Channel) / 2
	if f.raw {
		i = 0
	}
	switch {
	case i >= len(f.ports):
		f.unknownChannel(fr.Channel)
	case fr.Channel == f.ports[i].errc && !f.raw:
		// The error channel is the server's: data from the client is dropped.
	default:
		f.input(fr.Payload)
		f.ports[i].in.push(ctx, fr.Payload)
	}
	return nil
}

// tcpInput writes client bytes to a TCP connection.
type tcpInput struct{ net.Conn }

func (tcpInput) CloseStdin() error { return nil }

// TryWrite writes what the socket takes without blocking.
func (t tcpInput) TryWrite(p []byte) (int, error) {
	sc, ok := t.Conn.(syscall.Conn)
	if !ok {
		return 0, nil
	}
	return chunkio.TryWrite(sc, p)
}

// run opens every port, dials them, and pumps each connection until the
// remote side closes it; when all ports are done, the stream ends with a
// normal close. If the client leaves first, the connections are closed.
// Over the Pump a connection's reading rests while the remote is quiet
// (see restingForward), and run may return before the ports are done.
func (f *forwardStream) run(ctx context.Context) error {
	h, rests := f.t.(interface{ hold() func() })
	var wg sync.WaitGroup // without rests: the ports' goroutines
	var left atomic.Int32
	left.Store(int32(len(f.ports)))
	for i, fp := range f.ports {
		release := func() {}
		if rests {
			release = h.hold()
		}
		done := func() {
			if left.Add(-1) == 0 && ctx.Err() == nil {
				f.Finish(ctx, nil) // no Status on port-forward: just the close
			}
			release()
		}
		switch {
		case i == len(f.ports)-1: // the common case, one port: no goroutine more
			f.forward(ctx, fp, rests, done)
		case rests:
			go f.forward(ctx, fp, rests, done) // its dial may still be under way
		default:
			wg.Go(func() { f.forward(ctx, fp, rests, done) })
		}
	}
	wg.Wait()
	return nil
}

// forward copies the remote's bytes of one port to the client until the
// remote closes; client bytes go through the port's input queue. With
// rests (the Pump) the reading rests while the remote is quiet, and
// forward may return before it is done; done runs at the end either way.
func (f *forwardStream) forward(ctx context.Context, fp *forwardedPort, rests bool, done func()) {
	stopDial := context.AfterFunc(ctx, fp.cancelDial) // a stream that ends stops its dial
	fp.dialed.Wait()
	stopDial()
	conn, err := fp.conn, fp.dialErr
	fp.conn = nil // the stream's goroutine has it
	if err != nil {
		fp.in.close() // client bytes for a finished port are dropped
		if ctx.Err() == nil {
			f.km.Error(metrics.ReasonDial)
			msg := fmt.Sprintf("error forwarding port %d to sandbox %s: %v", fp.port, f.sb.ID(), err)
			f.log.Warn("port-forward dial failed", "port", fp.port, "error", err)
			if f.raw {
				f.Fail(&dialError{msg: msg})
			} else {
				f.Send(ctx, outFrame{ch: fp.errc, b: []byte(msg)})
			}
		}
		done()
		return
	}
	// The end of the stream unblocks the read below: a client that left
	// still has its last bytes delivered, so the read only stops; for any
	// other end (API close, shutdown) the connection closes at once. A
	// resting connection is woken first.
	stopped := make(chan struct{}) // the function below has run
	stop := context.AfterFunc(ctx, func() {
		defer close(stopped)
		fp.rest.End()
		if clientLeft(ctx) {
			_ = conn.SetReadDeadline(time.Now())
		} else {
			conn.Close()
		}
	})
	fp.in.start(tcpInput{conn}, f.log)
	end := func(err error) {
		if err != nil {
			f.log.Debug("port-forward read", "port", fp.port, "error", err)
		}
		if !stop() {
			<-stopped // its deadline is set: the one below stays
		}
		if clientLeft(ctx) {
			if !fp.in.flush(flushGrace) {
				f.log.Warn("port-forward: the remote did not take the client's last bytes in time", "port", fp.port, "grace", flushGrace)
			}
			if hc, ok := conn.(interface{ CloseWrite() error }); ok {
				_ = hc.CloseWrite() // the remote reads an end of file after the last byte
			}
			f.drain(conn)
		}
		conn.Close() // ends a write blocked on a remote that does not read
		fp.in.close()
		done()
	}
	dc, ok := conn.(chunkio.Deadliner) // a TCP connection: always, from sandbox.Dial
	switch {
	case !ok:
		end(nil)
	case !rests:
		end(f.pumpBulk(ctx, dc, fp.data, &fp.reads))
	default:
		f.restingForward(ctx, fp, dc, end)
	}
}

// restingForward is pumpBulk for a connection whose reading ends its
// goroutine while the remote is quiet: after restAfter with nothing to
// read, conn is parked (package park) and a new goroutine reads on when
// it is readable or the stream ends (an idle tunnel holds no goroutine).
// end gets why the reading ended. (A client that leaves just as ReadFor
// sets its own deadline has its tunnel end up to restAfter later.)
func (f *forwardStream) restingForward(ctx context.Context, fp *forwardedPort, conn chunkio.Deadliner, end func(error)) {
	emit := f.bulkEmitter(ctx, fp.data, &fp.reads)
	var step func()
	step = func() {
		for ctx.Err() == nil {
			out := false
			quiet, err := chunkio.ReadFor(conn, &fp.reads, 1, restAfter, func(buf []byte, n int) error {
				out = true
				return emit(buf, n)
			})
			switch {
			case !quiet:
				end(readEnd(ctx, err))
				return
			case out || ctx.Err() != nil:
				continue
			case fp.rest.Park(conn, time.Time{}, nil, step):
				return
			default: // cannot park: wait the usual way
				end(f.pumpBulk(ctx, conn, fp.data, &fp.reads))
				return
			}
		}
		end(nil)
	}
	step()
}

// drain reads and drops what the remote still sends after the client
// left, until it closes too, at most flushGrace: a socket closed with
// bytes unread is reset, and the kernel drops what it has not sent yet,
// the client's last bytes among them.
func (f *forwardStream) drain(conn net.Conn) {
	_ = conn.SetReadDeadline(time.Now().Add(flushGrace))
	buf := f.bufs.Get()
	defer f.bufs.Put(buf)
	for {
		if _, err := conn.Read(buf); err != nil {
			return
		}
	}
}

// flushGrace bounds how long client bytes still queued when the client
// leaves wait for the remote to take them.
const flushGrace = 5 * time.Second

// clientLeft reports whether the stream ended because the client closed
// the WebSocket or vanished.
func clientLeft(ctx context.Context) bool {
	return ctx.Err() != nil && errors.Is(context.Cause(ctx), errClientGone)
}
