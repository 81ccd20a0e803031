package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"

	"gateway/internal/proctest"
	"gateway/internal/tooltest"
)

// The real kubectl against the gateway's Kubernetes API. make test builds
// it from the module proxy (tools/kubectl) and names it in $KUBECTL.

// kubectlPath is the kubectl to run, or a skip (a failure under make test).
func kubectlPath(t *testing.T) string {
	t.Helper()
	p := os.Getenv("KUBECTL")
	if p == "" {
		tooltest.SkipOrFail(t, "$KUBECTL is not set: make test builds kubectl from the module proxy and sets it")
	}
	if _, err := os.Stat(p); err != nil {
		tooltest.SkipOrFail(t, "kubectl: "+err.Error())
	}
	return p
}

// kubectl is a kubectl for a gateway, with a HOME of its own (its
// discovery cache) and the gateway's kubeconfig.
type kubectl struct {
	t    *testing.T
	path string
	env  []string
}

func (g *gateway) kubectl(t *testing.T, env ...string) *kubectl {
	t.Helper()
	p := kubectlPath(t)
	if g.kubeconfig == "" {
		t.Fatal("the gateway wrote no kubeconfig")
	}
	return &kubectl{t: t, path: p, env: append([]string{"KUBECONFIG=" + g.kubeconfig, "HOME=" + t.TempDir()}, env...)}
}

func (k *kubectl) cmd(ctx context.Context, args ...string) *exec.Cmd {
	c := exec.CommandContext(ctx, k.path, args...)
	c.Env = append(os.Environ(), k.env...)
	return c
}

// run runs kubectl with stdin, and returns its outputs and exit code.
func (k *kubectl) run(stdin io.Reader, args ...string) (stdout, stderr string, code int) {
	k.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := k.cmd(ctx, args...)
	var out, errOut bytes.Buffer
	c.Stdin, c.Stdout, c.Stderr = stdin, &out, &errOut
	err := c.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		k.t.Fatalf("kubectl %v: %v", args, err)
	}
	if strings.Contains(errOut.String(), "Unknown stream") {
		k.t.Errorf("kubectl %v was sent frames it does not know: %s", args, errOut.String())
	}
	return out.String(), errOut.String(), code
}

// onPty runs kubectl in a pty of rows×cols, and returns the pty's master.
func (k *kubectl) onPty(rows, cols uint16, args ...string) (*os.File, func() error) {
	k.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	c := k.cmd(ctx, args...)
	master, err := pty.StartWithSize(c, &pty.Winsize{Rows: rows, Cols: cols})
	if err != nil {
		cancel()
		k.t.Fatal(err)
	}
	k.t.Cleanup(func() { master.Close(); cancel() })
	return master, func() error { defer cancel(); return c.Wait() }
}

// background runs kubectl until it exits or the test ends (get -w, say),
// and returns its output as it comes; what it says on stderr is logged if
// the test fails.
func (k *kubectl) background(args ...string) io.Reader {
	k.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	c := k.cmd(ctx, args...)
	out, err := c.StdoutPipe()
	if err != nil {
		k.t.Fatal(err)
	}
	errOut := &logBuffer{}
	c.Stderr = errOut
	if err := c.Start(); err != nil {
		k.t.Fatal(err)
	}
	k.t.Cleanup(func() {
		cancel()
		c.Wait()
		if k.t.Failed() {
			k.t.Logf("kubectl %q:\n%s", args, errOut)
		}
	})
	return out
}

// startWait runs kubectl wait with args and returns once its watch has
// been answered (its -v=6 log says so): what it prints, and its end.
func (k *kubectl) startWait(args ...string) (out, errOut *logBuffer, done <-chan error) {
	k.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	c := k.cmd(ctx, append([]string{"wait", "-v=6"}, args...)...)
	out, errOut = &logBuffer{}, &logBuffer{}
	c.Stdout, c.Stderr = out, errOut
	if err := c.Start(); err != nil {
		k.t.Fatal(err)
	}
	ended, exited := make(chan error, 1), make(chan struct{}) // the caller takes ended's one error
	go func() { ended <- c.Wait(); close(exited) }()
	k.t.Cleanup(func() { cancel(); <-exited })
	for !regexp.MustCompile(`watch=true.*200 OK`).MatchString(errOut.String()) {
		select {
		case err := <-ended:
			k.t.Fatalf("kubectl wait %q ended before it watched: %v\n%s%s", args, err, out, errOut)
		case <-time.After(20 * time.Millisecond):
		}
	}
	return out, errOut, ended
}

// readTo reads r until re matches what came; it returns what came.
func readTo(t *testing.T, r io.Reader, re *regexp.Regexp) string {
	t.Helper()
	var (
		mu  sync.Mutex // the reader may still write got when the wait ends
		got bytes.Buffer
	)
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 4096)
		for {
			mu.Lock()
			matched := re.Match(got.Bytes())
			mu.Unlock()
			if matched {
				return
			}
			n, err := r.Read(buf)
			mu.Lock()
			got.Write(buf[:n])
			mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		mu.Lock()
		defer mu.Unlock()
		t.Fatalf("waiting for %s, got %q", re, got.String())
	}
	if !re.Match(got.Bytes()) {
		t.Fatalf("the stream ended waiting for %s, after %q", re, got.String())
	}
	return got.String()
}

