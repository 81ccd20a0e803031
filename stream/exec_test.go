package stream

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"gateway/container"
	"gateway/internal/park"
	"gateway/internal/proctest"
	"gateway/internal/reqerr"
	"gateway/metrics"
	"gateway/session"
	"gateway/stream/wsproto"
)

// TestWireBytes checks every exec protocol byte for byte: the ready frame,
// output, the error channel, the close code, the echoed subprotocol.
func TestWireBytes(t *testing.T) {
	h := newHarness(t, nil)
	exit3 := string(wsproto.V4.StatusPayload(wsproto.ExitCode(3, []string{"sh", "-c", "printf hi; exit 3"})))
	text3 := "command terminated with non-zero exit code: error executing command [sh -c printf hi; exit 3], exit code 3"
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	tests := []struct {
		offer      []string
		echo       string
		typ        int
		ready      string
		wantStatus string // the error channel's whole message
	}{
		{[]string{"v5.channel.k8s.io"}, "v5.channel.k8s.io", websocket.BinaryMessage, "\x01", "\x03" + exit3},
		{[]string{"v4.channel.k8s.io"}, "v4.channel.k8s.io", websocket.BinaryMessage, "\x01", "\x03" + exit3},
		{[]string{"v4.base64.channel.k8s.io"}, "v4.base64.channel.k8s.io", websocket.TextMessage, "1", "3" + b64(exit3)},
		{[]string{"channel.k8s.io"}, "channel.k8s.io", websocket.BinaryMessage, "\x01", "\x03" + text3},
		{[]string{"base64.channel.k8s.io"}, "base64.channel.k8s.io", websocket.TextMessage, "1", "3" + b64(text3)},
		{nil, "", websocket.BinaryMessage, "\x01", "\x03" + text3},
		{[]string{"tty", "v4.channel.k8s.io", "v5.channel.k8s.io"}, "v4.channel.k8s.io", websocket.BinaryMessage, "\x01", "\x03" + exit3},
	}
	for _, tc := range tests {
		t.Run(tc.echo, func(t *testing.T) {
			c, resp, err := h.dial(t, execQuery("stdout", "sh", "-c", "printf hi; exit 3"), nil, tc.offer...)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if got := resp.Header.Get("Sec-Websocket-Protocol"); got != tc.echo {
				t.Errorf("echoed %q, want %q", got, tc.echo)
			}
			msgs, ce := readUntilClose(t, c)
			if ce.Code != websocket.CloseNormalClosure {
				t.Errorf("close %d %q, want 1000", ce.Code, ce.Text)
			}
			if len(msgs) < 3 {
				t.Fatalf("%d messages: %v", len(msgs), msgs)
			}
			for _, m := range msgs {
				if m.typ != tc.typ {
					t.Errorf("message type %d, want %d", m.typ, tc.typ)
				}
			}
			if string(msgs[0].data) != tc.ready {
				t.Errorf("ready frame %q, want %q", msgs[0].data, tc.ready)
			}
			if got := collect(t, msgs[1:len(msgs)-1], 1); got != "hi" {
				t.Errorf("stdout %q", got)
			}
			if got := string(msgs[len(msgs)-1].data); got != tc.wantStatus {
				t.Errorf("last message\n %q\nwant\n %q", got, tc.wantStatus)
			}
		})
	}
	// Before v4 a success sends nothing on the error channel.
	c := h.mustDial(t, execQuery("stdout", "true"), "channel.k8s.io")
	msgs, ce := readUntilClose(t, c)
	if len(msgs) != 1 || string(msgs[0].data) != "\x01" || ce.Code != 1000 {
		t.Errorf("v1 success: %v %v", msgs, ce)
	}
	// Without stdout, the ready frame is on stderr; without either, on the
	// error channel.
	c = h.mustDial(t, execQuery("stderr", "true"), "v5.channel.k8s.io")
	if msgs, _ := readUntilClose(t, c); string(msgs[0].data) != "\x02" {
		t.Errorf("stderr-only ready frame %q", msgs[0].data)
	}
	c = h.mustDial(t, execQuery("stdin", "true"), "v5.channel.k8s.io")
	if msgs, _ := readUntilClose(t, c); string(msgs[0].data) != "\x03" || string(msgs[1].data) != "\x03"+`{"metadata":{},"status":"Success"}` {
		t.Errorf("stdin-only messages %v", msgs)
	}
}

