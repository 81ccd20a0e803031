package stream

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/tools/remotecommand"
	"k8s.io/client-go/transport/spdy"
	utilexec "k8s.io/client-go/util/exec"
	streamhttp "k8s.io/streaming/pkg/httpstream"

	"gateway/internal/proctest"
	"gateway/metrics"
	"gateway/session"
)

// The SPDY transport, driven by client-go's own SPDY executor, its
// fallback executor and its port-forward dialers, as kubectl drives them.

func (h *harness) restConfig() *rest.Config { return &rest.Config{Host: h.ts.URL} }

func (h *harness) spdyExec(t *testing.T, path string, o remotecommand.StreamOptions) error {
	t.Helper()
	u, _ := url.Parse(h.ts.URL + path)
	e, err := remotecommand.NewSPDYExecutor(h.restConfig(), "POST", u)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return e.StreamWithContext(ctx, o)
}

type sizes chan *remotecommand.TerminalSize

func (q sizes) Next() *remotecommand.TerminalSize { return <-q }

func TestSPDYExec(t *testing.T) {
	h := newHarness(t, nil)
	// stdout and stderr apart, and the exit code.
	var out, errOut bytes.Buffer
	err := h.spdyExec(t, "/exec/box?"+execQuery("stdout,stderr", "sh", "-c", "echo out; echo err >&2; exit 3"),
		remotecommand.StreamOptions{Stdout: &out, Stderr: &errOut})
	var ee utilexec.ExitError
	if !errors.As(err, &ee) || ee.ExitStatus() != 3 || out.String() != "out\n" || errOut.String() != "err\n" {
		t.Errorf("exit: %v, stdout %q, stderr %q", err, out.String(), errOut.String())
	}
	// 1 MiB of stdin, to its end.
	in := make([]byte, 1<<20)
	rand.Read(in)
	sum := sha256.Sum256(in)
	out.Reset()
	if err := h.spdyExec(t, "/exec/box?"+execQuery("stdin,stdout,stderr", "sha256sum"),
		remotecommand.StreamOptions{Stdin: bytes.NewReader(in), Stdout: &out, Stderr: io.Discard}); err != nil ||
		!strings.HasPrefix(out.String(), hex.EncodeToString(sum[:])) {
		t.Errorf("stdin: %q %v", out.String(), err)
	}
	// A tty: the first size, then a resize.
	q := make(sizes, 2)
	q <- &remotecommand.TerminalSize{Width: 123, Height: 45}
	stdinR, stdinW := io.Pipe()
	outR, outW := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- h.spdyExec(t, "/exec/box?"+execQuery("stdin,stdout,tty", "sh", "-c", "stty size; while read x; do stty size; done"),
			remotecommand.StreamOptions{Stdin: stdinR, Stdout: outW, Tty: true, TerminalSizeQueue: q})
		outW.Close()
		close(q)
	}()
	var got bytes.Buffer
	buf := make([]byte, 256)
	for !strings.Contains(got.String(), "45 123") {
		n, err := outR.Read(buf)
		if err != nil {
			t.Fatalf("read: %v (got %q)", err, got.String())
		}
		got.Write(buf[:n])
	}
	q <- &remotecommand.TerminalSize{Width: 77, Height: 11}
	proctest.NudgeUntil(t, stdinW, outR, "11 77") // the resize and the input travel apart
	stdinW.Write([]byte("\x04"))                  // the end of input: the loop ends
	if _, err := io.ReadAll(outR); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Errorf("after the resize: %v", err)
	}
	stdinW.Close()
	if v := testutil.ToFloat64(h.metrics.SessionsOpened.WithLabelValues("exec", metrics.TransportSPDY)); v != 3 {
		t.Errorf("gateway_sessions_opened_total{transport=spdy} = %v, want 3", v)
	}
}

