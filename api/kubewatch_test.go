package api

import (
	"bufio"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"gateway/container"
	"gateway/sandbox"
)

// BenchmarkSyncPods: bringing 100 pods up to date for a list or a
// watcher, when nothing changed since the last read (every watcher but
// the first after a change) and when a sandbox came or went.
func BenchmarkSyncPods(b *testing.B) {
	sandboxes := sandbox.NewRegistry()
	for i := range 99 {
		if _, err := sandboxes.Create(sandbox.Spec{ID: fmt.Sprintf("s%d", i)}); err != nil {
			b.Fatal(err)
		}
	}
	a := New(Config{}, slog.New(slog.DiscardHandler), Deps{Sandboxes: sandboxes, Runtime: container.New(container.Config{}, sandboxes)})
	b.Run("unchanged", func(b *testing.B) {
		a.syncPods()
		for b.Loop() {
			if pods, _ := a.syncPods(); len(pods) != 100 {
				b.Fatal(len(pods))
			}
		}
	})
	b.Run("changed", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			if i%2 == 0 {
				sandboxes.Create(sandbox.Spec{ID: "x"})
			} else {
				sandboxes.Remove("x")
			}
			a.syncPods()
		}
	})
}

// TestWatchStalledAtDrain: a watch whose client stops reading, its answer
// stuck in a write, ends when the gateway drains.
func TestWatchStalledAtDrain(t *testing.T) {
	sandboxes := sandbox.NewRegistry()
	a := New(Config{Token: "t"}, slog.New(slog.DiscardHandler), Deps{Sandboxes: sandboxes, Runtime: container.New(container.Config{}, sandboxes),
		Metrics: http.NotFoundHandler()})
	done := make(chan struct{})
	h := a.Handler()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(w, r)
		if r.URL.Query().Get("watch") != "" {
			close(done)
		}
	}))
	ln := srv.Listener
	srv.Listener = smallBuffers{ln}
	srv.Start()
	defer srv.Close()

	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.(*net.TCPConn).SetReadBuffer(4096)
	fmt.Fprintf(conn, "GET /api/v1/pods?watch=1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t\r\n\r\n")
	if _, err := bufio.NewReader(conn).ReadString('}'); err != nil { // the watch is under way
		t.Fatal(err)
	}
	// 400 pods added, far more than the sockets hold, in bursts the watch
	// keeps up with.
	for i := range 400 {
		if _, err := sandboxes.Create(sandbox.Spec{ID: fmt.Sprintf("x%d", i)}); err != nil {
			t.Fatal(err)
		}
		if i%20 == 0 {
			time.Sleep(time.Millisecond)
		}
	}
	select {
	case <-done:
		t.Fatal("the watch ended before the drain")
	case <-time.After(100 * time.Millisecond):
	}
	a.Drain()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the stalled watch did not end at the drain")
	}
}

// smallBuffers gives accepted connections a small send buffer, so that a
// client that does not read soon stalls the server's writes.
type smallBuffers struct{ net.Listener }

func (l smallBuffers) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetWriteBuffer(4096)
	}
	return c, err
}
