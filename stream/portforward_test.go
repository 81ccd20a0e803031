package stream

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"gateway/internal/park"
	"gateway/metrics"
	"gateway/sandbox"
	"gateway/session"
)

// tcpServer runs handle for each connection on a loopback port.
func tcpServer(t testing.TB, handle func(net.Conn)) uint16 {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() { defer c.Close(); handle(c) })
		}
	})
	return uint16(ln.Addr().(*net.TCPAddr).Port)
}

func echo(c net.Conn) { io.Copy(c, c) }

// pfConn is a port-forward client: it splits channels into readers.
type pfConn struct {
	ws   *websocket.Conn
	data map[byte]*io.PipeWriter
	errs map[byte]*bytes.Buffer
	mu   sync.Mutex
	done chan *websocket.CloseError
	log  [][]byte // the first messages, raw
}

// dialPF opens a port-forward and demultiplexes it; out[i] receives the
// data of the i-th port, with the port prefix checked and stripped.
func (h *harness) dialPF(t *testing.T, sb string, ports []uint16) (*pfConn, []io.Reader) {
	t.Helper()
	q := ""
	for _, p := range ports {
		q += fmt.Sprintf("port=%d&", p)
	}
	ws := h.mustDialPath(t, "/portforward/"+sb+"?"+q, "v4.channel.k8s.io")
	c := &pfConn{ws: ws, data: map[byte]*io.PipeWriter{}, errs: map[byte]*bytes.Buffer{}, done: make(chan *websocket.CloseError, 1)}
	readers := make([]io.Reader, len(ports))
	for i := range ports {
		r, w := io.Pipe()
		c.data[byte(2*i)] = w
		c.errs[byte(2*i+1)] = &bytes.Buffer{}
		readers[i] = r
	}
	go func() {
		defer func() {
			for _, w := range c.data {
				w.Close()
			}
		}()
		seen := map[byte]bool{}
		for {
			_, m, err := ws.ReadMessage()
			if err != nil {
				ce, _ := err.(*websocket.CloseError)
				c.done <- ce
				return
			}
			if len(c.log) < 2*len(ports) {
				c.log = append(c.log, m)
			}
			ch, payload := m[0], m[1:]
			if !seen[ch] { // the port prefix opens every channel
				seen[ch] = true
				if want := ports[ch/2]; len(payload) != 2 || binary.LittleEndian.Uint16(payload) != want {
					t.Errorf("channel %d opened with %x, want port %d", ch, payload, want)
				}
				continue
			}
			if w, ok := c.data[ch]; ok {
				w.Write(payload)
			} else if b, ok := c.errs[ch]; ok {
				c.mu.Lock()
				b.Write(payload)
				c.mu.Unlock()
			}
		}
	}()
	return c, readers
}

func (c *pfConn) send(t *testing.T, port int, p []byte) {
	if err := c.ws.WriteMessage(websocket.BinaryMessage, append([]byte{byte(2 * port)}, p...)); err != nil {
		t.Errorf("send: %v", err)
	}
}

func (c *pfConn) errText(port int) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.errs[byte(2*port+1)].String()
}

// TestPortForwardTwoPorts: 64 MiB each way through an echo server on one
// port while another port streams 16 MiB and closes, in one WebSocket; the
// digests match end to end.
func TestPortForwardTwoPorts(t *testing.T) {
	h := newHarness(t, nil)
	echoPort := tcpServer(t, echo)
	source := make([]byte, 16<<20)
	rand.Read(source)
	sourcePort := tcpServer(t, func(c net.Conn) { c.Write(source) })
	c, out := h.dialPF(t, "host", []uint16{echoPort, sourcePort})

	data := make([]byte, 64<<20)
	rand.Read(data)
	var wg sync.WaitGroup
	wg.Go(func() {
		for off := 0; off < len(data); off += 32 << 10 {
			c.send(t, 0, data[off:off+32<<10])
		}
	})
	var echoed, sourced []byte
	wg.Go(func() { echoed = readN(t, out[0], len(data)) })
	// A finished port sends nothing (the kubelet protocol has no per-port
	// end): read exactly what the source wrote.
	wg.Go(func() { sourced = readN(t, out[1], len(source)) })
	wg.Wait()
	if sha256.Sum256(echoed) != sha256.Sum256(data) {
		t.Errorf("echo: %d bytes, digest differs", len(echoed))
	}
	if sha256.Sum256(sourced) != sha256.Sum256(source) {
		t.Errorf("source: %d bytes, digest differs", len(sourced))
	}
	// Exact opening bytes: the port, little-endian, on data then error
	// channel of each port.
	want := [][]byte{{0, byte(echoPort), byte(echoPort >> 8)}, {1, byte(echoPort), byte(echoPort >> 8)}}
	for i, w := range want {
		if !bytes.Equal(c.log[i], w) {
			t.Errorf("message %d = %x, want %x", i, c.log[i], w)
		}
	}
	in := testutil.ToFloat64(h.metrics.StreamBytes.WithLabelValues("portforward", "in"))
	if in != float64(len(data)) {
		t.Errorf("bytes in %v", in)
	}
}

