package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"gateway/internal/procfs"
	"gateway/internal/proctest"
)

// The fault suite: clients that vanish, stall or misbehave, and a
// shutdown under load. Each test is bounded well under a minute; the
// package's goleak check covers every goroutine at the end.

// dialWS opens a WebSocket on the gateway with the test token.
func (g *gateway) dialWS(t *testing.T, path string, protocols ...string) *websocket.Conn {
	t.Helper()
	d := websocket.Dialer{Subprotocols: protocols, HandshakeTimeout: 10 * time.Second}
	c, resp, err := d.Dial("ws"+strings.TrimPrefix(g.url, "http")+strings.TrimPrefix(path, "/"),
		http.Header{"Authorization": {"Bearer " + g.token}})
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

func execPath(container string, flags string, command ...string) string {
	q := url.Values{"command": command}
	for f := range strings.SplitSeq(flags, ",") {
		q.Set(f, "1")
	}
	return "/api/v1/containers/" + container + "/exec?" + q.Encode()
}

// readUntil reads a stream's payloads until cond holds of what came, and
// returns it.
func readUntil(t *testing.T, c *websocket.Conn, cond func([]byte) bool) []byte {
	t.Helper()
	var got []byte
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	for !cond(got) {
		_, m, err := c.ReadMessage()
		if err != nil {
			t.Fatalf("read: %v (after %d bytes)", err, len(got))
		}
		if len(m) > 0 && (m[0] == 1 || m[0] == 2) {
			got = append(got, m[1:]...)
		}
	}
	return got
}

// closeCode reads until the server closes and returns its close code.
func closeCode(c *websocket.Conn, within time.Duration) (int, error) {
	c.SetReadDeadline(time.Now().Add(within))
	for {
		if _, _, err := c.ReadMessage(); err != nil {
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				return ce.Code, nil
			}
			return 0, err
		}
	}
}

// sessionState is the registry's state of one session.
func (g *gateway) sessionState(t *testing.T, id string) string {
	var s sessionInfo
	g.do(t, "GET", "/api/v1/sessions/"+id, nil, &s)
	return s.State
}

