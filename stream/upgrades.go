package stream

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"golang.org/x/net/http/httpguts"
)

// UpgradeListener serves upgrade requests (WebSocket, SPDY) arriving on
// ln with h itself and hands every other connection to the http.Server
// that accepts from it, its first bytes replayed. A hijacked connection
// never gives net/http's buffers back, and net/http's hijack waits for
// the connection's background reader to start (a hop to the other CPU).
// Answered here, as the bare server in bench/gwload answers, with a
// pooled header reader: tunnels set up eight at a time went from
// 1.06-1.09x to 1.14-1.23x the CRI library's rate, idle sessions hold
// 0.5-0.8 KiB less (docs/performance.md, "Upgrades beside net/http").
// Only a request whose header comes whole within headerMax bytes is
// served here; anything else goes to net/http. timeout bounds the wait
// for the header.
func UpgradeListener(ln net.Listener, h http.Handler, timeout time.Duration, log *slog.Logger) net.Listener {
	l := &upgradeListener{ln: Listener(ln), h: h, timeout: timeout, log: log,
		handoff: make(chan net.Conn), done: make(chan struct{}), reading: make(map[net.Conn]struct{})}
	go l.accept()
	return l
}

const headerMax = 4 << 10

var headerReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, headerMax) }}

type upgradeListener struct {
	ln      net.Listener
	h       http.Handler
	timeout time.Duration
	log     *slog.Logger

	handoff   chan net.Conn // to net/http
	done      chan struct{} // closed by Close
	closeOnce sync.Once
	err       error // why accepting stopped; set before done is closed

	mu      sync.Mutex
	reading map[net.Conn]struct{} // whose header is awaited; nil once closed
	// Requests served here that have neither hijacked nor been answered:
	// Close waits for them, as net/http's Shutdown waits for its own, so
	// that a stream opened before the shutdown is registered by then.
	inFlight sync.WaitGroup
}

func (l *upgradeListener) Addr() net.Addr { return l.ln.Addr() }

func (l *upgradeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.handoff:
		return c, nil
	case <-l.done:
		return nil, l.err
	}
}

// Close stops accepting, closes the connections whose first header is
// still awaited, and waits for the upgrades under way to hijack or answer.
func (l *upgradeListener) Close() error {
	err := l.ln.Close()
	l.stop(net.ErrClosed)
	l.mu.Lock()
	for c := range l.reading {
		c.Close()
	}
	l.reading = nil
	l.mu.Unlock()
	l.inFlight.Wait()
	return err
}

// track notes c as awaiting its header; false once the listener is closed.
func (l *upgradeListener) track(c net.Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.reading == nil {
		return false
	}
	l.reading[c] = struct{}{}
	return true
}

// untrack ends track; for an upgrade, it counts it in flight, which fails
// once the listener is closed.
func (l *upgradeListener) untrack(c net.Conn, upgrade bool) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.reading == nil {
		return false
	}
	delete(l.reading, c)
	if upgrade {
		l.inFlight.Add(1)
	}
	return true
}

func (l *upgradeListener) stop(err error) {
	l.closeOnce.Do(func() { l.err = err; close(l.done) })
}

func (l *upgradeListener) accept() {
	var delay time.Duration
	for {
		c, err := l.ln.Accept()
		if errors.Is(err, net.ErrClosed) {
			l.stop(err)
			return
		}
		if err != nil {
			// Out of descriptors and the like: wait, as net/http does.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			l.log.Warn("accept", "error", err, "retry_in", delay)
			select {
			case <-time.After(delay):
			case <-l.done:
			}
			continue
		}
		delay = 0
		go l.serve(c)
	}
}

// serve reads the first request's header; an upgrade is answered here,
// anything else goes to net/http.
func (l *upgradeListener) serve(c net.Conn) {
	br := headerReaders.Get().(*bufio.Reader)
	br.Reset(c)
	keep := false // br went with the connection
	defer func() {
		if !keep {
			br.Reset(nil)
			headerReaders.Put(br)
		}
	}()
	if !l.track(c) {
		c.Close()
		return
	}
	_ = c.SetReadDeadline(time.Now().Add(l.timeout))
	hdr, err := peekHeader(br)
	upgrade := err == nil && upgradeHeader(hdr)
	if !l.untrack(c, upgrade) || err != nil && err != bufio.ErrBufferFull {
		c.Close()
		return
	}
	if !upgrade {
		l.handOff(c, br)
		return
	}
	req, err := http.ReadRequest(br)
	_ = c.SetReadDeadline(time.Time{})
	if err == nil {
		err = checkRequest(req)
	}
	if err != nil {
		l.inFlight.Done()
		c.Write([]byte("HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n400 Bad Request"))
		c.Close()
		return
	}
	keep = l.serveUpgrade(c, br, req)
}

// checkRequest refuses what net/http's server refuses beyond
// http.ReadRequest's parse.
func checkRequest(r *http.Request) error {
	if r.ProtoMajor != 1 {
		return errors.New("unsupported protocol version")
	}
	if r.ProtoAtLeast(1, 1) && r.Host == "" || !httpguts.ValidHostHeader(r.Host) {
		return errors.New("missing or malformed Host header")
	}
	for k, vv := range r.Header {
		if !httpguts.ValidHeaderFieldName(k) {
			return errors.New("invalid header name")
		}
		for _, v := range vv {
			if !httpguts.ValidHeaderFieldValue(v) {
				return errors.New("invalid header value")
			}
		}
	}
	return nil
}

