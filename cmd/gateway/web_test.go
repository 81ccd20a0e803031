package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/input"
	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/performance"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"gateway/internal/tooltest"
)

// The web terminal's tests drive the embedded page in a headless Chromium
// against a gateway started in this process. They need the page built
// (make web) and /usr/bin/chromium (make test installs both).

// webGateway starts a gateway for a browser test with a bash container
// "sh" (SHELL is the same bash, so "new shell" is bash too), skipping when
// the browser or the built page is missing. The bash reads no profile and
// no rc file, and HOME is the test's own: nothing of the machine's user
// slows it down or changes its prompt.
func webGateway(t *testing.T, args ...string) *gateway {
	t.Helper()
	if _, err := os.Stat(tooltest.Chromium); err != nil {
		tooltest.SkipOrFail(t, tooltest.Chromium+" not found: make test installs it (apt-get install chromium)")
	}
	g := startGateway(t, args...)
	resp, err := http.Get(g.url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode == http.StatusServiceUnavailable {
		tooltest.SkipOrFail(t, "the web terminal is not built into this test binary: run make web (npm and esbuild)")
	}
	if resp.StatusCode != 200 {
		t.Fatalf("GET / = %d, want 200: the gateway does not serve the web terminal at /", resp.StatusCode)
	}
	bash := filepath.Join(t.TempDir(), "bash")
	if err := os.WriteFile(bash, []byte("#!/bin/sh\nexec /bin/bash --noprofile --norc \"$@\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	g.createContainer(t, map[string]any{"id": "sh", "command": []string{bash, "-l"}, "tty": true, "stdin": true,
		"restartPolicy": "always", "env": map[string]string{"SHELL": bash, "HOME": t.TempDir(), "LANG": "C.UTF-8"}})
	return g
}

// createContainer creates a container and waits until it runs.
func (g *gateway) createContainer(t *testing.T, spec map[string]any) {
	t.Helper()
	if resp := g.do(t, "POST", "/api/v1/containers", spec, nil); resp.StatusCode != 201 {
		t.Fatalf("create container %v: %d", spec["id"], resp.StatusCode)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		var c struct{ State string }
		g.do(t, "GET", "/api/v1/containers/"+spec["id"].(string), nil, &c)
		if c.State == "running" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("container %v is %s after 10s", spec["id"], c.State)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// browser is one headless Chromium with one tab.
type browser struct {
	t   *testing.T
	g   *gateway
	ctx context.Context // the tab; every action runs with its own timeout

	mu       sync.Mutex
	problems []string // exceptions and CSP violations in the page
	requests []string // the URLs the page requested (fragments are not sent)
}

func newBrowser(t *testing.T, g *gateway) *browser {
	t.Helper()
	ctx := tooltest.StartChromium(t, 1280, 800, chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		if _, err := cdp.Call(ctx, tg, cdplog.Enable, cdp.Empty{}); err != nil {
			return err
		}
		_, err := cdp.Call(ctx, tg, performance.Enable, performance.EnableParams{})
		return err
	}))
	b := &browser{t: t, g: g, ctx: ctx}
	if err := chromedp.Listen(ctx, b.onEvent); err != nil {
		t.Fatal(err)
	}
	b.do(10*time.Second, chromedp.EmulateViewport(1280, 800))
	t.Cleanup(func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		for _, p := range b.problems {
			t.Errorf("page: %s", p)
		}
	})
	return b
}

// recordRequests has the browser report the URLs the page requests. (Only
// where needed: it reports every WebSocket frame too.)
func (b *browser) recordRequests() {
	b.t.Helper()
	b.do(10*time.Second, chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := cdp.Call(ctx, tg, network.Enable, network.EnableParams{})
		return err
	}))
}

// onEvent records the page's exceptions and CSP violations (it runs in
// chromedp's reader: no calls into the browser from here).
func (b *browser) onEvent(ev any) {
	var msg string
	switch ev := ev.(type) {
	case *runtime.EventExceptionThrown:
		msg = "exception: " + ev.ExceptionDetails.Text
		if ev.ExceptionDetails.Exception != nil {
			msg += " " + ev.ExceptionDetails.Exception.Description
		}
	case *network.EventRequestWillBeSent:
		b.mu.Lock()
		b.requests = append(b.requests, ev.Request.URL)
		b.mu.Unlock()
		return
	case *network.EventWebSocketCreated:
		b.mu.Lock()
		b.requests = append(b.requests, ev.URL)
		b.mu.Unlock()
		return
	case *cdplog.EventEntryAdded:
		if !strings.Contains(ev.Entry.Text, "Content Security Policy") {
			return
		}
		msg = "CSP: " + ev.Entry.Text
	default:
		return
	}
	b.mu.Lock()
	b.problems = append(b.problems, msg)
	b.mu.Unlock()
}