// TestKubectlGet: kubectl get (its table, wide, JSON), describe, a
// missing pod, a wrong token.
func TestKubectlGet(t *testing.T) {
	g := startGateway(t)
	k := g.kubectl(t)
	out, errOut, code := k.run(nil, "get", "pods")
	if code != 0 || !regexp.MustCompile(`(?m)^NAME\s+READY\s+STATUS\s+RESTARTS\s+AGE\s*$`).MatchString(out) ||
		!regexp.MustCompile(`(?m)^host\s+1/1\s+Running\s+0\s+\S+\s*$`).MatchString(out) {
		t.Errorf("get pods: %d\n%s%s", code, out, errOut)
	}
	out, _, _ = k.run(nil, "get", "pods", "-o", "wide")
	if !regexp.MustCompile(`(?m)^host\s+1/1\s+Running\s+0\s+\S+\s+127\.0\.0\.1\s+\S+\s+<none>\s+<none>\s*$`).MatchString(out) {
		t.Errorf("get pods -o wide:\n%s", out)
	}
	out, _, _ = k.run(nil, "get", "pod", "host", "-o", "json")
	var pod struct {
		Metadata struct {
			Annotations map[string]string
		}
		Spec   struct{ Containers []struct{ Name string } }
		Status struct{ Phase string }
	}
	if err := json.Unmarshal([]byte(out), &pod); err != nil || pod.Status.Phase != "Running" || len(pod.Spec.Containers) != 1 ||
		pod.Spec.Containers[0].Name != "box" || pod.Metadata.Annotations["kubectl.kubernetes.io/default-container"] != "box" {
		t.Errorf("get pod -o json: %v %+v", err, pod)
	}
	out, errOut, code = k.run(nil, "describe", "pod", "host")
	for _, want := range []string{"Name:         host", "Namespace:    default", "Status:       Running", "Containers:", "  box:", "Restart Count:  0"} {
		if !strings.Contains(out, want) {
			t.Errorf("describe lacks %q: %d\n%s%s", want, code, out, errOut)
		}
	}
	if _, errOut, code = k.run(nil, "get", "pod", "nope"); code == 0 || !strings.Contains(errOut, `Error from server (NotFound): pods "nope" not found`) {
		t.Errorf("a missing pod: %d %s", code, errOut)
	}
	if _, errOut, code = k.run(nil, "-n", "other", "get", "pod", "host"); code == 0 || !strings.Contains(errOut, `NotFound`) {
		t.Errorf("another namespace: %d %s", code, errOut)
	}
	if _, errOut, code = k.run(nil, "--token", "wrong", "get", "pods"); code == 0 || !strings.Contains(errOut, "You must be logged in to the server") {
		t.Errorf("a wrong token: %d %s", code, errOut)
	}
}

// kubectlTransports are kubectl's two transports for exec and attach.
var kubectlTransports = []struct {
	name string
	env  []string
}{{"websocket", nil}, {"spdy", []string{"KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false"}}}

// TestKubectlExec: kubectl exec over WebSocket (v5) and over SPDY (v4):
// output, exit codes, 1 MiB of stdin, and a tty whose size follows the
// pty kubectl runs in.
func TestKubectlExec(t *testing.T) {
	g := startGateway(t)
	in := make([]byte, 1<<20)
	rand.Read(in)
	sum := sha256.Sum256(in)
	for _, tr := range kubectlTransports {
		t.Run(tr.name, func(t *testing.T) {
			k := g.kubectl(t, tr.env...)
			if out, errOut, code := k.run(nil, "exec", "host", "--", "echo", "hi"); out != "hi\n" || code != 0 {
				t.Errorf("echo hi: %q %d %s", out, code, errOut)
			}
			if out, errOut, code := k.run(nil, "exec", "host", "--", "sh", "-c", "echo e >&2; exit 3"); out != "" || code != 3 ||
				!strings.HasPrefix(errOut, "e\n") || !strings.Contains(errOut, "command terminated with exit code 3") {
				t.Errorf("exit 3: %q %d %q", out, code, errOut)
			}
			if out, errOut, code := k.run(bytes.NewReader(in), "exec", "-i", "host", "--", "sha256sum"); code != 0 ||
				!strings.HasPrefix(out, hex.EncodeToString(sum[:])) {
				t.Errorf("1 MiB of stdin: %q %d %s", out, code, errOut)
			}
			master, wait := k.onPty(33, 101, "exec", "-it", "host", "--", "sh", "-c", "stty size; while read x; do stty size; done")
			readTo(t, master, regexp.MustCompile(`33 101`))
			if err := pty.Setsize(master, &pty.Winsize{Rows: 40, Cols: 120}); err != nil {
				t.Fatal(err)
			}
			// kubectl's SIGWINCH, then its resize, race the newlines.
			proctest.NudgeUntil(t, master, master, "40 120")
			master.Write([]byte("\x04")) // the end of input: the loop ends
			if err := wait(); err != nil {
				t.Errorf("kubectl exec -it: %v", err)
			}
		})
	}
}

// TestKubectlAttach: kubectl attach -it to a container's main process: a
// line typed comes back.
func TestKubectlAttach(t *testing.T) {
	g := startGateway(t)
	g.createContainer(t, map[string]any{"id": "repl", "command": []string{"cat"}, "tty": true, "stdin": true, "workingDir": g.dir})
	for _, tr := range kubectlTransports {
		t.Run(tr.name, func(t *testing.T) {
			k := g.kubectl(t, tr.env...)
			master, _ := k.onPty(24, 80, "attach", "-it", "host", "-c", "repl")
			readTo(t, master, regexp.MustCompile(`try pressing enter`))
			marker := fmt.Sprintf("typed-%s-%d", tr.name, time.Now().UnixNano())
			master.Write([]byte(marker + "\r"))
			readTo(t, master, regexp.MustCompile(regexp.QuoteMeta(marker)+`\r\n`+regexp.QuoteMeta(marker)))
		})
	}
}

// portServers are two TCP servers for port-forward: one sends n random
// bytes and closes, one reads to the end and answers with the sha256 of
// what it read.
type portServers struct {
	down, up int
	sum      [sha256.Size]byte // of what down sends
}

