package main

import (
	"bufio"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"gateway/internal/ptyio"
	"gateway/stream/wsproto"
)

// The bare server: the least a server can do for gwload's exec and tunnel
// set-ups, as a floor beside the gateway and the CRI library. It answers
// the gateway's exec and port-forward URLs over v4.channel.k8s.io with one
// goroutine per connection (two with a pty or a target socket), writes
// the handshake and the first frames in one write, and does nothing else:
// no authentication, no session, no log, no deadline, no flow control, no
// limits; it trusts its client (gwload) and drops a connection on anything
// unexpected. What a set-up costs through it is the protocol's own cost on
// this machine: no server can do the same work much faster.

// bareWhat describes the bare server in the summary.
const bareWhat = "the bare server: the protocol and nothing more"

// bareEndpoint returns the bare server, started on first use.
func (b *bench) bareEndpoint() (*endpoint, error) {
	if b.bare == nil {
		ch, err := startChild(b.ctx, "bare")
		if err != nil {
			return nil, err
		}
		ep := &endpoint{proc: &proc{name: "bare", pid: ch.pid()}, container: "box", proto: v4, timeout: b.o.timeout, hc: http.DefaultClient}
		if err := ch.scan(&ep.addr); err != nil {
			ch.close()
			return nil, err
		}
		b.bare, b.bareEP = ch, ep
		b.own(ep.proc)
		fmt.Printf("bare: the least server for the same set-ups (one goroutine per stream, the handshake and first frames in one write,\n"+
			"  no authentication, session, log or deadline), in a child gwload (pid %d) on %s, over %s\n", ep.pid, ep.addr, v4.Name)
	}
	return b.bareEP, nil
}

func bareChild(o options, _ []string) error {
	return serveChild(func(c *net.TCPConn) { bareServe(c, o.bufSize) })
}

// bareServe serves one connection: a WebSocket GET of an exec or a tunnel.
func bareServe(c *net.TCPConn, bufSize int) {
	br := bufio.NewReaderSize(c, 4096)
	req, err := http.ReadRequest(br)
	if err != nil {
		return
	}
	sum := sha1.Sum([]byte(req.Header.Get("Sec-Websocket-Key") + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	hs := "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " +
		base64.StdEncoding.EncodeToString(sum[:]) + "\r\nSec-WebSocket-Protocol: " + v4.Name + "\r\n\r\n"
	ws := &bareConn{c: c, br: br}
	q := req.URL.Query()
	switch {
	case strings.HasSuffix(req.URL.Path, "/portforward"):
		port, err := strconv.Atoi(q.Get("port"))
		if err != nil {
			return
		}
		prefix := wsproto.PortPrefix(uint16(port))
		out := ws.frame(ws.frame([]byte(hs), 0, prefix[:]), 1, prefix[:])
		t, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			return
		}
		defer t.Close()
		if _, err := c.Write(out); err != nil {
			return
		}
		go ws.pump(t, 0, bufSize, nil)
		ws.serve(func(ch byte, p []byte) error {
			if ch != 0 {
				return errors.New("not the data channel")
			}
			_, err := t.Write(p)
			return err
		}, nil)
	case strings.HasSuffix(req.URL.Path, "/exec"):
		ptmx, tty, err := ptyio.Open(80, 24)
		if err != nil {
			return
		}
		defer ptmx.Close()
		cmd := exec.Command(q["command"][0], q["command"][1:]...)
		cmd.Dir = os.TempDir()
		cmd.Stdin, cmd.Stdout, cmd.Stderr = tty, tty, tty
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Pdeathsig: syscall.SIGKILL}
		if _, err := c.Write(ws.frame([]byte(hs), 1, nil)); err != nil {
			tty.Close()
			return
		}
		err = cmd.Start()
		tty.Close()
		if err != nil {
			return
		}
		var exited atomic.Bool
		go ws.pump(ptmx, 1, bufSize, func() {
			st := `{"metadata":{},"status":"Success"}`
			err := cmd.Wait()
			exited.Store(true)
			if err != nil {
				st = `{"metadata":{},"status":"Failure","message":` + strconv.Quote(err.Error()) + `}`
			}
			ws.write(ws.frame(nil, 3, []byte(st)))
		})
		ws.serve(func(ch byte, p []byte) error {
			switch ch {
			case 0:
				_, err := ptmx.Write(p)
				return err
			case 4:
				var w, h uint16
				if _, err := fmt.Sscanf(string(p), `{"Width":%d,"Height":%d}`, &w, &h); err == nil {
					_ = ptyio.SetSize(ptmx, w, h)
				}
			}
			return nil
		}, func() {
			if !exited.Load() {
				_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			}
		})
	}
}