// do runs actions within timeout, failing the test on an error.
func (b *browser) do(timeout time.Duration, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, timeout)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		b.t.Fatalf("browser: %v\nstatus %q\nscreen:\n%s", err, b.statusText(), b.tail(30))
	}
}

// eval evaluates a JavaScript expression in the page, within 10s.
func eval[T any](b *browser, expr string) (T, error) {
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	return chromedp.Run(ctx, chromedp.Evaluate[T](expr))
}

func mustEval[T any](b *browser, expr string) T {
	b.t.Helper()
	v, err := eval[T](b, expr)
	if err != nil {
		b.t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// tail is the last n lines of the active terminal (scrollback included).
func (b *browser) tail(n int) string {
	s, _ := eval[string](b, fmt.Sprintf("window.gatewayDebug ? gatewayDebug.bufferText(%d) : ''", n))
	return s
}

func (b *browser) status() string {
	s, _ := eval[string](b, "window.gatewayDebug ? gatewayDebug.status() : ''")
	return s
}

func (b *browser) statusText() string {
	s, _ := eval[string](b, `(document.getElementById("status") || {}).textContent || ""`)
	return s
}

// waitFor polls cond until it holds, failing after timeout.
func (b *browser) waitFor(what string, timeout time.Duration, cond func() bool) {
	b.t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			b.t.Fatalf("waited %v for %s; status %q; screen:\n%s", timeout, what, b.statusText(), b.tail(40))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// hasLine reports whether one of the last n lines of the terminal, right
// trimmed, is line.
func (b *browser) hasLine(line string, n int) bool {
	for _, l := range strings.Split(b.tail(n), "\n") {
		if strings.TrimRight(l, " ") == line {
			return true
		}
	}
	return false
}

func (b *browser) waitLine(line string, timeout time.Duration) {
	b.t.Helper()
	b.waitFor(fmt.Sprintf("the line %q", line), timeout, func() bool { return b.hasLine(line, 200) })
}

func (b *browser) waitStatus(state string, timeout time.Duration) {
	b.t.Helper()
	b.waitFor("status "+state, timeout, func() bool { return b.status() == state })
}

// open loads the page at the fragment (such as "#/exec/sh").
func (b *browser) open(fragment string) {
	b.t.Helper()
	b.do(20*time.Second, chromedp.Navigate(b.g.url+fragment), chromedp.WaitReady(chromedp.CSS("body")))
}

// login logs in through the login screen.
func (b *browser) login(token string) {
	b.t.Helper()
	b.do(20*time.Second,
		chromedp.WaitVisible(chromedp.ID("token")),
		chromedp.SendKeys(chromedp.ID("token"), token),
		chromedp.Click(chromedp.ID("login-submit")),
	)
}

// loginOK logs in and waits for the container list.
func (b *browser) loginOK() {
	b.t.Helper()
	b.open("")
	b.login(b.g.token)
	b.do(20*time.Second, chromedp.WaitVisible(chromedp.CSS(`#containers tr[data-id="sh"]`)))
}

// newShell clicks "new shell" of a container and waits until it is
// connected and bash has printed its prompt.
func (b *browser) newShell(container string) {
	b.t.Helper()
	b.do(20*time.Second, chromedp.Click(chromedp.CSS(fmt.Sprintf(`#containers tr[data-id=%q] button.exec:not([disabled])`, container))))
	b.waitShell()
}

// waitShell waits for a connected shell, and sets a prompt that tests can
// recognize.
func (b *browser) waitShell() {
	b.t.Helper()
	b.waitStatus("connected", 20*time.Second)
	b.waitFor("the shell's first prompt", 20*time.Second, func() bool { return strings.TrimSpace(b.tail(10)) != "" })
	b.typeKeys("PS1='gw-prompt> '\r")
	b.waitPrompt(10 * time.Second)
}

// atPrompt reports whether the last non-empty line is the test prompt.
func (b *browser) atPrompt() bool {
	lines := strings.Split(strings.TrimRight(b.tail(5), "\n "), "\n")
	return strings.TrimSpace(lines[len(lines)-1]) == "gw-prompt>"
}

func (b *browser) waitPrompt(timeout time.Duration) {
	b.t.Helper()
	b.waitFor("the prompt", timeout, b.atPrompt)
}

// typeKeys clicks into the active terminal and types, as a user does.
func (b *browser) typeKeys(s string) {
	b.t.Helper()
	b.do(20*time.Second,
		chromedp.Click(chromedp.CSS(".term-pane.active .xterm-screen")),
		typeText(s),
	)
}

// typeText types s as a keyboard does: a keydown that carries the text,
// then a keyup. (chromedp.KeyEvent sends the text in a separate char event,
// which a page that handles the keydown, as xterm.js does, sees as a second
// keystroke.)
func typeText(s string) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		for _, r := range s {
			var down, up input.DispatchKeyEventParams
			for _, e := range kb.Encode(r) {
				switch e.Type {
				case kb.KeyDown:
					down = *e
				case kb.KeyChar:
					down.Text, down.UnmodifiedText = e.Text, e.UnmodifiedText
				case kb.KeyUp:
					up = *e
				}
			}
			if down.Text == "" {
				down.Type = kb.KeyRawDown
			}
			for _, e := range []input.DispatchKeyEventParams{down, up} {
				if _, err := cdp.Call(ctx, tg, input.DispatchKeyEvent, e); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

// run types a command line and Enter.
func (b *browser) run(cmd string) { b.t.Helper(); b.typeKeys(cmd + "\r") }

// termSize is the active terminal's size as the page sees it.
func (b *browser) termSize() (cols, rows int) {
	b.t.Helper()
	sz := mustEval[struct{ Cols, Rows int }](b, "gatewayDebug.size()")
	return sz.Cols, sz.Rows
}

// heapUsed is the page's JavaScript heap in use, from Performance.getMetrics.
func (b *browser) heapUsed() float64 {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	m, err := chromedp.Call(ctx, performance.GetMetrics, cdp.Empty{})
	if err != nil {
		b.t.Fatalf("Performance.getMetrics: %v", err)
	}
	for _, x := range m.Metrics {
		if x.Name == "JSHeapUsedSize" {
			return x.Value
		}
	}
	b.t.Fatal("no JSHeapUsedSize metric")
	return 0
}

// TestWebLogin: a wrong token keeps the login screen with an error; the
// right one shows the containers; logout returns to the login screen; a
// #token= link logs in and leaves no token in the URL.
func TestWebLogin(t *testing.T) {
	g := webGateway(t)
	b := newBrowser(t, g)
	b.recordRequests()
	b.open("")
	b.login("not-the-token")
	b.do(10*time.Second, chromedp.WaitVisible(chromedp.ID("login-error")))
	msg := mustEval[string](b, `document.getElementById("login-error").textContent`)
	if !strings.Contains(msg, "not valid") {
		t.Errorf("login error %q", msg)
	}
	if !mustEval[bool](b, `document.getElementById("app").hidden && !document.getElementById("login").hidden`) {
		t.Error("after a wrong token, the login screen is not the one shown")
	}

	b.do(10*time.Second, chromedp.Evaluate[chromedp.Void](`document.getElementById("token").value = ""`))
	b.login(g.token)
	b.do(10*time.Second,
		chromedp.WaitVisible(chromedp.CSS(`#containers tr[data-id="box"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#containers tr[data-id="sh"] button.exec`)),
		chromedp.WaitNotVisible(chromedp.ID("login")),
	)
	if st := mustEval[string](b, `document.querySelector('#containers tr[data-id="sh"] td.state').textContent`); st != "running" {
		t.Errorf("sh state %q", st)
	}

	b.do(10*time.Second, chromedp.Click(chromedp.ID("logout")), chromedp.WaitVisible(chromedp.ID("token")))
	// The cookie is gone: a reload shows the login screen.
	b.do(10*time.Second, chromedp.Reload())
	b.do(10*time.Second, chromedp.WaitVisible(chromedp.ID("token")))
	b.login(g.token)
	b.do(10*time.Second, chromedp.WaitVisible(chromedp.CSS(`#containers tr[data-id="sh"]`)))

	// The link of the startup log, opened in a new page, and pasted into
	// the page's address bar (a fragment change, no reload).
	for _, tc := range []struct{ name, before string }{{"load", "about:blank"}, {"hashchange", ""}} {
		b.do(10*time.Second, chromedp.Click(chromedp.ID("logout")), chromedp.WaitVisible(chromedp.ID("token")))
		if tc.before != "" {
			b.do(10*time.Second, chromedp.Navigate(tc.before))
		}
		b.open("#token=" + g.token)
		b.do(10*time.Second, chromedp.WaitVisible(chromedp.CSS(`#containers tr[data-id="sh"]`)))
		if href := mustEval[string](b, "location.href"); strings.Contains(href, g.token) || strings.Contains(href, "#") {
			t.Errorf("%s: the token stays in the URL: %s", tc.name, href)
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.requests) == 0 {
		t.Error("no requests seen")
	}
	for _, u := range b.requests {
		if strings.Contains(u, g.token) {
			t.Errorf("a request carried the token in its URL: %s", u)
		}
	}
	t.Logf("%d requests, none with the token in its URL", len(b.requests))
}

// TestWebShell: a new shell runs a command, and its output comes back.
func TestWebShell(t *testing.T) {
	g := webGateway(t)
	b := newBrowser(t, g)
	b.loginOK()
	b.newShell("sh")
	want := fmt.Sprintf("hello-%d", rand.IntN(1e9))
	b.run("echo " + want)
	b.waitLine(want, 10*time.Second)
	// The DOM renderer shows it too, at its next animation frame.
	b.waitFor(fmt.Sprintf(".xterm-rows showing the line %q", want), 10*time.Second, func() bool {
		rows := mustEval[string](b, `document.querySelector(".term-pane.active .xterm-rows").innerText`)
		return regexp.MustCompile(`(?m)^` + want + `\s*$`).MatchString(rows)
	})
	if tabs := mustEval[[]map[string]any](b, "gatewayDebug.tabs()"); len(tabs) != 1 || tabs[0]["kind"] != "exec" {
		t.Errorf("tabs %v", tabs)
	}

	// The sessions list's close button ends the shell (4000): there is
	// nothing to join again, and Enter starts a new shell.
	b.do(10*time.Second, chromedp.Click(chromedp.CSS(`#sessions tr.session button.close`)))
	b.waitStatus("exited", 10*time.Second)
	b.waitLine("[connection closed: session closed through the API; press Enter for a new shell]", 10*time.Second)
	b.typeKeys("\r")
	b.waitShell()

	// An exit is the end: its code shows, and the page does not reconnect.
	b.run("exit 3")
	b.waitStatus("exited", 10*time.Second)
	b.waitLine("[process exited with code 3; press Enter for a new shell]", 10*time.Second)
	if s := b.statusText(); s != "exited (code 3)" {
		t.Errorf("status %q", s)
	}
	time.Sleep(time.Second)
	if s := b.status(); s != "exited" {
		t.Errorf("status %q a second after the exit", s)
	}
	// Enter starts again.
	b.typeKeys("\r")
	b.waitShell()
}

// TestWebResize: the terminal follows the viewport, and so does the pty.
func TestWebResize(t *testing.T) {
	g := webGateway(t)
	b := newBrowser(t, g)
	b.loginOK()
	b.newShell("sh")

	sizes := map[[2]int]bool{}
	for i, vp := range [][2]int64{{1280, 800}, {900, 500}, {1600, 1000}} {
		b.do(10*time.Second, chromedp.EmulateViewport(vp[0], vp[1]))
		var cols, rows int
		// The page refits at the next frame after the window's resize.
		b.waitFor("the terminal to fit the viewport", 10*time.Second, func() bool {
			c, r := b.termSize()
			if c == cols && r == rows && c > 0 {
				return true
			}
			cols, rows = c, r
			time.Sleep(100 * time.Millisecond)
			return false
		})
		want := fmt.Sprintf("%d %d", rows, cols)
		b.run(fmt.Sprintf("echo size-%d $(stty size)", i))
		b.waitLine(fmt.Sprintf("size-%d %s", i, want), 10*time.Second)
		t.Logf("viewport %dx%d: terminal %d cols x %d rows, stty size %q", vp[0], vp[1], cols, rows, want)
		sizes[[2]int{cols, rows}] = true
	}
	if len(sizes) != 3 {
		t.Errorf("three viewports gave %d terminal sizes: %v", len(sizes), sizes)
	}
}

// TestWebAttachReconnect: an attach cut from the server side reconnects by
// itself, and the replayed scrollback restores the screen, once.
func TestWebAttachReconnect(t *testing.T) {
	g := webGateway(t)
	g.createContainer(t, map[string]any{"id": "printer", "tty": true,
		"command": []string{"/bin/bash", "-c", "for i in 1 2 3; do echo known-line-$i; done; exec sleep 1000000"}})
	b := newBrowser(t, g)
	b.loginOK()
	b.do(10*time.Second, chromedp.Click(chromedp.CSS(`#containers tr[data-id="printer"] button.attach:not([disabled])`)))
	b.waitStatus("connected", 20*time.Second)
	for i := 1; i <= 3; i++ {
		b.waitLine(fmt.Sprintf("known-line-%d", i), 10*time.Second)
	}

	var list struct{ Items []struct{ ID, Target string } }
	g.do(t, "GET", "/api/v1/sessions?state=active&kind=attach", nil, &list)
	if len(list.Items) != 1 || list.Items[0].Target != "printer" {
		t.Fatalf("active attach sessions: %+v", list.Items)
	}
	first := list.Items[0].ID
	if resp := g.do(t, "DELETE", "/api/v1/sessions/"+first, nil, nil); resp.StatusCode != 204 {
		t.Fatalf("DELETE session: %d", resp.StatusCode)
	}
	start := time.Now()
	b.waitFor("reconnecting", 10*time.Second, func() bool {
		return strings.Contains(strings.Join(mustEval[[]string](b, "gatewayDebug.history()"), " "), "reconnecting")
	})
	b.waitStatus("connected", 20*time.Second)
	t.Logf("reconnected %v after the DELETE; states %v", time.Since(start).Round(time.Millisecond),
		mustEval[[]string](b, "gatewayDebug.history()"))
	for i := 1; i <= 3; i++ {
		b.waitLine(fmt.Sprintf("known-line-%d", i), 10*time.Second)
	}
	// The screen was cleared before the replay: every line shows once, and
	// the notice of the lost connection is gone.
	time.Sleep(300 * time.Millisecond)
	text := b.tail(0)
	for i := 1; i <= 3; i++ {
		if n := strings.Count(text, fmt.Sprintf("known-line-%d", i)); n != 1 {
			t.Errorf("known-line-%d shows %d times:\n%s", i, n, text)
		}
	}
	g.do(t, "GET", "/api/v1/sessions?state=active&kind=attach", nil, &list)
	if len(list.Items) != 1 || list.Items[0].ID == first {
		t.Errorf("active attach sessions after the reconnect: %+v", list.Items)
	}
}

// TestWebDeepLink: /#/exec/sh opens a shell right after the login.
func TestWebDeepLink(t *testing.T) {
	g := webGateway(t)
	b := newBrowser(t, g)
	b.open("#/exec/sh")
	b.login(g.token)
	b.waitShell()
	want := fmt.Sprintf("deep-%d", rand.IntN(1e9))
	b.run("echo " + want)
	b.waitLine(want, 10*time.Second)
	tabs := mustEval[[]map[string]any](b, "gatewayDebug.tabs()")
	if len(tabs) != 1 || tabs[0]["kind"] != "exec" || tabs[0]["container"] != "sh" {
		t.Fatalf("tabs %v", tabs)
	}
	// The URL now names the shell's session, so a reload joins it.
	if h, want := mustEval[string](b, "location.hash"), fmt.Sprintf("#/session/%v", tabs[0]["session"]); h != want {
		t.Errorf("location.hash %q, want %q", h, want)
	}
}

// TestWebFlood: a flood of output neither makes Ctrl-C slow nor the page's
// memory grow, and a large output gets through whole.
func TestWebFlood(t *testing.T) {
	g := webGateway(t)
	b := newBrowser(t, g)
	b.loginOK()
	b.newShell("sh")
	heapBefore := b.heapUsed()

	b.run("yes")
	b.waitFor("yes to flood", 10*time.Second, func() bool { return b.hasLine("y", 5) })
	// The gateway stays within its window (512 KiB) of what the page has
	// processed: without flow control it would be far ahead.
	var maxAhead int64
	var processed struct{ Processed int64 }
	for start := time.Now(); time.Since(start) < 5*time.Second; time.Sleep(250 * time.Millisecond) {
		processed = mustEval[struct{ Processed int64 }](b, "gatewayDebug.flow()")
		maxAhead = max(maxAhead, g.execBytesOut(t)-processed.Processed)
	}
	heapFlood := b.heapUsed()
	t.Logf("yes: %.1f MB on screen in 5s; the gateway was at most %d KiB ahead of the page", float64(processed.Processed)/1e6, maxAhead>>10)
	if maxAhead > 2<<20 {
		t.Errorf("the gateway ran %d KiB ahead of the page", maxAhead>>10)
	}
	start := time.Now()
	b.do(10*time.Second, chromedp.KeyEvent("c", chromedp.KeyModifiers(chromedp.ModifierCtrl)))
	b.waitPrompt(5 * time.Second)
	t.Logf("Ctrl-C to prompt after 5s of yes: %v", time.Since(start).Round(time.Millisecond))
	t.Logf("JS heap used: %.1f MB before, %.1f MB during the flood", heapBefore/1e6, heapFlood/1e6)
	if heapFlood > 200e6 {
		t.Errorf("JS heap %.1f MB during the flood", heapFlood/1e6)
	}

	done := fmt.Sprintf("done-%d", rand.IntN(1e9))
	start = time.Now()
	b.run("head -c 50000000 /dev/urandom | base64; echo " + done)
	b.waitFor("the end of 50 MB in base64", 120*time.Second, func() bool { return b.hasLine(done, 5) })
	elapsed := time.Since(start)
	heapAfter := b.heapUsed()
	t.Logf("50 MB of /dev/urandom in base64 (%d bytes) on screen in %v (%.1f MB/s)", base64Len(50000000),
		elapsed.Round(time.Millisecond), float64(base64Len(50000000))/1e6/elapsed.Seconds())
	t.Logf("JS heap used after it: %.1f MB", heapAfter/1e6)
	if heapAfter > 200e6 {
		t.Errorf("JS heap %.1f MB after 50 MB of output", heapAfter/1e6)
	}
	if out := g.execBytesOut(t); out < int64(base64Len(50000000)) {
		t.Errorf("the exec session sent %d bytes", out)
	}
}

// execBytesOut is the output count of the one active exec session.
func (g *gateway) execBytesOut(t *testing.T) int64 {
	t.Helper()
	var list struct{ Items []struct{ BytesOut int64 } }
	g.do(t, "GET", "/api/v1/sessions?state=active&kind=exec", nil, &list)
	if len(list.Items) != 1 {
		t.Fatalf("%d active exec sessions", len(list.Items))
	}
	return list.Items[0].BytesOut
}

// base64Len is the length of base64's output for n bytes: 76-column lines.
func base64Len(n int) int {
	enc := (n + 2) / 3 * 4
	return enc + (enc+75)/76
}

// TestWebScreenshot shows colors and Unicode in a shell; with
// UPDATE_SCREENSHOT=1 it saves the page as docs/terminal.png.
func TestWebScreenshot(t *testing.T) {
	g := webGateway(t)
	g.createContainer(t, map[string]any{"id": "web", "command": []string{"sh", "-c", "echo serving; exec sleep 1000000"}})
	b := newBrowser(t, g)
	b.do(10*time.Second, chromedp.EmulateViewport(1280, 720))
	b.loginOK()
	b.newShell("sh")
	// A small project to list, and a prompt of its own.
	dir := t.TempDir()
	b.run(fmt.Sprintf("cd %s && mkdir -p src docs && touch README.md go.mod main.go notes.txt && "+
		"printf '#!/bin/sh\\n' > run.sh && chmod +x run.sh && ln -s src link && tar czf backup.tar.gz README.md && "+
		`PS1='\[\e[1;32m\]you@gateway\[\e[0m\]:\[\e[1;34m\]~/project\[\e[0m\]\$ ' && clear`, dir))
	prompt := regexp.MustCompile(`^you@gateway:~/project[#$]$`)
	atPrompt := func() bool {
		lines := strings.Split(strings.TrimRight(b.tail(5), "\n "), "\n")
		return prompt.MatchString(strings.TrimSpace(lines[len(lines)-1]))
	}
	b.waitFor("the new prompt", 10*time.Second, atPrompt)
	const unicode = "Unicode: ✓ λ → ∞ ★ café Ωμέγα ½ ┌─┐ ░▒▓█"
	for _, cmd := range []string{
		"ls --color=always -F",
		"ls --color=always /usr",
		`printf '\e[1;31mred \e[32mgreen \e[33myellow \e[34mblue \e[35mmagenta \e[36mcyan\e[0m \e[1mbold\e[0m \e[4munderline\e[0m \e[7mreverse\e[0m\n'`,
		`for i in $(seq 16 51); do printf '\e[48;5;%dm  ' $i; done; printf '\e[0m\n'`,
		"echo '" + unicode + "'",
	} {
		b.run(cmd)
		time.Sleep(100 * time.Millisecond)
		b.waitFor("the prompt after "+cmd, 10*time.Second, atPrompt)
	}
	if !b.hasLine(unicode, 10) {
		t.Errorf("no line %q:\n%s", unicode, b.tail(20))
	}
	colored := mustEval[int](b, `document.querySelectorAll(".term-pane.active .xterm-rows span[class*='xterm-fg-']").length`)
	if colored == 0 {
		t.Errorf("no colored text in the terminal")
	}
	if os.Getenv("UPDATE_SCREENSHOT") != "1" {
		return
	}
	// The sessions list refreshes every few seconds: wait for the shell's
	// byte counts.
	b.waitFor("the session's counters", 10*time.Second, func() bool {
		s, _ := eval[string](b, `(document.querySelector("#sessions tr.session td.out") || {}).textContent || ""`)
		return s != "" && s != "0 B"
	})
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join("..", "..", "docs", "terminal.png")
	if err := os.WriteFile(out, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s (%s bytes)", out, strconv.Itoa(len(png)))
}

// TestWebShareLinkInOpenPage: a share link pasted into the address bar of
// an open gateway page (only the fragment changes: no load) opens its view.
func TestWebShareLinkInOpenPage(t *testing.T) {
	g := webGateway(t)
	c := g.dialWS(t, execPath("box", "stdin,stdout,tty", "sh", "-c", "echo shared-marker-42; sleep 60")+"&detach=1m", "v5.channel.k8s.io")
	readUntil(t, c, func(b []byte) bool { return strings.Contains(string(b), "shared-marker-42") })
	id := g.newActive(t, map[string]bool{})
	var sh struct{ URL, Message string }
	if resp := g.do(t, "POST", "/api/v1/sessions/"+id+"/shares", map[string]any{"mode": "view", "ttlSeconds": 600}, &sh); resp.StatusCode != 201 {
		t.Fatalf("share: %d %s", resp.StatusCode, sh.Message)
	}
	b := newBrowser(t, g)
	b.loginOK()
	b.do(10*time.Second, chromedp.Evaluate[chromedp.Void](fmt.Sprintf("location.href = %q; 0", sh.URL)))
	b.waitFor("the shared session's view", 20*time.Second, func() bool {
		tabs, err := eval[[]map[string]any](b, "gatewayDebug.tabs()")
		return err == nil && len(tabs) == 1 && tabs[0]["session"] == id && strings.Contains(b.tail(5), "shared-marker-42")
	})
}

// TestWebReplicaDown: the page names a replica that does not answer (its
// items are missing from the lists, not gone).
func TestWebReplicaDown(t *testing.T) {
	gs := replicas(t, 2)
	b := newBrowser(t, gs[0])
	b.open("")
	b.login(gs[0].token)
	b.do(20*time.Second, chromedp.WaitVisible(chromedp.CSS(`#containers tr[data-id="c2@n2"]`)))
	if err := gs[1].stop(); err != nil {
		t.Fatal(err)
	}
	b.waitFor("word of n2", 30*time.Second, func() bool {
		text, err := eval[string](b, `(e => e.hidden ? "" : e.textContent)(document.getElementById("unreachable"))`)
		return err == nil && strings.Contains(text, "Not answering: n2")
	})
}
