package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// The kubelet's port-forward protocol (protocol.md 2): with one port, data
// on channel 0 both ways, errors on channel 1, and each channel opened by
// the port number in 2 little-endian bytes.
const (
	v4 = "v4.channel.k8s.io"

	// pfSandbox is the sandbox the tunnels go through: the gateway's own
	// network, where gwload's servers listen on 127.0.0.1.
	pfSandbox = "host"
)

// tunnel is one port-forward WebSocket. Only one goroutine reads it and
// only one writes it.
type tunnel struct {
	conn      *websocket.Conn
	buf       []byte // the last message read
	closeCode int    // the server's close code, once read; 0 before
}

// pfDialer returns a dialer for v4 whose buffers hold a whole frame of
// bufSize bytes, so that a frame is one read and one write.
func pfDialer(bufSize int) *websocket.Dialer {
	return &websocket.Dialer{
		Subprotocols:     []string{v4},
		ReadBufferSize:   bufSize + 64,
		WriteBufferSize:  bufSize + 64,
		HandshakeTimeout: 10 * time.Second,
	}
}

// portForward opens a tunnel to port on 127.0.0.1 of the host sandbox and
// checks its first two messages: the port prefix on channels 0 and 1.
func (c *client) portForward(ctx context.Context, d *websocket.Dialer, port int) (*tunnel, error) {
	u := fmt.Sprintf("ws://%s/api/v1/sandboxes/%s/portforward?port=%d", c.addr, pfSandbox, port)
	conn, err := c.dialWS(ctx, d, u, v4)
	if err != nil {
		return nil, err
	}
	t := &tunnel{conn: conn, buf: make([]byte, 0, 4096)}
	_ = conn.SetReadDeadline(time.Now().Add(c.timeout))
	_ = conn.SetWriteDeadline(time.Now().Add(c.timeout))
	for ch := range byte(2) {
		want := []byte{ch, byte(port), byte(port >> 8)}
		_, p, err := t.next()
		if err != nil {
			conn.Close()
			return nil, fmt.Errorf("port prefix on channel %d: %w", ch, err)
		}
		if !bytes.Equal(p, want) {
			conn.Close()
			return nil, fmt.Errorf("message %d is % x, want the port prefix % x", ch+1, p, want)
		}
	}
	return t, nil
}

// next reads one message and returns its channel and payload, valid until
// the next call.
func (t *tunnel) next() (byte, []byte, error) {
	p, closeCode, err := readBinary(t.conn, t.buf[:0])
	if closeCode != 0 {
		t.closeCode = closeCode
	}
	if err != nil {
		return 0, nil, err
	}
	t.buf = p
	if len(p) == 0 {
		return 0, nil, errors.New("empty message: no channel byte")
	}
	return p[0], p, nil
}

// nextData reads one message and returns its TCP bytes (channel 0), valid
// until the next call; anything else is an error (text on the error
// channel says why forwarding failed), as is the close (errClosed).
func (t *tunnel) nextData() ([]byte, error) {
	ch, msg, err := t.next()
	switch {
	case err != nil:
		return nil, err
	case ch == 0:
		return msg[1:], nil
	case ch == 1:
		return nil, fmt.Errorf("error channel: %q", msg[1:])
	}
	return nil, fmt.Errorf("message on unexpected channel %d", ch)
}

// write sends p on the data channel, as one frame.
func (t *tunnel) write(p []byte) error {
	w, err := t.conn.NextWriter(websocket.BinaryMessage)
	if err != nil {
		return err
	}
	if _, err := w.Write([]byte{0}); err != nil {
		return err
	}
	if _, err := w.Write(p); err != nil {
		return err
	}
	return w.Close()
}