func startPortServers(t *testing.T, n int) *portServers {
	t.Helper()
	data := make([]byte, n)
	rand.Read(data)
	s := &portServers{sum: sha256.Sum256(data)}
	var wg sync.WaitGroup
	var lns []net.Listener
	t.Cleanup(func() {
		for _, ln := range lns {
			ln.Close()
		}
		wg.Wait()
	})
	serve := func(handle func(net.Conn)) int {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		wg.Go(func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				wg.Go(func() { defer c.Close(); handle(c) })
			}
		})
		return ln.Addr().(*net.TCPAddr).Port
	}
	s.down = serve(func(c net.Conn) { c.Write(data) })
	s.up = serve(func(c net.Conn) {
		h := sha256.New()
		io.Copy(h, c)
		fmt.Fprintf(c, "%x\n", h.Sum(nil))
	})
	return s
}

// TestKubectlPortForward: kubectl port-forward, over SPDY in a WebSocket
// (its default) and over plain SPDY: 64 MiB each way with equal digests,
// and 20 local connections at once.
func TestKubectlPortForward(t *testing.T) {
	g := startGateway(t)
	srv := startPortServers(t, 64<<20)
	for _, tr := range []struct {
		name string
		env  []string
	}{{"spdy-websocket", nil}, {"spdy", []string{"KUBECTL_PORT_FORWARD_WEBSOCKETS=false"}}} {
		t.Run(tr.name, func(t *testing.T) {
			k := g.kubectl(t, tr.env...)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			c := k.cmd(ctx, "port-forward", "--address", "127.0.0.1", "pod/host", fmt.Sprintf(":%d", srv.down), fmt.Sprintf(":%d", srv.up))
			out, _ := c.StdoutPipe()
			c.Stderr = os.Stderr
			if err := c.Start(); err != nil {
				t.Fatal(err)
			}
			defer c.Wait()
			defer cancel()
			ports := map[int]int{} // remote to local
			sc := bufio.NewScanner(out)
			re := regexp.MustCompile(`Forwarding from 127\.0\.0\.1:(\d+) -> (\d+)`)
			for len(ports) < 2 && sc.Scan() {
				if m := re.FindStringSubmatch(sc.Text()); m != nil {
					l, _ := strconv.Atoi(m[1])
					r, _ := strconv.Atoi(m[2])
					ports[r] = l
				}
			}
			go io.Copy(io.Discard, out) // "Handling connection for ..."
			dial := func(remote int) net.Conn {
				c, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[remote])))
				if err != nil {
					t.Fatal(err)
				}
				return c
			}
			// Download.
			dc := dial(srv.down)
			h := sha256.New()
			if n, err := io.Copy(h, dc); err != nil || n != 64<<20 || !bytes.Equal(h.Sum(nil), srv.sum[:]) {
				t.Errorf("download: %d bytes %v, digest equal %v", n, err, bytes.Equal(h.Sum(nil), srv.sum[:]))
			}
			dc.Close()
			// Upload.
			up := make([]byte, 64<<20)
			rand.Read(up)
			want := sha256.Sum256(up)
			uc := dial(srv.up)
			if _, err := uc.Write(up); err != nil {
				t.Fatal(err)
			}
			uc.(*net.TCPConn).CloseWrite()
			got, _ := io.ReadAll(uc)
			uc.Close()
			if strings.TrimSpace(string(got)) != hex.EncodeToString(want[:]) {
				t.Errorf("upload: the server read %q, want %x", got, want)
			}
			// 20 at once.
			var wg sync.WaitGroup
			for i := range 20 {
				wg.Go(func() {
					c := dial(srv.up)
					defer c.Close()
					msg := bytes.Repeat([]byte{byte(i)}, 100000)
					c.Write(msg)
					c.(*net.TCPConn).CloseWrite()
					got, _ := io.ReadAll(c)
					if sum := sha256.Sum256(msg); strings.TrimSpace(string(got)) != hex.EncodeToString(sum[:]) {
						t.Errorf("connection %d: %q", i, got)
					}
				})
			}
			wg.Wait()
		})
	}
}

// TestKubectlCp: kubectl cp, a 32 MiB file each way (tar through exec).
func TestKubectlCp(t *testing.T) {
	g := startGateway(t)
	k := g.kubectl(t)
	dir := t.TempDir()
	data := make([]byte, 32<<20)
	rand.Read(data)
	src := filepath.Join(dir, "up.bin")
	os.WriteFile(src, data, 0o600)
	remote := filepath.Join(g.dir, "in-pod.bin")
	if _, errOut, code := k.run(nil, "cp", src, "host:"+remote); code != 0 {
		t.Fatalf("cp up: %d %s", code, errOut)
	}
	if b, err := os.ReadFile(remote); err != nil || !bytes.Equal(b, data) {
		t.Errorf("cp up: %d bytes %v, equal %v", len(b), err, bytes.Equal(b, data))
	}
	back := filepath.Join(dir, "back.bin")
	if _, errOut, code := k.run(nil, "cp", "host:"+remote, back); code != 0 {
		t.Fatalf("cp down: %d %s", code, errOut)
	}
	if b, err := os.ReadFile(back); err != nil || sha256.Sum256(b) != sha256.Sum256(data) {
		t.Errorf("cp down: %d bytes %v", len(b), err)
	}
}

