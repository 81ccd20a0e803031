package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/remotecommand"
	utilexec "k8s.io/client-go/util/exec"

	"gateway/internal/proctest"
)

const (
	v5 = "v5.channel.k8s.io"
	v4 = "v4.channel.k8s.io"
)

// execURL is the exec endpoint of a container with the query client-go's
// callers build.
func (g *gateway) execURL(containerID string, command []string, o remotecommand.StreamOptions) string {
	q := url.Values{"command": command}
	q.Set("stdin", fmt.Sprint(o.Stdin != nil))
	q.Set("stdout", fmt.Sprint(o.Stdout != nil))
	q.Set("stderr", fmt.Sprint(o.Stderr != nil && !o.Tty))
	q.Set("tty", fmt.Sprint(o.Tty))
	return g.url + "api/v1/containers/" + containerID + "/exec?" + q.Encode()
}

// exec runs a command in a container with client-go's WebSocket executor.
func (g *gateway) exec(ctx context.Context, proto, containerID string, command []string, o remotecommand.StreamOptions) error {
	return g.execAt(ctx, proto, g.execURL(containerID, command, o), g.token, o)
}

func (g *gateway) execAt(ctx context.Context, proto, u, token string, o remotecommand.StreamOptions) error {
	cfg := &rest.Config{Host: g.url, BearerToken: token}
	e, err := remotecommand.NewWebSocketExecutorForProtocols(cfg, "GET", u, proto)
	if err != nil {
		return err
	}
	return e.StreamWithContext(ctx, o)
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func exitCode(err error) (int, bool) {
	var ee utilexec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitStatus(), true
	}
	return 0, false
}

func TestExecStdoutStderrExitCode(t *testing.T) {
	g := startGateway(t)
	ctx := testContext(t)
	for _, proto := range []string{v5, v4} {
		t.Run(proto, func(t *testing.T) {
			var out, errb bytes.Buffer
			err := g.exec(ctx, proto, "box", []string{"sh", "-c", "echo out; echo err >&2; echo more"},
				remotecommand.StreamOptions{Stdout: &out, Stderr: &errb})
			if err != nil {
				t.Fatal(err)
			}
			if out.String() != "out\nmore\n" || errb.String() != "err\n" {
				t.Errorf("stdout %q stderr %q", out.String(), errb.String())
			}

			out.Reset()
			err = g.exec(ctx, proto, "box", []string{"sh", "-c", "echo bye; exit 7"}, remotecommand.StreamOptions{Stdout: &out})
			if code, ok := exitCode(err); !ok || code != 7 {
				t.Fatalf("err = %v, want exit code 7", err)
			}
			if out.String() != "bye\n" {
				t.Errorf("stdout %q", out.String())
			}

			// The container's context: working directory and environment.
			out.Reset()
			err = g.exec(ctx, proto, "box", []string{"sh", "-c", "pwd; echo ${GATEWAY_TOKEN:-unset}"}, remotecommand.StreamOptions{Stdout: &out})
			if err != nil || out.String() != g.dir+"\nunset\n" {
				t.Errorf("context: %q %v", out.String(), err)
			}
		})
	}
}

// TestExecStdin: 1 MiB of random stdin reaches the process intact, and the
// v5 close signal ends its input so that it finishes.
func TestExecStdin(t *testing.T) {
	g := startGateway(t)
	ctx := testContext(t)
	data := make([]byte, 1<<20)
	rand.Read(data)
	var out bytes.Buffer
	err := g.exec(ctx, v5, "box", []string{"sha256sum"}, remotecommand.StreamOptions{Stdin: bytes.NewReader(data), Stdout: &out})
	if err != nil {
		t.Fatal(err)
	}
	if want := sha256Hex(data) + "  -\n"; out.String() != want {
		t.Errorf("sha256sum printed %q, want %q", out.String(), want)
	}
	out.Reset()
	err = g.exec(ctx, v5, "box", []string{"wc", "-c"}, remotecommand.StreamOptions{Stdin: bytes.NewReader(data), Stdout: &out})
	if err != nil || strings.TrimSpace(out.String()) != "1048576" {
		t.Errorf("wc -c: %q %v", out.String(), err)
	}
}

// sizeQueue hands client-go terminal sizes.
type sizeQueue chan *remotecommand.TerminalSize

func (q sizeQueue) Next() *remotecommand.TerminalSize { return <-q }

// TestExecResize: the first size applies before the program starts, and a
// later one reaches the running program.
func TestExecResize(t *testing.T) {
	g := startGateway(t)
	ctx := testContext(t)
	for _, proto := range []string{v5, v4} {
		t.Run(proto, func(t *testing.T) {
			sizes := make(sizeQueue, 2)
			sizes <- &remotecommand.TerminalSize{Width: 123, Height: 45}
			stdinR, stdinW := io.Pipe()
			outR, outW := io.Pipe()
			done := make(chan error, 1)
			go func() {
				done <- g.exec(ctx, proto, "box", []string{"sh", "-c", "while read x; do stty size; done"},
					remotecommand.StreamOptions{Stdin: stdinR, Stdout: outW, Tty: true, TerminalSizeQueue: sizes})
				outW.Close()
				close(sizes)
			}()
			// The process starts at once, as under a kubelet, and client-go
			// sends its first size just after the upgrade: the size applies
			// as it comes (TestTTYSizeInSocket, in package stream, checks
			// that a size already received applies before the start).
			proctest.NudgeUntil(t, stdinW, outR, "45 123")
			sizes <- &remotecommand.TerminalSize{Width: 77, Height: 11}
			proctest.NudgeUntil(t, stdinW, outR, "11 77")
			stdinW.Write([]byte("\x04")) // the end of input: the loop ends
			if _, err := io.Copy(io.Discard, outR); err != nil {
				t.Fatal(err)
			}
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			stdinW.Close()
		})
	}
}