// bareConn is the server side of one WebSocket: unfragmented binary
// messages, the channel in the first byte.
type bareConn struct {
	c  *net.TCPConn
	br *bufio.Reader
	mu sync.Mutex // writes
}

// frame appends a binary message on channel ch to b.
func (w *bareConn) frame(b []byte, ch byte, p []byte) []byte {
	return append(append(header(b, len(p)+1), ch), p...)
}

// header appends the header of an unmasked binary message of n bytes.
func header(b []byte, n int) []byte {
	switch {
	case n < 126:
		return append(b, 0x82, byte(n))
	case n < 1<<16:
		return append(b, 0x82, 126, byte(n>>8), byte(n))
	}
	return binary.BigEndian.AppendUint64(append(b, 0x82, 127), uint64(n))
}

func (w *bareConn) write(b []byte) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	_, err := w.c.Write(b)
	return err
}

// pump sends what src gives on channel ch until it ends; then last runs,
// and the close (1000) goes out.
func (w *bareConn) pump(src io.Reader, ch byte, bufSize int, last func()) {
	buf := make([]byte, 14+bufSize)
	for {
		n, err := src.Read(buf[14:])
		if n > 0 {
			// The header goes right before the payload: one write a frame.
			var hb [11]byte
			h := append(header(hb[:0], n+1), ch)
			start := 14 - len(h)
			copy(buf[start:], h)
			if w.write(buf[start:14+n]) != nil {
				return
			}
		}
		if err != nil {
			break
		}
	}
	if last != nil {
		last()
	}
	_ = w.write([]byte{0x88, 2, 0x03, 0xe8})
}

// serve reads the client's messages and hands each payload to fn, with
// its channel, until the client's close (answered with 1000) or an error;
// then gone runs.
func (w *bareConn) serve(fn func(ch byte, p []byte) error, gone func()) {
	if gone != nil {
		defer gone()
	}
	var hdr [14]byte
	var p []byte
	for {
		if _, err := io.ReadFull(w.br, hdr[:2]); err != nil {
			return
		}
		n := uint64(hdr[1] & 0x7f)
		ext := map[uint64]int{126: 2, 127: 8}[n]
		if _, err := io.ReadFull(w.br, hdr[2:2+ext+4]); err != nil {
			return
		}
		switch ext {
		case 2:
			n = uint64(binary.BigEndian.Uint16(hdr[2:]))
		case 8:
			n = binary.BigEndian.Uint64(hdr[2:])
		}
		mask := hdr[2+ext : 2+ext+4]
		if n > 1<<24 {
			return
		}
		if uint64(cap(p)) < n {
			p = make([]byte, n)
		}
		p = p[:n]
		if _, err := io.ReadFull(w.br, p); err != nil {
			return
		}
		for i := range p {
			p[i] ^= mask[i%4]
		}
		switch hdr[0] & 0x0f {
		case 8: // close: answered, and the stream ends
			_ = w.write([]byte{0x88, 2, 0x03, 0xe8})
			return
		case 2:
			if len(p) > 0 && fn(p[0], p[1:]) != nil {
				return
			}
		}
	}
}
