package stream

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"gateway/container"
	"gateway/metrics"
	"gateway/session"
)

func (h *harness) container(t *testing.T, spec container.Spec) *container.Container {
	t.Helper()
	if spec.WorkingDir == "" {
		spec.WorkingDir = h.dir
	}
	c, err := h.rt.Create(spec)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// attachReader reads an attach stream's stdout line by line until the
// close, then reports the last message (the status) and the close.
type attachReader struct {
	ready  chan struct{} // closed at the first frame
	lines  chan string
	status chan string
	close  chan *websocket.CloseError
}

// waitReady waits for the stream's first frame: from then on the attacher
// misses no output.
func (r *attachReader) waitReady(t *testing.T) {
	t.Helper()
	select {
	case <-r.ready:
	case <-time.After(10 * time.Second):
		t.Fatal("no ready frame")
	}
}

func readAttach(t *testing.T, c *websocket.Conn) *attachReader {
	r := &attachReader{ready: make(chan struct{}), lines: make(chan string, 10000), status: make(chan string, 1), close: make(chan *websocket.CloseError, 1)}
	pr, pw := io.Pipe()
	go func() {
		defer close(r.lines)
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			r.lines <- sc.Text()
		}
	}()
	go func() {
		defer pw.Close()
		defer close(r.status) // a status that never came reads as ""
		for first := true; ; first = false {
			_, m, err := c.ReadMessage()
			if err != nil {
				ce, _ := err.(*websocket.CloseError)
				r.close <- ce
				return
			}
			if first {
				close(r.ready)
			}
			switch {
			case len(m) > 0 && m[0] == 1:
				pw.Write(m[1:])
			case len(m) > 1 && m[0] == 3:
				r.status <- string(m[1:])
			}
		}
	}()
	return r
}

// TestAttachSequence: two attachers that join at different times each see
// a gap-free, duplicate-free stream, then the exit status.
func TestAttachSequence(t *testing.T) {
	h := newHarness(t, nil)
	h.container(t, container.Spec{ID: "seq", Command: []string{"sh", "-c", "i=0; while [ $i -lt 150 ]; do echo $i; i=$((i+1)); sleep 0.01; done; exit 3"}})
	var wg sync.WaitGroup
	for _, delay := range []time.Duration{200 * time.Millisecond, 700 * time.Millisecond} {
		time.Sleep(delay)
		r := readAttach(t, h.attach(t, "seq", "stdout=1"))
		wg.Go(func() {
			i := 0
			for l := range r.lines {
				if l != strconv.Itoa(i) {
					t.Errorf("joined after %v: line %d is %q", delay, i, l)
					return
				}
				i++
			}
			if i != 150 {
				t.Errorf("joined after %v: %d lines", delay, i)
			}
			if st := <-r.status; !strings.Contains(st, `"reason":"NonZeroExitCode"`) || !strings.Contains(st, `"message":"3"`) {
				t.Errorf("status %s", st)
			}
			if ce := <-r.close; ce == nil || ce.Code != 1000 {
				t.Errorf("close %v", ce)
			}
		})
	}
	wg.Wait()
	// replay=0: only what comes after; here nothing but the end.
	r := readAttach(t, h.attach(t, "seq", "stdout=1&replay=0"))
	if l, ok := <-r.lines; ok {
		t.Errorf("replay=0 sent %q", l)
	}
}

// TestAttachInput: two attachers type into one process; both see every
// line whole; the last resize wins; the exit reaches both.
func TestAttachInput(t *testing.T) {
	h := newHarness(t, nil)
	h.container(t, container.Spec{ID: "echo", Stdin: true,
		Command: []string{"sh", "-c", `while read l; do [ "$l" = quit ] && exit 5; echo "got:$l"; done`}})
	a, b := h.attach(t, "echo", "stdin=1&stdout=1&replay=0"), h.attach(t, "echo", "stdin=1&stdout=1&replay=0")
	ra, rb := readAttach(t, a), readAttach(t, b)
	// Without a replay, output before an attacher's ready frame is not
	// its to see: both must be ready before either types.
	ra.waitReady(t)
	rb.waitReady(t)
	var wg sync.WaitGroup
	for i, c := range []*websocket.Conn{a, b} {
		wg.Go(func() {
			for n := range 100 {
				c.WriteMessage(websocket.BinaryMessage, fmt.Appendf([]byte{0}, "w%d-%03d-%s\n", i, n, strings.Repeat("x", 200)))
			}
		})
	}
	wg.Wait()
	for _, r := range []*attachReader{ra, rb} {
		seen := map[string]bool{}
		for len(seen) < 200 {
			l := <-r.lines
			if !strings.HasPrefix(l, "got:w") || len(l) != len("got:w0-000-")+200 {
				t.Fatalf("line %q", l)
			}
			seen[l[:11]] = true
		}
	}
	a.WriteMessage(websocket.BinaryMessage, []byte("\x00quit\n"))
	for _, r := range []*attachReader{ra, rb} {
		if st := <-r.status; !strings.Contains(st, `"message":"5"`) {
			t.Errorf("status %s", st)
		}
	}

	// A tty container: a resize from either attacher applies.
	h.container(t, container.Spec{ID: "tty", TTY: true, Stdin: true, Command: []string{"sh", "-c", "stty -echo; while read l; do stty size; done"}})
	c1, c2 := h.attach(t, "tty", "stdin=1&stdout=1&tty=1&replay=0"), h.attach(t, "tty", "stdin=1&stdout=1&tty=1&replay=0")
	r1, r2 := readAttach(t, c1), readAttach(t, c2)
	r1.waitReady(t)
	r2.waitReady(t)
	for _, step := range []struct {
		c    *websocket.Conn
		size string
		want string
	}{{c1, `{"Width":100,"Height":30}`, "30 100"}, {c2, `{"Width":120,"Height":40}`, "40 120"}} {
		step.c.WriteMessage(websocket.BinaryMessage, append([]byte{4}, step.size...))
		time.Sleep(50 * time.Millisecond)
		step.c.WriteMessage(websocket.BinaryMessage, []byte("\x00\n"))
		if l := strings.TrimSpace(<-r1.lines); l != step.want {
			t.Errorf("stty size %q, want %q", l, step.want)
		}
	}
}