// handOff gives c to net/http, with what br holds read again first.
func (l *upgradeListener) handOff(c net.Conn, br *bufio.Reader) {
	var pre []byte
	if n := br.Buffered(); n > 0 {
		b, _ := br.Peek(n)
		pre = append(pre, b...)
	}
	_ = c.SetReadDeadline(time.Time{})
	select {
	case l.handoff <- &replayConn{Conn: c, pre: pre}:
	case <-l.done:
		c.Close()
	}
}

// serveUpgrade runs h for req; it reports whether br went with a hijacked
// connection.
func (l *upgradeListener) serveUpgrade(c net.Conn, br *bufio.Reader, req *http.Request) (kept bool) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req = req.WithContext(ctx)
	req.RemoteAddr = c.RemoteAddr().String()
	w := &upgradeWriter{c: c, br: br, req: req, header: make(http.Header), settled: l.inFlight.Done}
	defer w.settle()
	defer func() {
		if p := recover(); p != nil {
			if p != http.ErrAbortHandler {
				l.log.Error("panic serving an upgrade", "panic", fmt.Sprint(p), "remote", req.RemoteAddr, "path", LogPath(req.URL.Path))
			}
			if !w.hijacked {
				c.Close()
			}
			kept = w.keptReader
		}
	}()
	l.h.ServeHTTP(w, req)
	if !w.hijacked {
		w.finish()
		c.Close()
	}
	return w.keptReader
}

// peekHeader returns the request header br's reader holds, up to the
// blank line, without taking it; bufio.ErrBufferFull when it does not
// fit in br.
func peekHeader(br *bufio.Reader) ([]byte, error) {
	for {
		b, _ := br.Peek(br.Buffered())
		if i := bytes.Index(b, []byte("\r\n\r\n")); i >= 0 {
			return b[:i+4], nil
		}
		if len(b) == br.Size() {
			return nil, bufio.ErrBufferFull
		}
		if _, err := br.Peek(len(b) + 1); err != nil {
			return nil, err
		}
	}
}

// upgradeHeader tells whether a request header has an Upgrade field.
func upgradeHeader(hdr []byte) bool {
	field := []byte("\nupgrade:")
	for i := 0; i+len(field) <= len(hdr); i++ {
		if hdr[i] == '\n' && bytes.EqualFold(hdr[i:i+len(field)], field) {
			return true
		}
	}
	return false
}

// replayConn reads pre before the connection itself.
type replayConn struct {
	net.Conn
	pre []byte
}

func (c *replayConn) Read(p []byte) (int, error) { return replayRead(c.Conn, &c.pre, p) }

// NetConn returns the connection it wraps, for watched.
func (c *replayConn) NetConn() net.Conn { return c.Conn }

// upgradeWriter is the ResponseWriter of an upgrade request served by
// UpgradeListener: an upgrade hijacks it; any other answer is written,
// with its length, when the handler returns, and closes the connection.
type upgradeWriter struct {
	c        net.Conn
	br       *bufio.Reader
	req      *http.Request
	header   http.Header
	code     int
	body     bytes.Buffer
	hijacked bool
	// keptReader: the hijacker was given br, which held bytes the client
	// sent after the header; else a reader of its own.
	keptReader bool
	settled    func() // called once, at the hijack or the answer
}

func (w *upgradeWriter) settle() {
	if f := w.settled; f != nil {
		w.settled = nil
		f()
	}
}

func (w *upgradeWriter) Header() http.Header { return w.header }

func (w *upgradeWriter) WriteHeader(code int) {
	if w.code == 0 && !w.hijacked {
		w.code = code
	}
}

func (w *upgradeWriter) Write(p []byte) (int, error) {
	if w.hijacked {
		return 0, http.ErrHijacked
	}
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.body.Write(p)
}

func (w *upgradeWriter) SetReadDeadline(t time.Time) error  { return w.c.SetReadDeadline(t) }
func (w *upgradeWriter) SetWriteDeadline(t time.Time) error { return w.c.SetWriteDeadline(t) }

// Hijack hands over the connection, first writing a status set before
// it (101 Switching Protocols, as the SPDY upgrader sends it).
func (w *upgradeWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if w.hijacked {
		return nil, nil, http.ErrHijacked
	}
	w.hijacked = true
	defer w.settle()
	if w.code != 0 {
		if _, err := w.c.Write(w.head(-1).Bytes()); err != nil {
			return nil, nil, err
		}
	}
	r := w.br
	if r.Buffered() == 0 {
		r = bufio.NewReaderSize(w.c, 16)
	} else {
		w.keptReader = true
	}
	return w.c, bufio.NewReadWriter(r, bufio.NewWriterSize(w.c, 512)), nil
}

// head is the status line and header, with Content-Length n unless n < 0.
func (w *upgradeWriter) head(n int) *bytes.Buffer {
	if n >= 0 {
		if w.code != http.StatusNoContent && w.code != http.StatusNotModified {
			w.header.Set("Content-Length", strconv.Itoa(n))
		}
		w.header.Set("Connection", "close")
		if w.header.Get("Date") == "" {
			w.header.Set("Date", time.Now().UTC().Format(http.TimeFormat))
		}
		if n > 0 && w.header.Get("Content-Type") == "" {
			w.header.Set("Content-Type", http.DetectContentType(w.body.Bytes()))
		}
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "HTTP/1.1 %d %s\r\n", w.code, http.StatusText(w.code))
	_ = w.header.Write(&b)
	b.WriteString("\r\n")
	return &b
}

// finish writes an answer that is not an upgrade.
func (w *upgradeWriter) finish() {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	b := w.head(w.body.Len())
	if w.req.Method != http.MethodHead {
		b.Write(w.body.Bytes())
	}
	_ = w.c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	_, _ = w.c.Write(b.Bytes())
}