func TestRefusedBeforeUpgrade(t *testing.T) {
	h := newHarness(t, nil)
	q := execQuery("stdout", "true")
	tests := []struct {
		name   string
		path   string
		header http.Header
		protos []string
		code   int
		want   string
	}{
		// 403, as the kubelet's and the API server's wsstream handshake.
		{"only unknown protocols", "/exec/box?" + q, nil, []string{"v9.channel.k8s.io", "tty"}, 403, "none of the offered subprotocols"},
		{"unknown container", "/exec/nope?" + q, nil, nil, 404, `container "nope" not found`},
		{"no command", "/exec/box?stdout=1", nil, nil, 400, "command is required"},
		{"empty program", "/exec/box?stdout=1&command=", nil, nil, 400, "program name is empty"},
		{"no streams", "/exec/box?command=true&stdout=false", nil, nil, 400, "at least one of stdin"},
		{"only stderr, with a tty", "/exec/box?command=true&stderr=1&tty=1", nil, nil, 400, "with a tty, stderr is stdout"},
		// execve cannot carry a NUL: the caller's mistake, not the gateway's.
		{"NUL in an argument", "/exec/box?stdout=1&command=echo&command=a%00b", nil, nil, 400, `command[1] "a\x00b" holds a NUL byte`},
		{"detach not a duration", "/exec/box?" + q + "&detach=soon", nil, nil, 400, `"soon" is not a duration`},
		{"detach negative", "/exec/box?" + q + "&detach=-5", nil, nil, 400, `"-5" is negative`},
		{"detach beyond a Duration", "/exec/box?" + q + "&detach=1e12", nil, nil, 400, `"1e12" seconds is out of range`},
		{"detach NaN", "/exec/box?" + q + "&detach=NaN", nil, nil, 400, `"NaN" seconds is out of range`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := websocket.Dialer{Subprotocols: tc.protos}
			_, resp, err := d.Dial("ws"+strings.TrimPrefix(h.ts.URL, "http")+tc.path, tc.header)
			if err == nil {
				t.Fatal("upgraded")
			}
			body := new(bytes.Buffer)
			body.ReadFrom(resp.Body)
			if resp.StatusCode != tc.code || !strings.Contains(body.String(), tc.want) {
				t.Errorf("%d %q, want %d %q", resp.StatusCode, body, tc.code, tc.want)
			}
		})
	}
	// A plain request, no upgrade: the handshake fails (the API refuses
	// such requests before they come here).
	resp, err := http.Get(h.ts.URL + "/exec/box?" + q)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Errorf("plain GET: %d", resp.StatusCode)
	}
	if n := len(h.sessions.List(session.Filter{})); n != 0 {
		t.Errorf("%d sessions registered by refused requests", n)
	}
}

// TestMalformedInput: bad frames are dropped or ignored as the kubelet does,
// and the stream carries on.
func TestMalformedInput(t *testing.T) {
	h := newHarness(t, nil)
	c := h.mustDial(t, execQuery("stdin,stdout", "head", "-n", "1"), "v4.base64.channel.k8s.io")
	k := h.metrics.For("exec")
	for _, m := range []string{
		"0!!!",  // bad base64: dropped
		"9eA==", // unknown channel: ignored
		"",      // empty: ignored
		"1eA==", // data on stdout from the client: discarded
		"0aGkK", // "hi\n"
	} {
		if err := c.WriteMessage(websocket.TextMessage, []byte(m)); err != nil {
			t.Fatal(err)
		}
	}
	msgs, ce := readUntilClose(t, c)
	if got := collect(t, msgs, 1); got != "hi\n" || ce.Code != 1000 {
		t.Errorf("stdout %q close %v", got, ce)
	}
	if ch, p := decode(t, msgs[len(msgs)-1]); ch != 3 || string(p) != `{"metadata":{},"status":"Success"}` {
		t.Errorf("status %d %q", ch, p)
	}
	if v := testutil.ToFloat64(h.metrics.StreamErrors.WithLabelValues("exec", metrics.ReasonProtocol)); v != 1 {
		t.Errorf("protocol errors %v", v)
	}
	if v := testutil.ToFloat64(h.metrics.StreamErrors.WithLabelValues("exec", metrics.ReasonUnknownChannel)); v != 1 {
		t.Errorf("unknown channel errors %v", v)
	}
	_ = k
}

