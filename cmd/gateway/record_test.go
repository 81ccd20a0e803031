package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/gorilla/websocket"

	"gateway/internal/ptyio"
	"gateway/internal/tooltest"
)

// recorded is an exec run to its end: what its client received, and the
// recording the gateway made of it.
type recorded struct {
	session string
	out     []byte
	cast    []byte
}

// runRecorded runs an exec in a tty at 100x30, sending each step's input
// once the output so far holds its wait string, and reads it to its close
// (1000); then fetches its recording.
func runRecorded(t *testing.T, g *gateway, command []string, steps ...[2]string) recorded {
	t.Helper()
	c := g.dialWS(t, execPath("box", "stdin,stdout,tty", command...), "v5.channel.k8s.io")
	defer c.Close()
	c.WriteMessage(websocket.BinaryMessage, []byte("\x04"+`{"Width":100,"Height":30}`))
	var out []byte
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	for {
		for len(steps) > 0 && bytes.Contains(out, []byte(steps[0][0])) {
			c.WriteMessage(websocket.BinaryMessage, []byte(steps[0][1]))
			steps = steps[1:]
		}
		_, m, err := c.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			if !errors.As(err, &ce) || ce.Code != websocket.CloseNormalClosure {
				t.Fatalf("read: %v after %q", err, tail(out))
			}
			break
		}
		if len(m) > 0 && m[0] == 1 {
			out = append(out, m[1:]...)
		}
	}
	if len(steps) > 0 {
		t.Fatalf("the output never held %q: %q", steps[0][0], tail(out))
	}
	var list struct {
		Items []struct {
			ID, Session, Container string
			Active                 bool
			Size                   int64
			ExitCode               *int
		}
	}
	// The recording ends with its session, just after the close frame.
	deadline := time.Now().Add(10 * time.Second)
	for {
		g.do(t, "GET", "/api/v1/recordings?container=box", nil, &list)
		if n := len(list.Items); n > 0 && !list.Items[n-1].Active || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if len(list.Items) == 0 {
		t.Fatal("no recording")
	}
	it := list.Items[len(list.Items)-1]
	if it.Active || it.Session != it.ID || it.ExitCode == nil || *it.ExitCode != 0 {
		t.Fatalf("the recording once its session ended: %+v", it)
	}
	var sess struct{ Recording string }
	g.do(t, "GET", "/api/v1/sessions/"+it.Session, nil, &sess)
	if sess.Recording != it.ID {
		t.Errorf("the session names recording %q, want %q", sess.Recording, it.ID)
	}
	resp, err := http.DefaultClient.Do(authed(g, "GET", "/api/v1/recordings/"+it.ID))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	cast, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET the recording: %d %v", resp.StatusCode, err)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/x-asciicast" {
		t.Errorf("Content-Type %q", ct)
	}
	if int64(len(cast)) != it.Size {
		t.Errorf("the recording lists %d bytes, its file has %d", it.Size, len(cast))
	}
	return recorded{session: it.Session, out: out, cast: cast}
}

func tail(b []byte) []byte { return b[max(0, len(b)-300):] }

// asciinemaCat is what `asciinema cat` prints of a recording.
func asciinemaCat(t *testing.T, cast []byte) []byte {
	t.Helper()
	bin, err := exec.LookPath("asciinema")
	if err != nil {
		tooltest.SkipOrFail(t, "asciinema is not installed: make test installs it")
	}
	f := filepath.Join(t.TempDir(), "session.cast")
	os.WriteFile(f, cast, 0o600)
	// It opens /dev/tty (to read keys): a pty of its own is its
	// controlling terminal, while its output goes to a pipe, untouched.
	master, tty, err := ptyio.Open(80, 24)
	if err != nil {
		t.Fatal(err)
	}
	defer master.Close()
	defer tty.Close()
	cmd := exec.Command(bin, "cat", f)
	cmd.Env = []string{"HOME=" + t.TempDir(), "PATH=/usr/bin:/bin", "LANG=C.UTF-8", "PYTHONIOENCODING=utf-8"}
	cmd.Stdin = tty
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("asciinema cat: %v: %s", err, stderr.String())
	}
	return out
}