// theOnlyActive waits for one new active session besides known, and
// returns its id.
func (g *gateway) newActive(t *testing.T, known map[string]bool) string {
	t.Helper()
	for range 1000 {
		var l struct{ Items []sessionInfo }
		g.do(t, "GET", "/api/v1/sessions?state=active", nil, &l)
		for _, s := range l.Items {
			if !known[s.ID] {
				known[s.ID] = true
				return s.ID
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("no new active session")
	return ""
}

// TestFaultAbruptKills: clients that vanish mid-output, with a reset or a
// FIN, in a tty or with pipes, some of whose children ignore SIGHUP and
// SIGTERM: every session ends as a client disconnect, and after the stop
// grace (1 s here) nothing is left of their processes, not even the
// children that ignored the signals, and no zombie.
func TestFaultAbruptKills(t *testing.T) {
	g := startGateway(t)
	type victim struct {
		conn *websocket.Conn
		id   string
		pid  int // the stubborn child, when there is one
	}
	var victims []victim
	known := map[string]bool{}
	for _, tty := range []bool{false, true} {
		for _, reset := range []bool{false, true} {
			for _, stubborn := range []bool{false, true} {
				flags := "stdin,stdout,stderr"
				if tty {
					flags = "stdin,stdout,tty"
				}
				command := []string{"sh", "-c", "exec yes flood"}
				if stubborn {
					command = []string{"sh", "-c", `(trap "" HUP TERM; exec sh -c 'echo child $$; exec sleep 120') & exec yes flood`}
				}
				c := g.dialWS(t, execPath("box", flags, command...), "v5.channel.k8s.io")
				out := readUntil(t, c, func(b []byte) bool {
					return len(b) > 64<<10 && (!stubborn || bytes.Contains(b, []byte("child ")))
				})
				v := victim{conn: c, id: g.newActive(t, known)}
				if stubborn {
					i := bytes.Index(out, []byte("child ")) + len("child ")
					v.pid, _ = strconv.Atoi(string(bytes.Fields(out[i:])[0]))
				}
				if reset {
					c.NetConn().(*net.TCPConn).SetLinger(0) // Close sends a RST
				}
				c.NetConn().Close()
				victims = append(victims, v)
			}
		}
	}
	deadline := time.Now().Add(15 * time.Second)
	for _, v := range victims {
		for g.sessionState(t, v.id) != "closed" && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if st := g.sessionState(t, v.id); st != "closed" {
			t.Errorf("session %s is %s after its client vanished", v.id, st)
		}
		for v.pid != 0 && proctest.Alive(v.pid) && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if v.pid != 0 && proctest.Alive(v.pid) {
			t.Errorf("a child that ignores SIGHUP and SIGTERM (pid %d) outlived its session's grace", v.pid)
		}
	}
	if z := proctest.Zombies(); len(z) > 0 {
		t.Errorf("zombies: %v", z)
	}
	m := g.metricsText(t)
	if want := fmt.Sprintf(`gateway_sessions_total{kind="exec",result="client_disconnect"} %d`, len(victims)); !strings.Contains(m, want) {
		t.Errorf("metrics lack %s", want)
	}
}

// metricsText is the gateway's /metrics.
func (g *gateway) metricsText(t *testing.T) string {
	t.Helper()
	resp, err := http.Get(g.url + "metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// checkSeq reads "1\n2\n3\n..." as seq prints it, and reports the last
// number, failing t at the first gap or repeat.
type seqChecker struct {
	next    int
	partial []byte
}

func (s *seqChecker) feed(t *testing.T, p []byte) {
	t.Helper()
	s.partial = append(s.partial, p...)
	for {
		i := bytes.IndexByte(s.partial, '\n')
		if i < 0 {
			return
		}
		n, err := strconv.Atoi(string(s.partial[:i]))
		if err != nil || n != s.next {
			t.Fatalf("got %q where %d was due: a gap or a repeat", s.partial[:i], s.next)
		}
		s.next++
		s.partial = s.partial[i+1:]
	}
}

// TestFaultStalledClients: an attacher that stops reading is cut (close
// 4001) and its session ends within 2 s of the cut, while the attacher
// that reads gets every byte; an exec client that stops reading and is
// closed through the API ends within 2 s too (close 4000). Both clients
// still get what was sent, then their close code, once they read.
func TestFaultStalledClients(t *testing.T) {
	g := startGateway(t)
	g.createContainer(t, map[string]any{"id": "flood", "stdin": true,
		"command": []string{"sh", "-c", "read x; exec seq 1 1000000000"}})
	known := map[string]bool{}
	slow := g.dialWS(t, "/api/v1/containers/flood/attach?stdout=1&replay=0", "v5.channel.k8s.io")
	slowID := g.newActive(t, known)
	fast := g.dialWS(t, "/api/v1/containers/flood/attach?stdin=1&stdout=1&replay=0", "v5.channel.k8s.io")
	g.newActive(t, known)
	if _, m, err := fast.ReadMessage(); err != nil || string(m) != "\x01" {
		t.Fatalf("ready frame %q %v", m, err)
	}
	if _, m, err := slow.ReadMessage(); err != nil || string(m) != "\x01" {
		t.Fatalf("ready frame %q %v", m, err)
	}
	fast.WriteMessage(websocket.BinaryMessage, []byte("\x00go\n"))
	seq := &seqChecker{next: 1}
	var cut, closed, polled time.Time
	fast.SetReadDeadline(time.Now().Add(40 * time.Second))
	for closed.IsZero() || time.Since(closed) < time.Second {
		_, m, err := fast.ReadMessage()
		if err != nil {
			t.Fatalf("fast attacher: %v", err)
		}
		seq.feed(t, m[1:])
		// The API is asked every 20 ms, not at each message: a reader that
		// made two requests per message would fall behind on a slow
		// machine and be cut too.
		if time.Since(polled) < 20*time.Millisecond {
			continue
		}
		polled = time.Now()
		if cut.IsZero() && strings.Contains(g.metricsText(t), `gateway_stream_errors_total{kind="attach",reason="slow_consumer"} 1`) {
			cut = time.Now()
		}
		if !cut.IsZero() && closed.IsZero() && g.sessionState(t, slowID) == "closed" {
			closed = time.Now()
		}
		if !cut.IsZero() && closed.IsZero() && time.Since(cut) > 5*time.Second {
			t.Fatalf("the cut attacher's session is still %s 5 s after the cut", g.sessionState(t, slowID))
		}
	}
	if d := closed.Sub(cut); d > 2*time.Second {
		t.Errorf("the cut attacher's session ended %v after the cut, want within 2 s", d)
	}
	if code, err := closeCode(slow, 20*time.Second); code != 4001 {
		t.Errorf("the stalled attacher, reading at last, saw %d %v, want close 4001", code, err)
	}
	t.Logf("the reading attacher got %d lines in order while the other was cut", seq.next-1)

	// An exec client that stops reading, closed through the API.
	c := g.dialWS(t, execPath("box", "stdout", "seq", "1", "1000000000"), "v5.channel.k8s.io")
	id := g.newActive(t, known)
	var last int64
	for range 200 { // until its output stalls on the client
		time.Sleep(50 * time.Millisecond)
		var s sessionInfo
		g.do(t, "GET", "/api/v1/sessions/"+id, nil, &s)
		if s.BytesOut == last && last > 0 {
			break
		}
		last = s.BytesOut
	}
	start := time.Now()
	if resp := g.do(t, "DELETE", "/api/v1/sessions/"+id, nil, nil); resp.StatusCode != 204 {
		t.Fatalf("DELETE: %d", resp.StatusCode)
	}
	for g.sessionState(t, id) != "closed" && time.Since(start) < 5*time.Second {
		time.Sleep(20 * time.Millisecond)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("the stalled exec's session ended %v after DELETE, want within 2 s", d)
	}
	if code, err := closeCode(c, 20*time.Second); code != 4000 {
		t.Errorf("the stalled exec client saw %d %v, want close 4000", code, err)
	}
}

// TestFaultShutdown: a shutdown with a few hundred live sessions of every
// kind: every client gets close 1001, every process is gone, and run
// returns nil.
func TestFaultShutdown(t *testing.T) {
	logs := &logBuffer{ready: make(chan string, 1)}
	ready := logs.ready
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "c.yaml")
	cfg := fmt.Sprintf("containers:\n  - id: box\n    command: [sleep, \"1000\"]\n    workingDir: %s\n    stdin: true\n"+
		"  - id: talk\n    command: [cat]\n    tty: true\n    stdin: true\n    workingDir: %s\n", dir, dir)
	os.WriteFile(cfgFile, []byte(cfg), 0o600)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"--listen", "127.0.0.1:0", "--token", testToken, "--config", cfgFile, "--stop-grace", "1s", "--kube-listen", ""}, noEnv, io.Discard, logs)
	}()
	g := &gateway{url: <-ready, token: testToken}
	echo := echoServer(t)
	var paths []string
	for i := range 300 {
		switch i % 5 {
		case 0:
			paths = append(paths, execPath("box", "stdin,stdout,tty", "cat"))
		case 1:
			paths = append(paths, execPath("box", "stdin,stdout,stderr", "sh", "-c", `trap "" HUP TERM; exec sleep 1000`))
		case 2:
			paths = append(paths, execPath("box", "stdin,stdout", "cat"))
		case 3:
			paths = append(paths, "/api/v1/containers/talk/attach?stdin=1&stdout=1")
		case 4:
			paths = append(paths, "/api/v1/sandboxes/host/portforward?port="+strconv.Itoa(echo))
		}
	}
	conns := make([]*websocket.Conn, len(paths))
	for i, p := range paths {
		proto := "v5.channel.k8s.io"
		if strings.Contains(p, "portforward") {
			proto = "v4.channel.k8s.io"
		}
		conns[i] = g.dialWS(t, p, proto)
	}
	waitActive(t, g, len(paths))
	var wg sync.WaitGroup
	codes := make([]int, len(conns))
	for i, c := range conns {
		wg.Go(func() { codes[i], _ = closeCode(c, 30*time.Second) })
	}
	start := time.Now()
	cancel()
	wg.Wait()
	for i, code := range codes {
		if code != websocket.CloseGoingAway {
			t.Errorf("%s: close %d, want 1001", paths[i], code)
		}
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("run: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no shutdown")
	}
	t.Logf("%d sessions closed with 1001 and the gateway stopped in %v", len(conns), time.Since(start).Round(time.Millisecond))
	for _, p := range procfs.All() {
		if p.PPid == os.Getpid() && p.State != "Z" {
			t.Errorf("a child is still running after the shutdown: %+v", p)
		}
	}
	if z := proctest.Zombies(); len(z) > 0 {
		t.Errorf("zombies: %v", z)
	}
}

// echoServer runs a TCP echo server on loopback for the test and returns
// its port.
func echoServer(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() { io.Copy(c, c); c.Close() })
		}
	})
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	return ln.Addr().(*net.TCPAddr).Port
}

