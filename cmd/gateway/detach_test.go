package main

import (
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"gateway/internal/tooltest"
)

// cutProxy forwards TCP connections to a gateway; cut drops every one it
// carries at once, as a Wi-Fi change or a proxy's idle timeout does.
type cutProxy struct {
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
	wg    sync.WaitGroup
}

func newCutProxy(t *testing.T, target string) *cutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln}
	p.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, up)
			p.mu.Unlock()
			p.wg.Go(func() { io.Copy(up, c); up.Close() })
			p.wg.Go(func() { io.Copy(c, up); c.Close() })
		}
	})
	t.Cleanup(func() {
		ln.Close()
		p.cut()
		p.wg.Wait()
	})
	return p
}

func (p *cutProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// screen is the active terminal's screen as the page shows it.
type screen struct {
	Rows   []string
	Cursor [2]int
	Alt    bool
}

func (b *browser) screen() screen {
	b.t.Helper()
	return mustEval[screen](b, "gatewayDebug.screen()")
}

// settledScreen waits until the screen holds want and stops changing.
func (b *browser) settledScreen(want string) screen {
	b.t.Helper()
	var last screen
	b.waitFor(fmt.Sprintf("a settled screen with %q", want), 20*time.Second, func() bool {
		s := b.screen()
		ok := strings.Contains(strings.Join(s.Rows, "\n"), want) && slices.Equal(s.Rows, last.Rows) && s.Cursor == last.Cursor
		last = s
		if !ok {
			time.Sleep(200 * time.Millisecond)
		}
		return ok
	})
	return last
}

// waitScreen waits until the screen is want, row by row.
func (b *browser) waitScreen(what string, want screen) {
	b.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		got := b.screen()
		if slices.Equal(got.Rows, want.Rows) && got.Cursor == want.Cursor && got.Alt == want.Alt {
			return
		}
		if time.Now().After(deadline) {
			var diff strings.Builder
			for y := range max(len(got.Rows), len(want.Rows)) {
				g, w := at(got.Rows, y), at(want.Rows, y)
				if g != w {
					fmt.Fprintf(&diff, "row %d: %q\n  want %q\n", y, g, w)
				}
			}
			b.t.Fatalf("%s: the screen differs (cursor %v alt %v, want %v %v):\n%s", what, got.Cursor, got.Alt, want.Cursor, want.Alt, diff.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func at(s []string, i int) string {
	if i < len(s) {
		return s[i]
	}
	return "<none>"
}

// TestWebDetach: vim in the page's shell survives a dropped connection
// (the page joins the shell again and every row of the screen is as it
// was; typing into vim still works), a reload (the sessions list offers
// the detached shell), and shows read-only through a share link, where
// typing changes nothing.
func TestWebDetach(t *testing.T) {
	if _, err := exec.LookPath("vim"); err != nil {
		tooltest.SkipOrFail(t, "vim is not installed: make test installs it")
	}
	g := webGateway(t)
	proxy := newCutProxy(t, strings.TrimSuffix(strings.TrimPrefix(g.url, "http://"), "/"))
	pg := *g
	pg.url = "http://" + proxy.ln.Addr().String() + "/"
	b := newBrowser(t, &pg)
	b.loginOK()
	b.newShell("sh")
	file := filepath.Join(t.TempDir(), "notes.txt")
	marker := fmt.Sprintf("marker-%d", rand.IntN(1e9))
	b.run("vim --clean -n " + file)
	b.waitFor("vim", 20*time.Second, func() bool { return b.screen().Alt })
	b.typeKeys("i" + marker + "\x1b")
	before := b.settledScreen(marker)
	tabs := mustEval[[]map[string]any](b, "gatewayDebug.tabs()")
	if len(tabs) != 1 || tabs[0]["session"] == nil || tabs[0]["detach"].(float64) != 3600 {
		t.Fatalf("tabs %v", tabs)
	}
	session := tabs[0]["session"].(string)

	// A dropped connection: the page joins the shell again.
	proxy.cut()
	b.waitFor("the page to notice", 10*time.Second, func() bool {
		return slices.Contains(mustEval[[]string](b, "gatewayDebug.history()"), "reconnecting")
	})
	b.waitStatus("connected", 20*time.Second)
	b.waitScreen("after the connection dropped", before)
	b.typeKeys("o" + "second line\x1b")
	after := b.settledScreen("second line")
	if !strings.Contains(strings.Join(after.Rows, "\n"), marker) {
		t.Fatalf("the marker is gone after typing:\n%s", strings.Join(after.Rows, "\n"))
	}

	// A reload joins the shell (its URL names it); and a page opened
	// afresh finds it detached in the sessions list, and joins it there.
	if h := mustEval[string](b, "location.hash"); h != "#/session/"+session {
		t.Fatalf("the shell's URL: %q", h)
	}
	b.do(20*time.Second, chromedp.Reload())
	b.waitStatus("connected", 20*time.Second)
	b.waitScreen("after a reload", after)
	b.open("#")
	b.do(20*time.Second, chromedp.Reload())
	join := fmt.Sprintf(`#sessions tr.session[data-id=%q][data-state="detached"] button.join`, session)
	b.do(20*time.Second, chromedp.WaitVisible(chromedp.CSS(join)), chromedp.Click(chromedp.CSS(join)))
	b.waitStatus("connected", 20*time.Second)
	b.waitScreen("joined from the sessions list", after)

	// A view-only link: the live screen, and typing changes nothing.
	b.do(10*time.Second, chromedp.WaitVisible(chromedp.ID("share")), chromedp.Click(chromedp.ID("share")),
		chromedp.WaitVisible(chromedp.ID("share-url")))
	link := mustEval[string](b, `document.getElementById("share-url").value`)
	if !strings.Contains(link, "#session="+session+"&share=") {
		t.Fatalf("share link %q", link)
	}
	after = b.settledScreen("second line") // the share box took rows: vim redrew
	viewer := newBrowser(t, &pg)           // another browser: no login, no cookie
	viewer.do(20*time.Second, chromedp.Navigate(link), chromedp.WaitReady(chromedp.CSS("body")))
	viewer.waitStatus("connected", 20*time.Second)
	viewer.waitScreen("the shared screen", after)
	if vis := mustEval[bool](viewer, `!document.getElementById("login").hidden`); vis {
		t.Fatal("the share link's page asks for a login")
	}
	viewer.typeKeys("ddddihacked\x1b:wq\r")
	time.Sleep(time.Second)
	b.waitScreen("after the viewer typed", after)
	if s := strings.Join(viewer.screen().Rows, "\n"); strings.Contains(s, "hacked") {
		t.Fatalf("the viewer's typing reached vim:\n%s", s)
	}
	// The owner still drives vim: it writes the file.
	b.typeKeys(":wq\r")
	b.waitPrompt(20 * time.Second)
	data, err := os.ReadFile(file)
	if err != nil || string(data) != marker+"\nsecond line\n" {
		t.Fatalf("the file vim wrote: %q, %v", data, err)
	}
	viewer.waitFor("the viewer to see the prompt", 20*time.Second, func() bool {
		return strings.Contains(strings.Join(viewer.screen().Rows, "\n"), "gw-prompt>")
	})
}