// events reads a recording: its header, and its events.
func events(t *testing.T, cast []byte) (map[string]any, [][3]any) {
	t.Helper()
	sc := bufio.NewScanner(bytes.NewReader(cast))
	sc.Buffer(nil, 1<<24)
	var hdr map[string]any
	var evs [][3]any
	for i := 0; sc.Scan(); i++ {
		if i == 0 {
			if err := json.Unmarshal(sc.Bytes(), &hdr); err != nil {
				t.Fatalf("header %q: %v", sc.Bytes(), err)
			}
			continue
		}
		var ev [3]any
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("line %d %q: %v", i+1, sc.Bytes(), err)
		}
		evs = append(evs, ev)
	}
	return hdr, evs
}

// TestRecording: with --record-dir every session is recorded as asciicast
// v2; asciinema cat prints exactly what the client received (a megabyte
// of base64, vim, a resize in the middle); the audit trail has each
// session's start and end, and never the token; an attacher's recording
// has the resizes another attacher made.
func TestRecording(t *testing.T) {
	trail := filepath.Join(t.TempDir(), "audit.log")
	g := startGateway(t, "--record-dir", t.TempDir(), "--audit-log", trail)

	t.Run("base64", func(t *testing.T) {
		r := runRecorded(t, g, []string{"sh", "-c", "head -c 1000000 /dev/urandom | base64"})
		if len(r.out) < 1300000 {
			t.Fatalf("only %d bytes of output", len(r.out))
		}
		if got := asciinemaCat(t, r.cast); !bytes.Equal(got, r.out) {
			t.Fatalf("asciinema cat gives %d bytes, the client got %d", len(got), len(r.out))
		}
		hdr, evs := events(t, r.cast)
		// The size the process started at: the client's, or 80x24 when its
		// resize came after the start (and after some output, maybe), and
		// was recorded then.
		size := fmt.Sprintf("%vx%v", hdr["width"], hdr["height"])
		if i := slices.IndexFunc(evs, func(ev [3]any) bool { return ev[1] == "r" }); size == "80x24" && i >= 0 {
			size = evs[i][2].(string)
		}
		if hdr["version"] != 2.0 || size != "100x30" || hdr["title"] != r.session ||
			hdr["env"].(map[string]any)["TERM"] != "xterm-256color" || !strings.Contains(hdr["command"].(string), "base64") {
			t.Errorf("header %v", hdr)
		}
		if last := evs[len(evs)-1]; last[1] != "m" || last[2] != "exit 0" {
			t.Errorf("last event %v", last)
		}
	})

	t.Run("vim", func(t *testing.T) {
		if _, err := exec.LookPath("vim"); err != nil {
			tooltest.SkipOrFail(t, "vim is not installed: make test installs it")
		}
		file := filepath.Join(t.TempDir(), "notes.txt")
		r := runRecorded(t, g, []string{"vim", "--clean", "-n", file},
			[2]string{"~", "\x00ihello from vim\x1b"}, [2]string{"hello from vim", "\x00:wq\r"})
		if got := asciinemaCat(t, r.cast); !bytes.Equal(got, r.out) {
			t.Fatalf("asciinema cat differs from what the client got:\n%q\n%q", tail(got), tail(r.out))
		}
		if b, _ := os.ReadFile(file); string(b) != "hello from vim\n" {
			t.Errorf("vim wrote %q", b)
		}
	})

	t.Run("resize", func(t *testing.T) {
		// The first size is the client's or 80x24, as its first resize came
		// before or after the start; the second is the one sent after it.
		r := runRecorded(t, g, []string{"sh", "-c", "stty size; read x; stty size"},
			[2]string{"\n", "\x04" + `{"Width":120,"Height":40}`}, [2]string{"\n", "\x00\r"})
		if !bytes.Contains(r.out, []byte("40 120")) {
			t.Fatalf("the second size: %q", r.out)
		}
		if got := asciinemaCat(t, r.cast); !bytes.Equal(got, r.out) {
			t.Fatalf("asciinema cat differs:\n%q\n%q", got, r.out)
		}
		_, evs := events(t, r.cast)
		var resized, input bool
		for _, ev := range evs {
			resized = resized || ev[1] == "r" && ev[2] == "120x40"
			input = input || ev[1] == "i"
		}
		if !resized || input {
			t.Errorf("events (a resize to 120x40 wanted, no input: it is not recorded by default): %v", evs)
		}
	})

	// The trail: a start and an end for each session, the end with its
	// bytes, exit code and recording; never the token.
	b, err := os.ReadFile(trail)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(b, []byte(g.token)) {
		t.Fatal("the audit log holds the token")
	}
	starts, ends := 0, 0
	for line := range strings.SplitSeq(strings.TrimSpace(string(b)), "\n") {
		var ev struct {
			Event, Session, Auth, Recording, Kind, Target, Result string
			Command                                               []string
			BytesOut                                              *int64
			ExitCode                                              *int
			TTY                                                   *bool
		}
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("audit line %q: %v", line, err)
		}
		switch ev.Event {
		case "session.start":
			starts++
			if ev.Auth != "bearer" || ev.Kind != "exec" || ev.Target != "box" || len(ev.Command) == 0 || ev.TTY == nil || !*ev.TTY {
				t.Errorf("start %s", line)
			}
		case "session.end":
			ends++
			if ev.BytesOut == nil || *ev.BytesOut == 0 || ev.ExitCode == nil || ev.Recording != ev.Session || ev.Result == "" {
				t.Errorf("end %s", line)
			}
		}
	}
	if starts != 3 || ends != 3 {
		t.Errorf("%d starts and %d ends in the trail:\n%s", starts, ends, b)
	}

	t.Run("attach resized by another", func(t *testing.T) {
		// An attacher's recording has the pty's resizes, whoever made them:
		// a replay draws at the size the process drew for.
		if resp := g.do(t, "POST", "/api/v1/containers", map[string]any{"id": "term", "command": []string{"sh"}, "tty": true, "stdin": true}, nil); resp.StatusCode != http.StatusCreated {
			t.Fatalf("create: %d", resp.StatusCode)
		}
		defer g.do(t, "DELETE", "/api/v1/containers/term", nil, nil)
		attach := "/api/v1/containers/term/attach?stdin=1&stdout=1&tty=1"
		a := g.dialWS(t, attach, "v5.channel.k8s.io")
		defer a.Close()
		waitActive(t, g, 1)
		var l struct{ Items []sessionInfo }
		g.do(t, "GET", "/api/v1/sessions?state=active&kind=attach", nil, &l)
		if len(l.Items) != 1 {
			t.Fatalf("attach sessions %+v", l.Items)
		}
		watcher := l.Items[0].ID
		b := g.dialWS(t, attach, "v5.channel.k8s.io")
		defer b.Close()
		waitActive(t, g, 2)
		b.WriteMessage(websocket.BinaryMessage, []byte("\x04"+`{"Width":120,"Height":40}`))
		b.WriteMessage(websocket.BinaryMessage, []byte("\x00stty size\n"))
		var out []byte
		a.SetReadDeadline(time.Now().Add(10 * time.Second))
		for !bytes.Contains(out, []byte("40 120")) {
			_, m, err := a.ReadMessage()
			if err != nil {
				t.Fatalf("the watcher: %v after %q", err, out)
			}
			if len(m) > 0 && m[0] == 1 {
				out = append(out, m[1:]...)
			}
		}
		a.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
		for ended := false; !ended; time.Sleep(20 * time.Millisecond) {
			var list struct {
				Items []struct {
					ID     string
					Active bool
				}
			}
			g.do(t, "GET", "/api/v1/recordings?container=term", nil, &list)
			ended = slices.ContainsFunc(list.Items, func(it struct {
				ID     string
				Active bool
			}) bool {
				return it.ID == watcher && !it.Active
			})
		}
		resp, err := http.DefaultClient.Do(authed(g, "GET", "/api/v1/recordings/"+watcher))
		if err != nil {
			t.Fatal(err)
		}
		cast, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		_, evs := events(t, cast)
		if !slices.ContainsFunc(evs, func(ev [3]any) bool { return ev[1] == "r" && ev[2] == "120x40" }) {
			t.Errorf("the watcher's recording has no resize to 120x40: %v", evs)
		}
	})
}