// TestCloseSignal: v5 ff 00 ends the process's input; it finishes and all
// its output arrives.
func TestCloseSignal(t *testing.T) {
	h := newHarness(t, nil)
	c := h.mustDial(t, execQuery("stdin,stdout", "sh", "-c", "cat; echo done"), "v5.channel.k8s.io")
	for _, m := range [][]byte{{0, 'a', 'b'}, {0, 'c'}, {0xff, 0}, {0xff, 0}, {0, 'x'}} {
		c.WriteMessage(websocket.BinaryMessage, m)
	}
	msgs, ce := readUntilClose(t, c)
	if got := collect(t, msgs, 1); got != "abcdone\n" || ce.Code != 1000 {
		t.Errorf("stdout %q close %v", got, ce)
	}
}

// TestBadCloseSignal: a malformed v5 close signal ends the stream with a
// protocol error, and the process is stopped.
func TestBadCloseSignal(t *testing.T) {
	h := newHarness(t, nil)
	for _, tc := range []struct {
		msg  []byte
		want string
	}{{[]byte{0xff}, "malformed close signal"}, {[]byte{0xff, 0, 0}, "malformed close signal"}, {[]byte{0xff, 9}, "does not exist"}} {
		c := h.mustDial(t, execQuery("stdin,stdout", "sleep", "1000"), "v5.channel.k8s.io")
		c.WriteMessage(websocket.BinaryMessage, tc.msg)
		_, ce := readUntilClose(t, c)
		if ce.Code != websocket.CloseProtocolError || !strings.Contains(ce.Text, tc.want) {
			t.Errorf("close %d %q, want 1002 with %q", ce.Code, ce.Text, tc.want)
		}
	}
	waitFor(t, "sessions to close", func() bool { return len(h.sessions.List(session.Filter{State: session.Active})) == 0 })
	if v := testutil.ToFloat64(h.metrics.SessionsTotal.WithLabelValues("exec", metrics.ResultError)); v != 3 {
		t.Errorf("error results %v", v)
	}
}

func TestOversizedFrame(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.MaxMessageSize = 1024 })
	c := h.mustDial(t, execQuery("stdin,stdout", "cat"), "v5.channel.k8s.io")
	c.WriteMessage(websocket.BinaryMessage, append([]byte{0}, make([]byte, 2000)...))
	_, ce := readUntilClose(t, c)
	if ce.Code != websocket.CloseMessageTooBig {
		t.Errorf("close %v, want 1009", ce)
	}
	waitFor(t, "the error metric", func() bool {
		return testutil.ToFloat64(h.metrics.StreamErrors.WithLabelValues("exec", metrics.ReasonFrameTooLarge)) == 1
	})
}