func readN(t *testing.T, r io.Reader, n int) []byte {
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		t.Errorf("read: %v", err)
	}
	return b
}

// TestPortForwardRefused: a refused dial is a message on the port's error
// channel, quickly, and the stream then ends normally.
func TestPortForwardRefused(t *testing.T) {
	h := newHarness(t, nil)
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	closed := uint16(ln.Addr().(*net.TCPAddr).Port)
	ln.Close()
	start := time.Now()
	c, _ := h.dialPF(t, "host", []uint16{closed})
	ce := <-c.done
	if ce == nil || ce.Code != 1000 {
		t.Errorf("close %v", ce)
	}
	want := fmt.Sprintf("error forwarding port %d to sandbox host: dial tcp 127.0.0.1:%d: connect: connection refused (and on [::1]: ", closed, closed)
	if got := c.errText(0); !strings.HasPrefix(got, want) { // then why ::1 failed
		t.Errorf("error channel %q, want %q", got, want)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %v", d)
	}
	if v := testutil.ToFloat64(h.metrics.StreamErrors.WithLabelValues("portforward", metrics.ReasonDial)); v != 1 {
		t.Errorf("dial errors %v", v)
	}
}

// TestPortForwardCloseOrder: the server closing first ends the stream with
// 1000 after its last bytes; the client closing first closes the TCP
// connection.
func TestPortForwardCloseOrder(t *testing.T) {
	h := newHarness(t, nil)
	port := tcpServer(t, func(c net.Conn) { c.Write([]byte("bye")) })
	c, out := h.dialPF(t, "host", []uint16{port})
	if b, _ := io.ReadAll(out[0]); string(b) != "bye" {
		t.Errorf("read %q", b)
	}
	if ce := <-c.done; ce == nil || ce.Code != 1000 {
		t.Errorf("close %v", ce)
	}

	eof := make(chan error, 1)
	arrived := make(chan struct{})
	port = tcpServer(t, func(c net.Conn) {
		b := make([]byte, 5)
		if _, err := io.ReadFull(c, b); err != nil {
			eof <- err
			return
		}
		close(arrived)
		_, err := io.Copy(io.Discard, c)
		eof <- err
	})
	c, _ = h.dialPF(t, "host", []uint16{port})
	c.send(t, 0, []byte("hello"))
	<-arrived // the tunnel is up end to end
	c.ws.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(1000, ""))
	select {
	case err := <-eof:
		if err != nil {
			t.Errorf("server read: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Error("the TCP connection stayed open after the client left")
	}
}

// sendAndLeave opens a tunnel to port, sends data in 32 KiB frames,
// closes, and waits for the gateway's answer to the close.
func (h *harness) sendAndLeave(t *testing.T, port uint16, data []byte) {
	t.Helper()
	c := h.mustDialPath(t, fmt.Sprintf("/portforward/host?port=%d", port), "v4.channel.k8s.io")
	for p := data; len(p) > 0; p = p[min(32<<10, len(p)):] {
		if err := c.WriteMessage(websocket.BinaryMessage, append([]byte{0}, p[:min(32<<10, len(p))]...)); err != nil {
			t.Fatal(err)
		}
	}
	c.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
	for { // the server's answer to the close
		if _, _, err := c.ReadMessage(); err != nil {
			return
		}
	}
}

// TestPortForwardClientLeavesAfterBurst: a client sends 4 MiB and closes
// at once, while the server has not read yet; every byte still reaches
// the server, then the end of file, as through the kubelet.
func TestPortForwardClientLeavesAfterBurst(t *testing.T) {
	h := newHarness(t, nil)
	const size = 4 << 20
	want := make([]byte, size)
	rand.Read(want)
	got := make(chan []byte, 1)
	closed := make(chan struct{})
	port := tcpServer(t, func(c net.Conn) {
		<-closed // the client has gone before the first read
		b, _ := io.ReadAll(c)
		got <- b
	})
	h.sendAndLeave(t, port, want)
	close(closed)
	select {
	case b := <-got:
		if !bytes.Equal(b, want) {
			t.Errorf("the server got %d bytes (sha256 %x), want %d (%x)", len(b), sha256.Sum256(b), size, sha256.Sum256(want))
		}
	case <-time.After(20 * time.Second):
		t.Error("the TCP connection was not closed after the client left")
	}
}

// TestPortForwardManyShort: many short tunnels in a row leave no goroutine
// or file descriptor behind.
func TestPortForwardManyShort(t *testing.T) {
	h := newHarness(t, nil)
	port := tcpServer(t, func(c net.Conn) {
		b := make([]byte, 4)
		io.ReadFull(c, b)
		c.Write(b)
	})
	run := func(n int) {
		for range n {
			c, out := h.dialPF(t, "host", []uint16{port})
			c.send(t, 0, []byte("ping"))
			if b := readN(t, out[0], 4); string(b) != "ping" {
				t.Fatalf("got %q", b)
			}
			<-c.done
			c.ws.Close()
		}
	}
	run(20) // warm up pools and the HTTP server
	waitFor(t, "sessions to end", func() bool { return len(h.sessions.List(session.Filter{State: session.Active})) == 0 })
	g0, fd0 := runtime.NumGoroutine(), fds()
	run(200)
	waitFor(t, "goroutines and fds to settle", func() bool {
		return runtime.NumGoroutine() <= g0+2 && fds() <= fd0+2
	})
	t.Logf("after 200 tunnels: %d goroutines (was %d), %d fds (was %d)", runtime.NumGoroutine(), g0, fds(), fd0)
}

func fds() int {
	e, _ := os.ReadDir("/proc/self/fd")
	return len(e)
}

// TestPortForwardRaw: the binary subprotocol carries the bytes as they are.
func TestPortForwardRaw(t *testing.T) {
	h := newHarness(t, nil)
	port := tcpServer(t, echo)
	ws, resp, err := h.dialPath(t, fmt.Sprintf("/portforward/host?port=%d", port), nil, "binary")
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	if resp.Header.Get("Sec-Websocket-Protocol") != "binary" {
		t.Errorf("protocol %q", resp.Header.Get("Sec-Websocket-Protocol"))
	}
	data := make([]byte, 1<<20)
	rand.Read(data)
	go func() {
		for off := 0; off < len(data); off += 32 << 10 {
			ws.WriteMessage(websocket.BinaryMessage, data[off:off+32<<10])
		}
	}()
	var got []byte
	for len(got) < len(data) {
		_, m, err := ws.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, m...)
	}
	if !bytes.Equal(got, data) {
		t.Error("raw echo differs")
	}
	// Two ports cannot go raw; a refused dial closes with 1011 and why.
	if _, resp, err := h.dialPath(t, fmt.Sprintf("/portforward/host?port=%d&port=%d", port, port), nil, "binary"); err == nil || resp.StatusCode != 400 {
		t.Errorf("two raw ports: %v", err)
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	closed := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	ws2, _, err := h.dialPath(t, fmt.Sprintf("/portforward/host?port=%d", closed), nil, "binary")
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = ws2.ReadMessage()
	if ce, ok := err.(*websocket.CloseError); !ok || ce.Code != websocket.CloseInternalServerErr || !strings.Contains(ce.Text, "connection refused") {
		t.Errorf("refused raw: %v", err)
	}
	ws2.Close()
}

func TestPortForwardBase64(t *testing.T) {
	h := newHarness(t, nil)
	port := tcpServer(t, echo)
	ws := h.mustDialPath(t, fmt.Sprintf("/portforward/host?port=%d", port), "v4.base64.channel.k8s.io")
	var prefix [2]byte
	binary.LittleEndian.PutUint16(prefix[:], port)
	for _, ch := range []string{"0", "1"} {
		_, m, _ := ws.ReadMessage()
		if want := ch + b64(prefix[:]); string(m) != want {
			t.Errorf("opening %q, want %q", m, want)
		}
	}
	ws.WriteMessage(websocket.TextMessage, []byte("0"+b64([]byte("hi"))))
	if _, m, _ := ws.ReadMessage(); string(m) != "0"+b64([]byte("hi")) {
		t.Errorf("echo %q", m)
	}
}

// TestPortForwardRefusedBeforeUpgrade: bad ports, ports outside the
// sandbox's allow-list, unknown sandboxes.
func TestPortForwardRefusedBeforeUpgrade(t *testing.T) {
	h := newHarness(t, nil)
	if _, err := h.sandboxes.Create(sandbox.Spec{ID: "db", Ports: []sandbox.PortRange{{First: 5432, Last: 5432}}}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path string
		code int
		want string
	}{
		{"/portforward/host", 400, "at least one port"},
		{"/portforward/host?port=0", 400, "invalid port"},
		{"/portforward/host?port=70000", 400, "invalid port"},
		{"/portforward/host?port=http", 400, "invalid port"},
		{"/portforward/db?port=22", 403, `sandbox "db" does not allow port 22`},
		{"/portforward/nope?port=22", 404, `sandbox "nope" not found`},
	} {
		_, resp, err := h.dialPath(t, tc.path, nil, "v4.channel.k8s.io")
		if err == nil {
			t.Fatalf("%s upgraded", tc.path)
		}
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != tc.code || !strings.Contains(string(b), tc.want) {
			t.Errorf("%s: %d %q", tc.path, resp.StatusCode, b)
		}
	}
	// channel.k8s.io is exec's, not port-forward's: 403, as the kubelet.
	if _, resp, err := h.dialPath(t, "/portforward/host?port=80", nil, "channel.k8s.io"); err == nil || resp.StatusCode != 403 {
		t.Errorf("channel.k8s.io accepted for port-forward")
	}
}

// TestPortForwardSlowClient: a client that stops reading stops the copy at
// a bounded backlog.
func TestPortForwardSlowClient(t *testing.T) {
	h := newHarness(t, nil)
	zeros := make([]byte, 32<<10)
	port := tcpServer(t, func(c net.Conn) {
		for {
			if _, err := c.Write(zeros); err != nil {
				return
			}
		}
	})
	h.mustDialPath(t, fmt.Sprintf("/portforward/host?port=%d", port), "v4.channel.k8s.io")
	last := stalledBytesOut(t, h.activeSession(t))
	t.Logf("backlog while the client reads nothing: %d KiB", last>>10)
	if last > 64<<20 {
		t.Errorf("%d bytes taken", last)
	}
}

func b64(p []byte) string { return base64.StdEncoding.EncodeToString(p) }

// FuzzPortForwardFrames sends arbitrary messages into a live two-port
// tunnel of echo servers: whatever they are, the gateway must not fail,
// and the tunnel must still echo a frame sent after them.
func FuzzPortForwardFrames(f *testing.F) {
	h := newHarness(f, nil)
	port := tcpServer(f, echo)
	ws := h.mustDialPath(f, fmt.Sprintf("/portforward/host?port=%d&port=%d", port, port), "v4.channel.k8s.io")
	msgs := make(chan []byte, 1024)
	go func() {
		defer close(msgs)
		for {
			_, m, err := ws.ReadMessage()
			if err != nil {
				return
			}
			msgs <- m
		}
	}()
	for _, seed := range [][]byte{{0}, {1, 'x'}, {2, 'a', 'b'}, {3}, {4, 'z'}, {255, 0}, {0x90, 0x1f}, []byte("\x00hello"), {}} {
		f.Add(seed)
	}
	n := 0
	f.Fuzz(func(t *testing.T, msg []byte) {
		if err := ws.WriteMessage(websocket.BinaryMessage, msg); err != nil {
			t.Fatalf("write: %v", err)
		}
		n++
		probe := fmt.Sprintf("probe-%d", n)
		if err := ws.WriteMessage(websocket.BinaryMessage, append([]byte{2}, probe...)); err != nil {
			t.Fatalf("write probe: %v", err)
		}
		var got []byte
		timeout := time.After(10 * time.Second)
		for !bytes.Contains(got, []byte(probe)) {
			select {
			case m, ok := <-msgs:
				if !ok {
					t.Fatalf("the tunnel closed after %x", msg)
				}
				if len(m) > 0 && m[0] == 2 {
					got = append(got, m[1:]...)
				}
			case <-timeout:
				t.Fatalf("no echo on port 2 after %x", msg)
			}
		}
	})
}

// TestPortForwardCloseFromAPI: closing a tunnel's session ends the
// WebSocket with 4000 and closes the TCP connection.
func TestPortForwardCloseFromAPI(t *testing.T) {
	h := newHarness(t, nil)
	accepted, eof := make(chan struct{}), make(chan struct{})
	port := tcpServer(t, func(c net.Conn) { close(accepted); io.Copy(io.Discard, c); close(eof) })
	c, _ := h.dialPF(t, "host", []uint16{port})
	select { // closed sooner, the tunnel has no TCP connection to close
	case <-accepted:
	case <-time.After(10 * time.Second):
		t.Fatal("the tunnel never connected")
	}
	if err := h.sessions.Close(h.activeSession(t).ID, session.ErrClosedByAPI); err != nil {
		t.Fatal(err)
	}
	if ce := <-c.done; ce == nil || ce.Code != CloseByAPI {
		t.Errorf("close %v, want %d", ce, CloseByAPI)
	}
	select {
	case <-eof:
	case <-time.After(10 * time.Second):
		t.Error("the TCP connection outlived its session")
	}
}

// TestPortForwardBulkDownload: a tunnel whose remote sends faster than the
// client reads moves to bulk reads (see bulkReads): messages longer than
// an ordinary buffer, none longer than a bulk one, every byte in order.
func TestPortForwardBulkDownload(t *testing.T) {
	h := newHarness(t, nil)
	data := make([]byte, 32<<20)
	rand.Read(data)
	port := tcpServer(t, func(c net.Conn) { c.Write(data) })
	ws, _, err := h.dialPath(t, fmt.Sprintf("/portforward/host?port=%d", port), nil, "binary")
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	got := make([]byte, 0, len(data))
	largest := 0
	for len(got) < len(data) {
		_, m, err := ws.ReadMessage()
		if err != nil {
			t.Fatalf("after %d bytes: %v", len(got), err)
		}
		largest = max(largest, len(m))
		got = append(got, m...)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("download differs")
	}
	if largest <= bufferSize-1 || largest > bulkSize-1 {
		t.Errorf("largest message %d bytes, want over %d and at most %d", largest, bufferSize-1, bulkSize-1)
	}
}

// TestBufferPoolSizes: each size goes back to its own pool, others are
// dropped.
func TestBufferPoolSizes(t *testing.T) {
	p := newBufferPool()
	small, bulk := p.Get(), p.getBulk()
	if len(small) != bufferSize || len(bulk) != bulkSize {
		t.Fatalf("sizes %d, %d", len(small), len(bulk))
	}
	p.Put(small[:10])
	p.Put(bulk[:0])
	p.Put(make([]byte, 100)) // dropped
	if b := p.Get(); len(b) != bufferSize {
		t.Errorf("Get after Puts: %d bytes", len(b))
	}
	if b := p.getBulk(); len(b) != bulkSize {
		t.Errorf("getBulk after Puts: %d bytes", len(b))
	}
	q := &fakeQueue{}
	r := &bulkReads{bufs: p, queue: q}
	if b := r.Get(); len(b) != bufferSize {
		t.Errorf("first read: %d bytes, want an ordinary buffer", len(b))
	}
	r.full = true
	if b := r.Get(); len(b) != bulkSize {
		t.Errorf("after a full read: %d bytes, want a bulk buffer", len(b))
	}
	q.n = 2
	if b := r.Get(); len(b) != bufferSize {
		t.Errorf("with two frames waiting: %d bytes, want an ordinary buffer", len(b))
	}
	r.queue = nil
	if b := r.Get(); len(b) != bufferSize {
		t.Errorf("on a transport that does not tell: %d bytes, want an ordinary buffer", len(b))
	}
}

type fakeQueue struct{ n int }

func (q *fakeQueue) queued() int { return q.n }

// TestIdleTunnelsRest: an idle tunnel holds no goroutine: its WebSocket
// reader and its TCP connection are parked (package park). The remote's
// bytes and the client's wake them, in order; a tunnel that ends while
// parked (the client leaves, the API closes it) still closes its TCP
// connection, after the client's last bytes.
func TestIdleTunnelsRest(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.PingPeriod = 50 * time.Millisecond })
	const n = 3
	type server struct {
		conn chan net.Conn
		got  chan []byte // all the remote read, at its end of file
	}
	srv := server{conn: make(chan net.Conn, n), got: make(chan []byte, n)}
	port := tcpServer(t, func(c net.Conn) {
		srv.conn <- c
		b, _ := io.ReadAll(c)
		srv.got <- b
	})
	parked := func(what string, want int) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); park.Parked() != want; time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: %d files parked, want %d", what, park.Parked(), want)
			}
		}
	}
	var clients []*pfConn
	var outs []io.Reader
	var remotes []net.Conn
	for range n {
		c, out := h.dialPF(t, "host", []uint16{port})
		clients, outs, remotes = append(clients, c), append(outs, out[0]), append(remotes, <-srv.conn)
	}
	parked("idle", 2*n)                // a WebSocket and a TCP connection per tunnel
	time.Sleep(200 * time.Millisecond) // pings, answered while parked
	parked("after pings", 2*n)
	for i, r := range remotes {
		word := fmt.Sprintf("down%d", i)
		if _, err := r.Write([]byte(word)); err != nil {
			t.Fatal(err)
		}
		if b := readN(t, outs[i], len(word)); string(b) != word {
			t.Fatalf("tunnel %d: %q, want %q", i, b, word)
		}
		clients[i].send(t, 0, []byte(fmt.Sprintf("up%d", i)))
	}
	parked("idle again", 2*n)

	// Tunnel 0: the client leaves; tunnel 1: the API closes it; each ends
	// parked, and its remote reads what the client sent, then its end.
	clients[0].send(t, 0, []byte("+last"))
	clients[0].ws.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
	if ce := <-clients[0].done; ce == nil || ce.Code != 1000 {
		t.Errorf("tunnel 0: close %v", ce)
	}
	if b := <-srv.got; string(b) != "up0+last" {
		t.Errorf("tunnel 0: the remote read %q, want up0+last", b)
	}
	var id string
	for _, s := range h.sessions.List(session.Filter{State: session.Active}) {
		if strings.Contains(s.RemoteAddr, clients[1].ws.LocalAddr().String()) {
			id = s.ID
		}
	}
	if id == "" {
		t.Fatal("tunnel 1: no session")
	}
	if err := h.sessions.Close(id, session.ErrClosedByAPI); err != nil {
		t.Fatal(err)
	}
	if ce := <-clients[1].done; ce == nil || ce.Code != CloseByAPI {
		t.Errorf("tunnel 1: close %v, want %d", ce, CloseByAPI)
	}
	if b := <-srv.got; string(b) != "up1" {
		t.Errorf("tunnel 1: the remote read %q, want up1", b)
	}
	// Tunnel 2: the remote closes; the client gets the normal close.
	remotes[2].Close()
	if ce := <-clients[2].done; ce == nil || ce.Code != 1000 {
		t.Errorf("tunnel 2: close %v", ce)
	}
	<-srv.got
	parked("all ended", 0)
}

