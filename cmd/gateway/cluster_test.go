package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/gorilla/websocket"

	"gateway/internal/tooltest"
)

// replicas starts n gateways that know each other as peers (n1, n2, ...),
// each with a container c<i> and a sandbox s<i> of its own.
func replicas(t *testing.T, n int) []*gateway {
	t.Helper()
	addrs := loopbackAddrs(t, n, 11)
	var urls []string
	for _, a := range addrs {
		urls = append(urls, "http://"+a)
	}
	// One state directory: their Kubernetes API certificates come from one
	// CA, so that kubectl behind a front door trusts every replica.
	state := t.TempDir()
	var gs []*gateway
	for i := range n {
		g := startGateway(t, "--listen", addrs[i], "--node", fmt.Sprintf("n%d", i+1),
			"--peers", strings.Join(urls, ","), "--state-dir", state, "--kube-listen", fmt.Sprintf("127.0.0.%d:0", 11+i),
			"--kubeconfig", filepath.Join(t.TempDir(), "kubeconfig"))
		g.createContainer(t, map[string]any{"id": fmt.Sprintf("c%d", i+1), "command": []string{"sleep", "1000000"}, "stdin": true,
			"workingDir": g.dir})
		if resp := g.do(t, "POST", "/api/v1/sandboxes", map[string]any{"id": fmt.Sprintf("s%d", i+1), "network": "host"}, nil); resp.StatusCode != 201 {
			t.Fatalf("sandbox s%d: %d", i+1, resp.StatusCode)
		}
		gs = append(gs, g)
	}
	// Every replica has seen the others up (probes every 5 s).
	for _, g := range gs {
		waitList(t, g, "/api/v1/containers", func(l listAnswer) bool {
			return len(l.Unreachable) == 0 && l.nodes()["c1"] != "" && len(l.nodes()) >= 2*n
		})
	}
	return gs
}

// loopbackAddrs are n addresses to listen on, each on a loopback address
// of its own (127.0.0.first, ...): a port chosen in advance is not then
// taken by a replica's outgoing connections.
func loopbackAddrs(t *testing.T, n, first int) []string {
	t.Helper()
	var out []string
	for i := range n {
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.%d:0", first+i))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, ln.Addr().String())
		ln.Close()
	}
	return out
}

type listAnswer struct {
	Items []struct {
		ID, Node string
	}
	Unreachable []string
}

func (l listAnswer) nodes() map[string]string {
	m := map[string]string{}
	for _, it := range l.Items {
		m[it.ID+"@"+it.Node] = it.Node
		m[it.ID] = it.Node
	}
	return m
}