// TestResizeInput: invalid sizes are skipped; a malformed resize stops
// resize handling (as in the kubelet) but not the stream.
func TestResizeInput(t *testing.T) {
	h := newHarness(t, nil)
	run := func(resizes ...string) string {
		c := h.mustDial(t, execQuery("stdin,stdout,tty", "sh", "-c", "read x; stty size"), "v5.channel.k8s.io")
		for _, r := range resizes {
			c.WriteMessage(websocket.BinaryMessage, append([]byte{4}, r...))
		}
		time.Sleep(100 * time.Millisecond) // the resizes land before the newline
		c.WriteMessage(websocket.BinaryMessage, []byte("\x00\n"))
		msgs, ce := readUntilClose(t, c)
		if ce.Code != 1000 {
			t.Errorf("close %v", ce)
		}
		out := strings.TrimSpace(collect(t, msgs, 1))
		return out[strings.LastIndexByte(out, '\n')+1:]
	}
	if got := run(`{"Width":0,"Height":40}`, `{"Width":50,"Height":20}`); got != "20 50" {
		t.Errorf("after a zero size: %q, want 20 50", got)
	}
	if got := run(`{"Width":50,"Height":20}`, `garbage`, `{"Width":60,"Height":30}`); got != "20 50" {
		t.Errorf("after garbage: %q, want 20 50 (later sizes ignored)", got)
	}
	if got := run(`{"Width":1,"Height":`, `2}{"width":90,"height":33}`); got != "33 90" {
		t.Errorf("split objects: %q, want 33 90", got)
	}
	if v := testutil.ToFloat64(h.metrics.StreamErrors.WithLabelValues("exec", metrics.ReasonBadResize)); v != 2 {
		t.Errorf("bad_resize = %v, want 2", v)
	}
}

// TestPingWhileStdinBlocked: the process reads no input, the client sends
// more than a pipe holds, and pings are still answered.
func TestPingWhileStdinBlocked(t *testing.T) {
	h := newHarness(t, nil)
	c := h.mustDial(t, execQuery("stdin,stdout", "sleep", "1000"), "v5.channel.k8s.io")
	chunk := append([]byte{0}, make([]byte, 50<<10)...)
	for range 6 { // 300 KiB: over the 64 KiB pipe buffer
		if err := c.WriteMessage(websocket.BinaryMessage, chunk); err != nil {
			t.Fatal(err)
		}
	}
	pong := make(chan struct{}, 1)
	c.SetPongHandler(func(string) error { pong <- struct{}{}; return nil })
	go func() {
		for {
			if _, _, err := c.ReadMessage(); err != nil {
				return
			}
		}
	}()
	c.WriteControl(websocket.PingMessage, []byte("hello"), time.Now().Add(time.Second))
	select {
	case <-pong:
	case <-time.After(10 * time.Second):
		t.Fatal("no pong while the process does not read its input")
	}
}

// TestCloseFromAPI: closing a session ends its stream with close code 4000,
// and the process is stopped.
func TestCloseFromAPI(t *testing.T) {
	h := newHarness(t, nil)
	c := h.mustDial(t, execQuery("stdout", "sh", "-c", "echo $$ > pid; exec sleep 1000"), "v5.channel.k8s.io")
	id := h.activeSession(t).ID
	var pid int
	waitFor(t, "the pid file", func() bool {
		b, _ := os.ReadFile(filepath.Join(h.dir, "pid"))
		pid, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		return pid > 0
	})
	if err := h.sessions.Close(id, session.ErrClosedByAPI); err != nil {
		t.Fatal(err)
	}
	_, ce := readUntilClose(t, c)
	if ce.Code != CloseByAPI || ce.Text != "session closed through the API" {
		t.Errorf("close %d %q", ce.Code, ce.Text)
	}
	waitFor(t, "the process to end", func() bool { return !proctest.Alive(pid) })
	waitFor(t, "the session to close", func() bool { s, _ := h.sessions.Get(id); return s.Info().State == session.Closed })
	if err := h.sessions.Close(id, nil); err == nil {
		t.Error("closing a closed session succeeded")
	}
	if v := testutil.ToFloat64(h.metrics.SessionsTotal.WithLabelValues("exec", metrics.ResultTerminated)); v != 1 {
		t.Errorf("terminated results %v", v)
	}
}