// TestWebRecordings: the page lists a recording and plays it, and a seek
// to the end shows the final screen's text; a recording still being
// written is followed live.
func TestWebRecordings(t *testing.T) {
	g := webGateway(t, "--record-dir", t.TempDir())
	b := newBrowser(t, g)
	b.loginOK()

	// A finished session: its last screen holds the marker.
	marker := fmt.Sprintf("final-%d", time.Now().UnixNano())
	r := runRecorded(t, g, []string{"sh", "-c", "printf 'first\\n'; sleep 0.5; printf '" + marker + "\\n'"})
	if !bytes.Contains(r.out, []byte(marker)) {
		t.Fatalf("output %q", r.out)
	}
	play := fmt.Sprintf(`#recordings tr.recording[data-id=%q][data-active="false"] button.play`, r.session)
	b.do(20*time.Second, chromedp.WaitVisible(chromedp.CSS(play)), chromedp.Click(chromedp.CSS(play)))
	b.waitFor("the player", 20*time.Second, func() bool {
		p, err := eval[map[string]any](b, "gatewayDebug.player()")
		return err == nil && p != nil && p["duration"] != nil
	})
	if _, err := eval[any](b, "gatewayDebug.seekEnd().then(() => true)"); err != nil {
		t.Fatal(err)
	}
	b.waitFor("the final screen in the player", 20*time.Second, func() bool {
		s, _ := eval[string](b, "gatewayDebug.playerText()")
		return strings.Contains(s, marker) && strings.Contains(s, "first")
	})

	// Another speed: the player starts again from where it was.
	mustEval[bool](b, `(() => { const s = document.getElementById("player-speed"); s.value = "4"; s.dispatchEvent(new Event("change")); return true })()`)
	b.waitFor("the player at 4x, at the end", 20*time.Second, func() bool {
		p, _ := eval[map[string]any](b, "gatewayDebug.player()")
		s, _ := eval[string](b, "gatewayDebug.playerText()")
		return p != nil && p["speed"] == 4.0 && strings.Contains(s, marker)
	})

	// A session still running: followed as it goes.
	c := g.dialWS(t, execPath("box", "stdout", "sh", "-c", "echo live-1; read x; echo live-2; sleep 60"), "v5.channel.k8s.io")
	defer c.Close()
	readUntil(t, c, func(b []byte) bool { return bytes.Contains(b, []byte("live-1")) })
	var list struct {
		Items []struct {
			ID     string
			Active bool
		}
	}
	g.do(t, "GET", "/api/v1/recordings?container=box", nil, &list)
	id := list.Items[len(list.Items)-1].ID
	if !list.Items[len(list.Items)-1].Active {
		t.Fatalf("recordings %+v", list.Items)
	}
	follow := fmt.Sprintf(`#recordings tr.recording[data-id=%q][data-active="true"] button.play`, id)
	b.do(20*time.Second, chromedp.WaitVisible(chromedp.CSS(follow)), chromedp.Click(chromedp.CSS(follow)))
	b.waitFor("live-1 in the player", 20*time.Second, func() bool {
		s, _ := eval[string](b, "gatewayDebug.playerText()")
		return strings.Contains(s, "live-1")
	})
	c.WriteMessage(websocket.BinaryMessage, []byte("\x00go\n"))
	b.waitFor("live-2 in the player", 20*time.Second, func() bool {
		s, _ := eval[string](b, "gatewayDebug.playerText()")
		return strings.Contains(s, "live-2")
	})
}

