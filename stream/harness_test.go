package stream

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"gateway/internal/proctest"

	"gateway/container"
	"gateway/internal/reqerr"
	"gateway/metrics"
	"gateway/sandbox"
	"gateway/session"
)

func TestMain(m *testing.M) {
	cleanup := proctest.Hermetic() // no test depends on the user's HOME, shell or locale
	goleak.VerifyTestMain(m, goleak.Cleanup(func(int) { cleanup() }))
}

// harness is a stream server with one container, "box" (sleep), behind a
// minimal router: GET /exec/{id} with the query of an exec request.
type harness struct {
	srv       *Server
	ts        *httptest.Server
	rt        *container.Runtime
	sessions  *session.Registry
	metrics   *metrics.Metrics
	sandboxes *sandbox.Registry
	dir       string
}

func newHarness(t testing.TB, tune func(*Config)) *harness {
	t.Helper()
	watchdog(t)
	h := &harness{dir: t.TempDir()}
	sandboxes := sandbox.NewRegistry()
	h.sandboxes = sandboxes
	h.rt = container.New(container.Config{StopGrace: 500 * time.Millisecond, Scrollback: 1 << 16, AttachLagLimit: 3 * time.Second}, sandboxes)
	if _, err := h.rt.Create(container.Spec{ID: "box", Command: []string{"sleep", "1000000"}, WorkingDir: h.dir}); err != nil {
		t.Fatal(err)
	}
	h.sessions = session.NewRegistry(session.Config{MaxSessions: 100, Retention: time.Minute, OutputBuffer: 1 << 10})
	h.metrics = metrics.New(prometheus.NewRegistry(), nil)
	cfg := DefaultConfig()
	if tune != nil {
		tune(&cfg)
	}
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	h.srv = NewServer(context.Background(), cfg, log, h.rt, sandboxes, h.sessions, h.metrics)
	mux := http.NewServeMux()
	serve := func(w http.ResponseWriter, r *http.Request, err error) {
		if err != nil && !IsAnswered(err) {
			code := http.StatusInternalServerError
			switch {
			case errors.Is(err, reqerr.ErrBadRequest):
				code = http.StatusBadRequest
			case errors.Is(err, reqerr.ErrForbidden):
				code = http.StatusForbidden
			case errors.Is(err, container.ErrNotFound), errors.Is(err, sandbox.ErrNotFound):
				code = http.StatusNotFound
			case errors.Is(err, sandbox.ErrPort):
				code = http.StatusForbidden
			case errors.Is(err, session.ErrNotFound):
				code = http.StatusNotFound
			case errors.Is(err, reqerr.ErrConflict):
				code = http.StatusConflict
			case errors.Is(err, container.ErrGone):
				code = http.StatusGone
			case errors.Is(err, container.ErrInvalid):
				code = http.StatusBadRequest
			}
			http.Error(w, err.Error(), code)
		}
	}
	for _, m := range []string{"GET", "POST"} { // WebSocket GETs, SPDY POSTs
		mux.HandleFunc(m+" /exec/{id}", func(w http.ResponseWriter, r *http.Request) {
			serve(w, r, h.srv.Exec(w, r, r.PathValue("id"), ParseExecQuery(r.URL.Query())))
		})
		mux.HandleFunc(m+" /attach/{id}", func(w http.ResponseWriter, r *http.Request) {
			serve(w, r, h.srv.Attach(w, r, r.PathValue("id"), ParseAttachQuery(r.URL.Query())))
		})
		mux.HandleFunc(m+" /portforward/{id}", func(w http.ResponseWriter, r *http.Request) {
			if IsSPDYPortForward(r) {
				serve(w, r, h.srv.PortForwardSPDY(w, r, r.PathValue("id")))
				return
			}
			opts, err := ParsePortForwardQuery(r.URL.Query())
			if err == nil {
				err = h.srv.PortForward(w, r, r.PathValue("id"), opts)
			}
			serve(w, r, err)
		})
	}
	// Joins a shared exec; a share token in X-Share is its grant.
	mux.HandleFunc("GET /join/{id}", func(w http.ResponseWriter, r *http.Request) {
		opts, err := ParseJoinQuery(r.URL.Query())
		if tok := r.Header.Get("X-Share"); err == nil && tok != "" {
			g, ok := h.srv.CheckShare(tok)
			if !ok {
				http.Error(w, "share not valid", http.StatusUnauthorized)
				return
			}
			opts.Grant = &g
			if r.Header.Get("X-Revoke-First") != "" { // the link revoked just after it was checked
				h.srv.RevokeShare(g.Session, g.Share)
			}
		}
		if err == nil {
			err = h.srv.Join(w, r, r.PathValue("id"), opts)
		}
		serve(w, r, err)
	})
	// Exec that refuses WebSockets, for client-go's fallback to SPDY.
	mux.HandleFunc("GET /spdy-only/{id}", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "WebSockets are not served here", http.StatusBadRequest)
	})
	mux.HandleFunc("POST /spdy-only/{id}", func(w http.ResponseWriter, r *http.Request) {
		serve(w, r, h.srv.Exec(w, r, r.PathValue("id"), ParseExecQuery(r.URL.Query())))
	})
	h.ts = httptest.NewUnstartedServer(mux)
	h.ts.Listener = Listener(h.ts.Listener)
	h.ts.Start()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := h.sessions.CloseAll(ctx); err != nil {
			t.Error(err)
		}
		if err := h.srv.Wait(ctx); err != nil {
			t.Error(err)
		}
		h.ts.Close()
		if err := h.rt.Shutdown(ctx); err != nil {
			t.Error(err)
		}
	})
	return h
}