func waitList(t *testing.T, g *gateway, path string, cond func(listAnswer) bool) listAnswer {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		var l listAnswer
		g.do(t, "GET", path, nil, &l)
		if cond(l) {
			return l
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %+v", path, l)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestReplicas: three replicas are one gateway: lists name every
// replica's items with their node; an exec and a port-forward through a
// replica that does not own their target carry 64 MiB with the right
// digest; a create lands on the node it names; a replica that stops is
// reported and its items answer 503 at once, the others go on.
func TestReplicas(t *testing.T) {
	gs := replicas(t, 3)
	n1 := gs[0]

	l := waitList(t, n1, "/api/v1/containers", func(l listAnswer) bool { return true })
	if m := l.nodes(); m["c1"] != "n1" || m["c2"] != "n2" || m["c3"] != "n3" || m["box@n2"] != "n2" {
		t.Errorf("containers through n1: %+v", l)
	}

	// 64 MiB of exec output from c2, through n1.
	data := filepath.Join(gs[1].dir, "data")
	c := n1.dialWS(t, execPath("c2", "stdout,stderr", "sh", "-c", "head -c 67108864 /dev/urandom > "+data+"; cat "+data+"; sha256sum "+data+" >&2"), "v5.channel.k8s.io")
	h := sha256.New()
	var stderr []byte
	n := 0
	for {
		_, m, err := c.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			if !errors.As(err, &ce) || ce.Code != 1000 {
				t.Fatalf("exec through n1: %v after %d bytes", err, n)
			}
			break
		}
		switch {
		case len(m) > 1 && m[0] == 1:
			h.Write(m[1:])
			n += len(m) - 1
		case len(m) > 1 && m[0] == 2:
			stderr = append(stderr, m[1:]...)
		}
	}
	if got := hex.EncodeToString(h.Sum(nil)); n != 64<<20 || !strings.HasPrefix(string(stderr), got) {
		t.Errorf("exec through n1: %d bytes, digest %s, c2 says %q", n, got, stderr)
	}

	// A single-use URL minted through n1 for c2 names n2, and works
	// through n1.
	var minted struct{ URL string }
	if resp := n1.do(t, "POST", "/api/v1/containers/c2/exec", map[string]any{"command": []string{"echo", "minted"}, "stdout": true}, &minted); resp.StatusCode != 201 ||
		!strings.HasSuffix(minted.URL, "?node=n2") {
		t.Fatalf("mint through n1: %d %+v", resp.StatusCode, minted)
	}
	mc := n1.dialWS(t, minted.URL, "v5.channel.k8s.io")
	if out := readUntil(t, mc, func(b []byte) bool { return bytes.Contains(b, []byte("\n")) }); string(out) != "minted\n" {
		t.Errorf("the minted URL through n1: %q", out)
	}
	mc.Close()

	// 64 MiB each way through a port-forward into s3, through n1.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		io.Copy(conn, conn) // echo
	}()
	port := ln.Addr().(*net.TCPAddr).Port
	pf := n1.dialWS(t, fmt.Sprintf("/api/v1/sandboxes/s3/portforward?port=%d", port), "v4.channel.k8s.io")
	pf.ReadMessage() // the port prefixes
	pf.ReadMessage()
	chunk := make([]byte, 32<<10)
	sent, got := sha256.New(), sha256.New()
	errc := make(chan error, 1)
	go func() {
		for i := range 2048 {
			for j := range chunk {
				chunk[j] = byte(i*7 + j)
			}
			sent.Write(chunk)
			if err := pf.WriteMessage(websocket.BinaryMessage, append([]byte{0}, chunk...)); err != nil {
				errc <- err
				return
			}
		}
		errc <- nil
	}()
	for recv := 0; recv < 64<<20; {
		_, m, err := pf.ReadMessage()
		if err != nil {
			t.Fatalf("port-forward through n1: %v after %d bytes", err, recv)
		}
		if len(m) > 1 && m[0] == 0 {
			got.Write(m[1:])
			recv += len(m) - 1
		}
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(sent.Sum(nil), got.Sum(nil)) {
		t.Error("the port-forward's echo differs from what was sent")
	}
	pf.Close()

	// The forwarding shows in n1's metrics, by peer.
	mresp, err := http.Get(n1.url + "metrics")
	if err != nil {
		t.Fatal(err)
	}
	mb, _ := io.ReadAll(mresp.Body)
	mresp.Body.Close()
	for _, want := range []string{`gateway_peer_up{peer="n2"} 1`, `gateway_peer_up{peer="n3"} 1`, `gateway_forwarded_requests_total{peer="n2"}`,
		`gateway_forwarded_bytes_total{direction="in",peer="n2"}`} {
		if !bytes.Contains(mb, []byte(want)) {
			t.Errorf("n1's metrics lack %s:\n%s", want, grepLines(mb, "peer="))
		}
	}
	if bytes.Contains(mb, []byte(`gateway_forwarded_requests_total{peer="n2"} 0`)) {
		t.Error("no request counted as forwarded to n2")
	}

	// A create that names its node lands there.
	if resp := n1.do(t, "POST", "/api/v1/containers", map[string]any{"id": "made", "node": "n3", "command": []string{"sleep", "100"}}, nil); resp.StatusCode != 201 {
		t.Fatalf("create on n3 through n1: %d", resp.StatusCode)
	}
	var info struct{ ID string }
	if resp := gs[2].do(t, "GET", "/api/v1/containers/made?node=n3", nil, &info); resp.StatusCode != 200 || info.ID != "made" {
		t.Errorf("the container made through n1 is not on n3: %d %+v", resp.StatusCode, info)
	}
	var st status
	if resp := n1.do(t, "GET", "/api/v1/containers/nowhere", nil, &st); resp.StatusCode != 404 {
		t.Errorf("an id no replica has: %d %+v", resp.StatusCode, st)
	}

	// n3 stops: n1 reports it, and what it held fails fast.
	if err := gs[2].stop(); err != nil {
		t.Fatal(err)
	}
	l = waitList(t, n1, "/api/v1/containers", func(l listAnswer) bool { return len(l.Unreachable) == 1 && l.Unreachable[0] == "n3" })
	if m := l.nodes(); m["c2"] != "n2" || m["c3"] != "" {
		t.Errorf("containers with n3 down: %+v", l)
	}
	t0 := time.Now()
	resp := n1.do(t, "GET", "/api/v1/containers/c3", nil, &st)
	if resp.StatusCode != 503 || time.Since(t0) > 2*time.Second || !strings.Contains(st.Message, "n3") {
		t.Errorf("c3 with n3 down: %d after %v: %+v", resp.StatusCode, time.Since(t0), st)
	}
	// The others go on.
	c = n1.dialWS(t, execPath("c2", "stdout", "echo", "still here"), "v5.channel.k8s.io")
	if out := readUntil(t, c, func(b []byte) bool { return bytes.Contains(b, []byte("\n")) }); string(out) != "still here\n" {
		t.Errorf("c2 through n1 with n3 down: %q", out)
	}
	// A peer's forwarded request is answered by its owner.
	req := authed(n1, "GET", "api/v1/sessions")
	r, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.Header.Get("X-Gateway-Node") != "n1" || !strings.Contains(r.Header.Get("Warning"), "n3") {
		t.Errorf("headers of a list with n3 down: %v", r.Header)
	}
}

// frontDoor runs HAProxy with the project's configuration before the
// replicas (their API and Kubernetes API addresses) and waits until it
// lists every replica's containers; it returns the front door, and the
// address of its kubectl side.
func frontDoor(t *testing.T, apis, kubes []string, token string) (fd *gateway, kubeFront string) {
	t.Helper()
	bin, err := exec.LookPath("haproxy")
	if err != nil {
		tooltest.SkipOrFail(t, "haproxy is not installed: make test installs it")
	}
	front, kubeFront := fmt.Sprintf("127.0.0.1:%d", freePort(t)), fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cmd := exec.Command(bin, "-db", "-f", filepath.Join("..", "..", "deploy", "haproxy", "haproxy.cfg"))
	cmd.Env = []string{"GATEWAY_FRONT=" + front, "GATEWAY_KUBE_FRONT=" + kubeFront, "PATH=/usr/sbin:/usr/bin:/bin"}
	for i := range apis {
		cmd.Env = append(cmd.Env, fmt.Sprintf("GATEWAY_%d=%s", i+1, apis[i]), fmt.Sprintf("GATEWAY_KUBE_%d=%s", i+1, kubes[i]))
	}
	out := &logBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		<-exited
		if t.Failed() {
			t.Logf("haproxy:\n%s", out.String())
		}
	})
	fd = &gateway{url: "http://" + front + "/", token: token}
	deadline := time.Now().Add(20 * time.Second)
	for {
		var l listAnswer
		if resp, err := http.DefaultClient.Do(authed(fd, "GET", "api/v1/containers")); err == nil {
			json.NewDecoder(resp.Body).Decode(&l)
			resp.Body.Close()
			if resp.StatusCode == 200 && len(l.Unreachable) == 0 && l.nodes()[fmt.Sprintf("c%d", len(apis))] != "" {
				return fd, kubeFront
			}
		}
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("haproxy exited: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("the front door does not answer")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// kubectlVia is a kubectl whose kubeconfig is g's with the server at
// addr (a front door).
func kubectlVia(t *testing.T, kubeconfig, server, addr string) *kubectl {
	t.Helper()
	kc, err := os.ReadFile(kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	kc = bytes.ReplaceAll(kc, []byte(server), []byte("https://"+addr))
	kfile := filepath.Join(t.TempDir(), "kubeconfig")
	os.WriteFile(kfile, kc, 0o600)
	return &kubectl{t: t, path: os.Getenv("KUBECTL"), env: []string{"KUBECONFIG=" + kfile, "HOME=" + t.TempDir()}}
}

// TestFrontDoor: HAProxy with the project's configuration in front of
// three replicas: sessions opened through it reach containers on every
// replica, 64 MiB arrive whole, and when a replica shuts down, HAProxy
// stops sending it clients while the others go on.
func TestFrontDoor(t *testing.T) {
	gs := replicas(t, 3)
	var apis, kubes []string
	for _, g := range gs {
		apis, kubes = append(apis, strings.TrimSuffix(strings.TrimPrefix(g.url, "http://"), "/")), append(kubes, strings.TrimPrefix(g.kubeURL, "https://"))
	}
	fd, kubeFront := frontDoor(t, apis, kubes, gs[0].token)

	// Every replica's container, through the front door, a few times each
	// (whichever replica HAProxy picks).
	for round := range 2 {
		for i := range gs {
			c := fd.dialWS(t, execPath(fmt.Sprintf("c%d", i+1), "stdout", "echo", fmt.Sprintf("hello from c%d", i+1)), "v5.channel.k8s.io")
			want := fmt.Sprintf("hello from c%d\n", i+1)
			if got := readUntil(t, c, func(b []byte) bool { return bytes.Contains(b, []byte("\n")) }); string(got) != want {
				t.Errorf("round %d: c%d through the front door: %q", round, i+1, got)
			}
			c.Close()
		}
	}
	// kubectl through the front door (TLS passed through) execs into a
	// pod on each replica.
	if os.Getenv("KUBECTL") == "" {
		t.Log("$KUBECTL is not set: kubectl through the front door is not tried (make test sets it)")
	} else {
		k := kubectlVia(t, gs[0].kubeconfig, gs[0].kubeURL, kubeFront)
		for i := range gs {
			out, errOut, code := k.run(nil, "exec", fmt.Sprintf("host.n%d", i+1), "-c", fmt.Sprintf("c%d", i+1), "--", "echo", fmt.Sprintf("hi from c%d", i+1))
			if code != 0 || out != fmt.Sprintf("hi from c%d\n", i+1) {
				t.Errorf("kubectl exec through the front door into n%d: %d %q %s", i+1, code, out, errOut)
			}
		}
	}
	c := fd.dialWS(t, execPath("c3", "stdout", "head", "-c", "67108864", "/dev/zero"), "v5.channel.k8s.io")
	n := 0
	for {
		_, m, err := c.ReadMessage()
		if err != nil {
			break
		}
		if len(m) > 1 && m[0] == 1 {
			if bytes.IndexFunc(m[1:], func(r rune) bool { return r != 0 }) >= 0 {
				t.Fatal("a byte that is not zero")
			}
			n += len(m) - 1
		}
	}
	if n != 64<<20 {
		t.Errorf("64 MiB through the front door: %d bytes", n)
	}

	// n2 shuts down: HAProxy takes it out, the others serve on.
	if err := gs[1].stop(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for ok := 0; ok < 6; {
		resp, err := http.DefaultClient.Do(authed(fd, "GET", "api/v1/containers/c1"))
		if err == nil {
			resp.Body.Close()
		}
		if err == nil && resp.StatusCode == 200 {
			ok++
		} else {
			ok = 0
		}
		if time.Now().After(deadline) {
			t.Fatalf("c1 through the front door with n2 down: %v %v", resp, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	var st status
	resp, err := http.DefaultClient.Do(authed(fd, "GET", "api/v1/containers/c2"))
	if err != nil {
		t.Fatal(err)
	}
	json.NewDecoder(resp.Body).Decode(&st)
	resp.Body.Close()
	if resp.StatusCode != 503 || !strings.Contains(st.Message, "n2") {
		t.Errorf("c2 with n2 down: %d %+v", resp.StatusCode, st)
	}
}

// TestReplicasKubectl: kubectl at one replica sees every replica's pods,
// named SANDBOX.NODE with their node, and execs into a pod on another.
func TestReplicasKubectl(t *testing.T) {
	kubectlPath(t)
	gs := replicas(t, 3)
	k := gs[0].kubectl(t)
	out, errOut, code := k.run(nil, "get", "pods", "-o", "wide")
	if code != 0 {
		t.Fatalf("kubectl get pods: %d %s", code, errOut)
	}
	for _, want := range []string{"host.n1", "host.n2", "host.n3", "s2.n2", "s3.n3"} {
		if !strings.Contains(out, want) {
			t.Errorf("kubectl get pods lacks %s:\n%s", want, out)
		}
	}
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) > 6 && strings.HasPrefix(f[0], "s2.") && f[6] != "n2" {
			t.Errorf("s2's node: %q", line)
		}
	}
	out, errOut, code = k.run(nil, "exec", "host.n2", "-c", "c2", "--", "sh", "-c", "echo hi from $0; exit 3", "c2")
	if code != 3 || out != "hi from c2\n" {
		t.Errorf("kubectl exec into n2 through n1: %d %q %s", code, out, errOut)
	}
	// The same over plain SPDY/3.1, forwarded as an upgrade too.
	spdy := gs[0].kubectl(t, "KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false")
	out, errOut, code = spdy.run(nil, "exec", "host.n3", "-c", "c3", "--", "sh", "-c", "echo spdy from $0; exit 4", "c3")
	if code != 4 || out != "spdy from c3\n" {
		t.Errorf("kubectl exec over SPDY into n3 through n1: %d %q %s", code, out, errOut)
	}

	// Selectors and watches span the replicas.
	if out, errOut, code = k.run(nil, "get", "pods", "-o", "name", "-l", "gateway/sandbox=s2"); out != "pod/s2.n2\n" || code != 0 {
		t.Errorf("get pods -l across replicas: %d %q %s", code, out, errOut)
	}
	watched := k.background("get", "pods", "-w", "--output-watch-events")
	// Every replica's pods, in the order the replicas answered.
	initial := readTo(t, watched, regexp.MustCompile(`(?s)(\nADDED [^\n]*){6}`))
	for _, want := range []string{"host.n1", "s1.n1", "host.n2", "s2.n2", "host.n3", "s3.n3"} {
		if !regexp.MustCompile(`(?m)^ADDED\s+` + regexp.QuoteMeta(want) + `\s`).MatchString(initial) {
			t.Errorf("kubectl get -w lacks %s:\n%s", want, initial)
		}
	}
	var list struct {
		Metadata struct{ ResourceVersion string }
	}
	gs[0].do(t, "GET", "/api/v1/namespaces/default/pods", nil, &list)
	// Past the 1 s a peer has to answer a lookup: the peers' watches
	// stream on.
	time.Sleep(1500 * time.Millisecond)
	gs[2].do(t, "POST", "/api/v1/sandboxes", map[string]any{"id": "w3"}, nil)
	readTo(t, watched, regexp.MustCompile(`(?m)^ADDED\s+w3\.n3\s+0/0\s+Running\s`))
	gs[2].do(t, "DELETE", "/api/v1/sandboxes/w3", nil, nil)
	readTo(t, watched, regexp.MustCompile(`(?m)^DELETED\s+w3\.n3\s`))
	// From the merged list's version: n3's two changes, and nothing of
	// the replicas that did not change.
	events := gs[0].watch(t, "/api/v1/pods?watch=1&timeoutSeconds=1&resourceVersion="+url.QueryEscape(list.Metadata.ResourceVersion))
	var got []string
	for _, e := range events {
		got = append(got, e.Type+" "+e.Object.Metadata.Name)
	}
	if !slices.Equal(got, []string{"ADDED w3.n3", "DELETED w3.n3"}) {
		t.Errorf("watch from the merged list's %q: %q", list.Metadata.ResourceVersion, got)
	}
	// A single replica's version is not the merged stream's: list again.
	if events = gs[0].watch(t, "/api/v1/pods?watch=1&resourceVersion=5"); len(events) != 1 || events[0].Object.Code != 410 {
		t.Errorf("watch from one replica's version: %+v", events)
	}
	// kubectl wait on a pod of n2 through n1, ended by a change on n2.
	gs[1].createContainer(t, map[string]any{"id": "w2", "sandbox": "s2", "workingDir": gs[1].dir, "stdin": true,
		"command": []string{"sh", "-c", "read x; exit 5"}})
	waitOut, waitErr, waitDone := k.startWait("--for=jsonpath={.status.phase}=Failed", "pod/s2.n2", "--timeout=60s")
	attach := gs[1].dialWS(t, "/api/v1/containers/w2/attach?stdin=1&replay=0", "v5.channel.k8s.io")
	if err := attach.WriteMessage(2, []byte("\x00go\n")); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-waitDone:
		if err != nil || waitOut.String() != "pod/s2.n2 condition met\n" {
			t.Errorf("kubectl wait across replicas: %v %q\n%s", err, waitOut, waitErr)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("kubectl wait did not end when the pod failed:\n%s", waitErr)
	}
	// An event watch through n1 has every replica's.
	events = gs[0].watch(t, "/api/v1/events?watch=1&timeoutSeconds=2")
	seen := map[string]bool{}
	for _, e := range events {
		seen[e.Object.Message] = e.Type == "ADDED"
	}
	for _, want := range []string{"Started container c1", "Started container c2", "Started container c3", "Started container w2"} {
		if !seen[want] {
			t.Errorf("the event watch through n1 lacks %q: %+v", want, events)
		}
	}
	// kubectl describe of a pod on n2 through n1 shows n2's events.
	if out, errOut, code := k.run(nil, "describe", "pod", "s2.n2"); code != 0 || !regexp.MustCompile(`(?m)^  Normal\s+Started\s+.*spec\.containers\{w2\}: Started container w2$`).MatchString(out) {
		t.Errorf("describe a pod of n2 through n1: %d\n%s%s", code, out, errOut)
	}
	// kubectl delete of a pod on n3 through n1: n3 removes the sandbox.
	if out, errOut, code := k.run(nil, "delete", "pod", "s3.n3"); code != 0 || out != "pod \"s3.n3\" deleted from default namespace\n" {
		t.Errorf("kubectl delete across replicas: %d %q %s", code, out, errOut)
	}
	if resp := gs[2].do(t, "GET", "/api/v1/sandboxes/s3", nil, nil); resp.StatusCode != 404 {
		t.Errorf("s3 after its pod's delete: %d", resp.StatusCode)
	}
}

// replicaProc is a gateway replica run as a process of its own, so that
// it can be killed, in a network namespace when netns names one.
type replicaProc struct {
	cmd   *exec.Cmd
	args  []string
	bin   string
	netns string
	log   *logBuffer
}

func (p *replicaProc) start(t *testing.T) {
	t.Helper()
	if p.netns != "" {
		p.cmd = exec.Command("ip", append([]string{"netns", "exec", p.netns, p.bin}, p.args...)...)
	} else {
		p.cmd = exec.Command(p.bin, p.args...)
	}
	p.cmd.Env = []string{"HOME=" + t.TempDir(), "PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	p.log = &logBuffer{} // no ready channel: readiness is polled
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get("http://" + p.args[1] + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%v not ready after 20 s: %v\n%s", p.args[:4], err, p.log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// hostsOnBridge makes n network namespaces, each with a veth into a
// bridge on the host and an address of its own (10.213.R.1, .2, ...;
// the host is .254), and returns their names and addresses.
func hostsOnBridge(t *testing.T, n int) (names, ips []string) {
	t.Helper()
	tag := fmt.Sprintf("%04x", time.Now().UnixNano()&0xffff)
	subnet := fmt.Sprintf("10.213.%d", 1+time.Now().UnixNano()%250)
	ip := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v %s", args, err, out)
		}
	}
	br := "gwbr" + tag
	ip("link", "add", br, "type", "bridge")
	t.Cleanup(func() { exec.Command("ip", "link", "del", br).Run() })
	ip("addr", "add", subnet+".254/24", "dev", br)
	ip("link", "set", br, "up")
	for i := range n {
		ns, host, peer := fmt.Sprintf("gw%s-%d", tag, i+1), fmt.Sprintf("gwv%s%d", tag, i+1), fmt.Sprintf("gwp%s%d", tag, i+1)
		ip("netns", "add", ns)
		t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
		ip("link", "add", host, "type", "veth", "peer", "name", peer)
		ip("link", "set", peer, "netns", ns)
		ip("link", "set", host, "master", br)
		ip("link", "set", host, "up")
		addr := fmt.Sprintf("%s.%d", subnet, i+1)
		ip("-n", ns, "addr", "add", addr+"/24", "dev", peer)
		ip("-n", ns, "link", "set", peer, "up")
		ip("-n", ns, "link", "set", "lo", "up")
		names, ips = append(names, ns), append(ips, addr)
	}
	return names, ips
}

// TestReplicaKilled: three replicas, each in a network namespace of its
// own on a bridge (as root; else on loopback addresses of their own).
// kill -9 of one while sessions run on all three: only its sessions end,
// and with a close, not a hang; the others' bytes stay exact; new
// sessions for its containers fail within 2 s with a Status; lists
// report it down, and again up once it restarts.
func TestReplicaKilled(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the gateway")
	}
	bin := filepath.Join(t.TempDir(), "gateway")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	addrs := make([]string, 3)
	netns := make([]string, 3)
	var urls []string
	if _, err := exec.LookPath("ip"); err == nil && os.Geteuid() == 0 {
		var ips []string
		netns, ips = hostsOnBridge(t, 3)
		for i := range addrs {
			addrs[i] = ips[i] + ":8080"
		}
	} else {
		t.Log("not root: the replicas get loopback addresses, not network namespaces")
		addrs = loopbackAddrs(t, 3, 21)
	}
	for i := range addrs {
		urls = append(urls, "http://"+addrs[i])
	}
	// Their Kubernetes API, with certificates of one CA (one state
	// directory; they start one after the other).
	kubes := loopbackAddrs(t, 3, 31)
	if netns[0] != "" {
		for i := range kubes {
			kubes[i] = strings.TrimSuffix(addrs[i], ":8080") + ":6443"
		}
	}
	state := t.TempDir()
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	ps := make([]*replicaProc, 3)
	for i := range ps {
		cfg := filepath.Join(t.TempDir(), "gateway.yaml")
		os.WriteFile(cfg, fmt.Appendf(nil, "containers:\n  - id: c%d\n    command: [sleep, \"1000000\"]\n    stdin: true\n    workingDir: /tmp\n", i+1), 0o600)
		ps[i] = &replicaProc{bin: bin, netns: netns[i], args: []string{"--listen", addrs[i], "--node", fmt.Sprintf("n%d", i+1), "--peers", strings.Join(urls, ","),
			"--token", testToken, "--config", cfg, "--kube-listen", kubes[i], "--state-dir", state, "--stop-grace", "1s",
			"--kubeconfig", map[bool]string{true: kubeconfig, false: filepath.Join(t.TempDir(), "kubeconfig")}[i == 0],
			"--shutdown-timeout", "3s"}}
		ps[i].start(t)
	}
	t.Cleanup(func() {
		for _, p := range ps {
			p.cmd.Process.Signal(syscall.SIGTERM)
			p.cmd.Wait()
			if t.Failed() {
				t.Logf("%v:\n%s", p.args[:4], p.log)
			}
		}
	})
	n1 := &gateway{url: urls[0] + "/", token: testToken}
	waitList(t, n1, "/api/v1/containers", func(l listAnswer) bool {
		m := l.nodes()
		return m["c1"] == "n1" && m["c2"] == "n2" && m["c3"] == "n3" && len(l.Unreachable) == 0
	})

	// Through HAProxy in front: every replica's container, by WebSocket
	// and by kubectl.
	fd, kubeFront := frontDoor(t, addrs, kubes, testToken)
	for i := range addrs {
		c := fd.dialWS(t, execPath(fmt.Sprintf("c%d", i+1), "stdout", "echo", fmt.Sprintf("hello from c%d", i+1)), "v5.channel.k8s.io")
		if got := readUntil(t, c, func(b []byte) bool { return bytes.Contains(b, []byte("\n")) }); string(got) != fmt.Sprintf("hello from c%d\n", i+1) {
			t.Errorf("c%d through HAProxy: %q", i+1, got)
		}
		c.Close()
	}
	if os.Getenv("KUBECTL") != "" {
		k := kubectlVia(t, kubeconfig, "https://"+kubes[0], kubeFront)
		for i := range addrs {
			out, errOut, code := k.run(nil, "exec", fmt.Sprintf("host.n%d", i+1), "-c", fmt.Sprintf("c%d", i+1), "--", "echo", "hi")
			if code != 0 || out != "hi\n" {
				t.Errorf("kubectl exec through HAProxy into n%d: %d %q %s", i+1, code, out, errOut)
			}
		}
	}

	// A cat on each replica, through n1.
	cats := make([]*websocket.Conn, 3)
	for i := range cats {
		cats[i] = n1.dialWS(t, execPath(fmt.Sprintf("c%d", i+1), "stdin,stdout", "cat"), "v5.channel.k8s.io")
		if _, m, err := cats[i].ReadMessage(); err != nil || string(m) != "\x01" {
			t.Fatalf("c%d ready frame %q %v", i+1, m, err)
		}
	}
	echo := func(i, round int) error {
		msg := fmt.Sprintf("ping %d %d\n", i, round)
		if err := cats[i].WriteMessage(websocket.BinaryMessage, append([]byte{0}, msg...)); err != nil {
			return err
		}
		var got []byte
		cats[i].SetReadDeadline(time.Now().Add(10 * time.Second))
		for len(got) < len(msg) {
			_, m, err := cats[i].ReadMessage()
			if err != nil {
				return err
			}
			if len(m) > 0 && m[0] == 1 {
				got = append(got, m[1:]...)
			}
		}
		if string(got) != msg {
			return fmt.Errorf("echo %q, want %q", got, msg)
		}
		return nil
	}
	for i := range cats {
		if err := echo(i, 0); err != nil {
			t.Fatalf("c%d: %v", i+1, err)
		}
	}
	// The owner's registry has the client's address, not the forwarder's.
	if netns[0] != "" {
		var l struct {
			Items []struct{ Target, Node, RemoteAddr string }
		}
		n1.do(t, "GET", "/api/v1/sessions?state=active", nil, &l)
		client := strings.TrimSuffix(addrs[0], ".1:8080") + ".254"
		for _, it := range l.Items {
			if host, _, _ := net.SplitHostPort(it.RemoteAddr); host != client {
				t.Errorf("session on %s (%s) from %q, want the client's %s", it.Node, it.Target, it.RemoteAddr, client)
			}
		}
		if len(l.Items) != 3 {
			t.Errorf("active sessions: %+v", l.Items)
		}
	}

	ps[2].cmd.Process.Kill()
	ps[2].cmd.Wait()
	// Its session ends, with its connection closed, at once.
	cats[2].SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		if _, _, err := cats[2].ReadMessage(); err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatal("the session on the killed replica hangs")
			}
			break
		}
	}
	// The others go on, exact.
	for i := range 2 {
		for round := 1; round <= 3; round++ {
			if err := echo(i, round); err != nil {
				t.Fatalf("c%d after n3 died: %v", i+1, err)
			}
		}
	}
	// New sessions for c3 fail fast with a Status.
	t0 := time.Now()
	req := authed(n1, "GET", "api/v1/containers/c3")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var st status
	json.NewDecoder(resp.Body).Decode(&st)
	resp.Body.Close()
	if resp.StatusCode != 503 || time.Since(t0) > 2*time.Second || st.Message == "" {
		t.Errorf("c3 with n3 killed: %d after %v: %+v", resp.StatusCode, time.Since(t0), st)
	}
	waitList(t, n1, "/api/v1/containers", func(l listAnswer) bool { return len(l.Unreachable) == 1 && l.Unreachable[0] == "n3" })

	// Back: listed again.
	ps[2].start(t)
	waitList(t, n1, "/api/v1/containers", func(l listAnswer) bool { return len(l.Unreachable) == 0 && l.nodes()["c3"] == "n3" })
	c := n1.dialWS(t, execPath("c3", "stdout", "echo", "back"), "v5.channel.k8s.io")
	if out := readUntil(t, c, func(b []byte) bool { return bytes.Contains(b, []byte("\n")) }); string(out) != "back\n" {
		t.Errorf("c3 after the restart: %q", out)
	}

	// SIGTERM to n1: its own session gets 1001; the one it relays to n2
	// goes on until its shutdown's time (3 s) is up.
	ps[0].cmd.Process.Signal(syscall.SIGTERM)
	cats[0].SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		_, _, err := cats[0].ReadMessage()
		var ce *websocket.CloseError
		if errors.As(err, &ce) && ce.Code == websocket.CloseGoingAway {
			break
		}
		if err != nil {
			t.Fatalf("n1's own session at its shutdown: %v", err)
		}
	}
	t0 = time.Now()
	if err := echo(1, 9); err != nil {
		t.Fatalf("the session n1 relays, during its shutdown: %v", err)
	}
	cats[1].SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		if _, _, err := cats[1].ReadMessage(); err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatal("the relayed session outlived n1's shutdown")
			}
			break
		}
	}
	if d := time.Since(t0); d < time.Second {
		t.Errorf("the relayed session was cut %v into n1's 3 s shutdown", d)
	}
	ps[0].cmd.Wait()
}

