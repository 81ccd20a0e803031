package stream

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"gateway/internal/proctest"
	"gateway/metrics"
	"gateway/session"
	"gateway/stream/wsproto"
	"gateway/vt"
)

const v5 = "v5.channel.k8s.io"

// sharedClient reads a shared exec's stream: its info frame, and its
// output.
type sharedClient struct {
	t     *testing.T
	c     *websocket.Conn
	info  wsproto.SessionInfo
	out   bytes.Buffer
	later []wsproto.SessionInfo // info frames after the first
}

// openShared opens an exec with detach and info=1 and reads up to its
// info frame.
func openShared(t *testing.T, h *harness, flags, detach string, command ...string) *sharedClient {
	t.Helper()
	c := h.mustDial(t, execQuery(flags+",info", command...)+"&detach="+detach, v5)
	return readInfo(t, c)
}

func readInfo(t *testing.T, c *websocket.Conn) *sharedClient {
	t.Helper()
	sc := &sharedClient{t: t, c: c}
	for {
		_, data, err := c.ReadMessage()
		if err != nil {
			t.Fatalf("before the info frame: %v", err)
		}
		if len(data) > 0 && data[0] == byte(wsproto.Info) {
			if err := json.Unmarshal(data[1:], &sc.info); err != nil {
				t.Fatal(err)
			}
			return sc
		}
	}
}

// readUntil reads output until it contains want.
func (sc *sharedClient) readUntil(want string) {
	sc.t.Helper()
	sc.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for !strings.Contains(sc.out.String(), want) {
		if err := sc.readOne(); err != nil {
			sc.t.Fatalf("waiting for %q: %v; got %q", want, err, sc.out.String())
		}
	}
}

// readOne reads one message: output, or an info frame after the first.
func (sc *sharedClient) readOne() error {
	_, data, err := sc.c.ReadMessage()
	if err != nil {
		return err
	}
	if len(data) > 0 && (data[0] == 1 || data[0] == 2) {
		sc.out.Write(data[1:])
	}
	if len(data) > 0 && data[0] == byte(wsproto.Info) {
		var info wsproto.SessionInfo
		json.Unmarshal(data[1:], &info)
		sc.later = append(sc.later, info)
	}
	return nil
}

// readUntilInfo reads until an info frame comes after the first.
func (sc *sharedClient) readUntilInfo() {
	sc.t.Helper()
	sc.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for n := len(sc.later); len(sc.later) == n; {
		if err := sc.readOne(); err != nil {
			sc.t.Fatalf("waiting for an info frame: %v", err)
		}
	}
}

// join joins a shared exec.
func (h *harness) join(t *testing.T, id, query string, header http.Header) (*websocket.Conn, *http.Response, error) {
	t.Helper()
	c, resp, err := h.dialPath(t, "/join/"+id+"?"+query, header, v5)
	if err == nil {
		t.Cleanup(func() { c.Close() })
	}
	return c, resp, err
}

func (h *harness) mustJoin(t *testing.T, id, query string, header http.Header) *sharedClient {
	t.Helper()
	c, resp, err := h.join(t, id, query, header)
	if err != nil {
		code := 0
		if resp != nil {
			code = resp.StatusCode
		}
		t.Fatalf("join %s: %v (%d)", id, err, code)
	}
	return readInfo(t, c)
}

// checkCount fails unless out is the lines 0, 1, 2, … of a counter: no
// line lost, none repeated. It returns how many there are.
func checkCount(t *testing.T, out string) int {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	for i, l := range lines {
		if l != strconv.Itoa(i) {
			t.Fatalf("line %d is %q: a gap or a repeat (%d lines)", i, l, len(lines))
		}
	}
	return len(lines)
}

