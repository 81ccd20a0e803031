package stream

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// TestProtocolViolations: frames that break RFC 6455 where gorilla does
// not look (or does not answer) end the stream with the close code the RFC
// asks for, and a reason; nothing else of the session is lost (the
// harness checks goroutines and processes at the end).
func TestProtocolViolations(t *testing.T) {
	h := newHarness(t, nil)
	masked := func(b0 byte, header []byte, payload []byte) []byte {
		f := append([]byte{b0}, header...)
		f[1] |= 0x80
		f = append(f, 0, 0, 0, 0) // a zero mask key: the payload goes as is
		return append(f, payload...)
	}
	huge := make([]byte, 9)
	huge[0] = 127
	binary.BigEndian.PutUint64(huge[1:], 1<<63|5)
	for _, tc := range []struct {
		name  string
		proto string
		raw   []byte
		code  int
	}{
		{"length with the top bit set", "v5.channel.k8s.io", masked(0x82, huge, nil), websocket.CloseProtocolError},
		{"one-byte close payload", "v5.channel.k8s.io", masked(0x88, []byte{1}, []byte{3}), websocket.CloseProtocolError},
		{"text that is not UTF-8", "v4.base64.channel.k8s.io", masked(0x81, []byte{3}, []byte{'0', 0xff, 0xfe}), websocket.CloseInvalidFramePayloadData},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := h.mustDial(t, execQuery("stdin,stdout", "cat"), tc.proto)
			if _, _, err := c.ReadMessage(); err != nil { // the ready frame
				t.Fatal(err)
			}
			if _, err := c.NetConn().Write(tc.raw); err != nil {
				t.Fatal(err)
			}
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			var err error
			for err == nil {
				_, _, err = c.ReadMessage()
			}
			var ce *websocket.CloseError
			if !errors.As(err, &ce) || ce.Code != tc.code || ce.Text == "" {
				t.Errorf("client saw %v, want close %d with a reason", err, tc.code)
			}
		})
	}
}

// frameHeaders is a reference parse: the violation a stream of frames
// holds, read whole.
func frameHeaders(b []byte) string {
	for len(b) >= 2 {
		n := uint64(b[1] & 0x7f)
		i := 2
		switch n {
		case 126:
			if len(b) < 4 {
				return ""
			}
			n, i = uint64(binary.BigEndian.Uint16(b[2:])), 4
		case 127:
			if len(b) < 10 {
				return ""
			}
			n, i = binary.BigEndian.Uint64(b[2:]), 10
			if n>>63 != 0 {
				return "frame length with its most significant bit set"
			}
		}
		if b[1]&0x80 != 0 {
			i += 4
		}
		if len(b) < i {
			return ""
		}
		if b[0]&0x0f == 0x8 && n == 1 {
			return "close frame with a one-byte payload"
		}
		if uint64(len(b)-i) < n {
			return ""
		}
		b = b[i+int(n):]
	}
	return ""
}

// FuzzFrameCheck: however the stream is cut into reads, frameCheck finds
// what a parse of the whole stream finds.
func FuzzFrameCheck(f *testing.F) {
	f.Add([]byte{0x82, 0x83, 0, 0, 0, 0, 1, 2, 3, 0x88, 0x81, 0, 0, 0, 0, 9}, uint8(3))
	f.Add([]byte{0x82, 0x7f, 0x80, 0, 0, 0, 0, 0, 0, 1}, uint8(1))
	f.Add([]byte{0x81, 0x7e, 0, 4, 'a', 'b', 'c', 'd', 0x89, 0}, uint8(2))
	f.Fuzz(func(t *testing.T, stream []byte, cut uint8) {
		want := frameHeaders(stream)
		var fc frameCheck
		step := int(cut)%17 + 1
		for p := stream; len(p) > 0; {
			k := min(step, len(p))
			fc.scan(p[:k])
			p = p[k:]
		}
		if got := fc.violation(); got != want {
			t.Fatalf("%x in reads of %d: %q, want %q", stream, step, got, want)
		}
		var whole frameCheck
		whole.scan(bytes.Clone(stream))
		if whole.violation() != want {
			t.Fatalf("%x whole: %q, want %q", stream, whole.violation(), want)
		}
	})
}