// testHangLimit is far over any test's run time (seconds).
const testHangLimit = 3 * time.Minute

// watchdog ends a test binary stuck in t with every goroutine's stack,
// then a panic naming t, in minutes rather than at the package timeout,
// and with the name last in the output. Benchmarks and fuzzing may run
// for longer: it watches tests only.
func watchdog(t testing.TB) {
	if _, test := t.(*testing.T); !test {
		return
	}
	dog := time.AfterFunc(testHangLimit, func() {
		buf := make([]byte, 4<<20)
		os.Stderr.Write(buf[:runtime.Stack(buf, true)])
		panic(fmt.Sprintf("%s still runs after %v: stuck (every goroutine above)", t.Name(), testHangLimit))
	})
	t.Cleanup(func() { dog.Stop() })
}

// testWriter sends log lines to the test log, and nowhere once it ended.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	if os.Getenv("STREAM_TEST_LOG") != "" {
		w.t.Log(strings.TrimSpace(string(p)))
	}
	return len(p), nil
}

// execQuery builds an exec query.
func execQuery(flags string, command ...string) string {
	q := url.Values{"command": command}
	for f := range strings.SplitSeq(flags, ",") {
		if f != "" {
			q.Set(f, "1")
		}
	}
	return q.Encode()
}

func (h *harness) dial(t testing.TB, query string, header http.Header, protocols ...string) (*websocket.Conn, *http.Response, error) {
	t.Helper()
	return h.dialPath(t, "/exec/box?"+query, header, protocols...)
}

func (h *harness) dialPath(t testing.TB, path string, header http.Header, protocols ...string) (*websocket.Conn, *http.Response, error) {
	t.Helper()
	d := websocket.Dialer{Subprotocols: protocols, HandshakeTimeout: 10 * time.Second}
	c, resp, err := d.Dial("ws"+strings.TrimPrefix(h.ts.URL, "http")+path, header)
	if _, test := t.(*testing.T); test && err == nil {
		// A read that would wait for ever fails the test instead (a
		// benchmark may run longer).
		c.SetReadDeadline(time.Now().Add(testReadLimit))
	}
	return c, resp, err
}

// testReadLimit bounds every read of a test's client, unless the test sets
// its own deadline.
const testReadLimit = time.Minute

// mustDialPath dials path, fails t with the refusal's body if it is
// refused, and closes the conn when t ends.
func (h *harness) mustDialPath(t testing.TB, path string, protocols ...string) *websocket.Conn {
	t.Helper()
	c, resp, err := h.dialPath(t, path, nil, protocols...)
	if err != nil {
		body := ""
		if resp != nil {
			b, _ := io.ReadAll(resp.Body)
			body = string(b)
		}
		t.Fatalf("dial %s: %v %s", path, err, body)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// attach dials an attach stream (v5).
func (h *harness) attach(t *testing.T, id, query string) *websocket.Conn {
	t.Helper()
	return h.mustDialPath(t, "/attach/"+id+"?"+query, "v5.channel.k8s.io")
}

// mustDial dials an exec in the box container.
func (h *harness) mustDial(t *testing.T, query string, protocols ...string) *websocket.Conn {
	t.Helper()
	return h.mustDialPath(t, "/exec/box?"+query, protocols...)
}

// message is one WebSocket message as received.
type message struct {
	typ  int
	data []byte
}

// readUntilClose reads messages until the server closes, and returns them
// with the close error.
func readUntilClose(t *testing.T, c *websocket.Conn) ([]message, *websocket.CloseError) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	var msgs []message
	for {
		typ, data, err := c.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				return msgs, ce
			}
			t.Fatalf("read: %v (after %d messages)", err, len(msgs))
		}
		msgs = append(msgs, message{typ, data})
	}
}

// decode returns a message's channel and payload, for either encoding.
func decode(t *testing.T, m message) (byte, []byte) {
	t.Helper()
	if len(m.data) == 0 {
		t.Fatalf("empty message")
	}
	if m.typ == websocket.TextMessage {
		p, err := base64.StdEncoding.DecodeString(string(m.data[1:]))
		if err != nil {
			t.Fatalf("bad base64 %q", m.data)
		}
		return m.data[0] - '0', p
	}
	return m.data[0], m.data[1:]
}

// collect joins the payloads of a channel.
func collect(t *testing.T, msgs []message, ch byte) string {
	var b strings.Builder
	for _, m := range msgs {
		if c, p := decode(t, m); c == ch {
			b.Write(p)
		}
	}
	return b.String()
}

// waitFor polls cond for up to 10 s.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	for range 1000 {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

// activeSession waits for the one active session and returns it.
func (h *harness) activeSession(t testing.TB) *session.Session {
	t.Helper()
	var sess *session.Session
	waitFor(t, "an active session", func() bool {
		if l := h.sessions.List(session.Filter{State: session.Active}); len(l) == 1 {
			sess, _ = h.sessions.Get(l[0].ID)
		}
		return sess != nil
	})
	return sess
}

// stalledBytesOut waits until a session takes no more output (its client
// reads nothing) and returns how much it took.
func stalledBytesOut(t testing.TB, sess *session.Session) int64 {
	t.Helper()
	var last int64
	waitFor(t, "the output to stall", func() bool {
		time.Sleep(200 * time.Millisecond)
		n := sess.Info().BytesOut
		stalled := n == last && n > 0
		last = n
		return stalled
	})
	return last
}
