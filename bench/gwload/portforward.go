package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// The port-forward scenarios: tunnels through the gateway and the CRI
// library to TCP servers in gwload, beside direct connections to them.

// --- TCP servers run by gwload -------------------------------------------------

// tcpServer is a loopback TCP server inside gwload: the other end of the
// tunnels, and of the direct connections of the ceilings.
type tcpServer struct {
	ln       net.Listener
	port     int
	handle   func(net.Conn)
	accepted atomic.Int64
	open     atomic.Int64
	wg       sync.WaitGroup

	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

func startServer(handle func(net.Conn)) (*tcpServer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &tcpServer{ln: ln, port: ln.Addr().(*net.TCPAddr).Port, handle: handle, conns: map[net.Conn]struct{}{}}
	s.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.accepted.Add(1)
			s.open.Add(1)
			s.mu.Lock()
			s.conns[c] = struct{}{}
			s.mu.Unlock()
			s.wg.Go(func() {
				defer func() {
					c.Close()
					s.mu.Lock()
					delete(s.conns, c)
					s.mu.Unlock()
					s.open.Add(-1)
				}()
				s.handle(c)
			})
		}
	})
	return s, nil
}

func (s *tcpServer) addr() string { return s.ln.Addr().String() }

// close stops accepting, closes the connections still open and waits for
// their handlers.
func (s *tcpServer) close() {
	s.ln.Close()
	s.mu.Lock()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// waitOpen waits until the server has want connections open, at most d.
func (s *tcpServer) waitOpen(want int64, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		n := s.open.Load()
		if n == want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the server has %d connections open after %v, want %d", n, d, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// The bytes of the throughput scenario: a random pattern of an odd length,
// so that a lost, repeated or reordered 32 KiB chunk shows.
const patLen = 128<<10 + 1

var pat2 = func() []byte {
	r := rand.New(rand.NewChaCha8([32]byte{'g', 'w', 'l', 'o', 'a', 'd'}))
	b := make([]byte, patLen, 2*patLen)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return append(b, b...)
}()

// patChunk returns at most k bytes of the pattern stream at offset off.
func patChunk(off int64, k int) []byte {
	i := int(off % patLen)
	return pat2[i : i+min(k, patLen)]
}

// patCheck compares a stream with the pattern.
type patCheck struct {
	off int64 // bytes checked
	bad int64 // offset of the first wrong byte; -1 while none
}

func newPatCheck() *patCheck { return &patCheck{bad: -1} }

func (c *patCheck) feed(p []byte) {
	for len(p) > 0 {
		want := patChunk(c.off, len(p))
		if c.bad < 0 && !bytes.Equal(p[:len(want)], want) {
			for i := range want {
				if p[i] != want[i] {
					c.bad = c.off + int64(i)
					break
				}
			}
		}
		c.off += int64(len(want))
		p = p[len(want):]
	}
}

// srvResult is what a server connection did: bytes written (download) or
// read (upload), the first wrong byte read (-1: none) and its error.
type srvResult struct {
	n   int64
	bad int64
	err error
}

// downloadHandler writes n bytes of the pattern in bufSize writes, then
// closes.
func downloadHandler(n int64, bufSize int, timeout time.Duration, res chan<- srvResult) func(net.Conn) {
	return func(c net.Conn) {
		_ = c.SetDeadline(time.Now().Add(timeout))
		var off int64
		var err error
		for off < n && err == nil {
			var k int
			k, err = c.Write(patChunk(off, int(min(int64(bufSize), n-off))))
			off += int64(k)
		}
		res <- srvResult{n: off, bad: -1, err: err}
	}
}

// transfers are a download and an upload server, PF-BYTES each way (see
// downloadHandler and uploadHandler), and the arms that check them.
type transfers struct {
	down, up       *tcpServer
	resDown, resUp chan srvResult
	n              int64
	bs             int
}

// startTransfers starts them, their handlers wrapped by wrap if not nil.
func (b *bench) startTransfers(wrap func(func(net.Conn)) func(net.Conn)) (*transfers, error) {
	if wrap == nil {
		wrap = func(h func(net.Conn)) func(net.Conn) { return h }
	}
	t := &transfers{resDown: make(chan srvResult, 4), resUp: make(chan srvResult, 4), n: b.o.pfBytes, bs: b.o.bufSize}
	var err error
	if t.down, err = startServer(wrap(downloadHandler(t.n, t.bs, b.o.timeout, t.resDown))); err != nil {
		return nil, err
	}
	if t.up, err = startServer(wrap(uploadHandler(t.n, t.bs, b.o.timeout, t.resUp))); err != nil {
		t.down.close()
		return nil, err
	}
	return t, nil
}

func (t *transfers) close() {
	t.down.close()
	t.up.close()
}

// download is a's run: a download, checked byte for byte and against the
// server's count.
func (t *transfers) download(a *arm, start func() (flow, error)) *arm {
	return readArm(a, t.n, start, func() checker { return &downloadCheck{newPatCheck(), t.resDown, t.n} })
}

// upload is a's run: an upload, timed to the server's count.
func (t *transfers) upload(a *arm, start func() (flow, error)) *arm {
	return uploadArm(a, t.n, t.bs, start, t.resUp)
}

// lingering has a handler wait, once done, for the client to close
// before closing: websockify drops what it still queues for its client
// when the target closes.
func lingering(h func(net.Conn)) func(net.Conn) {
	return func(c net.Conn) {
		h(c)
		_, _ = io.Copy(io.Discard, c)
	}
}

// uploadHandler reads n bytes in bufSize reads, checking them, then writes
// the count it read (8 bytes, little-endian) and closes.
func uploadHandler(n int64, bufSize int, timeout time.Duration, res chan<- srvResult) func(net.Conn) {
	return func(c net.Conn) {
		_ = c.SetDeadline(time.Now().Add(timeout))
		chk := newPatCheck()
		buf := make([]byte, bufSize)
		var err error
		for chk.off < n && err == nil {
			var k int
			k, err = c.Read(buf[:min(int64(bufSize), n-chk.off)])
			chk.feed(buf[:k])
		}
		if err == nil {
			_, err = c.Write(binary.LittleEndian.AppendUint64(nil, uint64(chk.off)))
		}
		res <- srvResult{n: chk.off, bad: chk.bad, err: err}
	}
}

// echoHandler sends back what it reads until the client closes.
func echoHandler(timeout time.Duration) func(net.Conn) {
	return func(c net.Conn) {
		_ = c.SetDeadline(time.Now().Add(timeout))
		var buf [512]byte
		for {
			k, err := c.Read(buf[:])
			if k > 0 {
				if _, werr := c.Write(buf[:k]); werr != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	}
}

// idleHandler never writes; it counts any byte it receives, and returns
// when the other side closes.
func idleHandler(unexpected *atomic.Int64) func(net.Conn) {
	return func(c net.Conn) {
		var b [1]byte
		for {
			k, err := c.Read(b[:])
			unexpected.Add(int64(k))
			if err != nil {
				return
			}
		}
	}
}

// result waits for a server's result, bounded.
func result(res <-chan srvResult, d time.Duration) (srvResult, error) {
	select {
	case r := <-res:
		return r, nil
	case <-time.After(d):
		return srvResult{}, fmt.Errorf("the server did not finish within %v", d)
	}
}

// --- pf-throughput --------------------------------------------------------------

func (b *bench) pfThroughput() error {
	cri, err := b.criEndpoint()
	if err != nil {
		return err
	}
	n, bs := b.o.pfBytes, b.o.bufSize
	tr, err := b.startTransfers(nil)
	if err != nil {
		return err
	}
	defer tr.close()
	downSrv, upSrv := tr.down, tr.up
	relayDown, err := b.startRelay(downSrv.addr())
	if err != nil {
		return err
	}
	defer relayDown.close()
	relayUp, err := b.startRelay(upSrv.addr())
	if err != nil {
		return err
	}
	defer relayUp.close()
	fmt.Printf("one tunnel, %d bytes each way (a random pattern, checked byte for byte), %d reps rotating; servers in gwload on 127.0.0.1;\n"+
		"download: the server (port %d) writes the bytes in %d-byte writes and closes; upload: the client sends %d-byte frames, the server (port %d) counts\n"+
		"the bytes and writes the count back (8 bytes) and closes; gateway: %s through sandbox %q, CRI library: the same protocol, its runtime\n"+
		"dialing 127.0.0.1; timed from the dial to the close (download) or to the count (upload); ceiling: gwload dials the same server directly,\n"+
		"same sizes; reference: a bare TCP relay process (read/write, no WebSocket)\n",
		n, b.o.reps, downSrv.port, bs, bs, upSrv.port, v4.Name, pfSandbox)
	relay := fmt.Sprintf("a bare TCP relay process (read/write, %d-byte buffers)", bs)
	d := pfDialer(bs)
	down, up := tr.download, tr.upload
	arms := []*arm{
		down(&arm{name: "gateway download", proc: b.gw.proc}, b.gw.tunnelFlow(b.ctx, d, downSrv.port)),
		down(&arm{name: "direct download", what: "direct loopback TCP"}, tcpStarter(downSrv.addr(), bs, b.o.timeout)),
		down(&arm{name: "relay download", what: relay, proc: relayDown.proc}, tcpStarter(relayDown.addr, bs, b.o.timeout)),
		down(&arm{name: "cri download", proc: cri.proc}, cri.tunnelFlow(b.ctx, d, downSrv.port)),
		up(&arm{name: "gateway upload", proc: b.gw.proc}, b.gw.tunnelFlow(b.ctx, d, upSrv.port)),
		up(&arm{name: "direct upload", what: "direct loopback TCP"}, tcpStarter(upSrv.addr(), bs, b.o.timeout)),
		up(&arm{name: "relay upload", what: relay, proc: relayUp.proc}, tcpStarter(relayUp.addr, bs, b.o.timeout)),
		up(&arm{name: "cri upload", proc: cri.proc}, cri.tunnelFlow(b.ctx, d, upSrv.port)),
	}
	// websockify (Debian's package), when installed: its protocol, the
	// raw bytes in binary messages, which the gateway speaks too. Its
	// servers wait for the client to close (see lingering), and the client
	// closes once it has what it waits for.
	raw, err := b.startTransfers(lingering)
	if err != nil {
		return err
	}
	defer raw.close()
	lDown, lUp := raw.down, raw.up
	wsDown, err := b.startWebsockify(lDown.addr())
	if err != nil {
		return err
	}
	wsUp, err := b.startWebsockify(lUp.addr())
	if err != nil {
		return err
	}
	if wsDown != nil && wsUp != nil {
		defer wsDown.close()
		defer wsUp.close()
		defer b.disown(wsDown.proc)
		defer b.disown(wsUp.proc)
		fmt.Println("websockify: the same transfers through websockify's binary protocol, beside the gateway's (binary subprotocol, one port)")
		rdown, rup := raw.download, raw.upload
		arms = append(arms,
			rdown(&arm{name: "gateway raw download", what: "the gateway, binary subprotocol", proc: b.gw.proc}, limited(b.rawGatewayFlow(lDown.port), n)),
			rdown(&arm{name: "websockify download", what: "websockify", proc: wsDown.proc}, limited(rawTunnelFlow("ws://"+wsDown.addr+"/", nil, bs, b.o.timeout), n)),
			rup(&arm{name: "gateway raw upload", what: "the gateway, binary subprotocol", proc: b.gw.proc}, limited(b.rawGatewayFlow(lUp.port), 8)),
			rup(&arm{name: "websockify upload", what: "websockify", proc: wsUp.proc}, limited(rawTunnelFlow("ws://"+wsUp.addr+"/", nil, bs, b.o.timeout), 8)))
	} else {
		fmt.Println("websockify is not installed (apt-get install websockify): no websockify reference")
	}
	res, err := b.measure(b.o.reps, arms...)
	if err != nil {
		return err
	}
	if wsDown != nil && wsUp != nil {
		for _, dir := range []string{"download", "upload"} {
			b.report("pf-throughput", res,
				// (No CPU figure: websockify serves each client in a child
				// process of its own, which gwload does not see.)
				fig{label: fmt.Sprintf("%s, one raw tunnel (binary subprotocol, %d bytes)", dir, n), key: "rate", unit: mibps, main: "gateway raw " + dir,
					ceil: "direct " + dir, refs: []string{"websockify " + dir}, goals: []goal{{vs: "websockify " + dir, bound: 1.2}}})
		}
	}
	for _, dir := range []string{"download", "upload"} {
		// A user-space relay process is what the tunnels can be held to
		// here; CPU per MiB carried compares the hops whatever the cores.
		b.report("pf-throughput", res,
			fig{label: fmt.Sprintf("%s, one tunnel (%d bytes)", dir, n), key: "rate", unit: mibps, main: "gateway " + dir,
				ceil: "direct " + dir, cri: "cri " + dir, refs: []string{"relay " + dir}, goals: []goal{{vs: "direct " + dir, bound: 0.75}}},
			fig{label: dir + ", CPU per MiB carried", key: "cpu", unit: msPerMiB, lower: true, main: "gateway " + dir,
				ceil: "relay " + dir, ceilWhat: "the relay process", cri: "cri " + dir})
	}
	return nil
}

// downloadCheck checks a download: the pattern, byte for byte, and the
// server's count.
type downloadCheck struct {
	*patCheck
	res <-chan srvResult
	n   int64
}

func (c *downloadCheck) done() error {
	r, err := result(c.res, 10*time.Second)
	switch {
	case err != nil:
		return err
	case r.err != nil || r.n != c.n:
		return fmt.Errorf("the server wrote %d bytes: %v", r.n, r.err)
	case c.bad >= 0:
		return fmt.Errorf("wrong byte at offset %d", c.bad)
	}
	return nil
}

// uploadArm makes a's run: the pattern sent in bufSize writes through a
// flow from start, timed until the server's answer (its count, 8 bytes
// little-endian) arrives, then the end.
func uploadArm(a *arm, n int64, bufSize int, start func() (flow, error), res <-chan srvResult) *arm {
	a.run = func(r *rep) error {
		t0 := time.Now()
		f, err := start()
		if err != nil {
			return err
		}
		var off, writes int64
		for off < n && err == nil {
			p := patChunk(off, int(min(int64(bufSize), n-off)))
			err = f.write(p)
			off, writes = off+int64(len(p)), writes+1
		}
		var reply []byte
		var at time.Time
		for err == nil {
			var p []byte
			if p, err = f.next(); err == nil {
				reply = append(reply, p...)
				if len(reply) >= 8 && at.IsZero() {
					at = time.Now()
				}
			}
		}
		if err != io.EOF {
			f.close()
			return fmt.Errorf("after %d bytes: %w", off, err)
		}
		sr, err := result(res, 10*time.Second)
		switch {
		case err != nil:
			return err
		case sr.err != nil || sr.n != n:
			return fmt.Errorf("the server read %d bytes: %v", sr.n, sr.err)
		case sr.bad >= 0:
			return fmt.Errorf("the server read a wrong byte at offset %d", sr.bad)
		case len(reply) != 8 || binary.LittleEndian.Uint64(reply) != uint64(n):
			return fmt.Errorf("the answer is % x, want the count %d in 8 bytes", reply, n)
		}
		dur := at.Sub(t0)
		r.set("rate", rate(n, dur))
		r.setCPU("cpu", a.proc, mib(n))
		r.say("%s in %.3fs", mibps(rate(n, dur)), dur.Seconds())
		r.note("%d writes", writes)
		return nil
	}
	return a
}

// relayProc is the pf-throughput reference: a child gwload that relays
// each connection to a target with plain read/write loops (no WebSocket,
// no splice: a WebSocket gateway must frame its data in user space). It is
// a process of its own, as the gateway is, so that its wake-ups cross
// processes as the gateway's do.
type relayProc struct {
	ch   *child
	proc *proc
	addr string
	b    *bench
}

// startRelay starts a relay to target.
func (b *bench) startRelay(target string) (*relayProc, error) {
	ch, err := startChild(b.ctx, "relay", "-bufsize", strconv.Itoa(b.o.bufSize), target)
	if err != nil {
		return nil, err
	}
	r := &relayProc{ch: ch, proc: &proc{name: "relay", pid: ch.pid()}, b: b}
	if err := ch.scan(&r.addr); err != nil {
		ch.close()
		return nil, err
	}
	b.own(r.proc)
	return r, nil
}

func (r *relayProc) close() {
	r.b.disown(r.proc)
	_ = r.ch.close()
}

// relayChild is the relay process: it listens, prints its address, and
// relays every connection to target, half-closing each way at end of
// file, until its stdin closes.
func relayChild(o options, args []string) error {
	if len(args) != 1 {
		return errors.New("relay: want the target address")
	}
	return serveChild(func(c *net.TCPConn) {
		t, err := net.Dial("tcp", args[0])
		if err != nil {
			return
		}
		defer t.Close()
		done := make(chan struct{})
		go func() { copyHalf(t.(*net.TCPConn), c, o.bufSize); close(done) }()
		copyHalf(c, t, o.bufSize)
		<-done
	})
}

// serveChild is a child server's loop: it listens on loopback, prints its
// address, and serves each connection on a goroutine of its own (closing
// it after), until its stdin closes.
func serveChild(serve func(c *net.TCPConn)) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	fmt.Println(ln.Addr())
	go func() {
		waitStdin()
		ln.Close()
	}()
	for {
		c, err := ln.Accept()
		if err != nil {
			return nil // stdin closed
		}
		go func() {
			defer c.Close()
			serve(c.(*net.TCPConn))
		}()
	}
}

// copyHalf is one direction of a relay: copyOut, then a half-close of dst.
func copyHalf(dst *net.TCPConn, src io.Reader, bufSize int) error {
	defer dst.CloseWrite()
	return copyOut(dst, src, bufSize)
}

// copyOut copies src to dst with plain reads and writes of bufSize bytes
// (no splice, no WriterTo) until src's end of file, and returns the error
// that ended it otherwise (a pty master's EIO included).
func copyOut(dst io.Writer, src io.Reader, bufSize int) error {
	buf := make([]byte, bufSize)
	for {
		k, err := src.Read(buf)
		if k > 0 {
			if _, werr := dst.Write(buf[:k]); werr != nil {
				return werr
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// --- pf-setup-rate ----------------------------------------------------------------

func (b *bench) pfSetupRate() error {
	cri, err := b.criEndpoint()
	if err != nil {
		return err
	}
	bare, err := b.bareEndpoint()
	if err != nil {
		return err
	}
	m := b.o.tunnels
	echo, err := startServer(echoHandler(b.o.timeout))
	if err != nil {
		return err
	}
	defer echo.close()
	fmt.Printf("%d tunnels to an echo server in gwload (port %d): dial, port prefixes, 4 bytes there and back, close (close frame, the\n"+
		"server's 1000 answer), one at a time and %d at a time, through the gateway and the CRI library; %d reps rotating;\n"+
		"ceiling: %d direct TCP connections to the same server, 4 bytes there and back, close, at the same concurrency\n",
		m, echo.port, b.o.tunnelConc, b.o.reps, m)
	d := pfDialer(4096)
	// echo is one exchange: 4 bytes there and back, then the close.
	echoRun := func(start func() (flow, error)) func(int) (timing, error) {
		return func(i int) (timing, error) {
			f, err := start()
			if err != nil {
				return timing{}, fmt.Errorf("%d: %w", i, err)
			}
			msg := binary.LittleEndian.AppendUint32(nil, uint32(i)^0x5a5a5a5a)
			err = f.write(msg)
			var got []byte
			for err == nil && len(got) < len(msg) {
				var p []byte
				p, err = f.next()
				got = append(got, p...)
			}
			if err == nil && !bytes.Equal(got, msg) {
				err = fmt.Errorf("sent % x, got back % x", msg, got)
			}
			if cerr := f.close(); err == nil {
				err = cerr
			}
			if err != nil {
				return timing{}, fmt.Errorf("%d: %w", i, err)
			}
			return f.timing(), nil
		}
	}
	// settled checks after each run that every upstream connection is gone
	// again.
	settled := func(a *arm) *arm {
		run := a.run
		a.run = func(r *rep) error {
			acc0 := echo.accepted.Load()
			if err := run(r); err != nil {
				return err
			}
			if err := echo.waitOpen(0, 10*time.Second); err != nil {
				return err
			}
			if got := echo.accepted.Load() - acc0; got != int64(m) {
				return fmt.Errorf("the echo server accepted %d connections, want %d", got, m)
			}
			return nil
		}
		return a
	}
	return b.setupRates(setupSpec{name: "pf-setup-rate", item: "tunnel", n: m, concs: []int{1, b.o.tunnelConc}, refs: []string{"bare"},
		// The target is a capacity, with several at a time; one at a time
		// measures latency.
		goals: func(conc int) []goal {
			if conc == 1 {
				return nil
			}
			return []goal{{bound: 2000}}
		},
		arms: func(conc int) []*arm {
			return []*arm{
				settled(concurrentArm(&arm{name: "gateway", proc: b.gw.proc, metrics: b.gw.metricsAddr()}, m, conc, echoRun(b.gw.tunnelFlow(b.ctx, d, echo.port)))),
				settled(concurrentArm(&arm{name: "ceiling", what: "direct TCP"}, m, conc, echoRun(tcpStarter(echo.addr(), 512, b.o.timeout)))),
				settled(concurrentArm(&arm{name: "cri", proc: cri.proc}, m, conc, echoRun(cri.tunnelFlow(b.ctx, d, echo.port)))),
				settled(concurrentArm(&arm{name: "bare", what: bareWhat, proc: bare.proc}, m, conc, echoRun(bare.tunnelFlow(b.ctx, d, echo.port)))),
			}
		}})
}

// --- pf-idle-rss --------------------------------------------------------------------

func (b *bench) pfIdleRSS() error {
	n := b.o.idle
	if err := b.fresh(); err != nil {
		return err
	}
	cri, err := b.criEndpoint()
	if err != nil {
		return err
	}
	var unexpected atomic.Int64
	srv, err := startServer(idleHandler(&unexpected))
	if err != nil {
		return err
	}
	defer srv.close()
	fmt.Printf("%d idle tunnels to a server in gwload (port %d) that accepts and never writes, WebSockets held open and read;\n"+
		"VmRSS of the server (gateway pid %d, CRI pid %d) from /proc/PID/status; target < 32 KiB per tunnel; one measurement each\n",
		n, srv.port, b.gw.pid, cri.pid)
	res, err := b.measure(1, b.idleTunnelsArm(b.gw, srv, n), refTunnelsArm(b, n, srv.addr()), b.idleTunnelsArm(cri, srv, n))
	if err != nil {
		return err
	}
	if unexpected.Load() != 0 {
		return fmt.Errorf("idle tunnels carried %d bytes to the server", unexpected.Load())
	}
	b.report("pf-idle-rss", res, fig{label: fmt.Sprintf("VmRSS per idle tunnel (%d open)", n), key: "kib", unit: kib, lower: true,
		goals: []goal{{bound: 32}}})
	return nil
}

// idleTunnelsArm measures the VmRSS of n idle tunnels on e to srv.
func (b *bench) idleTunnelsArm(e *endpoint, srv *tcpServer, n int) *arm {
	d := pfDialer(4096)
	var acc0 int64 // accepted before the last open
	return b.idleArm(e, idleSpec{item: "tunnel", n: n,
		open: func(k int) ([]*held, error) {
			acc0 = srv.accepted.Load()
			return e.openTunnels(b.ctx, d, srv.port, k, b.o.idleConc)
		},
		settled: func(k int) error { return srv.waitOpen(int64(k), time.Minute) },
		seen:    fmt.Sprintf("%d connections seen by the server, all ended after the close", n),
		check: func() error {
			if got := srv.accepted.Load() - acc0; got != int64(n) {
				return fmt.Errorf("the server accepted %d connections for %d tunnels", got, n)
			}
			return nil
		}})
}

// refTunnelsArm runs the pf-idle-rss reference in a child gwload
// (refTunnelsChild), dials it n times, and records its VmRSS per relayed
// connection.
func refTunnelsArm(b *bench, n int, target string) *arm {
	return &arm{name: "ceiling", what: "bare TCP relay", run: func(r *rep) error {
		ctx, cancel := context.WithTimeout(b.ctx, 2*time.Minute)
		defer cancel()
		ch, err := startChild(ctx, "ref-tunnels", strconv.Itoa(n), target)
		if err != nil {
			return err
		}
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
			_ = ch.close()
		}()
		var addr string
		var before, after int64
		if err := ch.scan(&addr, &before); err != nil {
			return err
		}
		for i := range n {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				return fmt.Errorf("connection %d: %w", i, err)
			}
			conns = append(conns, c)
		}
		if err := ch.scan(&after); err != nil {
			return err
		}
		fmt.Printf("  reference VmRSS: before %d KiB, with %d relayed connections %d KiB\n", before, n, after)
		per := float64(after-before) / float64(n)
		r.set("kib", per)
		r.say("%.1f KiB per tunnel (a gwload child relaying %d idle TCP connections to the same server: 2 sockets and 2 blocked reader goroutines each, no WebSocket)", per, n)
		return nil
	}}
}

// refTunnelsChild is the pf-idle-rss reference process: it listens, prints
// its address and VmRSS, then for each of n connections it accepts dials
// target and blocks a reader goroutine on each of the two sockets (what a
// bare relay holds per idle connection); then it prints its VmRSS again.
func refTunnelsChild(_ options, args []string) error {
	if len(args) != 2 {
		return errors.New("ref-tunnels: want the count and the target address")
	}
	n, err := strconv.Atoi(args[0])
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer ln.Close()
	_ = ln.(*net.TCPListener).SetDeadline(time.Now().Add(time.Minute))
	time.Sleep(500 * time.Millisecond)
	before, err := vmRSS(os.Getpid())
	if err != nil {
		return err
	}
	fmt.Println(ln.Addr(), before)
	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	for range n {
		in, err := ln.Accept()
		if err != nil {
			return err
		}
		up, err := net.Dial("tcp", args[1])
		if err != nil {
			in.Close()
			return err
		}
		held = append(held, in, up)
		parkReader(in)
		parkReader(up)
	}
	time.Sleep(2 * time.Second)
	after, err := vmRSS(os.Getpid())
	if err != nil {
		return err
	}
	fmt.Println(after)
	return nil
}