// TestSharedRejoinSince: the client of an exec opened with detach drops;
// the process keeps running and printing; the session shows detached with
// its reap time; a rejoin with since= gets exactly what came after.
func TestSharedRejoinSince(t *testing.T) {
	h := newHarness(t, nil)
	first := openShared(t, h, "stdout", "1m", "sh", "-c", "i=0; while :; do echo $i; i=$((i+1)); sleep 0.01; done")
	if first.info.Session == "" || first.info.Detach != 60 || first.info.Join != "live" || first.info.Offset != 0 {
		t.Fatalf("info %+v", first.info)
	}
	first.readUntil("\n20\n")
	got := first.out.String()
	got = got[:strings.LastIndex(got, "\n")+1] // whole lines
	first.c.NetConn().Close()                  // a dropped connection, no close frame

	sess, err := h.sessions.Get(first.info.Session)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the session to detach", func() bool { return sess.Info().State == session.Detached })
	info := sess.Info()
	if info.ReapAt == nil || time.Until(*info.ReapAt) < 50*time.Second || info.Viewers != 0 {
		t.Fatalf("detached session: %+v", info)
	}
	if n := testutil.ToFloat64(h.metrics.SessionsDetached); n != 1 {
		t.Fatalf("gateway_sessions_detached = %v", n)
	}
	// It goes on printing with nobody connected.
	waitFor(t, "output while detached", func() bool { return sess.Info().BytesOut > int64(len(got))+200 })

	second := h.mustJoin(t, first.info.Session, fmt.Sprintf("stdout=1&info=1&since=%d", len(got)), nil)
	if second.info.Join != "since" {
		t.Fatalf("info %+v", second.info)
	}
	second.readUntil("\n300\n")
	all := got + second.out.String()
	checkCount(t, all[:strings.LastIndex(all, "\n")+1])
	if st := sess.Info(); st.State != session.Active || st.Viewers != 1 {
		t.Fatalf("joined session: %+v", st)
	}

	// Closed through the API: the client gets 4000, the process ends.
	if err := h.sessions.Close(sess.ID, nil); err != nil {
		t.Fatal(err)
	}
	_, ce := readUntilClose(t, second.c)
	if ce.Code != CloseByAPI {
		t.Fatalf("close %d, want %d", ce.Code, CloseByAPI)
	}
	waitFor(t, "the session to end", func() bool { return sess.Info().State == session.Closed })
	if zs := proctest.Zombies(); len(zs) > 0 {
		t.Fatalf("zombies: %v", zs)
	}
}

// TestSharedReaped: a detached session whose time runs out is reaped: its
// process gets SIGHUP, and the session ends.
func TestSharedReaped(t *testing.T) {
	h := newHarness(t, nil)
	sc := openShared(t, h, "stdin,stdout,tty", "300ms", "sh", "-c", "echo ready $$; sleep 60")
	sc.readUntil("\r\n")
	pid, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(sc.out.String(), "ready")))
	if err != nil {
		t.Fatalf("output %q", sc.out.String())
	}
	sc.c.Close()
	sess, _ := h.sessions.Get(sc.info.Session)
	waitFor(t, "the session to be reaped", func() bool { return sess.Info().State == session.Closed })
	if proctest.Alive(pid) {
		t.Fatalf("process %d still runs after the reaping", pid)
	}
	if n := testutil.ToFloat64(h.metrics.SessionsDetached); n != 0 {
		t.Fatalf("gateway_sessions_detached = %v after the reaping", n)
	}
}

// TestSharedClosedTellsWhy: a shared shell closed through the API tells
// its client so (4000), not the exit status of the SIGHUP that ended it,
// however soon the shell dies of it. Signalled before its clients were
// closed, the shell won that race only now and then: hence the rounds.
func TestSharedClosedTellsWhy(t *testing.T) {
	h := newHarness(t, nil)
	for i := range 20 {
		sc := openShared(t, h, "stdin,stdout,tty", "1m", "sh", "-c", "echo up; exec sleep 60")
		sc.readUntil("up")
		if err := h.sessions.Close(sc.info.Session, session.ErrClosedByAPI); err != nil {
			t.Fatal(err)
		}
		msgs, ce := readUntilClose(t, sc.c)
		sc.c.Close()
		for _, m := range msgs {
			if ch, p := decode(t, m); ch == byte(wsproto.Error) {
				t.Errorf("round %d: a status came: %s", i, p)
			}
		}
		if ce == nil || ce.Code != CloseByAPI {
			t.Fatalf("round %d: close %v, want %d", i, ce, CloseByAPI)
		}
	}
}

