package main

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"k8s.io/client-go/tools/remotecommand"
)

// TestNewSandbox: a server in a "new" sandbox is reachable by an exec in
// the same sandbox, and not from the host.
func TestNewSandbox(t *testing.T) {
	needRoot(t)
	g := startGateway(t)
	ctx := testContext(t)
	port := freePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	if resp := g.do(t, "POST", "/api/v1/sandboxes", map[string]any{"id": "lab", "network": "new"}, nil); resp.StatusCode != 201 {
		t.Fatalf("create sandbox: %d", resp.StatusCode)
	}
	if resp := g.do(t, "POST", "/api/v1/containers", map[string]any{"id": "srv", "sandbox": "lab",
		"command": helperCommand(t, "serve", addr)}, nil); resp.StatusCode != 201 {
		t.Fatalf("create container: %d", resp.StatusCode)
	}
	var out bytes.Buffer
	for range 100 { // until the server listens
		out.Reset()
		err := g.exec(ctx, v5, "srv", helperCommand(t, "dial", addr, "ping"), remotecommand.StreamOptions{Stdout: &out, Stderr: io.Discard})
		if err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if out.String() != "echo:ping\n" {
		t.Fatalf("exec in the sandbox got %q", out.String())
	}
	// Not from the host, nor from a container on the host network.
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Error("the sandbox's server is reachable from the host")
	}
	err := g.exec(ctx, v5, "box", helperCommand(t, "dial", addr, "ping"), remotecommand.StreamOptions{Stdout: io.Discard, Stderr: io.Discard})
	if code, ok := exitCode(err); !ok || code == 0 {
		t.Errorf("a host container reached the sandbox: %v", err)
	}
	// A port-forward into the sandbox reaches the same server.
	ws, _, err := websocket.DefaultDialer.Dial(fmt.Sprintf("ws%sapi/v1/sandboxes/lab/portforward?port=%d", strings.TrimPrefix(g.url, "http"), port),
		http.Header{"Authorization": {"Bearer " + g.token}})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	ws.ReadMessage() // the port prefixes
	ws.ReadMessage()
	ws.WriteMessage(websocket.BinaryMessage, []byte("\x00tunnel\n"))
	var echoed []byte
	for !strings.Contains(string(echoed), "\n") {
		_, m, err := ws.ReadMessage()
		if err != nil {
			t.Fatalf("tunnel: %v", err)
		}
		echoed = append(echoed, m[1:]...)
	}
	if string(echoed) != "echo:tunnel\n" {
		t.Errorf("through the tunnel: %q", echoed)
	}

	// The sandbox has its own interfaces: only loopback.
	out.Reset()
	g.exec(ctx, v5, "srv", []string{"cat", "/proc/net/dev"}, remotecommand.StreamOptions{Stdout: &out})
	if ifaces := strings.Count(out.String(), ":"); ifaces != 1 || !strings.Contains(out.String(), "lo:") {
		t.Errorf("interfaces in the sandbox:\n%s", out.String())
	}

	var st status
	if resp := g.do(t, "DELETE", "/api/v1/sandboxes/lab", nil, &st); resp.StatusCode != 409 || !strings.Contains(st.Message, "has containers") {
		t.Errorf("delete a sandbox in use: %d %q", resp.StatusCode, st.Message)
	}
	g.do(t, "DELETE", "/api/v1/containers/srv", nil, nil)
	if resp := g.do(t, "DELETE", "/api/v1/sandboxes/lab", nil, nil); resp.StatusCode != 204 {
		t.Errorf("delete sandbox: %d", resp.StatusCode)
	}
}