func TestAttachRefused(t *testing.T) {
	h := newHarness(t, nil)
	for _, tc := range []struct {
		path string
		want string
	}{
		{"/attach/box?stdin=1&stdout=1", "was started without stdin"},
		{"/attach/box", "at least one of stdin"},
		{"/attach/nope?stdout=1", `container "nope" not found`},
	} {
		_, resp, err := h.dialPath(t, tc.path, nil, "v5.channel.k8s.io")
		if err == nil {
			t.Fatalf("%s upgraded", tc.path)
		}
		b, _ := io.ReadAll(resp.Body)
		if !strings.Contains(string(b), tc.want) {
			t.Errorf("%s: %d %q", tc.path, resp.StatusCode, b)
		}
	}
}

// TestAttachFlood: a container writes as fast as it can for 10 s. An
// attacher that never reads is cut with close 4001 and a metric; one that
// reads gets every byte; the gateway's heap stays bounded.
func TestAttachFlood(t *testing.T) {
	if testing.Short() {
		t.Skip("10 s flood")
	}
	h := newHarness(t, nil)
	c := h.container(t, container.Spec{ID: "flood", Stdin: true, Command: []string{"sh", "-c", "read x; timeout 10 cat /dev/zero"}})
	slow := h.attach(t, "flood", "stdout=1&replay=0")
	fast := h.attach(t, "flood", "stdin=1&stdout=1&replay=0")
	waitFor(t, "two attachers", func() bool { return len(h.sessions.List(session.Filter{State: session.Active})) == 2 })

	var peak uint64
	stop := make(chan struct{})
	var sampler sync.WaitGroup
	sampler.Go(func() {
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapInuse)
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	})
	var base runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&base)

	if _, m, err := fast.ReadMessage(); err != nil || string(m) != "\x01" {
		t.Fatalf("ready frame %q %v", m, err)
	}
	fast.WriteMessage(websocket.BinaryMessage, []byte("\x00go\n"))
	var got int64
	var status string
	for {
		_, m, err := fast.ReadMessage()
		if err != nil {
			if ce, ok := err.(*websocket.CloseError); !ok || ce.Code != 1000 {
				t.Fatalf("fast attacher: %v", err)
			}
			break
		}
		switch m[0] {
		case 1:
			got += int64(len(m) - 1)
		case 3:
			status = string(m[1:])
		}
	}
	close(stop)
	sampler.Wait()
	if total := c.Info().OutputBytes; got != total {
		t.Errorf("fast attacher got %d bytes of %d", got, total)
	}
	if !strings.Contains(status, `"message":"124"`) { // timeout's exit code
		t.Errorf("status %s", status)
	}
	// The slow attacher was cut with a reason it can read once it reads.
	slow.SetReadDeadline(time.Now().Add(20 * time.Second))
	var slowErr error
	for slowErr == nil {
		_, _, slowErr = slow.ReadMessage()
	}
	if ce, ok := slowErr.(*websocket.CloseError); ok && ce.Code != CloseSlowConsumer {
		t.Errorf("slow attacher closed with %v", ce)
	}
	if v := testutil.ToFloat64(h.metrics.StreamErrors.WithLabelValues("attach", metrics.ReasonSlowConsumer)); v != 1 {
		t.Errorf("slow_consumer = %v", v)
	}
	t.Logf("fast attacher got %d MiB in 10 s; heap in use peaked %d MiB above the start", got>>20, (int64(peak)-int64(base.HeapInuse))>>20)
	if got < 100<<20 {
		t.Errorf("fast attacher got only %d bytes", got)
	}
	if grow := int64(peak) - int64(base.HeapInuse); grow > 64<<20 {
		t.Errorf("heap grew by %d MiB", grow>>20)
	}
}

// TestAttachZeroSize: kubectl attach -t from a terminal of size 0x0 sends
// its size plus one (1x1), then 0x0: the pty takes the default size, not
// 1x1 (a program would wrap at every character).
func TestAttachZeroSize(t *testing.T) {
	h := newHarness(t, nil)
	h.container(t, container.Spec{ID: "tty", TTY: true, Stdin: true, Command: []string{"sh", "-c", "while read x; do stty size; done"}})
	ws := h.attach(t, "tty", "stdin=1&stdout=1&tty=1")
	ws.WriteMessage(websocket.BinaryMessage, append([]byte{4}, `{"Width":1,"Height":1}`+"\n"...))
	ws.WriteMessage(websocket.BinaryMessage, append([]byte{4}, `{"Width":0,"Height":0}`+"\n"...))
	ws.WriteMessage(websocket.BinaryMessage, []byte("\x00\r"))
	var out []byte
	ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	for !bytes.Contains(out, []byte("24 80")) {
		_, m, err := ws.ReadMessage()
		if err != nil {
			t.Fatalf("%v after %q: want the default size, 24 80", err, out)
		}
		if len(m) > 0 && m[0] == 1 {
			out = append(out, m[1:]...)
		}
	}
}