// TestSharedScreen: a client that joins a tty session gets its screen
// (a full-screen program's), then the live output, as the first client
// does; either's input reaches the process; both get the exit status.
func TestSharedScreen(t *testing.T) {
	h := newHarness(t, nil)
	c := h.mustDial(t, execQuery("stdin,stdout,tty,info", "sh", "-c",
		`printf '\033[?1049h\033[2J\033[Hhello screen'; read x; printf '\033[3;1Hgot %s' "$x"; read y; exit 7`)+"&detach=10m", v5)
	c.WriteMessage(websocket.BinaryMessage, append([]byte{4}, `{"Width":40,"Height":10}`...))
	first := readInfo(t, c)
	first.readUntil("hello screen")
	// The client sends its size after the upgrade, so it may reach the
	// gateway after the process started: then an info frame says when it
	// applied, and the join must come after that.
	for first.info.Cols != 40 && !slices.ContainsFunc(first.later, func(i wsproto.SessionInfo) bool { return i.Cols == 40 }) {
		first.readUntilInfo()
	}

	second := h.mustJoin(t, first.info.Session, "stdin=1&stdout=1&tty=1&info=1", nil)
	if second.info.Join != "screen" || second.info.Cols != 40 || second.info.Rows != 10 {
		t.Fatalf("info %+v", second.info)
	}
	second.readUntil("hello screen")
	term := vt.New(40, 10, vt.DefaultConfig())
	term.Write(second.out.Bytes())
	if !term.AltScreen() || term.Text()[0] != "hello screen" {
		t.Fatalf("joined screen: alt %v %q", term.AltScreen(), term.Text())
	}
	if !bytes.HasPrefix(second.out.Bytes(), []byte("\x1bc")) {
		t.Fatalf("the screen does not start with a reset: %q", second.out.Bytes()[:20])
	}
	// A resize by one client reaches the other as an info frame, where it
	// falls in the output.
	first.c.WriteMessage(websocket.BinaryMessage, append([]byte{4}, `{"Width":50,"Height":12}`...))
	first.readUntilInfo() // applied: the input below comes after it
	second.c.WriteMessage(websocket.BinaryMessage, []byte("\x00abc\r"))
	first.readUntil("got abc")
	second.readUntil("got abc")
	if n := len(second.later); n != 1 || second.later[0].Join != "resize" || second.later[0].Cols != 50 || second.later[0].Rows != 12 {
		t.Fatalf("info frames after the join: %+v", second.later)
	}
	first.c.WriteMessage(websocket.BinaryMessage, []byte("\x00\r"))
	for _, sc := range []*sharedClient{first, second} {
		msgs, ce := readUntilClose(t, sc.c)
		if st := collect(t, msgs, 3); ce.Code != websocket.CloseNormalClosure || !strings.Contains(st, `"message":"7"`) {
			t.Fatalf("end: close %d status %q", ce.Code, collect(t, msgs, 3))
		}
	}
}