// TestFaultBadInput: bad requests and bad frames get their status or
// close code, while a reference session streams on, byte-exact.
func TestFaultBadInput(t *testing.T) {
	g := startGateway(t, "--max-message", "64KiB")
	ref := g.dialWS(t, execPath("box", "stdin,stdout", "sh", "-c", "read x; exec seq 1 2000000"), "v5.channel.k8s.io")
	if _, m, err := ref.ReadMessage(); err != nil || string(m) != "\x01" {
		t.Fatalf("reference ready frame %q %v", m, err)
	}
	ref.WriteMessage(websocket.BinaryMessage, []byte("\x00go\n"))
	seq := &seqChecker{next: 1}
	refDone := make(chan error, 1)
	go func() {
		ref.SetReadDeadline(time.Now().Add(50 * time.Second))
		for {
			_, m, err := ref.ReadMessage()
			if err != nil {
				refDone <- err
				return
			}
			if len(m) > 0 && m[0] == 1 {
				seq.feed(t, m[1:])
			}
		}
	}()

	// Requests refused before any upgrade.
	auth := http.Header{"Authorization": {"Bearer " + g.token}}
	for _, tc := range []struct {
		name, method, path string
		header             http.Header
		body               string
		code               int
	}{
		{"no token", "GET", "/api/v1/containers", nil, "", 401},
		{"lower-case scheme", "GET", "/api/v1/containers", http.Header{"Authorization": {"bearer " + g.token}}, "", 200},
		{"wrong scheme", "GET", "/api/v1/containers", http.Header{"Authorization": {"Basic " + g.token}}, "", 401},
		{"plain GET of a stream", "GET", execPath("box", "stdout", "true"), auth, "", 400},
		{"path traversal", "GET", "/api/v1/containers/..%2f..%2fetc/exec?command=true&stdout=1", auth, "", 400},
		{"bad JSON", "POST", "/api/v1/containers", auth, `{"id":`, 400},
		{"unknown field", "POST", "/api/v1/containers", auth, `{"id":"x","bogus":1}`, 400},
		{"body over the limit", "POST", "/login", nil, `{"token":"` + strings.Repeat("x", 8<<10) + `"}`, 413},
		{"wrong method", "PUT", "/api/v1/sessions", auth, "", 405},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, g.url+strings.TrimPrefix(tc.path, "/"), strings.NewReader(tc.body))
			for k, v := range tc.header {
				req.Header[k] = v
			}
			if tc.body != "" {
				req.Header.Set("Content-Type", "application/json")
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.code || (tc.code >= 400 && !bytes.Contains(b, []byte(`"kind":"Status"`))) {
				t.Errorf("%d %s, want %d with a Status", resp.StatusCode, b, tc.code)
			}
		})
	}
	for _, tc := range []struct {
		name   string
		path   string
		protos []string
		header http.Header
		code   int
	}{
		{"unknown subprotocols", execPath("box", "stdout", "true"), []string{"v9.channel.k8s.io"}, auth, 403},
		{"foreign origin", execPath("box", "stdout", "true"), []string{"v5.channel.k8s.io"}, http.Header{"Authorization": auth["Authorization"], "Origin": {"https://evil.example"}}, 403},
		{"too many query parameters", "/api/v1/containers/box/exec?" + strings.Repeat("a=1&", 10001) + "command=true&stdout=1", []string{"v5.channel.k8s.io"}, auth, 400},
		{"unknown container", execPath("nope", "stdout", "true"), []string{"v5.channel.k8s.io"}, auth, 404},
		{"no streams", "/api/v1/containers/box/exec?command=true", []string{"v5.channel.k8s.io"}, auth, 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := websocket.Dialer{Subprotocols: tc.protos}
			_, resp, err := d.Dial("ws"+strings.TrimPrefix(g.url, "http")+strings.TrimPrefix(tc.path, "/"), tc.header)
			if err == nil {
				t.Fatal("upgraded")
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.code || !bytes.Contains(b, []byte(`"kind":"Status"`)) {
				t.Errorf("%d %s, want %d with a Status", resp.StatusCode, b, tc.code)
			}
		})
	}

	// Frames that end their own stream with a close code, nothing else.
	masked := func(b0 byte, header, payload []byte) []byte {
		f := append([]byte{b0}, header...)
		f[1] |= 0x80
		f = append(f, 0, 0, 0, 0)
		return append(f, payload...)
	}
	for _, tc := range []struct {
		name  string
		proto string
		raw   []byte
		code  int
	}{
		{"malformed close signal", "v5.channel.k8s.io", masked(0x82, []byte{3}, []byte{0xff, 0, 0}), 1002},
		{"message over the limit", "v5.channel.k8s.io", masked(0x82, []byte{127, 0, 0, 0, 0, 0, 2, 0, 0}, nil), 1009},
		{"length with the top bit set", "v5.channel.k8s.io", masked(0x82, []byte{127, 0x80, 0, 0, 0, 0, 0, 0, 1}, nil), 1002},
		{"one-byte close payload", "v5.channel.k8s.io", masked(0x88, []byte{1}, []byte{3}), 1002},
		{"text that is not UTF-8", "v4.base64.channel.k8s.io", masked(0x81, []byte{2}, []byte{'0', 0xff}), 1007},
		{"unmasked frame", "v5.channel.k8s.io", []byte{0x82, 1, 0}, 1002},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := g.dialWS(t, execPath("box", "stdin,stdout", "cat"), tc.proto)
			c.ReadMessage() // the ready frame
			c.NetConn().Write(tc.raw)
			if code, err := closeCode(c, 10*time.Second); code != tc.code {
				t.Errorf("close %d %v, want %d", code, err, tc.code)
			}
		})
	}
	// Frames that are ignored, as the kubelet ignores them: the stream
	// goes on and answers.
	c := g.dialWS(t, execPath("box", "stdin,stdout", "head", "-n", "1"), "v5.channel.k8s.io")
	c.ReadMessage()
	for _, m := range [][]byte{{9, 'x'}, {4, 'g', 'a', 'r', 'b'}, {}, {1, 'x'}, {3, 'y'}} {
		c.WriteMessage(websocket.BinaryMessage, m)
	}
	c.WriteMessage(websocket.BinaryMessage, []byte("\x00still here\n"))
	if got := readUntil(t, c, func(b []byte) bool { return bytes.HasSuffix(b, []byte("\n")) }); string(got) != "still here\n" {
		t.Errorf("after ignored frames: %q", got)
	}

	if err := <-refDone; func() bool { var ce *websocket.CloseError; return !errors.As(err, &ce) || ce.Code != 1000 }() {
		t.Errorf("reference session: %v", err)
	}
	if seq.next-1 != 2000000 {
		t.Errorf("reference session: %d lines, want 2000000", seq.next-1)
	}
}

// TestFaultSlowBody: a client that sends the headers of a request with a
// body, and then trickles the body, is cut at the body deadline.
func TestFaultSlowBody(t *testing.T) {
	g := startGateway(t)
	addr := strings.TrimSuffix(strings.TrimPrefix(g.url, "http://"), "/")
	var wg sync.WaitGroup
	start := time.Now()
	for range 5 {
		wg.Go(func() {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			fmt.Fprintf(c, "POST /login HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n", addr)
			br := bufio.NewReader(c)
			for i := 0; ; i++ {
				if _, err := c.Write([]byte(" ")); err != nil {
					return
				}
				c.SetReadDeadline(time.Now().Add(time.Second))
				if _, err := br.ReadByte(); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
					return // closed, or answered and closed
				}
				if time.Since(start) > 30*time.Second {
					t.Error("a trickled body kept its connection for 30 s")
					return
				}
			}
		})
	}
	wg.Wait()
	if d := time.Since(start); d > 15*time.Second {
		t.Errorf("trickled bodies were cut after %v, want about 10 s", d)
	}
}