// TestSPDYFallback: client-go's fallback executor, refused a WebSocket,
// goes on over SPDY, as kubectl does.
func TestSPDYFallback(t *testing.T) {
	h := newHarness(t, nil)
	path := "/spdy-only/box?" + execQuery("stdout", "echo", "fell back")
	ws, err := remotecommand.NewWebSocketExecutor(h.restConfig(), "GET", h.ts.URL+path)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(h.ts.URL + path)
	sp, err := remotecommand.NewSPDYExecutor(h.restConfig(), "POST", u)
	if err != nil {
		t.Fatal(err)
	}
	e, err := remotecommand.NewFallbackExecutor(ws, sp, func(error) bool { return true })
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := e.StreamWithContext(ctx, remotecommand.StreamOptions{Stdout: &out}); err != nil || out.String() != "fell back\n" {
		t.Errorf("fallback: %q %v", out.String(), err)
	}
}

// echoListener runs a TCP echo server on the host's loopback.
func echoListener(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				io.Copy(c, c)
				c.Close()
			})
		}
	})
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	return ln.Addr().(*net.TCPAddr).Port
}

// forwardVia runs client-go's port forwarder with dialer to remote and
// returns the local port; it stops at the end of the test.
func forwardVia(t *testing.T, dialer streamhttp.Dialer, remote int) int {
	t.Helper()
	stop, ready := make(chan struct{}), make(chan struct{})
	pf, err := portforward.NewOnAddressesForStreaming(dialer, []string{"127.0.0.1"}, []string{"0:" + strconv.Itoa(remote)}, stop, ready, io.Discard, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- pf.ForwardPorts() }()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("port-forward: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("port-forward not ready")
	}
	t.Cleanup(func() {
		close(stop)
		<-done
	})
	ports, err := pf.GetPorts()
	if err != nil {
		t.Fatal(err)
	}
	return int(ports[0].Local)
}

// TestSPDYPortForward: client-go's port forwarder over SPDY inside a
// WebSocket (kubectl's default) and over plain SPDY (its fallback): 20
// local connections at once, each its own bytes back, exactly.
func TestSPDYPortForward(t *testing.T) {
	h := newHarness(t, nil)
	remote := echoListener(t)
	u, _ := url.Parse(h.ts.URL + "/portforward/host")
	overWS, err := portforward.NewSPDYOverWebsocketDialerForStreaming(u, h.restConfig())
	if err != nil {
		t.Fatal(err)
	}
	rt, up, err := spdy.RoundTripperFor(h.restConfig())
	if err != nil {
		t.Fatal(err)
	}
	plain := spdy.NewDialerForStreaming(up, &http.Client{Transport: rt}, "POST", u)
	for name, d := range map[string]streamhttp.Dialer{"spdy-websocket": overWS, "spdy": plain} {
		t.Run(name, func(t *testing.T) {
			local := forwardVia(t, d, remote)
			var wg sync.WaitGroup
			for i := range 20 {
				wg.Go(func() {
					c, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(local)))
					if err != nil {
						t.Error(err)
						return
					}
					defer c.Close()
					msg := bytes.Repeat([]byte(fmt.Sprintf("conn %02d ", i)), 4096)
					go c.Write(msg)
					got := make([]byte, len(msg))
					c.SetReadDeadline(time.Now().Add(30 * time.Second))
					if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, msg) {
						t.Errorf("connection %d: %v, bytes equal %v", i, err, bytes.Equal(got, msg))
					}
				})
			}
			wg.Wait()
		})
	}
}