// TestShareView: a view share's client sees the output; its input and
// resizes are dropped and counted; revoking the share cuts it at once
// (4003); the token then grants nothing.
func TestShareView(t *testing.T) {
	h := newHarness(t, nil)
	owner := openShared(t, h, "stdin,stdout", "1m", "sh", "-c", "echo started; read x; echo \"read: $x\"; sleep 60")
	owner.readUntil("started\n")
	info, token, err := h.srv.CreateShare(owner.info.Session, ShareView, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode != ShareView || !IsShareToken(token) || time.Until(info.ExpiresAt) < 50*time.Second {
		t.Fatalf("share %+v token %q", info, token)
	}
	viewer := h.mustJoin(t, owner.info.Session, "stdin=1&stdout=1&info=1&replay=1", http.Header{"X-Share": {token}})
	if !viewer.info.ViewOnly {
		t.Fatalf("info %+v", viewer.info)
	}
	viewer.readUntil("started\n")
	viewer.c.WriteMessage(websocket.BinaryMessage, []byte("\x00evil\n"))
	viewer.c.WriteMessage(websocket.BinaryMessage, append([]byte{4}, `{"Width":10,"Height":5}`...))
	waitFor(t, "the input to be dropped", func() bool {
		return testutil.ToFloat64(h.metrics.ViewOnlyIgnored.WithLabelValues("input")) == 1 &&
			testutil.ToFloat64(h.metrics.ViewOnlyIgnored.WithLabelValues("resize")) == 1
	})
	owner.c.WriteMessage(websocket.BinaryMessage, []byte("\x00good\n"))
	viewer.readUntil("read: good\n")
	if strings.Contains(viewer.out.String(), "evil") {
		t.Fatalf("the viewer's input reached the process: %q", viewer.out.String())
	}
	// Dropped input is neither counted nor recorded as the session's.
	if st, _ := h.sessions.Get(owner.info.Session); st.Info().BytesIn != int64(len("good\n")) {
		t.Errorf("session bytesIn %d, want the owner's %d", st.Info().BytesIn, len("good\n"))
	}
	if shares, _ := h.srv.Shares(owner.info.Session); len(shares) != 1 || shares[0].Viewers != 1 {
		t.Fatalf("shares %+v", shares)
	}
	// Another session's share does not open this one.
	other := openShared(t, h, "stdout", "1m", "sleep", "60")
	if _, resp, err := h.join(t, other.info.Session, "stdout=1", http.Header{"X-Share": {token}}); err == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("a share of another session: %v %v", err, resp)
	}

	// A link revoked after it was checked lets no one in. (No mode: view.)
	info2, tok2, err := h.srv.CreateShare(owner.info.Session, "", time.Minute)
	if err != nil || info2.Mode != ShareView {
		t.Fatalf("a share with no mode: %+v %v", info2, err)
	}
	if _, resp, err := h.join(t, owner.info.Session, "stdout=1", http.Header{"X-Share": {tok2}, "X-Revoke-First": {"1"}}); err == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("a share revoked while joining: %v %v", err, resp)
	}

	start := time.Now()
	if err := h.srv.RevokeShare(owner.info.Session, info.ID); err != nil {
		t.Fatal(err)
	}
	_, ce := readUntilClose(t, viewer.c)
	if ce.Code != CloseShareRevoked || time.Since(start) > 2*time.Second {
		t.Fatalf("revoked: close %d after %v", ce.Code, time.Since(start))
	}
	if _, ok := h.srv.CheckShare(token); ok {
		t.Fatal("a revoked token still grants")
	}
	if err := h.srv.RevokeShare(owner.info.Session, info.ID); err == nil {
		t.Fatal("revoked twice")
	}
	st, _ := h.sessions.Get(owner.info.Session)
	waitFor(t, "the owner alone", func() bool { return st.Info().Viewers == 1 && st.Info().State == session.Active })
}

