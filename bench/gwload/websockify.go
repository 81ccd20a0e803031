package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"time"

	"github.com/gorilla/websocket"

	"gateway/internal/chunkio"
)

// websockify's protocol, "binary": one TCP connection, its bytes in
// binary messages, no channels. The gateway speaks it on port-forward with
// one port; pf-throughput measures it beside websockify itself.

// rawTunnel is one such tunnel; after limit bytes (when set) it ends
// from this side.
type rawTunnel struct {
	conn    *websocket.Conn
	timeout time.Duration
	limit   int64
	got     int64
	buf     []byte // the last message, reused
}

// limited makes start's raw tunnels end after n bytes.
func limited(start func() (flow, error), n int64) func() (flow, error) {
	return func() (flow, error) {
		f, err := start()
		if t, ok := f.(*rawTunnel); ok {
			t.limit = n
		}
		return f, err
	}
}

// rawTunnelFlow returns a starter of raw tunnels at url.
func rawTunnelFlow(url string, header http.Header, bufSize int, timeout time.Duration) func() (flow, error) {
	d := &websocket.Dialer{Subprotocols: []string{"binary"}, ReadBufferSize: bufSize + 64, WriteBufferSize: bufSize + 64,
		HandshakeTimeout: timeout}
	return func() (flow, error) {
		c, resp, err := d.Dial(url, header)
		if err != nil {
			if resp != nil {
				return nil, fmt.Errorf("%s: %w (HTTP %d)", url, err, resp.StatusCode)
			}
			return nil, err
		}
		_ = c.SetReadDeadline(time.Now().Add(timeout))
		return &rawTunnel{conn: c, timeout: timeout}, nil
	}
}

func (t *rawTunnel) write(p []byte) error { return t.conn.WriteMessage(websocket.BinaryMessage, p) }

// next returns the next message's bytes; io.EOF once the server closed
// (the remote side ended: websockify and the gateway close with 1000 or
// with the TCP connection).
func (t *rawTunnel) next() ([]byte, error) {
	if t.limit > 0 && t.got >= t.limit {
		t.close()
		return nil, io.EOF
	}
	_, r, err := t.conn.NextReader()
	if err == nil {
		t.buf, err = chunkio.AppendAll(t.buf[:0], r)
		t.got += int64(len(t.buf))
	}
	var ce *websocket.CloseError
	switch {
	case errors.As(err, &ce) && (ce.Code == websocket.CloseNormalClosure || ce.Code == websocket.CloseNoStatusReceived):
		return nil, io.EOF
	case err != nil:
		return nil, err
	}
	return t.buf, nil
}

func (t *rawTunnel) close() error {
	msg := websocket.FormatCloseMessage(websocket.CloseNormalClosure, "")
	_ = t.conn.WriteControl(websocket.CloseMessage, msg, time.Now().Add(time.Second))
	return t.conn.Close()
}

func (t *rawTunnel) timing() timing { return timing{} }

// websockifyProc is a websockify process relaying to one target.
type websockifyProc struct {
	cmd  *exec.Cmd
	addr string
	proc *proc
}

// startWebsockify starts websockify (the Debian package's) on a free
// loopback port, relaying to target; nil when it is not installed.
func (b *bench) startWebsockify(target string) (*websockifyProc, error) {
	bin, err := exec.LookPath("websockify")
	if err != nil {
		return nil, nil
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := ln.Addr().String()
	ln.Close()
	cmd := exec.CommandContext(b.ctx, bin, addr, target)
	cmd.Stdout, cmd.Stderr = io.Discard, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	w := &websockifyProc{cmd: cmd, addr: addr, proc: &proc{name: "websockify", pid: cmd.Process.Pid}}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			w.close()
			return nil, fmt.Errorf("websockify on %s did not listen", addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
	b.own(w.proc)
	return w, nil
}

func (w *websockifyProc) close() {
	_ = w.cmd.Process.Signal(syscall.SIGTERM)
	_ = w.cmd.Wait()
}

// rawGatewayFlow is a raw tunnel through the gateway to port.
func (b *bench) rawGatewayFlow(port int) func() (flow, error) {
	u := "ws://" + b.gw.addr + "/api/v1/sandboxes/" + pfSandbox + "/portforward?port=" + strconv.Itoa(port)
	h := http.Header{"Authorization": {"Bearer " + b.gw.token}}
	return rawTunnelFlow(u, h, b.o.bufSize, b.o.timeout)
}