// hangUp closes the tunnel from the client side: a close frame, then the
// server's (bounded), then the connection. The server must answer 1000.
func (t *tunnel) hangUp(wait time.Duration) error {
	defer t.conn.Close()
	msg := websocket.FormatCloseMessage(websocket.CloseNormalClosure, "")
	if err := t.conn.WriteControl(websocket.CloseMessage, msg, time.Now().Add(wait)); err != nil {
		return err
	}
	_ = t.conn.SetReadDeadline(time.Now().Add(wait))
	for {
		_, _, err := t.next()
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
	n, bs := b.o.pfBytes, b.o.bufSize
	resDown, resUp := make(chan srvResult, 4), make(chan srvResult, 4)
	down, err := startServer(downloadHandler(n, bs, b.o.timeout, resDown))
	if err != nil {
		return err
	}
	defer down.close()
	up, err := startServer(uploadHandler(n, bs, b.o.timeout, resUp))
	if err != nil {
		return err
	}
	defer up.close()
	fmt.Printf("one tunnel, %d bytes each way (a random pattern, checked byte for byte), %d reps rotating; servers in gwload on 127.0.0.1;\n"+
		"download: the server (port %d) writes the bytes in %d-byte writes and closes; upload: the client sends %d-byte frames, the server (port %d) counts\n"+
		"the bytes and writes the count back (8 bytes) and closes; gateway: %s through sandbox %q, timed from the dial to the close (download)\n"+
		"or to the count (upload); ceiling: gwload dials the same server directly, same sizes\n",
		n, b.o.reps, down.port, bs, bs, up.port, v4, pfSandbox)
	d := pfDialer(bs)
	var gwDown, dirDown, gwUp, dirUp []float64
	// CPU in ms per MiB carried, of the gateway and of the relay process.
	var cpuGwDown, cpuGwUp, cpuRelDown, cpuRelUp []float64
	msPerMiB := func(d time.Duration) float64 { return d.Seconds() * 1000 / (float64(n) / (1 << 20)) }

	gwD := func(rep int) error {
		cpu := b.startCPU()
		t0 := time.Now()
		t, err := b.c.portForward(b.ctx, d, down.port)
		if err != nil {
			return fmt.Errorf("download: %w", err)
		}
		defer t.conn.Close()
		chk := newPatCheck()
		var msgs int64
		for {
			p, err := t.nextData()
			if errors.Is(err, errClosed) {
				break
			}
			if err != nil {
				return fmt.Errorf("download after %d bytes: %w", chk.off, err)
			}
			chk.feed(p)
			msgs++
		}
		dur := time.Since(t0)
		r, err := result(resDown, 10*time.Second)
		switch {
		case err != nil:
			return fmt.Errorf("download: %w", err)
		case r.err != nil || r.n != n:
			return fmt.Errorf("download: the server wrote %d bytes: %v", r.n, r.err)
		case t.closeCode != websocket.CloseNormalClosure:
			return fmt.Errorf("download: close code %d after %d bytes, want 1000", t.closeCode, chk.off)
		case chk.off != n:
			return fmt.Errorf("download: received %d bytes, want %d", chk.off, n)
		case chk.bad >= 0:
			return fmt.Errorf("download: wrong byte at offset %d", chk.bad)
		}
		rate := float64(n) / dur.Seconds()
		gwDown = append(gwDown, rate)
		if g, _ := cpu.used(); b.o.pid > 0 {
			cpuGwDown = append(cpuGwDown, msPerMiB(g))
		}
		fmt.Printf("  rep %d gateway download: %s in %.3fs (%d messages, %.1f KiB average; %s)\n", rep+1, mibps(rate), dur.Seconds(),
			msgs, float64(n)/float64(max(msgs, 1))/1024, cpu.stop())
		return nil
	}
	// mkDirD measures a plain TCP download from addr: the server itself
	// (the ceiling) or a bare relay in front of it (the reference).
	mkDirD := func(addr, label string, relay *relayProc, rates, cpus *[]float64) func(int) error {
		return func(rep int) error {
			cpu := b.startCPUWithRelay(relay)
			t0 := time.Now()
			c, err := net.Dial("tcp", addr)
			if err != nil {
				return err
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(b.o.timeout))
			chk := newPatCheck()
			buf := make([]byte, bs)
			var reads int64
			for {
				k, err := c.Read(buf)
				chk.feed(buf[:k])
				if k > 0 {
					reads++
				}
				if err == io.EOF {
					break
				}
				if err != nil {
					return fmt.Errorf("direct download after %d bytes: %w", chk.off, err)
				}
			}
			dur := time.Since(t0)
			r, err := result(resDown, 10*time.Second)
			switch {
			case err != nil:
				return fmt.Errorf("direct download: %w", err)
			case r.err != nil || r.n != n:
				return fmt.Errorf("direct download: the server wrote %d bytes: %v", r.n, r.err)
			case chk.off != n || chk.bad >= 0:
				return fmt.Errorf("direct download: received %d bytes, want %d; first wrong byte at %d", chk.off, n, chk.bad)
			}
			rate := float64(n) / dur.Seconds()
			*rates = append(*rates, rate)
			if _, r := cpu.used(); relay != nil {
				*cpus = append(*cpus, msPerMiB(r))
			}
			fmt.Printf("  rep %d %-7s download: %s in %.3fs (%d reads, %.1f KiB average; %s)\n", rep+1, label, mibps(rate), dur.Seconds(),
				reads, float64(n)/float64(max(reads, 1))/1024, cpu.stop())
			return nil
		}
	}
	// checkCount checks the server's result and its 8-byte answer.
	checkCount := func(what string, reply []byte) error {
		r, err := result(resUp, 10*time.Second)
		switch {
		case err != nil:
			return fmt.Errorf("%s: %w", what, err)
		case r.err != nil || r.n != n:
			return fmt.Errorf("%s: the server read %d bytes: %v", what, r.n, r.err)
		case r.bad >= 0:
			return fmt.Errorf("%s: the server read a wrong byte at offset %d", what, r.bad)
		case len(reply) != 8 || binary.LittleEndian.Uint64(reply) != uint64(n):
			return fmt.Errorf("%s: the answer is % x, want the count %d in 8 bytes", what, reply, n)
		}
		return nil
	}
	gwU := func(rep int) error {
		cpu := b.startCPU()
		t0 := time.Now()
		t, err := b.c.portForward(b.ctx, d, up.port)
		if err != nil {
			return fmt.Errorf("upload: %w", err)
		}
		defer t.conn.Close()
		// One goroutine reads (the answer, pings, the close), this one writes.
		type answer struct {
			reply []byte
			at    time.Time
			err   error
		}
		ans := make(chan answer, 1)
		go func() {
			var a answer
			for {
				p, err := t.nextData()
				if errors.Is(err, errClosed) {
					break
				}
				if err != nil {
					a.err = err
					break
				}
				a.reply = append(a.reply, p...)
				if len(a.reply) >= 8 && a.at.IsZero() {
					a.at = time.Now()
				}
			}
			if a.err == nil && t.closeCode != websocket.CloseNormalClosure {
				a.err = fmt.Errorf("close code %d, want 1000", t.closeCode)
			}
			ans <- a
		}()
		var off, frames int64
		for off < n {
			p := patChunk(off, int(min(int64(bs), n-off)))
			if err := t.write(p); err != nil {
				return fmt.Errorf("upload after %d bytes: %w", off, err)
			}
			off += int64(len(p))
			frames++
		}
		a := <-ans // bounded by the read deadline
		if a.err != nil {
			return fmt.Errorf("upload: %w", a.err)
		}
		if err := checkCount("upload", a.reply); err != nil {
			return err
		}
		dur := a.at.Sub(t0)
		rate := float64(n) / dur.Seconds()
		gwUp = append(gwUp, rate)
		if g, _ := cpu.used(); b.o.pid > 0 {
			cpuGwUp = append(cpuGwUp, msPerMiB(g))
		}
		fmt.Printf("  rep %d gateway upload:   %s in %.3fs (%d frames; %s)\n", rep+1, mibps(rate), dur.Seconds(), frames, cpu.stop())
		return nil
	}
	mkDirU := func(addr, label string, relay *relayProc, rates, cpus *[]float64) func(int) error {
		return func(rep int) error {
			cpu := b.startCPUWithRelay(relay)
			t0 := time.Now()
			c, err := net.Dial("tcp", addr)
			if err != nil {
				return err
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(b.o.timeout))
			var off, writes int64
			for off < n {
				k, err := c.Write(patChunk(off, int(min(int64(bs), n-off))))
				off += int64(k)
				writes++
				if err != nil {
					return fmt.Errorf("direct upload after %d bytes: %w", off, err)
				}
			}
			reply := make([]byte, 8)
			if _, err := io.ReadFull(c, reply); err != nil {
				return fmt.Errorf("direct upload: the answer: %w", err)
			}
			dur := time.Since(t0)
			if k, err := c.Read(make([]byte, 1)); k != 0 || err != io.EOF {
				return fmt.Errorf("direct upload: after the answer: %d bytes, %v; want the end", k, err)
			}
			if err := checkCount("direct upload", reply); err != nil {
				return err
			}
			rate := float64(n) / dur.Seconds()
			*rates = append(*rates, rate)
			if _, r := cpu.used(); relay != nil {
				*cpus = append(*cpus, msPerMiB(r))
			}
			fmt.Printf("  rep %d %-7s upload:   %s in %.3fs (%d writes; %s)\n", rep+1, label, mibps(rate), dur.Seconds(), writes, cpu.stop())
			return nil
		}
	}
	relayDown, err := startRelay(b.ctx, down.addr(), bs)
	if err != nil {
		return err
	}
	defer relayDown.close()
	relayUp, err := startRelay(b.ctx, up.addr(), bs)
	if err != nil {
		return err
	}
	defer relayUp.close()
	var relDown, relUp []float64
	if err := b.rotate(gwD, mkDirD(down.addr(), "direct", nil, &dirDown, nil), mkDirD(relayDown.addr, "relay", relayDown, &relDown, &cpuRelDown),
		gwU, mkDirU(up.addr(), "direct", nil, &dirUp, nil), mkDirU(relayUp.addr, "relay", relayUp, &relUp, &cpuRelUp)); err != nil {
		return err
	}
	const target = 0.75
	for _, x := range []struct {
		dir    string
		gw, dr []float64
	}{{"download", gwDown, dirDown}, {"upload", gwUp, dirUp}} {
		g, c := median(x.gw), median(x.dr)
		met := verdict(g/c >= target)
		fmt.Printf("pf-throughput %s: gateway %s, direct TCP %s (medians), ratio %.3f, target >= %.2f: %s; per-rep ratios %s\n",
			x.dir, mibps(g), mibps(c), g/c, target, met, pairRatios(x.gw, x.dr))
		b.add(row{"pf-throughput", fmt.Sprintf("%s, one tunnel (%d bytes)", x.dir, n), mibps(g), mibps(c) + " (direct loopback TCP)",
			fmt.Sprintf("%.3f", g/c), fmt.Sprintf(">= %.2f", target), met})
	}
	// The reference: what a user-space relay process gets here (no WebSocket).
	for _, x := range []struct {
		dir        string
		gw, rl, dr []float64
	}{{"download", gwDown, relDown, dirDown}, {"upload", gwUp, relUp, dirUp}} {
		g, r, c := median(x.gw), median(x.rl), median(x.dr)
		fmt.Printf("pf-throughput %s: bare TCP relay process %s (median): relay/direct %.3f, gateway/relay %.3f\n", x.dir, mibps(r), r/c, g/r)
		b.add(row{"pf-throughput", fmt.Sprintf("%s, reference: a bare TCP relay process (read/write, %d-byte buffers)", x.dir, bs), mibps(g),
			mibps(r) + " (relay)", fmt.Sprintf("%.3f", g/r), "", ""})
		b.add(row{"pf-throughput", fmt.Sprintf("%s, reference: relay vs direct", x.dir), mibps(r), mibps(c) + " (direct loopback TCP)",
			fmt.Sprintf("%.3f", r/c), "", ""})
	}
	// CPU per MiB carried: the cost of the gateway's hop against a bare
	// relay's, whatever the cores the machine has.
	for _, x := range []struct {
		dir     string
		gw, rel []float64
	}{{"download", cpuGwDown, cpuRelDown}, {"upload", cpuGwUp, cpuRelUp}} {
		if len(x.gw) == 0 || len(x.rel) == 0 {
			continue
		}
		g, r := median(x.gw), median(x.rel)
		fmt.Printf("pf-throughput %s: CPU per MiB carried: gateway %.3f ms, relay process %.3f ms (medians), relay/gateway %.3f\n", x.dir, g, r, r/g)
		b.add(row{"pf-throughput", fmt.Sprintf("%s, CPU per MiB carried (gateway vs bare relay process)", x.dir), fmt.Sprintf("%.3f ms/MiB", g),
			fmt.Sprintf("%.3f ms/MiB (relay)", r), fmt.Sprintf("%.3f", r/g), "", ""})
	}
	return nil
}

// relayProc is the pf-throughput reference: a child gwload that relays
// each connection to a target with plain read/write loops (no WebSocket,
// no splice: a WebSocket gateway must frame its data in user space). It is
// a process of its own, as the gateway is, so that its wake-ups cross
// processes as the gateway's do.
type relayProc struct {
	cmd   *exec.Cmd
	stdin io.Closer // closing it ends the child
	addr  string
}

func (r *relayProc) pid() int { return r.cmd.Process.Pid }

// close ends the child and waits for it.
func (r *relayProc) close() {
	r.stdin.Close()
	_ = r.cmd.Wait()
}

// startRelay starts a relay child to target with bufSize-byte buffers.
func startRelay(ctx context.Context, target string, bufSize int) (*relayProc, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, exe, "-internal-relay", target, "-bufsize", strconv.Itoa(bufSize))
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	r := &relayProc{cmd: cmd, stdin: in}
	line, err := bufio.NewReader(out).ReadString('\n')
	if _, serr := fmt.Sscan(line, &r.addr); err != nil || serr != nil {
		r.close()
		return nil, fmt.Errorf("relay printed %q: %v %v", line, err, serr)
	}
	return r, nil
}