// TestKubectlLogs: kubectl logs --tail, --timestamps, -f, --previous.
func TestKubectlLogs(t *testing.T) {
	g := startGateway(t)
	g.createContainer(t, map[string]any{"id": "talker", "stdin": true, "workingDir": g.dir,
		"command": []string{"sh", "-c", `seq 1 20 | sed 's/^/line /'; while read x; do echo "said $x"; done`}})
	k := g.kubectl(t)
	var out string
	for range 100 { // until all 20 lines are in
		if out, _, _ = k.run(nil, "logs", "host", "-c", "talker"); strings.Count(out, "\n") == 20 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if out, errOut, code := k.run(nil, "logs", "host", "-c", "talker", "--tail", "5"); out != "line 16\nline 17\nline 18\nline 19\nline 20\n" || code != 0 {
		t.Errorf("--tail 5: %q %d %s", out, code, errOut)
	}
	out, _, _ = k.run(nil, "logs", "host", "-c", "talker", "--tail", "1", "--timestamps")
	if !regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z line 20\n$`).MatchString(out) {
		t.Errorf("--timestamps: %q", out)
	}
	if _, errOut, code := k.run(nil, "logs", "host", "-c", "talker", "--previous"); code == 0 || !strings.Contains(errOut, `previous terminated container "talker"`) {
		t.Errorf("--previous without a restart: %d %s", code, errOut)
	}
	// -f: a line written after kubectl started following shows up.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := k.cmd(ctx, "logs", "-f", "--tail", "0", "host", "-c", "talker")
	pr, err := c.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	c.Start()
	defer c.Wait()
	defer cancel()
	attach := g.dialWS(t, "/api/v1/containers/talker/attach?stdin=1&replay=0", "v5.channel.k8s.io")
	// A line said before kubectl follows is not its to show (--tail 0):
	// say it until kubectl shows it.
	proctest.SendUntil(t, func() error { return attach.WriteMessage(2, []byte("\x00hello from the test\n")) },
		pr, "said hello from the test\n")
	// A followed log ends at shutdown: the HTTP shutdown has no request
	// left to wait for.
	if err := g.stop(); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(g.log.String(), "http shutdown") {
		t.Errorf("the shutdown waited for kubectl logs -f:\n%s", g.log)
	}
}

// TestLogsFollowFallsBehind: a log follower that stops reading for a
// while (kubectl logs -f | less) is cut by the output it holds up; it
// goes on from the scrollback where it left off, every line once, in
// order, to the last. When the scrollback no longer holds what it missed,
// its response breaks off: the client sees an error, not an end of log.
func TestLogsFollowFallsBehind(t *testing.T) {
	const n = 2000000 // 14.8 MB: far more than the follower's queue and sockets hold
	for _, tc := range []struct {
		scrollback string
		whole      bool
	}{{"64MiB", true}, {"1MiB", false}} {
		t.Run("scrollback "+tc.scrollback, func(t *testing.T) {
			g := startGateway(t, "--scrollback", tc.scrollback)
			g.createContainer(t, map[string]any{"id": "flood", "workingDir": g.dir,
				"command": []string{"sh", "-c", fmt.Sprintf("while [ ! -f go ]; do sleep 0.05; done; seq 1 %d; echo LAST; exec sleep 1000", n)}})
			req, _ := http.NewRequest("GET", g.url+"api/v1/namespaces/default/pods/host/log?container=flood&follow=true", nil)
			req.Header.Set("Authorization", "Bearer "+g.token)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("log: %d", resp.StatusCode)
			}
			if err := os.WriteFile(filepath.Join(g.dir, "go"), nil, 0o600); err != nil {
				t.Fatal(err)
			}
			time.Sleep(3 * time.Second) // the output is held up, then the follower cut (after a second)
			sc := bufio.NewScanner(resp.Body)
			for i := 1; i <= n; i++ {
				if !sc.Scan() {
					if !tc.whole && sc.Err() != nil {
						return // broken off, as it should
					}
					t.Fatalf("the log ended after line %d: %v", i-1, sc.Err())
				}
				if got := sc.Text(); got != strconv.Itoa(i) {
					if !tc.whole && !sc.Scan() && sc.Err() != nil {
						return // a line cut where the response broke off
					}
					t.Fatalf("line %d: %q", i, got)
				}
			}
			if !tc.whole {
				t.Fatal("all the lines came through a 1 MiB scrollback: the follower was never cut")
			}
			if !sc.Scan() || sc.Text() != "LAST" {
				t.Fatalf("after line %d: %q, %v; want LAST", n, sc.Text(), sc.Err())
			}
		})
	}
}

// TestKubectlSelectors: kubectl get -l and --field-selector pick pods as
// the API server does, refuse a field pods cannot be selected by, and
// kubectl wait watches only the pod it names.
func TestKubectlSelectors(t *testing.T) {
	g := startGateway(t)
	for _, id := range []string{"done", "never"} {
		g.do(t, "POST", "/api/v1/sandboxes", map[string]any{"id": id}, nil)
	}
	if resp := g.do(t, "POST", "/api/v1/containers", map[string]any{"id": "d", "sandbox": "done", "workingDir": g.dir,
		"command": []string{"true"}}, nil); resp.StatusCode != 201 { // not createContainer: true may be done before it looks
		t.Fatalf("create container d: %d", resp.StatusCode)
	}
	g.createContainer(t, map[string]any{"id": "n", "sandbox": "never", "workingDir": g.dir, "command": []string{"sleep", "1000"}})
	k := g.kubectl(t)
	for range 100 { // until true has exited
		if out, _, _ := k.run(nil, "get", "pod", "done", "-o", "jsonpath={.status.phase}"); out == "Succeeded" {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"-l", "gateway/sandbox=done"}, "pod/done\n"},
		{[]string{"-l", "gateway/sandbox in (done,never)"}, "pod/done\npod/never\n"},
		{[]string{"-l", "gateway/sandbox!=done,gateway/network=host"}, "pod/host\npod/never\n"},
		{[]string{"-l", "nolabel"}, ""},
		{[]string{"--field-selector", "status.phase=Succeeded"}, "pod/done\n"},
		{[]string{"--field-selector", "status.phase=Running,metadata.name!=host"}, "pod/never\n"},
		{[]string{"--field-selector", "spec.hostNetwork=true", "-l", "gateway/sandbox=host"}, "pod/host\n"},
		{[]string{"-A", "--field-selector", "metadata.namespace=default,metadata.name=never"}, "pod/never\n"},
	} {
		if out, errOut, code := k.run(nil, append([]string{"get", "pods", "-o", "name"}, c.args...)...); out != c.want || code != 0 {
			t.Errorf("get pods %q: %d %q, want %q\n%s", c.args, code, out, c.want, errOut)
		}
	}
	for _, c := range []struct{ args []string }{
		{[]string{"--field-selector", "spec.containers=x"}},
		{[]string{"-l", "a in ("}},
	} {
		_, errOut, code := k.run(nil, append([]string{"get", "pods"}, c.args...)...)
		if code != 1 || !strings.Contains(errOut, "Error from server (BadRequest)") {
			t.Errorf("get pods %q: %d %s", c.args, code, errOut)
		}
	}
	if _, errOut, _ := k.run(nil, "get", "pods", "--field-selector", "spec.containers=x"); !strings.Contains(errOut, "field label not supported: spec.containers") {
		t.Errorf("an unknown field: %s", errOut)
	}
	// done has succeeded, never will not: waiting for never must not end
	// on done's state.
	out, errOut, code := k.run(nil, "wait", "--for=jsonpath={.status.phase}=Succeeded", "pod/never", "--timeout=2s")
	if code != 1 || !strings.Contains(errOut, "timed out waiting for the condition on pods/never") {
		t.Errorf("wait for a pod that does not succeed: %d %q %s", code, out, errOut)
	}
	if out, errOut, code = k.run(nil, "wait", "--for=jsonpath={.status.phase}=Succeeded", "pod/done", "--timeout=20s"); code != 0 || out != "pod/done condition met\n" {
		t.Errorf("wait for a pod that succeeded: %d %q %s", code, out, errOut)
	}
}

// TestKubectlWatch: kubectl get -w prints each change of a pod as it
// happens, kubectl wait ends at the change it waits for, and a watch
// resumes from a list's resource version, or is told to list again.
func TestKubectlWatch(t *testing.T) {
	g := startGateway(t)
	k := g.kubectl(t)
	out := k.background("get", "pods", "-w", "--output-watch-events")
	readTo(t, out, regexp.MustCompile(`(?m)^ADDED\s+host\s+1/1\s+Running\s`))

	g.do(t, "POST", "/api/v1/sandboxes", map[string]any{"id": "w"}, nil)
	readTo(t, out, regexp.MustCompile(`(?m)^ADDED\s+w\s+0/0\s+Running\s`))
	list := struct {
		Metadata struct{ ResourceVersion string }
	}{}
	g.do(t, "GET", "/api/v1/namespaces/default/pods", nil, &list)
	g.createContainer(t, map[string]any{"id": "wc", "sandbox": "w", "workingDir": g.dir, "stdin": true,
		"command": []string{"sh", "-c", "read x; exit 3"}})
	readTo(t, out, regexp.MustCompile(`(?m)^MODIFIED\s+w\s+1/1\s+Running\s`))
	// A wait that only a change it sees through its watch can end.
	waitOut, waitErr, waitDone := k.startWait("--for=jsonpath={.status.phase}=Failed", "pod/w", "--timeout=60s")
	attach := g.dialWS(t, "/api/v1/containers/wc/attach?stdin=1&replay=0", "v5.channel.k8s.io")
	if err := attach.WriteMessage(2, []byte("\x00go\n")); err != nil {
		t.Fatal(err)
	}
	readTo(t, out, regexp.MustCompile(`(?m)^MODIFIED\s+w\s+0/1\s+Error\s`))
	select {
	case err := <-waitDone:
		if err != nil || waitOut.String() != "pod/w condition met\n" {
			t.Errorf("kubectl wait: %v %q\n%s", err, waitOut.String(), waitErr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("kubectl wait did not end when the pod failed:\n%s", waitErr.String())
	}
	g.do(t, "DELETE", "/api/v1/containers/wc", nil, nil)
	g.do(t, "DELETE", "/api/v1/sandboxes/w", nil, nil)
	readTo(t, out, regexp.MustCompile(`(?m)^DELETED\s+w\s`))

	// From the list's version: the changes since, each once, the last the
	// pod's deletion; the watch ends at its timeoutSeconds.
	events := g.watch(t, "/api/v1/pods?watch=1&timeoutSeconds=1&fieldSelector=metadata.name%3Dw&resourceVersion="+list.Metadata.ResourceVersion)
	var types []string
	for _, e := range events {
		types = append(types, e.Type)
	}
	if len(types) < 3 || types[0] != "MODIFIED" || types[len(types)-1] != "DELETED" || slices.Contains(types, "ADDED") {
		t.Errorf("watch from %s: %q", list.Metadata.ResourceVersion, types)
	}
	// From a version older than any kept: 410 Expired, so the client lists again.
	if events = g.watch(t, "/api/v1/pods?watch=1&resourceVersion=1"); len(events) != 1 || events[0].Type != "ERROR" ||
		events[0].Object.Code != 410 || events[0].Object.Reason != "Expired" {
		t.Errorf("watch from an old version: %+v", events)
	}
	// From a version not given yet: the Status client-go takes for "list again".
	rv, _ := strconv.ParseUint(list.Metadata.ResourceVersion, 10, 64)
	if events = g.watch(t, fmt.Sprintf("/api/v1/pods?watch=1&resourceVersion=%d", rv+1000)); len(events) != 1 ||
		events[0].Object.Code != 504 || events[0].Object.Reason != "Timeout" || events[0].Object.Details.Causes[0].Reason != "ResourceVersionTooLarge" {
		t.Errorf("watch from a version to come: %+v", events)
	}
	// The namespace, which never changes: there, then nothing to its end.
	if events = g.watch(t, "/api/v1/namespaces?watch=1&timeoutSeconds=1"); len(events) != 1 || events[0].Type != "ADDED" ||
		events[0].Object.Metadata.Name != "default" {
		t.Errorf("namespaces watched: %+v", events)
	}
	if events = g.watch(t, "/api/v1/namespaces?watch=1&timeoutSeconds=1&resourceVersion=1"); len(events) != 0 {
		t.Errorf("namespaces watched from their version: %+v", events)
	}
	var st struct{ Code int }
	if g.do(t, "GET", "/api/v1/pods?watch=1&resourceVersion=x", nil, &st); st.Code != 400 {
		t.Errorf("a resource version not given: %d", st.Code)
	}

	// A watch open at shutdown ends with the drain: the HTTP shutdown has
	// no request left to wait for.
	body := g.openWatch(t, "/api/v1/pods?watch=1")
	if err := g.stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(body); err != nil {
		t.Errorf("the watch at shutdown: %v", err)
	}
	if strings.Contains(g.log.String(), "http shutdown") {
		t.Errorf("the shutdown waited for a watch:\n%s", g.log)
	}
}

type watchEvent struct {
	Type   string
	Object struct {
		Code     int
		Reason   string
		Message  string
		Details  struct{ Causes []struct{ Reason string } } // a cause's type is its "reason"
		Metadata struct{ Name, ResourceVersion string }
	}
}

// openWatch starts a watch and returns its body, closed at the test's end.
func (g *gateway) openWatch(t *testing.T, path string) io.ReadCloser {
	t.Helper()
	req, _ := http.NewRequest("GET", g.url+strings.TrimPrefix(path, "/"), nil)
	req.Header.Set("Authorization", "Bearer "+g.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("watch %s: %d %s", path, resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	return resp.Body
}

// watch reads a watch to its end.
func (g *gateway) watch(t *testing.T, path string) []watchEvent {
	t.Helper()
	dec := json.NewDecoder(g.openWatch(t, path))
	var out []watchEvent
	for {
		var e watchEvent
		if err := dec.Decode(&e); err == io.EOF {
			return out
		} else if err != nil {
			t.Fatalf("watch %s: %v", path, err)
		}
		out = append(out, e)
	}
}

// TestKubectlDelete: kubectl delete pod removes the sandbox with its
// containers (one of which ignores SIGTERM), --dry-run=server removes
// nothing, a selector deletes what it selects, and the host pod stays.
func TestKubectlDelete(t *testing.T) {
	g := startGateway(t)
	for _, id := range []string{"lab", "a", "b"} {
		g.do(t, "POST", "/api/v1/sandboxes", map[string]any{"id": id}, nil)
	}
	g.createContainer(t, map[string]any{"id": "polite", "sandbox": "lab", "workingDir": g.dir,
		"command": []string{"sh", "-c", `trap "exit 0" TERM; while :; do sleep 0.1; done`}})
	g.createContainer(t, map[string]any{"id": "stubborn", "sandbox": "lab", "workingDir": g.dir,
		"command": []string{"sh", "-c", `trap "" TERM; while :; do sleep 0.1; done`}})
	k := g.kubectl(t)
	if out, errOut, code := k.run(nil, "delete", "pod", "lab", "--dry-run=server"); code != 0 || out != "pod \"lab\" deleted from default namespace (server dry run)\n" {
		t.Errorf("delete --dry-run=server: %d %q %s", code, out, errOut)
	}
	if out, _, _ := k.run(nil, "get", "pod", "lab", "-o", "jsonpath={.status.containerStatuses[*].name}"); out != "polite stubborn" {
		t.Errorf("after a dry run: %q", out)
	}
	if out, errOut, code := k.run(nil, "delete", "pod", "lab", "--grace-period=1"); code != 0 || out != "pod \"lab\" deleted from default namespace\n" {
		t.Errorf("delete pod: %d %q %s", code, out, errOut)
	}
	for _, path := range []string{"/api/v1/sandboxes/lab", "/api/v1/containers/polite", "/api/v1/containers/stubborn"} {
		if resp := g.do(t, "GET", path, nil, nil); resp.StatusCode != 404 {
			t.Errorf("%s after the delete: %d", path, resp.StatusCode)
		}
	}
	if _, errOut, code := k.run(nil, "delete", "pod", "host"); code != 1 || !strings.Contains(errOut, "Error from server (Conflict)") {
		t.Errorf("delete the host pod: %d %s", code, errOut)
	}
	if _, errOut, code := k.run(nil, "delete", "pod", "nope"); code != 1 || !strings.Contains(errOut, `pods "nope" not found`) {
		t.Errorf("delete a missing pod: %d %s", code, errOut)
	}
	if out, errOut, code := k.run(nil, "delete", "pods", "-l", "gateway/sandbox in (a,b)"); code != 0 ||
		out != "pod \"a\" deleted from default namespace\npod \"b\" deleted from default namespace\n" {
		t.Errorf("delete pods -l: %d %q %s", code, out, errOut)
	}
	if out, _, _ := k.run(nil, "get", "pods", "-o", "name"); out != "pod/host\n" {
		t.Errorf("pods left: %q", out)
	}
}

// TestKubectlAuth: kubectl auth whoami and auth can-i, whose reviews
// kubectl sends as protobuf.
func TestKubectlAuth(t *testing.T) {
	g := startGateway(t)
	k := g.kubectl(t)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"auth", "whoami", "-o", "jsonpath={.status.userInfo.username} {.status.userInfo.groups}"}, `gateway ["system:authenticated"]`},
		{[]string{"auth", "can-i", "get", "pods"}, "yes\n"},
		{[]string{"auth", "can-i", "create", "pods/exec"}, "yes\n"},
		{[]string{"auth", "can-i", "get", "/healthz"}, "yes\n"},
	} {
		if out, errOut, code := k.run(nil, c.args...); code != 0 || out != c.want {
			t.Errorf("kubectl %q: %d %q, want %q\n%s", c.args, code, out, c.want, errOut)
		}
	}
	if out, errOut, code := k.run(nil, "auth", "can-i", "--list"); code != 0 || !regexp.MustCompile(`(?m)^\*\.\*\s+\[\]\s+\[\]\s+\[\*\]$`).MatchString(out) {
		t.Errorf("kubectl auth can-i --list: %d %q %s", code, out, errOut)
	}
	if _, errOut, code := k.run(nil, "--token", "wrong", "auth", "whoami"); code == 0 || !strings.Contains(errOut, "You must be logged in to the server") {
		t.Errorf("a wrong token: %d %s", code, errOut)
	}
}

// TestClientGoPods: a client-go program's typed clientset, set to
// protobuf as kubectl's own is: an informer (watch-list, a label
// selector) sees a pod added, changed and deleted, the delete sent as a
// protobuf DeleteOptions; a list selects by field.
func TestClientGoPods(t *testing.T) {
	g := startGateway(t)
	ctx := testContext(t)
	cs, err := kubernetes.NewForConfig(&rest.Config{Host: g.url, BearerToken: g.token, ContentConfig: rest.ContentConfig{
		ContentType: "application/vnd.kubernetes.protobuf", AcceptContentTypes: "application/vnd.kubernetes.protobuf,application/json"}})
	if err != nil {
		t.Fatal(err)
	}
	factory := informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithNamespace("default"),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = "gateway/network=host" }))
	pods := factory.Core().V1().Pods()
	events := make(chan string, 100)
	pods.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) { events <- "add " + obj.(*corev1.Pod).Name },
		UpdateFunc: func(_, obj any) {
			p := obj.(*corev1.Pod)
			events <- fmt.Sprintf("update %s %d", p.Name, len(p.Spec.Containers))
		},
		DeleteFunc: func(obj any) {
			if p, ok := obj.(*corev1.Pod); ok {
				events <- "delete " + p.Name
			}
		},
	})
	stop := make(chan struct{})
	factory.Start(stop)
	defer factory.Shutdown()
	defer close(stop)
	if !cache.WaitForCacheSync(ctx.Done(), pods.Informer().HasSynced) {
		t.Fatal("the informer did not sync")
	}
	next := func(want string) {
		t.Helper()
		for {
			select {
			case e := <-events:
				if e == want {
					return
				}
			case <-ctx.Done():
				t.Fatalf("no %q", want)
			}
		}
	}
	next("add host")
	g.do(t, "POST", "/api/v1/sandboxes", map[string]any{"id": "cg"}, nil)
	g.do(t, "POST", "/api/v1/sandboxes", map[string]any{"id": "other", "network": "new"}, nil)
	next("add cg")
	g.createContainer(t, map[string]any{"id": "cgc", "sandbox": "cg", "workingDir": g.dir, "command": []string{"sleep", "1000"}})
	next("update cg 1")
	if err := cs.CoreV1().Pods("default").Delete(ctx, "cg", metav1.DeleteOptions{GracePeriodSeconds: ptrTo(int64(0))}); err != nil {
		t.Fatalf("delete: %v", err)
	}
	next("delete cg")
	if names := podNames(pods.Lister().List(labels.Everything())); !slices.Equal(names, []string{"host"}) {
		t.Errorf("the informer's pods: %q", names)
	}
	l, err := cs.CoreV1().Pods("").List(ctx, metav1.ListOptions{FieldSelector: "spec.hostNetwork=false"})
	if err != nil || len(l.Items) != 1 || l.Items[0].Name != "other" {
		t.Errorf("list by field: %v %+v", err, l)
	}
}

func podNames(pods []*corev1.Pod, _ error) []string {
	var out []string
	for _, p := range pods {
		out = append(out, p.Name)
	}
	slices.Sort(out)
	return out
}

func ptrTo[T any](v T) *T { return &v }

// TestKubectlEvents: kubectl describe pod shows its containers' events, a
// crash loop's counted; kubectl get events selects by field, and watches;
// a sandbox made again with the same id has none of its predecessor's.
func TestKubectlEvents(t *testing.T) {
	g := startGateway(t)
	g.do(t, "POST", "/api/v1/sandboxes", map[string]any{"id": "lab"}, nil)
	g.do(t, "POST", "/api/v1/containers", map[string]any{"id": "web", "sandbox": "lab", "workingDir": g.dir,
		"command": []string{"sh", "-c", "exit 2"}, "restartPolicy": "always"}, nil)
	for range 500 {
		var c struct{ Restarts int }
		if g.do(t, "GET", "/api/v1/containers/web", nil, &c); c.Restarts >= 2 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	k := g.kubectl(t)
	out, errOut, code := k.run(nil, "describe", "pod", "lab")
	for _, re := range []string{`(?m)^  Normal\s+Started\s+.*gateway\s+spec\.containers\{web\}: Started container web$`,
		`(?m)^  Warning\s+BackOff\s+\S+ \(x\d+ over \S+\)\s+gateway\s+spec\.containers\{web\}: Back-off restarting failed container web in pod lab$`} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("describe pod lacks %s: %d\n%s%s", re, code, out, errOut)
		}
	}
	if out, errOut, code = k.run(nil, "get", "events", "--field-selector", "type=Warning,involvedObject.name=lab",
		"-o", "jsonpath={range .items[*]}{.reason} {.involvedObject.fieldPath}{\"\\n\"}{end}"); code != 0 || out != "BackOff spec.containers{web}\n" {
		t.Errorf("get events --field-selector: %d %q %s", code, out, errOut)
	}

	// kubectl get events -w: a new event is added, a repeat modifies its own.
	watched := k.background("get", "events", "-w", "--output-watch-events")
	readTo(t, watched, regexp.MustCompile(`(?m)^ADDED\s+\S+\s+Warning\s+BackOff\s+pod/lab\s`))
	g.createContainer(t, map[string]any{"id": "db", "sandbox": "lab", "workingDir": g.dir, "command": []string{"sleep", "1000"}})
	readTo(t, watched, regexp.MustCompile(`(?m)^ADDED\s+\S+\s+Normal\s+Started\s+pod/lab\s+Started container db$`))
	readTo(t, watched, regexp.MustCompile(`(?m)^MODIFIED\s+\S+\s+Warning\s+BackOff\s+pod/lab\s+Back-off restarting failed container web in pod lab$`))

	// From a list's version: what came since, and nothing before it.
	var list struct {
		Metadata struct{ ResourceVersion string }
	}
	g.do(t, "GET", "/api/v1/namespaces/default/events", nil, &list)
	g.createContainer(t, map[string]any{"id": "late", "sandbox": "lab", "workingDir": g.dir, "command": []string{"sleep", "1000"}})
	var added []string
	for _, e := range g.watch(t, "/api/v1/namespaces/default/events?watch=1&timeoutSeconds=1&resourceVersion="+list.Metadata.ResourceVersion) {
		if e.Type == "ADDED" {
			added = append(added, e.Object.Message)
		}
	}
	if !slices.Equal(added, []string{"Started container late"}) {
		t.Errorf("events added since the list: %q", added)
	}
	rv, _ := strconv.ParseUint(list.Metadata.ResourceVersion, 10, 64)
	for _, c := range []struct {
		rv   uint64
		code int
	}{{1, 410}, {rv + 1000, 504}} {
		if events := g.watch(t, fmt.Sprintf("/api/v1/events?watch=1&resourceVersion=%d", c.rv)); len(events) != 1 || events[0].Object.Code != c.code {
			t.Errorf("events from %d: %+v", c.rv, events)
		}
	}
	if _, errOut, code = k.run(nil, "delete", "pod", "lab"); code != 0 {
		t.Fatalf("delete pod: %s", errOut)
	}
	g.do(t, "POST", "/api/v1/sandboxes", map[string]any{"id": "lab"}, nil)
	if out, errOut, code = k.run(nil, "get", "events", "--field-selector", "involvedObject.name=lab", "-o", "name"); code != 0 || out != "" {
		t.Errorf("events of the new lab: %d %q %s", code, out, errOut)
	}
}

// TestPodNamesAndFlags: a sandbox id may hold dots, and its pod is got by
// the name it is listed with; DeleteOptions come from the query too
// (?dryRun=All deletes nothing); flags are true for any value but 0 and
// false, as the API server reads them (?watch watches).
func TestPodNamesAndFlags(t *testing.T) {
	g := startGateway(t)
	for _, id := range []string{"web.v2", "lab"} {
		if resp := g.do(t, "POST", "/api/v1/sandboxes", map[string]any{"id": id, "network": "host"}, nil); resp.StatusCode != 201 {
			t.Fatalf("create sandbox %s: %d", id, resp.StatusCode)
		}
	}
	var pod struct{ Metadata struct{ Name string } }
	if resp := g.do(t, "GET", "/api/v1/namespaces/default/pods/web.v2", nil, &pod); resp.StatusCode != 200 || pod.Metadata.Name != "web.v2" {
		t.Errorf("GET pods/web.v2: %d %+v", resp.StatusCode, pod)
	}
	if resp := g.do(t, "DELETE", "/api/v1/namespaces/default/pods/lab?dryRun=All", nil, nil); resp.StatusCode != 200 {
		t.Errorf("DELETE ?dryRun=All: %d", resp.StatusCode)
	}
	if resp := g.do(t, "GET", "/api/v1/sandboxes/lab", nil, nil); resp.StatusCode != 200 {
		t.Errorf("after a dry-run delete, the sandbox: %d", resp.StatusCode)
	}
	for _, v := range []string{"v1", "meta.k8s.io/v1"} { // both are DeleteOptions' group versions
		body := map[string]any{"kind": "DeleteOptions", "apiVersion": v, "dryRun": []string{"All"}}
		if resp := g.do(t, "DELETE", "/api/v1/namespaces/default/pods/lab", body, nil); resp.StatusCode != 200 {
			t.Errorf("DELETE with DeleteOptions of %s: %d", v, resp.StatusCode)
		}
	}
	for _, q := range []string{"watch", "watch=True", "watch=yes"} {
		resp, err := http.DefaultClient.Do(authed(g, "GET", "api/v1/namespaces/default/pods?timeoutSeconds=1&"+q))
		if err != nil {
			t.Fatal(err)
		}
		line, _ := bufio.NewReader(resp.Body).ReadString('\n')
		resp.Body.Close()
		if !strings.HasPrefix(line, `{"type":"ADDED"`) {
			t.Errorf("?%s: want a watch (an ADDED event first), got %.80s", q, line)
		}
	}
}
