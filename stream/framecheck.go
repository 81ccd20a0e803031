package stream

import (
	"bufio"
	"encoding/binary"
	"net"
	"net/http"
	"sync"
)

// frameCheck follows the client's WebSocket byte stream frame by frame
// and notes the first violation of RFC 6455 that gorilla lets through or
// reports without a close frame: a 64-bit payload length with its top
// bit set, and a close frame whose payload is a single byte. It reads
// each header (2 to 14 bytes) and skips payloads without looking at them.
type frameCheck struct {
	hdr       [14]byte
	hn, need  int    // header bytes seen, and needed once the first two are in
	remaining uint64 // payload bytes of the current frame still to come

	// Where the client's messages end, for a reader that rests between
	// them (see rests): bytes scanned, and of those, how many messages
	// ended (final data frames complete) and the offset where the last
	// one ended.
	total, lastEnd int64
	messages       int64
	finalData      bool // the current frame ends a message

	mu  sync.Mutex
	bad string // the first violation, for the close reason
}

// scan follows p, the next bytes from the client.
func (f *frameCheck) scan(p []byte) {
	for len(p) > 0 {
		if f.remaining > 0 {
			k := uint64(len(p))
			if k > f.remaining {
				k = f.remaining
			}
			f.remaining -= k
			f.total += int64(k)
			p = p[k:]
			if f.remaining == 0 {
				f.frameEnded()
			}
			continue
		}
		f.hdr[f.hn] = p[0]
		f.hn++
		f.total++
		p = p[1:]
		if f.hn == 2 {
			f.need = 2
			switch f.hdr[1] & 0x7f {
			case 126:
				f.need += 2
			case 127:
				f.need += 8
			}
			if f.hdr[1]&0x80 != 0 {
				f.need += 4 // the mask key
			}
		}
		if f.hn == 10 && f.hdr[1]&0x7f == 127 && f.hdr[2]&0x80 != 0 {
			// As soon as the length is in: gorilla fails there, before the
			// mask key.
			f.note("frame length with its most significant bit set")
			return // nothing after it can be framed
		}
		if f.hn < 2 || f.hn < f.need {
			continue
		}
		f.hn = 0
		n := uint64(f.hdr[1] & 0x7f)
		switch n {
		case 126:
			n = uint64(binary.BigEndian.Uint16(f.hdr[2:]))
		case 127:
			n = binary.BigEndian.Uint64(f.hdr[2:]) // its top bit is clear: checked above
		}
		if f.hdr[0]&0x0f == 0x8 && n == 1 {
			f.note("close frame with a one-byte payload")
		}
		f.finalData = f.hdr[0]&0x80 != 0 && f.hdr[0]&0x08 == 0 // FIN, not a control frame
		f.remaining = n
		if n == 0 {
			f.frameEnded()
		}
	}
}

func (f *frameCheck) frameEnded() {
	if f.finalData {
		f.messages++
		f.lastEnd = f.total
	}
}

// rests reports whether a reader that has read read messages to their
// end holds nothing more of the client's: every byte scanned belongs to
// those messages.
func (f *frameCheck) rests(read int64) bool {
	return f.hn == 0 && f.remaining == 0 && f.messages == read && f.total == f.lastEnd
}

func (f *frameCheck) note(v string) {
	f.mu.Lock()
	if f.bad == "" {
		f.bad = v
	}
	f.mu.Unlock()
}

// violation returns the first violation seen, or "".
func (f *frameCheck) violation() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.bad
}

// checkedConn is a hijacked connection whose reads go through a
// frameCheck. pre holds what the HTTP server had read past the request:
// the first WebSocket bytes.
type checkedConn struct {
	net.Conn
	fc  *frameCheck
	pre []byte
}

func (c *checkedConn) Read(p []byte) (int, error) { return checkedRead(c.Conn, &c.pre, c.fc, p) }
func (c *checkedConn) NetConn() net.Conn          { return c.Conn }

// checkedTCP is checkedConn over the listener's TCP connection, which it
// embeds so that gorilla's writes keep their one writev per frame.
type checkedTCP struct {
	*watchedConn
	fc  *frameCheck
	pre []byte
}

func (c *checkedTCP) Read(p []byte) (int, error) { return checkedRead(c.watchedConn, &c.pre, c.fc, p) }
func (c *checkedTCP) NetConn() net.Conn          { return c.watchedConn }

func checkedRead(under net.Conn, pre *[]byte, fc *frameCheck, p []byte) (int, error) {
	n, err := replayRead(under, pre, p)
	fc.scan(p[:n])
	return n, err
}

// replayRead reads what *pre holds, taking it, before under itself.
func replayRead(under net.Conn, pre *[]byte, p []byte) (int, error) {
	if len(*pre) > 0 {
		n := copy(p, *pre)
		*pre = (*pre)[n:]
		return n, nil
	}
	return under.Read(p)
}

// checkingWriter hands gorilla's upgrade a hijacked connection whose
// reads the frameCheck follows from the first WebSocket byte.
type checkingWriter struct {
	http.ResponseWriter
	fc *frameCheck
}

func (w checkingWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	var pre []byte
	if n := brw.Reader.Buffered(); n > 0 {
		b, _ := brw.Reader.Peek(n)
		pre = append(pre, b...)
	}
	var cc net.Conn = &checkedConn{Conn: c, fc: w.fc, pre: pre}
	if wc, ok := c.(*watchedConn); ok {
		cc = &checkedTCP{watchedConn: wc, fc: w.fc, pre: pre}
		wc.cork() // the handshake waits for the first frames (see cork)
	}
	// A reader with nothing buffered: gorilla reads everything from cc.
	return cc, bufio.NewReadWriter(bufio.NewReaderSize(cc, 16), brw.Writer), nil
}