// relayChild is the relay process: it listens, prints its address, and
// relays every connection to target, half-closing each way at end of
// file, until its stdin closes.
func relayChild(target string, bufSize int) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	fmt.Println(ln.Addr())
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		ln.Close()
	}()
	copyHalf := func(dst, src *net.TCPConn) {
		buf := make([]byte, bufSize)
		for {
			k, err := src.Read(buf)
			if k > 0 {
				if _, werr := dst.Write(buf[:k]); werr != nil {
					return
				}
			}
			if err != nil {
				_ = dst.CloseWrite()
				return
			}
		}
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			return nil // stdin closed
		}
		go func() {
			defer c.Close()
			t, err := net.Dial("tcp", target)
			if err != nil {
				return
			}
			defer t.Close()
			done := make(chan struct{})
			go func() { copyHalf(t.(*net.TCPConn), c.(*net.TCPConn)); close(done) }()
			copyHalf(c.(*net.TCPConn), t.(*net.TCPConn))
			<-done
		}()
	}
}

// --- pf-setup-rate ----------------------------------------------------------------

func (b *bench) pfSetupRate() error {
	m := b.o.tunnels
	echo, err := startServer(echoHandler(b.o.timeout))
	if err != nil {
		return err
	}
	defer echo.close()
	fmt.Printf("%d tunnels to an echo server in gwload (port %d): dial, port prefixes, 4 bytes there and back, close (close frame, the\n"+
		"server's 1000 answer), one at a time and %d at a time; %d reps alternating; ceiling: %d direct TCP connections to the same server,\n"+
		"4 bytes there and back, close, at the same concurrency\n", m, echo.port, b.o.tunnelConc, b.o.reps, m)
	d := pfDialer(4096)
	// settle checks that every upstream connection is gone again.
	settle := func(what string, accepted0 int64) error {
		if err := echo.waitOpen(0, 10*time.Second); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		if got := echo.accepted.Load() - accepted0; got != int64(m) {
			return fmt.Errorf("%s: the echo server accepted %d connections, want %d", what, got, m)
		}
		return nil
	}
	// viaGateway and direct run one exchange and return how long it took.
	viaGateway := func(i int) (time.Duration, error) {
		t := time.Now()
		tn, err := b.c.portForward(b.ctx, d, echo.port)
		if err != nil {
			return 0, fmt.Errorf("tunnel %d: %w", i, err)
		}
		msg := binary.LittleEndian.AppendUint32(nil, uint32(i)^0x5a5a5a5a)
		if err := tn.write(msg); err != nil {
			tn.conn.Close()
			return 0, fmt.Errorf("tunnel %d: %w", i, err)
		}
		var got []byte
		for len(got) < len(msg) {
			p, err := tn.nextData()
			if err != nil {
				tn.conn.Close()
				return 0, fmt.Errorf("tunnel %d: after %q: %w", i, got, err)
			}
			got = append(got, p...)
		}
		if !bytes.Equal(got, msg) {
			tn.conn.Close()
			return 0, fmt.Errorf("tunnel %d: sent % x, got back % x", i, msg, got)
		}
		if err := tn.hangUp(5 * time.Second); err != nil {
			return 0, fmt.Errorf("tunnel %d: %w", i, err)
		}
		return time.Since(t), nil
	}
	direct := func(i int) (time.Duration, error) {
		t := time.Now()
		c, err := net.Dial("tcp", echo.addr())
		if err != nil {
			return 0, fmt.Errorf("direct %d: %w", i, err)
		}
		_ = c.SetDeadline(time.Now().Add(b.o.timeout))
		msg := binary.LittleEndian.AppendUint32(nil, uint32(i)^0x5a5a5a5a)
		got := make([]byte, len(msg))
		_, err = c.Write(msg)
		if err == nil {
			_, err = io.ReadFull(c, got)
		}
		c.Close()
		if err != nil || !bytes.Equal(got, msg) {
			return 0, fmt.Errorf("direct %d: sent % x, got back % x: %v", i, msg, got, err)
		}
		return time.Since(t), nil
	}
	const target = 2000
	for _, conc := range []int{1, b.o.tunnelConc} {
		var gws, dirs []float64
		var gwLat, dirLat []time.Duration
		measure := func(name string, one func(int) (time.Duration, error), rates *[]float64, lat *[]time.Duration, rep int) error {
			cpu := b.startCPU()
			acc0 := echo.accepted.Load()
			t0 := time.Now()
			lats, err := runConcurrently(m, conc, one)
			if err != nil {
				return err
			}
			rate := float64(m) / time.Since(t0).Seconds()
			line := cpu.stop()
			if err := settle(name, acc0); err != nil {
				return err
			}
			*rates = append(*rates, rate)
			*lat = append(*lat, lats...)
			fmt.Printf("  rep %d %s, %d at a time: %.1f /s (%s)\n", rep+1, name, conc, rate, line)
			return nil
		}
		err := b.alternate(
			func(rep int) error { return measure("gateway", viaGateway, &gws, &gwLat, rep) },
			func(rep int) error { return measure("direct", direct, &dirs, &dirLat, rep) })
		if err != nil {
			return err
		}
		g, c := median(gws), median(dirs)
		// The target is a capacity: tunnels set up per second with
		// several at a time. One at a time measures latency.
		met, targetText := verdict(g >= target), fmt.Sprintf(">= %d /s", target)
		if conc == 1 {
			met, targetText = "n/a", "none set"
		}
		fmt.Printf("pf-setup-rate, %d at a time: gateway %.1f tunnels/s, direct %.1f connections/s (medians), ratio %.3f, target >= %d/s: %s;\n"+
			"  per tunnel p50 %.3fms p99 %.3fms; per direct connection p50 %.3fms p99 %.3fms (all reps pooled)\n",
			conc, g, c, g/c, target, met, ms(pct(gwLat, 50)), ms(pct(gwLat, 99)), ms(pct(dirLat, 50)), ms(pct(dirLat, 99)))
		b.add(row{"pf-setup-rate", fmt.Sprintf("tunnels/s (%d, %d at a time, 4-byte echo each)", m, conc), fmt.Sprintf("%.1f /s", g),
			fmt.Sprintf("%.1f /s (direct TCP)", c), fmt.Sprintf("%.3f", g/c), targetText, met})
		b.add(row{"pf-setup-rate", fmt.Sprintf("one tunnel, dial to close (%d at a time)", conc),
			fmt.Sprintf("p50 %.3f ms, p99 %.3f ms", ms(pct(gwLat, 50)), ms(pct(gwLat, 99))),
			fmt.Sprintf("p50 %.3f ms, p99 %.3f ms", ms(pct(dirLat, 50)), ms(pct(dirLat, 99))), fmt.Sprintf("%.3f", ms(pct(dirLat, 50))/ms(pct(gwLat, 50))), "", ""})
	}
	return nil
}

