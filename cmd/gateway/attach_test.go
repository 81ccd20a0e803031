package main

import (
	"bytes"
	"io"
	"strings"
	"testing"

	"k8s.io/client-go/tools/remotecommand"
)

// TestAttach: client-go's WebSocket executor attaches (v5 and v4), types
// into the main process, sees its output and gets its exit code.
func TestAttach(t *testing.T) {
	g := startGateway(t)
	ctx := testContext(t)
	for _, proto := range []string{v5, v4} {
		t.Run(proto, func(t *testing.T) {
			id := "repl-" + strings.SplitN(proto, ".", 2)[0]
			resp := g.do(t, "POST", "/api/v1/containers", map[string]any{"id": id, "stdin": true,
				"command": []string{"sh", "-c", `echo ready; while read l; do [ "$l" = quit ] && exit 3; echo "got:$l"; done`}}, nil)
			if resp.StatusCode != 201 {
				t.Fatalf("create: %d", resp.StatusCode)
			}
			var out bytes.Buffer
			u := g.url + "api/v1/containers/" + id + "/attach?stdin=1&stdout=1&stderr=1"
			err := g.execAt(ctx, proto, u, g.token, remotecommand.StreamOptions{
				Stdin: strings.NewReader("a\nb\nquit\n"), Stdout: &out, Stderr: io.Discard})
			if code, ok := exitCode(err); !ok || code != 3 {
				t.Errorf("err = %v, want exit code 3", err)
			}
			if out.String() != "ready\ngot:a\ngot:b\n" {
				t.Errorf("stdout %q (the scrollback, then the answers)", out.String())
			}
			// The container has exited: a new attacher gets the scrollback and
			// the exit code at once.
			out.Reset()
			err = g.execAt(ctx, proto, g.url+"api/v1/containers/"+id+"/attach?stdout=1", g.token, remotecommand.StreamOptions{Stdout: &out})
			if code, ok := exitCode(err); !ok || code != 3 || out.String() != "ready\ngot:a\ngot:b\n" {
				t.Errorf("late attach: %q %v", out.String(), err)
			}
		})
	}
	// A single-use URL for an attach.
	var minted struct{ URL string }
	g.do(t, "POST", "/api/v1/containers", map[string]any{"id": "hello", "command": []string{"sh", "-c", "echo hello; exit 0"}}, nil)
	if resp := g.do(t, "POST", "/api/v1/containers/hello/attach", map[string]any{"stdout": true}, &minted); resp.StatusCode != 201 {
		t.Fatalf("mint: %d", resp.StatusCode)
	}
	var out bytes.Buffer
	if err := g.execAt(ctx, v5, g.url+strings.TrimPrefix(minted.URL, "/"), "", remotecommand.StreamOptions{Stdout: &out}); err != nil || out.String() != "hello\n" {
		t.Errorf("attach by URL: %q %v", out.String(), err)
	}
	var st status
	if resp := g.do(t, "POST", "/api/v1/containers/hello/attach", map[string]any{"stdin": true, "stdout": true}, &st); resp.StatusCode != 400 || !strings.Contains(st.Message, "without stdin") {
		t.Errorf("stdin to a container without it: %d %q", resp.StatusCode, st.Message)
	}
}