// TestExecLargeOutput: 64 MiB of random bytes arrive exactly.
func TestExecLargeOutput(t *testing.T) {
	g := startGateway(t)
	ctx := testContext(t)
	data := make([]byte, 64<<20)
	rand.Read(data)
	if err := os.WriteFile(filepath.Join(g.dir, "big"), data, 0o600); err != nil {
		t.Fatal(err)
	}
	want := sha256Hex(data)
	for _, proto := range []string{v5, v4} {
		t.Run(proto, func(t *testing.T) {
			h := sha256.New()
			n := &countWriter{w: h}
			if err := g.exec(ctx, proto, "box", []string{"cat", "big"}, remotecommand.StreamOptions{Stdout: n}); err != nil {
				t.Fatal(err)
			}
			if got := hex.EncodeToString(h.Sum(nil)); got != want || n.n != int64(len(data)) {
				t.Errorf("got %d bytes, sha256 %s; want %d bytes, %s", n.n, got, len(data), want)
			}
		})
	}
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	return c.w.Write(p)
}

// TestExecTTYTail: in a pty, every byte written just before exit arrives
// before the status (the pty is drained until EIO).
func TestExecTTYTail(t *testing.T) {
	g := startGateway(t)
	ctx := testContext(t)
	for i := range 5 {
		var out countWriter
		out.w = io.Discard
		err := g.exec(ctx, v5, "box", []string{"head", "-c", "3000000", "/dev/zero"}, remotecommand.StreamOptions{Stdout: &out, Tty: true})
		if err != nil || out.n != 3000000 {
			t.Fatalf("run %d: %d bytes, %v; want 3000000", i, out.n, err)
		}
	}
}

func TestExecRefused(t *testing.T) {
	g := startGateway(t)
	ctx := testContext(t)
	for _, tc := range []struct {
		name, url, token, want string
	}{
		{"unknown container", g.url + "api/v1/containers/nope/exec?command=true&stdout=1", g.token, `container "nope" not found`},
		{"no command", g.url + "api/v1/containers/box/exec?stdout=1", g.token, "command is required"},
		{"no streams", g.url + "api/v1/containers/box/exec?command=true&stdout=0", g.token, "at least one of stdin, stdout or stderr"},
		{"no token", g.url + "api/v1/containers/box/exec?command=true&stdout=1", "", "bearer token is required"},
		{"wrong token", g.url + "api/v1/containers/box/exec?command=true&stdout=1", "nope", "token is not valid"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			err := g.execAt(ctx, v5, tc.url, tc.token, remotecommand.StreamOptions{Stdout: io.Discard})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want %q", err, tc.want)
			}
			if time.Since(start) > 10*time.Second {
				t.Errorf("refusal took %v", time.Since(start))
			}
		})
	}
	// Only unknown subprotocols: 403 and a Status, as the kubelet and the
	// API server answer.
	d := websocket.Dialer{Subprotocols: []string{"v9.channel.k8s.io", "tty"}}
	_, resp, derr := d.Dial("ws"+strings.TrimPrefix(g.url, "http")+"api/v1/containers/box/exec?command=true&stdout=1",
		http.Header{"Authorization": {"Bearer " + g.token}})
	if derr == nil {
		t.Fatal("upgraded with unknown subprotocols")
	}
	var st status
	json.NewDecoder(resp.Body).Decode(&st)
	resp.Body.Close()
	if resp.StatusCode != 403 || st.Reason != "Forbidden" || !strings.Contains(st.Message, "none of the offered subprotocols") {
		t.Errorf("unknown subprotocols: %d %+v", resp.StatusCode, st)
	}
	// A missing program is reported in-band, as the kubelet does.
	err := g.exec(ctx, v5, "box", []string{"no-such-program"}, remotecommand.StreamOptions{Stdout: io.Discard})
	if err == nil || !strings.Contains(err.Error(), `"no-such-program": executable file not found`) {
		t.Errorf("missing program: %v", err)
	}
}

// TestExecParallel: 50 execs at once each get their own output.
func TestExecParallel(t *testing.T) {
	g := startGateway(t)
	ctx := testContext(t)
	var wg sync.WaitGroup
	errs := make(chan error, 50)
	for i := range 50 {
		wg.Go(func() {
			var out bytes.Buffer
			want := strings.Repeat(fmt.Sprintf("exec-%d\n", i), 1000)
			err := g.exec(ctx, v5, "box", []string{"sh", "-c", `i=0; while [ $i -lt 1000 ]; do echo "$0"; i=$((i+1)); done`, fmt.Sprintf("exec-%d", i)},
				remotecommand.StreamOptions{Stdout: &out})
			if err != nil {
				errs <- fmt.Errorf("exec %d: %w", i, err)
			} else if out.String() != want {
				errs <- fmt.Errorf("exec %d: got %d bytes, want %d", i, out.Len(), len(want))
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