// runConcurrently runs one(0..n-1) with conc of them at a time and returns
// their durations; it stops at the first error.
func runConcurrently(n, conc int, one func(int) (time.Duration, error)) ([]time.Duration, error) {
	var (
		next  atomic.Int64
		mu    sync.Mutex
		lats  = make([]time.Duration, 0, n)
		first error
		wg    sync.WaitGroup
	)
	for range conc {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				d, err := one(i)
				mu.Lock()
				if err != nil && first == nil {
					first = err
					next.Store(int64(n)) // the others stop
				}
				lats = append(lats, d)
				mu.Unlock()
				if err != nil {
					return
				}
			}
		})
	}
	wg.Wait()
	return lats, first
}

// --- pf-idle-rss --------------------------------------------------------------------

func (b *bench) pfIdleRSS() error {
	n := b.o.idle
	pid, err := b.freshGateway()
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
		"VmRSS of gateway pid %d from /proc/%d/status; target < 32 KiB per tunnel\n", n, srv.port, pid, pid)
	d := pfDialer(4096)

	var acc0, got int64 // accepted before the measured open; bytes to the clients
	r, err := b.measureIdle(pid, n,
		func(k int) ([]*held, error) {
			acc0 = srv.accepted.Load()
			return b.openTunnels(d, srv.port, k)
		},
		func(k int) error { return srv.waitOpen(int64(k), time.Minute) },
		func(hs []*held) {
			for _, h := range hs {
				got += h.got.Load()
			}
		})
	switch {
	case err != nil:
		return err
	case srv.accepted.Load()-acc0 != int64(n):
		return fmt.Errorf("the server accepted %d connections for %d tunnels", srv.accepted.Load()-acc0, n)
	case got != 0 || unexpected.Load() != 0:
		return fmt.Errorf("idle tunnels carried data: %d bytes to the clients, %d to the server", got, unexpected.Load())
	}
	per := r.perItem()
	r.print("tunnel", fmt.Sprintf("%d connections seen by the server, all ended after the close", n))

	ref, err := b.refTunnels(n, srv.addr())
	if err != nil {
		return fmt.Errorf("reference: %w", err)
	}
	fmt.Printf("  reference (gwload child relaying %d idle TCP connections to the same server: 2 sockets and 2 blocked reader goroutines each, no WebSocket): %.1f KiB per tunnel\n", n, ref)
	const target = 32.0
	met := verdict(per < target)
	fmt.Printf("pf-idle-rss: gateway %.1f KiB/tunnel, bare relay %.1f KiB, ratio (bare/gateway) %.3f, target < %.0f KiB: %s; one measurement (it needs a fresh gateway)\n",
		per, ref, ref/per, target, met)
	b.add(row{"pf-idle-rss", fmt.Sprintf("VmRSS per idle tunnel (%d open)", n), fmt.Sprintf("%.1f KiB", per),
		fmt.Sprintf("%.1f KiB (bare TCP relay)", ref), fmt.Sprintf("%.3f", ref/per), fmt.Sprintf("< %.0f KiB", target), met})
	return nil
}