// TestWebReplicas: the page at one replica lists every replica's
// containers with their node, and opens a shell in one on another.
func TestWebReplicas(t *testing.T) {
	if _, err := os.Stat(tooltest.Chromium); err != nil {
		tooltest.SkipOrFail(t, tooltest.Chromium+" not found: make test installs it (apt-get install chromium)")
	}
	gs := replicas(t, 2)
	home := t.TempDir()
	if resp := gs[0].do(t, "POST", "/api/v1/containers", map[string]any{"id": "web", "node": "n2", "command": []string{"sleep", "1000000"},
		"stdin": true, "env": map[string]string{"SHELL": "/bin/sh", "HOME": home, "ENV": ""}}, nil); resp.StatusCode != 201 {
		t.Fatalf("create web on n2: %d", resp.StatusCode)
	}
	b := newBrowser(t, gs[0])
	b.open("")
	b.login(gs[0].token)
	b.do(20*time.Second, chromedp.WaitVisible(chromedp.CSS(`#containers tr[data-id="web@n2"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#containers tr[data-id="box@n1"]`)), chromedp.WaitVisible(chromedp.CSS(`#containers tr[data-id="box@n2"]`)))
	b.newShell("web@n2")
	b.run("echo $((6*7))-from-$(basename $HOME)")
	b.waitLine("42-from-"+filepath.Base(home), 10*time.Second)
}