func TestShareLimits(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.MaxShares = 2 })
	owner := openShared(t, h, "stdout", "1m", "sleep", "60")
	for i := range 2 {
		if _, _, err := h.srv.CreateShare(owner.info.Session, ShareInteractive, time.Minute); err != nil {
			t.Fatalf("share %d: %v", i, err)
		}
	}
	for _, c := range []struct {
		mode string
		ttl  time.Duration
	}{{ShareView, time.Minute}, {"admin", time.Minute}, {ShareView, 48 * time.Hour}} {
		if _, tok, err := h.srv.CreateShare(owner.info.Session, c.mode, c.ttl); err == nil || tok != "" {
			t.Errorf("share %+v allowed", c)
		}
	}
	for _, tok := range []string{"", "x", "0123456789abcdef.wrong", "0123456789abcdef"} {
		if _, ok := h.srv.CheckShare(tok); ok {
			t.Errorf("token %q grants", tok)
		}
	}
	// The shape of a share token, valid or not (a replica that does not
	// hold it still answers 403).
	for tok, want := range map[string]bool{"0123456789abcdef.AAAAAAAAAAAAAAAAAAAAAA": true, "0123456789abcdef.wrong": false,
		"0123456789abcdeg.AAAAAAAAAAAAAAAAAAAAAA": false, "gateway-token": false} {
		if IsShareToken(tok) != want {
			t.Errorf("IsShareToken(%q) = %v", tok, !want)
		}
	}
}

// TestJoinRefused: what cannot be joined is refused before the upgrade.
func TestJoinRefused(t *testing.T) {
	h := newHarness(t, nil)
	h.mustDial(t, execQuery("stdout", "sleep", "60"), v5)
	sess := h.activeSession(t)
	shared := openShared(t, h, "stdout", "1m", "sh", "-c", "head -c 100 /dev/zero; sleep 60")
	for _, c := range []struct {
		id, query string
		code      int
	}{
		{"nosuchsession", "stdout=1", http.StatusNotFound},
		{sess.ID, "stdout=1", http.StatusConflict},
		{shared.info.Session, "stdout=1&since=1000", http.StatusBadRequest},
		{shared.info.Session, "stdout=1&since=-1", http.StatusBadRequest},
		{shared.info.Session, "stdin=1&stdout=1", http.StatusBadRequest}, // started without stdin
		{shared.info.Session, "", http.StatusBadRequest},
	} {
		_, resp, err := h.join(t, c.id, c.query, nil)
		if err == nil || resp == nil || resp.StatusCode != c.code {
			code := 0
			if resp != nil {
				code = resp.StatusCode
			}
			t.Errorf("join %s?%s: %v %d, want %d", c.id, c.query, err, code, c.code)
		}
	}
}

// TestJoinWhileEnding: a client that joins a shared exec as it ends (closed
// through the API, its process not gone yet) is refused after the upgrade
// with the session's cause; its end is not the session's, which ends once,
// with its process.
func TestJoinWhileEnding(t *testing.T) {
	h := newHarness(t, nil)
	owner := openShared(t, h, "stdout", "1m", "sh", "-c", `trap "" HUP TERM; echo up; while :; do sleep 0.05; done`)
	owner.readUntil("up")
	id := owner.info.Session
	if err := h.sessions.Close(id, session.ErrClosedByAPI); err != nil {
		t.Fatal(err)
	}
	c, resp, err := h.join(t, id, "stdout=1", nil)
	if err != nil {
		t.Fatalf("the join was refused before the upgrade: %v %v", err, resp) // the process runs until its SIGKILL
	}
	if _, ce := readUntilClose(t, c); ce == nil || ce.Code != CloseByAPI {
		t.Fatalf("the joiner's close: %v", ce)
	}
	sess, _ := h.sessions.Get(id)
	time.Sleep(100 * time.Millisecond) // the joiner's end, were it the session's
	if !sess.Live() {
		t.Errorf("the joiner's end ended the shared session while its process runs (state %v)", sess.Info().State)
	}
	readUntilClose(t, owner.c)
	waitFor(t, "the session's end", func() bool { return !sess.Live() })
	total := 0.0
	for _, r := range metrics.Results {
		total += testutil.ToFloat64(h.metrics.SessionsTotal.WithLabelValues("exec", r))
	}
	if total != 1 || testutil.ToFloat64(h.metrics.For("exec").Active) != 0 {
		t.Errorf("sessions_total %v, active %v: want one session, ended", total, testutil.ToFloat64(h.metrics.For("exec").Active))
	}
}