// openTunnels opens n tunnels, each held open by a reader that counts any
// bytes after the port prefixes.
func (b *bench) openTunnels(d *websocket.Dialer, port, n int) ([]*held, error) {
	return b.openHeld("tunnels", n, func() (*websocket.Conn, func() (int, error), error) {
		t, err := b.c.portForward(b.ctx, d, port)
		if err != nil {
			return nil, nil, err
		}
		return t.conn, func() (int, error) {
			_, msg, err := t.next()
			return len(msg) - 1, err
		}, nil
	})
}

// refTunnels runs the pf-idle-rss reference in a child gwload, dials it n
// times, and returns its VmRSS per relayed connection in KiB.
func (b *bench) refTunnels(n int, target string) (float64, error) {
	exe, err := os.Executable()
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(b.ctx, 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, exe, "-internal-ref-tunnels", strconv.Itoa(n), "-internal-ref-target", target)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return 0, err
	}
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
		_ = cmd.Wait()
	}()
	br := bufio.NewReader(out)
	var addr string
	var before, after int64
	line, err := br.ReadString('\n')
	if _, serr := fmt.Sscan(line, &addr, &before); err != nil || serr != nil {
		return 0, fmt.Errorf("reference printed %q: %v %v", line, err, serr)
	}
	for i := range n {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			return 0, fmt.Errorf("reference connection %d: %w", i, err)
		}
		conns = append(conns, c)
	}
	line, err = br.ReadString('\n')
	if _, serr := fmt.Sscan(line, &after); err != nil || serr != nil {
		return 0, fmt.Errorf("reference printed %q: %v %v", line, err, serr)
	}
	fmt.Printf("  reference VmRSS: before %d KiB, with %d relayed connections %d KiB\n", before, n, after)
	return float64(after-before) / float64(n), nil
}

// refTunnelsChild is the reference process: it listens, prints its
// address and VmRSS, then for each of n connections it accepts dials
// target and blocks a reader goroutine on each of the two sockets (what a
// bare relay holds per idle connection); then it prints its VmRSS again.
func refTunnelsChild(n int, target string) error {
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
		up, err := net.Dial("tcp", target)
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
