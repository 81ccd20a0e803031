package stream

import (
	"bufio"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// upgradeServer serves h through UpgradeListener and net/http on
// loopback; it returns the address. The server ends with the test.
func upgradeServer(t *testing.T, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 2 * time.Second}
	done := make(chan error, 1)
	go func() {
		done <- srv.Serve(UpgradeListener(ln, h, srv.ReadHeaderTimeout, slog.New(slog.DiscardHandler)))
	}()
	t.Cleanup(func() {
		srv.Close()
		if err := <-done; err != http.ErrServerClosed {
			t.Errorf("Serve: %v", err)
		}
	})
	return ln.Addr().String()
}

// exchange sends req on a new connection and returns all it reads until
// the server closes it.
func exchange(t *testing.T, addr, req string) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read: %v (after %q)", err, b)
	}
	return string(b)
}

// TestUpgradeListener: an upgrade request is answered beside net/http,
// refused with its exact answer or hijacked with a status set before;
// every other request is net/http's, keep-alive and all.
func TestUpgradeListener(t *testing.T) {
	served := make(chan bool, 10) // whether each request came through net/http
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, viaUs := w.(*upgradeWriter)
		served <- !viaUs
		switch r.URL.Path {
		case "/refuse":
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusForbidden)
			io.WriteString(w, `{"kind":"Status","code":403}`)
		case "/switch":
			w.Header().Set("Upgrade", "echo")
			w.WriteHeader(http.StatusSwitchingProtocols)
			c, brw, err := http.NewResponseController(w).Hijack()
			if err != nil {
				t.Errorf("hijack: %v", err)
				return
			}
			defer c.Close()
			line, _ := brw.ReadString('\n')
			io.WriteString(c, "echo "+line)
		default:
			io.WriteString(w, "plain "+r.Method+" "+r.URL.Path+" "+r.Header.Get("X-Long")[:1])
		}
	})
	addr := upgradeServer(t, h)
	up := "Connection: Upgrade\r\nUpgrade: websocket\r\n"

	got := exchange(t, addr, "GET /refuse HTTP/1.1\r\nHost: x\r\n"+up+"\r\n")
	if <-served {
		t.Error("the refused upgrade went through net/http")
	}
	head, body, _ := strings.Cut(got, "\r\n\r\n")
	for _, want := range []string{"HTTP/1.1 403 Forbidden\r\n", "Content-Type: application/json\r\n",
		"Content-Length: 28\r\n", "Connection: close\r\n", "Date: "} {
		if !strings.Contains(head+"\r\n", want) {
			t.Errorf("refusal %q lacks %q", head, want)
		}
	}
	if body != `{"kind":"Status","code":403}` {
		t.Errorf("refusal body %q", body)
	}

	// Bytes sent right behind the header reach the hijacker.
	got = exchange(t, addr, "POST /switch HTTP/1.1\r\nHost: x\r\n"+up+"\r\nhello\n")
	if <-served {
		t.Error("the upgrade went through net/http")
	}
	if !strings.HasPrefix(got, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\n\r\n") || !strings.HasSuffix(got, "\r\n\r\necho hello\n") {
		t.Errorf("switched: %q", got)
	}

	// Plain requests, two on one connection, and an upgrade whose header
	// is too long to be read here: net/http's.
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	for _, path := range []string{"/a", "/b"} {
		io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: x\r\nX-Long: y\r\n\r\n")
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		if viaNetHTTP := <-served; string(b) != "plain GET "+path+" y" || !viaNetHTTP {
			t.Errorf("%s: %q, through net/http: %v", path, b, viaNetHTTP)
		}
	}
	long := "X-Long: " + strings.Repeat("z", headerMax) + "\r\n"
	got = exchange(t, addr, "GET /long HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"+long+"Upgrade: websocket\r\n\r\n")
	if viaNetHTTP := <-served; !strings.HasPrefix(got, "HTTP/1.1 200 OK\r\n") || !strings.HasSuffix(got, "plain GET /long z") || !viaNetHTTP {
		t.Errorf("long header: %q, through net/http: %v", got, viaNetHTTP)
	}

	// Malformed upgrade requests: 400, closed.
	for _, req := range []string{
		"GET /x HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nbad header\r\n\r\n",
		"GET /x HTTP/1.1\r\nUpgrade: websocket\r\n\r\n",
		"GET /x HTTP/1.1\r\nHost: a b\r\nUpgrade: websocket\r\n\r\n",
		"GET /x HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nX: a\x00b\r\n\r\n",
		"GET /x HTTP/2.0\r\nHost: x\r\nUpgrade: websocket\r\n\r\n",
	} {
		if got := exchange(t, addr, req); !strings.HasPrefix(got, "HTTP/1.1 400 Bad Request\r\n") {
			t.Errorf("%q: %q", req, got)
		}
	}
}

// TestUpgradeListenerClose: closing the server closes a connection whose
// first header is still awaited, and waits for an upgrade under way.
func TestUpgradeListenerClose(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	entered, release := make(chan struct{}), make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-release
		w.WriteHeader(http.StatusServiceUnavailable)
	})
	srv := &http.Server{Handler: h}
	done := make(chan error, 1)
	ul := UpgradeListener(ln, h, time.Minute, slog.New(slog.DiscardHandler)).(*upgradeListener)
	go func() { done <- srv.Serve(ul) }()

	silent, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	busy, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	io.WriteString(busy, "GET /x HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
	<-entered
	for waiting := 0; waiting != 1; time.Sleep(time.Millisecond) { // the silent connection is being read
		ul.mu.Lock()
		waiting = len(ul.reading)
		ul.mu.Unlock()
	}

	closed := make(chan struct{})
	go func() { srv.Close(); close(closed) }()
	silent.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := silent.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("silent connection: read %d, %v; want EOF", n, err)
	}
	select {
	case <-closed:
		t.Fatal("Close returned with an upgrade under way")
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	<-closed
	if err := <-done; err != http.ErrServerClosed {
		t.Errorf("Serve: %v", err)
	}
	got, _ := io.ReadAll(busy)
	if !strings.HasPrefix(string(got), "HTTP/1.1 503 Service Unavailable\r\n") {
		t.Errorf("the upgrade under way got %q", got)
	}
}

// FuzzUpgradeHeader: the header scan finds the blank line and the Upgrade
// field as a plain search does, whatever the bytes.
func FuzzUpgradeHeader(f *testing.F) {
	f.Add([]byte("GET / HTTP/1.1\r\nHost: x\r\nUPGRADE: websocket\r\n\r\nrest"))
	f.Add([]byte("GET / HTTP/1.1\r\nX-Upgrade: no\r\n\r\n"))
	f.Add([]byte("\r\n\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		br := bufio.NewReaderSize(strings.NewReader(string(b)), 64)
		hdr, err := peekHeader(br)
		end := strings.Index(string(b), "\r\n\r\n")
		switch {
		case end >= 0 && end+4 <= 64:
			if err != nil || string(hdr) != string(b[:end+4]) {
				t.Fatalf("peekHeader = %q, %v; want %q", hdr, err, b[:end+4])
			}
		case err == nil:
			t.Fatalf("peekHeader = %q with no blank line in the first 64 bytes", hdr)
		}
		want := strings.Contains(strings.ToLower(string(b)), "\nupgrade:")
		if got := upgradeHeader(b); got != want {
			t.Fatalf("upgradeHeader(%q) = %v, want %v", b, got, want)
		}
	})
}