// TestClientVanishes: a client that drops the TCP connection gets its
// process stopped.
func TestClientVanishes(t *testing.T) {
	h := newHarness(t, nil)
	for _, tty := range []string{"", ",tty"} {
		os.Remove(filepath.Join(h.dir, "pid"))
		c := h.mustDial(t, execQuery("stdin,stdout"+tty, "sh", "-c", "echo $$ > pid; exec sleep 1000"), "v5.channel.k8s.io")
		var pid int
		waitFor(t, "the pid file", func() bool {
			b, _ := os.ReadFile(filepath.Join(h.dir, "pid"))
			pid, _ = strconv.Atoi(strings.TrimSpace(string(b)))
			return pid > 0
		})
		c.NetConn().Close()
		waitFor(t, "the process to end", func() bool { return !proctest.Alive(pid) })
	}
	waitFor(t, "the sessions to close", func() bool { return len(h.sessions.List(session.Filter{State: session.Active})) == 0 })
	if v := testutil.ToFloat64(h.metrics.SessionsTotal.WithLabelValues("exec", metrics.ResultClientDisconnect)); v != 2 {
		t.Errorf("client_disconnect results %v", v)
	}
	if z := proctest.Zombies(); len(z) > 0 {
		t.Errorf("zombie children: %v", z)
	}
}

func TestShutdownCloses(t *testing.T) {
	h := newHarness(t, nil)
	c := h.mustDial(t, execQuery("stdout", "sleep", "1000"), "v5.channel.k8s.io")
	h.activeSession(t)
	done := make(chan error, 1)
	go func() { done <- h.sessions.CloseAll(t.Context()) }()
	_, ce := readUntilClose(t, c)
	if ce.Code != websocket.CloseGoingAway {
		t.Errorf("close %v, want 1001", ce)
	}
	if err := <-done; err != nil {
		t.Error(err)
	}
}

func TestIdleTimeout(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.IdleTimeout = 200 * time.Millisecond; c.PingPeriod = 50 * time.Millisecond })
	c := h.mustDial(t, execQuery("stdout", "sleep", "1000"), "v5.channel.k8s.io")
	_, ce := readUntilClose(t, c)
	if ce.Code != CloseIdle {
		t.Errorf("close %v, want %d", ce, CloseIdle)
	}
}

// TestSlowClientBounded: a client that stops reading stops the process's
// output at a bounded backlog, and reading resumes it.
func TestSlowClientBounded(t *testing.T) {
	h := newHarness(t, nil)
	c := h.mustDial(t, execQuery("stdout", "cat", "/dev/zero"), "v5.channel.k8s.io")
	sess := h.activeSession(t)
	// Not reading: the count of bytes taken from the process settles.
	last := stalledBytesOut(t, sess)
	// Loopback socket buffers hold a few MiB; our queue holds 16 chunks.
	if last > 64<<20 {
		t.Errorf("%d bytes taken while the client read nothing", last)
	}
	t.Logf("backlog while stalled: %d KiB", last>>10)
	var got int64
	for got < 2*last+(1<<20) {
		_, p, err := c.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		got += int64(len(p))
	}
	if n := sess.Info().BytesOut; n <= last {
		t.Errorf("output did not resume: %d <= %d", n, last)
	}
}

// TestStatusJSONShape decodes the final status with metav1 field names.
func TestStatusJSONShape(t *testing.T) {
	h := newHarness(t, nil)
	c := h.mustDial(t, execQuery("stdout", "sh", "-c", "exit 42"), "v5.channel.k8s.io")
	msgs, _ := readUntilClose(t, c)
	var st struct {
		Status  string
		Reason  string
		Details struct {
			Causes []struct{ Reason, Message string }
		}
	}
	last := msgs[len(msgs)-1].data
	if err := json.Unmarshal(last[1:], &st); err != nil || last[0] != 3 {
		t.Fatalf("%q: %v", last, err)
	}
	if st.Status != "Failure" || st.Reason != "NonZeroExitCode" || st.Details.Causes[0].Reason != "ExitCode" || st.Details.Causes[0].Message != "42" {
		t.Errorf("status %+v", st)
	}
}

// earlyConn is a client connection that sends extra bytes right behind
// its handshake request, in the same write: they are in the server's
// socket (or its buffers) before the stream starts.
type earlyConn struct {
	net.Conn
	extra []byte
}

func (c *earlyConn) Write(p []byte) (int, error) {
	if c.extra != nil {
		_, err := c.Conn.Write(append(append([]byte(nil), p...), c.extra...))
		c.extra = nil
		return len(p), err
	}
	return c.Conn.Write(p)
}