// TestRecordingRequired: when recordings cannot be written, a container
// that requires them refuses its sessions with a clear reason, and one
// that does not goes on unrecorded.
func TestRecordingRequired(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "recordings")
	g := startGateway(t, "--record-dir", dir)
	g.createContainer(t, map[string]any{"id": "must", "command": []string{"sleep", "1000000"}, "record": "required"})
	if err := os.RemoveAll(dir); err != nil { // the disk is gone
		t.Fatal(err)
	}
	c := g.dialWS(t, execPath("must", "stdout", "echo", "unrecorded"), "v5.channel.k8s.io")
	var status string
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		_, m, err := c.ReadMessage()
		if err != nil {
			break
		}
		if len(m) > 0 && m[0] == 1 && len(m) > 1 {
			t.Errorf("the unrecorded command ran: %q", m[1:])
		}
		if len(m) > 0 && m[0] == 3 {
			status = string(m[1:])
		}
	}
	if !strings.Contains(status, "must be recorded") || !strings.Contains(status, `"status":"Failure"`) {
		t.Errorf("status %s", status)
	}
	// Not required: the session goes on, unrecorded.
	c = g.dialWS(t, execPath("box", "stdout", "echo", "fine"), "v5.channel.k8s.io")
	if out := readUntil(t, c, func(b []byte) bool { return bytes.Contains(b, []byte("fine\n")) }); string(out) != "fine\n" {
		t.Errorf("output %q", out)
	}
	resp, err := http.Get(g.url + "metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if !bytes.Contains(b, []byte("gateway_recording_write_errors_total 2")) {
		t.Errorf("the failed starts are not counted:\n%s", grepLines(b, "gateway_recording"))
	}
}

func grepLines(b []byte, s string) string {
	var out []string
	for l := range strings.SplitSeq(string(b), "\n") {
		if strings.Contains(l, s) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