// TestPortForwardClientLeavesRemoteTalks: a client sends 4 MiB and
// closes; the remote, which reads slower than the client sends, talks
// while it takes the upload (progress lines). Every byte the client sent
// still reaches it, then the end of file: the gateway does not close the
// connection with the remote's bytes unread (a reset, which drops what
// the kernel has not sent yet).
func TestPortForwardClientLeavesRemoteTalks(t *testing.T) {
	h := newHarness(t, nil)
	const size = 4 << 20
	want := make([]byte, size)
	rand.Read(want)
	type result struct {
		b   []byte
		err error
	}
	got := make(chan result, 1)
	closed := make(chan struct{})
	port := tcpServer(t, func(c net.Conn) {
		c.(*net.TCPConn).SetReadBuffer(64 << 10) // bytes wait on the gateway's side
		talking := make(chan struct{})
		go func() {
			defer close(talking)
			for {
				if _, err := c.Write([]byte("progress\n")); err != nil {
					return
				}
				time.Sleep(5 * time.Millisecond)
			}
		}()
		<-closed // the client has gone before the first read
		var b []byte
		buf := make([]byte, 16<<10)
		var err error
		for {
			var n int
			n, err = c.Read(buf)
			b = append(b, buf[:n]...)
			if err != nil {
				break
			}
			time.Sleep(time.Millisecond)
		}
		if err == io.EOF {
			err = nil
		}
		c.(*net.TCPConn).CloseWrite()
		<-talking
		got <- result{b, err}
	})
	h.sendAndLeave(t, port, want)
	close(closed)
	select {
	case r := <-got:
		if !bytes.Equal(r.b, want) || r.err != nil {
			t.Errorf("the remote got %d of %d bytes, read error %v", len(r.b), size, r.err)
		}
	case <-time.After(20 * time.Second):
		t.Error("the TCP connection was not closed after the client left")
	}
}