// maskedFrame is a client's binary WebSocket message (RFC 6455: masked).
func maskedFrame(payload []byte) []byte {
	key := [4]byte{1, 2, 3, 4}
	f := []byte{0x82}
	switch n := len(payload); {
	case n < 126:
		f = append(f, 0x80|byte(n))
	case n < 1<<16:
		f = append(f, 0x80|126, byte(n>>8), byte(n))
	default:
		f = append(f, 0x80|127, 0, 0, 0, 0, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
	f = append(f, key[:]...)
	for i, b := range payload {
		f = append(f, b^key[i%4])
	}
	return f
}

// TestTTYSizeInSocket: a size the client sent before the stream started
// (it is in the socket then, behind 3000 frames the stream ignores)
// applies before the process starts: the program's first look at its
// terminal sees it. No wait is involved.
func TestTTYSizeInSocket(t *testing.T) {
	h := newHarness(t, nil)
	var resize []byte
	for range 3000 {
		resize = append(resize, maskedFrame([]byte{1, 'x'})...) // on stdout: dropped
	}
	resize = append(resize, maskedFrame(append([]byte{4}, `{"Width":123,"Height":45}`...))...)
	d := websocket.Dialer{Subprotocols: []string{"v5.channel.k8s.io"}, NetDial: func(network, addr string) (net.Conn, error) {
		c, err := net.Dial(network, addr)
		return &earlyConn{Conn: c, extra: resize}, err
	}}
	c, _, err := d.Dial("ws"+strings.TrimPrefix(h.ts.URL, "http")+"/exec/box?"+execQuery("stdout,tty", "stty", "size"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	msgs, ce := readUntilClose(t, c)
	if got := strings.TrimSpace(collect(t, msgs, 1)); got != "45 123" || ce.Code != 1000 {
		t.Errorf("stty size printed %q (close %v), want 45 123", got, ce)
	}
}

// TestTTYSizeFromKubectl: kubectl sends its terminal size a moment after
// it connects, from a goroutine of its own; its tty exec waits for that
// size, so the program's first look at its terminal sees it.
func TestTTYSizeFromKubectl(t *testing.T) {
	h := newHarness(t, nil)
	c, _, err := h.dial(t, execQuery("stdin,stdout,tty", "stty", "size"),
		http.Header{"User-Agent": {"kubectl/v1.37.2 (linux/amd64) kubernetes/0000000"}}, "v5.channel.k8s.io")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	time.Sleep(50 * time.Millisecond) // later than the process would start
	if err := c.WriteMessage(websocket.BinaryMessage, append([]byte{4}, `{"Width":123,"Height":45}`...)); err != nil {
		t.Fatal(err)
	}
	msgs, ce := readUntilClose(t, c)
	if got := strings.TrimSpace(collect(t, msgs, 1)); got != "45 123" || ce.Code != 1000 {
		t.Errorf("stty size printed %q (close %v), want 45 123", got, ce)
	}
}

// TestTTYStartsAtOnce: a tty exec whose client sends no size starts its
// process at once at 80x24, as the kubelet does, and a size sent later
// applies as it comes. Ten such sessions in a row take far less than the
// 100 ms each that a fixed wait for the client's first size cost.
func TestTTYStartsAtOnce(t *testing.T) {
	h := newHarness(t, nil)
	c := h.mustDial(t, execQuery("stdin,stdout,tty", "sh", "-c", "stty size; read x; stty size"), "v5.channel.k8s.io")
	var out strings.Builder
	for !strings.Contains(out.String(), "24 80") {
		_, m, err := c.ReadMessage()
		if err != nil {
			t.Fatalf("read: %v (got %q)", err, out.String())
		}
		out.Write(m[1:])
	}
	c.WriteMessage(websocket.BinaryMessage, append([]byte{4}, `{"Width":100,"Height":30}`...))
	c.WriteMessage(websocket.BinaryMessage, []byte("\x00\n"))
	msgs, _ := readUntilClose(t, c)
	if got := collect(t, msgs, 1); !strings.Contains(got, "30 100") {
		t.Errorf("after the resize: %q, want 30 100", got)
	}

	start := time.Now()
	for range 10 {
		c := h.mustDial(t, execQuery("stdout,tty", "true"), "v5.channel.k8s.io")
		if _, ce := readUntilClose(t, c); ce.Code != 1000 {
			t.Fatalf("close %v", ce)
		}
	}
	// Not a speed test: the bound is what the removed wait alone cost.
	if d := time.Since(start); d > time.Second {
		t.Errorf("10 tty sessions took %v: something waits before the process starts", d)
	}
}

// TestStderrWhileStdoutFlows: a process's stderr is read while its
// stdout keeps the reader busy: the warning written first arrives long
// before the 32 MiB of stdout written after it have all been sent.
func TestStderrWhileStdoutFlows(t *testing.T) {
	h := newHarness(t, nil)
	const n = 32 << 20
	c := h.mustDial(t, execQuery("stdout,stderr", "sh", "-c", fmt.Sprintf("echo warn >&2; head -c %d /dev/zero", n)), "v5.channel.k8s.io")
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	stdout := 0
	for {
		_, m, err := c.ReadMessage()
		if err != nil {
			t.Fatalf("read: %v after %d bytes of stdout and no stderr", err, stdout)
		}
		if len(m) == 0 {
			continue
		}
		if m[0] == 2 && len(m) > 1 {
			if string(m[1:]) != "warn\n" {
				t.Fatalf("stderr %q, want warn", m[1:])
			}
			break
		}
		if m[0] == 1 {
			stdout += len(m) - 1
		}
	}
	if stdout >= n/2 {
		t.Errorf("stderr came after %d of the %d bytes of stdout: it waited for stdout to pause", stdout, n)
	}
	rest := channelBytes(c, 1)
	if stdout+rest != n {
		t.Errorf("stdout: %d bytes, want %d", stdout+rest, n)
	}
}

// TestIdleStreamsRest: idle tty execs hold no goroutine of their own:
// their WebSocket readers and their output readers are parked (package
// park), they stay so across the gateway's pings (answered without
// gorilla), and input and output bring them back in order.
func TestIdleStreamsRest(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.PingPeriod = 50 * time.Millisecond })
	const n = 4
	type client struct {
		c    *websocket.Conn
		msgs chan []byte
	}
	var clients []client
	for range n {
		c := h.mustDial(t, execQuery("stdin,stdout,tty", "cat"), "v5.channel.k8s.io")
		cl := client{c, make(chan []byte, 64)}
		go func() { // reading answers the pings
			defer close(cl.msgs)
			for {
				_, p, err := c.ReadMessage()
				if err != nil {
					return
				}
				cl.msgs <- p
			}
		}()
		clients = append(clients, cl)
	}
	parked := func(what string) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); park.Parked() < 2*n; time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: %d files parked, want %d (a reader and an output per session)", what, park.Parked(), 2*n)
			}
		}
	}
	parked("idle")
	time.Sleep(300 * time.Millisecond) // six pings, each answered
	parked("after pings")
	for i, cl := range clients {
		word := fmt.Sprintf("word%d", i)
		if err := cl.c.WriteMessage(websocket.BinaryMessage, []byte("\x00"+word+"\n")); err != nil {
			t.Fatal(err)
		}
		var got []byte
		for !bytes.Contains(got, []byte(word+"\r\n"+word+"\r\n")) { // the echo, then cat's line
			select {
			case p, ok := <-cl.msgs:
				if !ok {
					t.Fatalf("session %d ended; got %q", i, got)
				}
				if len(p) > 0 && p[0] == 1 {
					got = append(got, p[1:]...)
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("session %d: got %q, want %q twice", i, got, word)
			}
		}
	}
	parked("idle again")
	for _, cl := range clients {
		if err := cl.c.WriteMessage(websocket.BinaryMessage, []byte("\x00\x04")); err != nil { // ^D: cat exits
			t.Fatal(err)
		}
		for range cl.msgs {
		}
	}
}

