package stream

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"

	"gateway/stream/wsproto"
)

// BenchmarkExecOutput streams a command's output through a real exec
// WebSocket on loopback, per output size: pipes and a pty.
func BenchmarkExecOutput(b *testing.B) {
	h := newHarness(b, nil)
	for _, tty := range []bool{false, true} {
		for _, size := range []int{4 << 10, 1 << 20, 16 << 20} {
			b.Run(fmt.Sprintf("tty=%v/%d", tty, size), func(b *testing.B) {
				flags := "stdout"
				if tty {
					flags += ",tty"
				}
				q := execQuery(flags, "head", "-c", strconv.Itoa(size), "/dev/zero")
				b.SetBytes(int64(size))
				b.ReportAllocs()
				for b.Loop() {
					c, _, err := h.dial(b, q, nil, "v5.channel.k8s.io")
					if err != nil {
						b.Fatal(err)
					}
					c.WriteMessage(websocket.BinaryMessage, []byte("\x04{\"Width\":80,\"Height\":24}"))
					got := channelBytes(c, 1)
					c.Close()
					if got != size {
						b.Fatalf("got %d bytes, want %d", got, size)
					}
				}
			})
		}
	}
}

// channelBytes reads messages until the stream ends and counts the payload
// bytes of channel ch, without keeping them.
func channelBytes(c *websocket.Conn, ch byte) int {
	got := 0
	for {
		_, r, err := c.NextReader()
		if err != nil {
			return got
		}
		var b [1]byte
		if _, err := r.Read(b[:]); err == nil && b[0] == ch {
			n, _ := io.Copy(io.Discard, r)
			got += int(n)
		}
	}
}

// BenchmarkTunnelEcho sends frames through a port-forward tunnel to an
// echo server and reads them back, per frame size.
func BenchmarkTunnelEcho(b *testing.B) {
	h := newHarness(b, nil)
	port := tcpServer(b, echo)
	for _, size := range []int{64, 4 << 10, 32 << 10} {
		b.Run(strconv.Itoa(size), func(b *testing.B) {
			c := h.mustDialPath(b, fmt.Sprintf("/portforward/host?port=%d", port), "v4.channel.k8s.io")
			c.ReadMessage() // the two port prefixes
			c.ReadMessage()
			frame := append([]byte{0}, make([]byte, size)...)
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				if err := c.WriteMessage(websocket.BinaryMessage, frame); err != nil {
					b.Fatal(err)
				}
				for got := 0; got < size; {
					_, m, err := c.ReadMessage()
					if err != nil {
						b.Fatal(err)
					}
					got += len(m) - 1
				}
			}
		})
	}
}

// BenchmarkTunnelUpload sends 32 KiB frames through one port-forward
// tunnel to a server that counts them; each op is one frame, and the
// timing ends when the server has every byte.
func BenchmarkTunnelUpload(b *testing.B) {
	h := newHarness(b, nil)
	got := make(chan int64, 1)
	port := tcpServer(b, func(c net.Conn) {
		n, _ := io.Copy(io.Discard, c)
		got <- n
	})
	c := h.mustDialPath(b, fmt.Sprintf("/portforward/host?port=%d", port), "v4.channel.k8s.io")
	c.ReadMessage() // the two port prefixes
	c.ReadMessage()
	const size = 32 << 10
	frame := append([]byte{0}, make([]byte, size)...)
	b.SetBytes(size)
	b.ReportAllocs()
	var sent int64
	for b.Loop() {
		if err := c.WriteMessage(websocket.BinaryMessage, frame); err != nil {
			b.Fatal(err)
		}
		sent += size
	}
	c.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
	if n := <-got; n != sent {
		b.Fatalf("the server got %d bytes, want %d", n, sent)
	}
}

// BenchmarkTunnelDownload reads 16 MiB that a server writes through a new
// tunnel each op, to the close.
func BenchmarkTunnelDownload(b *testing.B) {
	h := newHarness(b, nil)
	const size = 16 << 20
	port := tcpServer(b, func(c net.Conn) {
		buf := make([]byte, 32<<10)
		for n := 0; n < size; n += len(buf) {
			if _, err := c.Write(buf); err != nil {
				return
			}
		}
	})
	b.SetBytes(size)
	b.ReportAllocs()
	for b.Loop() {
		c, _, err := h.dialPath(b, fmt.Sprintf("/portforward/host?port=%d", port), nil, "v4.channel.k8s.io")
		if err != nil {
			b.Fatal(err)
		}
		got := channelBytes(c, 0)
		c.Close()
		if got != size+2 { // with the port prefix
			b.Fatalf("got %d bytes, want %d", got, size+2)
		}
	}
}

