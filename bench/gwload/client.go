package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/gorilla/websocket"

	"gateway/internal/chunkio"
)

// The channel protocol spoken by the tool (protocol.md 1.1-1.10).
const (
	v5 = "v5.channel.k8s.io"

	chStdin  = 0
	chStdout = 1
	chStderr = 2
	chStatus = 3
	chResize = 4
	chClose  = 255
)

// client opens exec sessions on one gateway.
type client struct {
	addr      string // host:port
	token     string
	container string
	timeout   time.Duration // bound on one whole session
}

// execReq is the query of one exec.
type execReq struct {
	command                    []string
	stdin, stdout, stderr, tty bool
}

func (c *client) execURL(r execReq) string {
	q := url.Values{"command": r.command}
	b := func(name string, v bool) {
		if v {
			q.Set(name, "1")
		} else {
			q.Set(name, "0")
		}
	}
	b("stdin", r.stdin)
	b("stdout", r.stdout)
	b("stderr", r.stderr)
	b("tty", r.tty)
	return "ws://" + c.addr + "/api/v1/containers/" + url.PathEscape(c.container) + "/exec?" + q.Encode()
}

// status is the part of the final metav1.Status the tool checks.
type status struct {
	Status  string `json:"status"`
	Reason  string `json:"reason"`
	Message string `json:"message"`
}

// session is one open exec WebSocket. Only one goroutine reads it and only
// one writes it.
type session struct {
	conn      *websocket.Conn
	buf       []byte // the payload of the last message read
	stdout    int64  // payload bytes received on channel 1
	msgs      int64  // messages received
	stderr    int64  // on channel 2
	status    *status
	rawStatus []byte
	closeCode int // the server's close code, once read; 0 before
}

// dialer returns a dialer for v5 with the given read buffer.
func dialer(readBuf int) *websocket.Dialer {
	return &websocket.Dialer{
		Subprotocols:     []string{v5},
		ReadBufferSize:   readBuf,
		WriteBufferSize:  4096,
		HandshakeTimeout: 10 * time.Second,
	}
}

// open dials an exec, sends the initial size (tty) so that the gateway
// starts the process at once rather than after its InitialSizeWait, and
// reads the empty ready frame.
func (c *client) open(ctx context.Context, d *websocket.Dialer, r execReq) (*session, error) {
	conn, err := c.dialWS(ctx, d, c.execURL(r), v5)
	if err != nil {
		return nil, err
	}
	s := c.newSession(conn)
	if r.tty {
		if err := s.resize(80, 24); err != nil {
			conn.Close()
			return nil, err
		}
	}
	want := byte(chStdout)
	switch {
	case r.stdout:
	case r.stderr:
		want = chStderr
	default:
		want = chStatus
	}
	if err := s.readReady(want); err != nil {
		conn.Close()
		return nil, err
	}
	return s, nil
}

// newSession wraps an opened stream, with the client's deadlines set.
func (c *client) newSession(conn *websocket.Conn) *session {
	_ = conn.SetReadDeadline(time.Now().Add(c.timeout))
	_ = conn.SetWriteDeadline(time.Now().Add(c.timeout))
	return &session{conn: conn, buf: make([]byte, 0, 4096)}
}

// readReady reads the first message, which must be the empty ready frame
// on channel want.
func (s *session) readReady(want byte) error {
	ch, p, err := s.next()
	if err != nil {
		return fmt.Errorf("ready frame: %w", err)
	}
	if ch != want || len(p) != 0 {
		return fmt.Errorf("first message is channel %d with %d bytes, want the empty ready frame on channel %d", ch, len(p), want)
	}
	return nil
}

func (s *session) resize(w, h int) error {
	msg := fmt.Appendf([]byte{chResize}, `{"Width":%d,"Height":%d}`, w, h)
	return s.conn.WriteMessage(websocket.BinaryMessage, msg)
}

// write sends bytes on stdin.
func (s *session) write(p []byte) error {
	msg := append([]byte{chStdin}, p...)
	return s.conn.WriteMessage(websocket.BinaryMessage, msg)
}

// readBinary reads one binary message into buf (reused, grown as needed).
// At the server's close frame it returns errClosed and the close code.
func readBinary(conn *websocket.Conn, buf []byte) ([]byte, int, error) {
	mt, r, err := conn.NextReader()
	if err != nil {
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			return buf, ce.Code, errClosed
		}
		return buf, 0, err
	}
	if mt != websocket.BinaryMessage {
		return buf, 0, fmt.Errorf("server sent a message of type %d, want binary", mt)
	}
	p, err := chunkio.AppendAll(buf[:0], r)
	return p, 0, err
}

// errClosed: next found the server's close frame; s.closeCode says which.
var errClosed = errors.New("websocket closed by the server")

// next reads one message, counts its stdout/stderr payload and keeps the
// status. The payload is valid until the next call.
func (s *session) next() (byte, []byte, error) {
	p, closeCode, err := readBinary(s.conn, s.buf[:0])
	if closeCode != 0 {
		s.closeCode = closeCode
	}
	if err != nil {
		return 0, nil, err
	}
	s.buf = p
	s.msgs++
	if len(p) == 0 {
		return 0, nil, errors.New("empty message: no channel byte")
	}
	ch, payload := p[0], p[1:]
	switch ch {
	case chStdout:
		s.stdout += int64(len(payload))
	case chStderr:
		s.stderr += int64(len(payload))
	case chStatus:
		if s.status != nil {
			return 0, nil, errors.New("second status message")
		}
		s.rawStatus = append([]byte(nil), payload...)
		var st status
		if err := json.Unmarshal(payload, &st); err != nil {
			return 0, nil, fmt.Errorf("status %q: %w", payload, err)
		}
		s.status = &st
	default:
		return 0, nil, fmt.Errorf("message on unexpected channel %d", ch)
	}
	return ch, payload, nil
}

// drain reads until the server closes, and checks a normal end: a Success
// status, then close code 1000.
func (s *session) drain() error {
	defer s.conn.Close()
	for {
		_, _, err := s.next()
		if errors.Is(err, errClosed) {
			break
		}
		if err != nil {
			return err
		}
	}
	return s.checkSuccess()
}

func (s *session) checkSuccess() error {
	switch {
	case s.status == nil:
		return fmt.Errorf("closed with code %d and no status", s.closeCode)
	case s.status.Status != "Success":
		return fmt.Errorf("status %s", s.rawStatus)
	case s.closeCode != websocket.CloseNormalClosure:
		return fmt.Errorf("close code %d after the status, want 1000", s.closeCode)
	}
	return nil
}