// FuzzStreamQueries: the query of an exec, attach, join or port-forward is
// refused with a 400 or read into options that can be served: a command
// execve can carry, no stderr beside a tty, a detach and a since that are
// not negative, ports in 1..65535.
func FuzzStreamQueries(f *testing.F) {
	for _, s := range []string{
		execQuery("stdin,stdout,tty", "sh", "-c", "date") + "&detach=90s",
		"command=echo&command=a%00b&stdout=1",
		"command=true&output=1&error=1&tty=1&detach=1e300",
		"stdout=1&replay=0&since=42",
		"port=80,443&port=8080",
		"detach=NaN&command=x&stdin=1",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		q, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		refused := func(what string, err error) bool {
			if err != nil && !errors.Is(err, reqerr.ErrBadRequest) {
				t.Fatalf("%s %q: %v, not a 400", what, raw, err)
			}
			return err != nil
		}
		servable := func(what string, s Streams) {
			if s.TTY && s.Stderr || !s.Stdin && !s.Stdout && !s.Stderr {
				t.Fatalf("%s %q: streams %+v", what, raw, s)
			}
		}
		e := ParseExecQuery(q)
		if !refused("exec", e.Validate(true)) {
			servable("exec", e.Streams)
			if container.CheckCommand(e.Command) != nil || e.Detach.Duration < 0 {
				t.Fatalf("exec %q: %+v", raw, e)
			}
		}
		a := ParseAttachQuery(q)
		if !refused("attach", a.Validate()) {
			servable("attach", a.Streams)
		}
		if j, err := ParseJoinQuery(q); !refused("join", err) && j.Since != nil && *j.Since < 0 {
			t.Fatalf("join %q: since %d", raw, *j.Since)
		}
		p, err := ParsePortForwardQuery(q)
		if !refused("port-forward", err) && !refused("port-forward", p.Validate()) {
			for _, port := range p.Ports {
				if port == 0 {
					t.Fatalf("port-forward %q: port 0", raw)
				}
			}
		}
	})
}