// BenchmarkExecSetup: one exec of true at a time, dial to close, with
// pipes and with a tty (the client sends its size at once, as kubectl).
func BenchmarkExecSetup(b *testing.B) {
	h := newHarness(b, nil)
	for _, tty := range []bool{false, true} {
		b.Run(fmt.Sprintf("tty=%v", tty), func(b *testing.B) {
			flags := "stdout"
			if tty {
				flags = "stdin,stdout,tty"
			}
			q := execQuery(flags, "true")
			b.ReportAllocs()
			for b.Loop() {
				c, _, err := h.dial(b, q, nil, "v5.channel.k8s.io")
				if err != nil {
					b.Fatal(err)
				}
				if tty {
					c.WriteMessage(websocket.BinaryMessage, []byte("\x04{\"Width\":80,\"Height\":24}"))
				}
				channelBytes(c, 1)
				c.Close()
			}
		})
	}
}

// A corked connection holds its writes, in order, and flush sends them in
// one write (one read at the peer): how the last frame and the close frame
// leave together.
func TestCorkFlush(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	wln := Listener(ln)
	peer, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	c, err := wln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	wc := watched(c)
	wc.cork()
	for _, s := range []string{"status", "+", "close"} {
		if n, err := wc.Write([]byte(s)); n != len(s) || err != nil {
			t.Fatalf("corked write: %d, %v", n, err)
		}
	}
	buf := make([]byte, 64)
	_ = peer.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if n, err := peer.Read(buf); n != 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("peer read %q, %v while corked; want nothing", buf[:n], err)
	}
	if err := wc.flush(); err != nil {
		t.Fatal(err)
	}
	_ = peer.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := peer.Read(buf); string(buf[:n]) != "status+close" || err != nil {
		t.Fatalf("first read after flush: %q, %v; want all of it", buf[:n], err)
	}
	if _, err := wc.Write([]byte("after")); err != nil {
		t.Fatal(err)
	}
	if n, err := io.ReadFull(peer, buf[:5]); string(buf[:n]) != "after" || err != nil {
		t.Fatalf("write after flush: %q, %v", buf[:n], err)
	}
}

// A frame too large for gorilla's write buffer leaves by writev, past the
// connection's cork: the handshake the cork holds must go first. (A raw
// tunnel's first frame is its remote's data: no ready frame or port
// prefix flushes the cork before it.)
func TestLargeFirstFrameAfterHandshake(t *testing.T) {
	h := newHarness(t, nil)
	payload := make([]byte, 64<<10)
	for i := range payload {
		payload[i] = byte(i * 7)
	}
	ts := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, fc, err := h.srv.accept(w, r, wsproto.Binary)
		if err != nil {
			t.Error(err)
			return
		}
		p := h.srv.newPump(conn, fc, wsproto.Binary, h.metrics.For("portforward"), slog.New(slog.DiscardHandler))
		b := p.bufs.Get()
		copy(b[1:], payload)
		if !p.Send(context.Background(), outFrame{ch: wsproto.Stdin, b: b[:1+len(payload)], headroom: true, pooled: true}) {
			t.Error("send failed")
		}
		conn.Close()
	}))
	ts.Listener = Listener(ts.Listener)
	ts.Start()
	defer ts.Close()
	d := websocket.Dialer{Subprotocols: []string{"binary"}, HandshakeTimeout: 10 * time.Second}
	c, _, err := d.Dial("ws"+strings.TrimPrefix(ts.URL, "http"), nil)
	if err != nil {
		t.Fatalf("handshake: %v", err)
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, got, err := c.ReadMessage()
	if err != nil || !bytes.Equal(got, payload) {
		t.Fatalf("first message: %d bytes, %v; want the %d bytes sent", len(got), err, len(payload))
	}
}

// TestCloseReason: a close frame's reason is UTF-8 and at most 123 bytes,
// cut at a character's start.
func TestCloseReason(t *testing.T) {
	long := strings.Repeat("a", 122) + "日本"
	for _, tc := range []struct{ in, want string }{
		{"short", "short"},
		{strings.Repeat("x", 200), strings.Repeat("x", 123)},
		{long, strings.Repeat("a", 122)},
		{"bad \xff byte", "bad \uFFFD byte"},
	} {
		if got := closeReason(tc.in); got != tc.want || !utf8.ValidString(got) || len(got) > 123 {
			t.Errorf("closeReason(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// TestLogPath: a stream URL's token never reaches a log.
func TestLogPath(t *testing.T) {
	if got := LogPath("/stream/s3cr3tTOKEN"); strings.Contains(got, "s3cr3t") {
		t.Errorf("LogPath = %q", got)
	}
	if got := LogPath("/api/v1/containers/box"); got != "/api/v1/containers/box" {
		t.Errorf("LogPath = %q", got)
	}
}