// rawSPDY upgrades a TCP connection to SPDY by hand, for bad input.
func (h *harness) rawSPDY(t *testing.T, path, protocol string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(h.ts.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: %s\r\nContent-Length: 0\r\n\r\n", path, protocol)
	buf := make([]byte, 4096)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := c.Read(buf)
	if err != nil || !bytes.HasPrefix(buf[:n], []byte("HTTP/1.1 101")) {
		t.Fatalf("upgrade: %q %v", buf[:n], err)
	}
	return c
}

// TestSPDYBadInput: garbage frames, bad stream headers, duplicate request
// ids, pairs that never complete and vanishing clients get clean ends, and
// a reference port-forward goes on exactly meanwhile.
func TestSPDYBadInput(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.StreamCreationTimeout = time.Second })
	remote := echoListener(t)
	u, _ := url.Parse(h.ts.URL + "/portforward/host")
	overWS, _ := portforward.NewSPDYOverWebsocketDialerForStreaming(u, h.restConfig())
	local := forwardVia(t, overWS, remote)
	ref, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(local)))
	if err != nil {
		t.Fatal(err)
	}
	defer ref.Close()
	echo := func(what string) {
		t.Helper()
		msg := []byte("still fine after " + what)
		ref.Write(msg)
		got := make([]byte, len(msg))
		ref.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadFull(ref, got); err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("reference tunnel after %s: %q %v", what, got, err)
		}
	}

	// Garbage instead of SPDY frames, on exec and on port-forward: the
	// connection is closed.
	for _, path := range []string{"/exec/box?" + execQuery("stdout", "true"), "/portforward/host"} {
		proto := "v4.channel.k8s.io"
		if strings.HasPrefix(path, "/portforward") {
			proto = "portforward.k8s.io"
		}
		c := h.rawSPDY(t, path, proto)
		c.Write([]byte("\x80\x03\x00\x01garbage that is not a SPDY frame at all\xff\xff\xff"))
		c.SetReadDeadline(time.Now().Add(40 * time.Second))
		if _, err := io.Copy(io.Discard, c); err != nil && !errors.Is(err, net.ErrClosed) && !strings.Contains(err.Error(), "reset") {
			t.Errorf("%s: %v", path, err)
		}
	}
	echo("garbage")

	// Streams the server refuses or drops, through client-go's SPDY
	// connection: an unknown stream type, a missing port, a duplicate
	// request id; and a pair that never completes.
	rt, up, _ := spdy.RoundTripperFor(h.restConfig())
	conn, _, err := spdy.NewDialerForStreaming(up, &http.Client{Transport: rt}, "POST", u).Dial("portforward.k8s.io")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	port := strconv.Itoa(remote)
	for _, hdr := range []http.Header{
		{"Streamtype": {"video"}, "Port": {port}, "Requestid": {"1"}},
		{"Streamtype": {"data"}, "Requestid": {"2"}},
		{"Streamtype": {"data"}, "Port": {"99999"}, "Requestid": {"3"}},
	} {
		if s, err := conn.CreateStream(hdr); err == nil { // refused streams are reset
			read := make(chan error, 1)
			go func() { _, err := s.Read(make([]byte, 1)); read <- err }()
			select {
			case err := <-read:
				if err == nil {
					t.Errorf("stream %v was served", hdr)
				}
			case <-time.After(10 * time.Second):
				t.Errorf("stream %v is neither served nor reset", hdr)
				s.Reset()
			}
		}
	}
	errS, err := conn.CreateStream(http.Header{"Streamtype": {"error"}, "Port": {port}, "Requestid": {"9"}})
	if err != nil {
		t.Fatal(err)
	}
	msg, _ := io.ReadAll(errS) // the pair never completes: timed out
	if !strings.Contains(string(msg), "timed out waiting for the streams of request 9") {
		t.Errorf("incomplete pair: %q", msg)
	}
	d1, _ := conn.CreateStream(http.Header{"Streamtype": {"data"}, "Port": {port}, "Requestid": {"10"}})
	_, _ = conn.CreateStream(http.Header{"Streamtype": {"data"}, "Port": {port}, "Requestid": {"10"}}) // the same again: reset
	e1, _ := conn.CreateStream(http.Header{"Streamtype": {"error"}, "Port": {port}, "Requestid": {"10"}})
	if d1 != nil && e1 != nil {
		d1.Write([]byte("pair 10"))
		got := make([]byte, 7)
		if _, err := io.ReadFull(d1, got); err != nil || string(got) != "pair 10" {
			t.Errorf("the first of a duplicate pair: %q %v", got, err)
		}
	}
	echo("bad streams")

	// A client that vanishes mid-stream.
	c := h.mustDialPath(t, "/portforward/host", SPDYPortForwardProtocol)
	c.WriteMessage(websocket.BinaryMessage, []byte{0x80, 0x03, 0x00, 0x01})
	c.NetConn().Close()
	echo("a vanished client")
}