// TestFFBeforeV5: 255 is the close signal's number only in v5; before it,
// a message on channel 255, bare or not, is an unknown channel and is
// ignored, as by the kubelet: the exec goes on, its stdin open.
func TestFFBeforeV5(t *testing.T) {
	h := newHarness(t, nil)
	for _, msg := range [][]byte{{0xff}, {0xff, 0x00}} {
		for _, proto := range []string{"v4.channel.k8s.io", "channel.k8s.io"} {
			t.Run(fmt.Sprintf("%s %x", proto, msg), func(t *testing.T) {
				c := h.mustDial(t, execQuery("stdin,stdout", "cat"), proto)
				defer c.Close()
				c.WriteMessage(websocket.BinaryMessage, msg)
				c.WriteMessage(websocket.BinaryMessage, []byte("\x00hi"))
				c.SetReadDeadline(time.Now().Add(10 * time.Second))
				var got []byte
				for string(got) != "hi" {
					_, b, err := c.ReadMessage()
					if err != nil {
						t.Fatalf("after %x: %v (stdout %q)", msg, err, got)
					}
					if len(b) > 0 && b[0] == 1 {
						got = append(got, b[1:]...)
					}
				}
			})
		}
	}
}

// TestUnaskedStdinDropped: input to an exec that asked for no stdin is
// dropped, and is not the session's: bytesIn stays 0.
func TestUnaskedStdinDropped(t *testing.T) {
	h := newHarness(t, nil)
	c := h.mustDial(t, execQuery("stdout", "sh", "-c", "sleep 0.3; echo done"), v5)
	defer c.Close()
	sess := h.activeSession(t)
	c.WriteMessage(websocket.BinaryMessage, []byte("\x00ignored"))
	msgs, ce := readUntilClose(t, c)
	if ce == nil || ce.Code != websocket.CloseNormalClosure || collect(t, msgs, 1) != "done\n" {
		t.Fatalf("close %v, stdout %q", ce, collect(t, msgs, 1))
	}
	if in := sess.Info().BytesIn; in != 0 {
		t.Errorf("bytesIn %d, want 0", in)
	}
}