// FuzzSPDYOverWebSocket: whatever binary messages arrive inside the
// WebSocket, the SPDY server ends cleanly (the harness checks for leaks).
func FuzzSPDYOverWebSocket(f *testing.F) {
	f.Add([]byte{0x80, 0x03, 0x00, 0x01, 0x00, 0x00, 0x00, 0x0a, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0}, uint8(3))
	f.Add([]byte("not spdy"), uint8(1))
	f.Add([]byte{0x80, 0x03, 0x00, 0x06, 0x00, 0x00, 0x00, 0x04, 0, 0, 0, 1}, uint8(2)) // a ping
	h := newHarness(f, nil)
	f.Fuzz(func(t *testing.T, data []byte, cut uint8) {
		c, _, err := h.dialPath(t, "/portforward/host", nil, SPDYPortForwardProtocol)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		step := int(cut)%64 + 1
		for p := data; len(p) > 0; {
			k := min(step, len(p))
			if c.WriteMessage(websocket.BinaryMessage, p[:k]) != nil {
				break
			}
			p = p[k:]
		}
		c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(1000, ""), time.Now().Add(time.Second))
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		for {
			if _, _, err := c.ReadMessage(); err != nil {
				break
			}
		}
	})
}

// signalWriter closes seen once what was written contains want.
type signalWriter struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	want string
	seen chan struct{}
}

func (w *signalWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	had := strings.Contains(w.buf.String(), w.want)
	w.buf.Write(p)
	if !had && strings.Contains(w.buf.String(), w.want) {
		close(w.seen)
	}
	return len(p), nil
}

// TestSPDYCancelledIsFailure: an exec cancelled by the gateway (its
// session closed through the API, the gateway stopping) ends over SPDY
// with a failure Status saying why, as it ends over WebSocket with a close
// code: client-go (kubectl) reports the error, not success.
func TestSPDYCancelledIsFailure(t *testing.T) {
	for _, tc := range []struct {
		cause error
		want  string
	}{
		{session.ErrClosedByAPI, "session closed through the API"},
		{session.ErrShutdown, "gateway shutting down"},
	} {
		t.Run(tc.want, func(t *testing.T) {
			h := newHarness(t, nil)
			out := &signalWriter{want: "started\n", seen: make(chan struct{})}
			done := make(chan error, 1)
			go func() {
				done <- h.spdyExec(t, "/exec/box?"+execQuery("stdout", "sh", "-c", "echo started; sleep 30; echo finished"),
					remotecommand.StreamOptions{Stdout: out})
			}()
			select {
			case <-out.seen:
			case err := <-done:
				t.Fatalf("exec ended early: %v", err)
			}
			if err := h.sessions.Close(h.activeSession(t).ID, tc.cause); err != nil {
				t.Fatal(err)
			}
			err := <-done
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("client-go: %v, want an error saying %q", err, tc.want)
			}
			if got := out.buf.String(); got != "started\n" {
				t.Errorf("stdout %q", got)
			}
		})
	}
}

// stalledWriter takes nothing until release is closed: a SPDY client that
// stopped reading.
type stalledWriter struct{ release chan struct{} }

func (w stalledWriter) Write(p []byte) (int, error) {
	<-w.release
	return len(p), nil
}

// TestSPDYStuckClientClosed: a SPDY exec whose client stopped reading,
// closed through the API, ends for its session (as a WebSocket's does,
// after stuckWriterGrace), and its connection is dropped after closeLinger.
func TestSPDYStuckClientClosed(t *testing.T) {
	h := newHarness(t, nil)
	w := stalledWriter{release: make(chan struct{})}
	done := make(chan error, 1)
	go func() {
		done <- h.spdyExec(t, "/exec/box?"+execQuery("stdout", "cat", "/dev/zero"), remotecommand.StreamOptions{Stdout: w})
	}()
	sess := h.activeSession(t)
	stalledBytesOut(t, sess)
	if err := h.sessions.Close(sess.ID, session.ErrClosedByAPI); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the session's end", func() bool { return !sess.Live() })
	if st := sess.Info(); st.State != session.Closed {
		t.Errorf("session %+v", st)
	}
	close(w.release) // the client reads again: its connection is gone
	if err := <-done; err == nil {
		t.Error("the client saw a clean end")
	}
}
