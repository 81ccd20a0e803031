package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"gateway/internal/proctest"
	"gateway/internal/tooltest"

	"github.com/gorilla/websocket"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"k8s.io/client-go/tools/remotecommand"
)

type status struct {
	Kind, APIVersion, Status, Message, Reason string
	Code                                      int
	Details                                   *struct{ Kind, Name string }
}

// TestStreamURL: POST mints a single-use URL that needs no bearer token,
// works once, and expires.
func TestStreamURL(t *testing.T) {
	g := startGateway(t, "--url-ttl", "300ms", "--max-pending-urls", "3")
	ctx := testContext(t)
	var minted struct {
		URL       string
		ExpiresAt time.Time
	}
	resp := g.do(t, "POST", "/api/v1/containers/box/exec", map[string]any{"command": []string{"sh", "-c", "echo via url"}, "stdout": true}, &minted)
	if resp.StatusCode != 201 || !strings.HasPrefix(minted.URL, "/stream/") || len(minted.URL) < len("/stream/")+22 {
		t.Fatalf("mint: %d %+v", resp.StatusCode, minted)
	}
	if d := time.Until(minted.ExpiresAt); d > 2*time.Second || d < -2*time.Second {
		t.Errorf("expiresAt %v is not about 300ms from now", minted.ExpiresAt)
	}
	u := g.url + strings.TrimPrefix(minted.URL, "/")

	// A plain GET does not burn the token, nor an upgrade offering no
	// subprotocol of its kind.
	if r, err := http.Get(u); err != nil || r.StatusCode != 400 {
		t.Fatalf("plain GET: %v %v", r, err)
	}
	d := websocket.Dialer{Subprotocols: []string{"chat"}}
	if c, r, err := d.Dial("ws"+strings.TrimPrefix(u, "http"), nil); err == nil || r == nil || r.StatusCode != http.StatusForbidden {
		if c != nil {
			c.Close()
		}
		t.Fatalf("an unknown subprotocol: %v %v", r, err)
	}
	var out bytes.Buffer
	if err := g.execAt(ctx, v5, u, "", remotecommand.StreamOptions{Stdout: &out}); err != nil || out.String() != "via url\n" {
		t.Fatalf("first use: %q %v", out.String(), err)
	}
	err := g.execAt(ctx, v5, u, "", remotecommand.StreamOptions{Stdout: &out})
	if err == nil || !strings.Contains(err.Error(), "not found, used or expired") {
		t.Errorf("second use: %v", err)
	}

	g.do(t, "POST", "/api/v1/containers/box/exec", map[string]any{"command": []string{"true"}, "stdout": true}, &minted)
	time.Sleep(500 * time.Millisecond)
	err = g.execAt(ctx, v5, g.url+strings.TrimPrefix(minted.URL, "/"), "", remotecommand.StreamOptions{Stdout: &out})
	if err == nil || !strings.Contains(err.Error(), "not found, used or expired") {
		t.Errorf("expired: %v", err)
	}

	for _, tc := range []struct {
		name string
		path string
		body any
		code int
		want string
	}{
		{"unknown field", "/api/v1/containers/box/exec", map[string]any{"command": []string{"true"}, "stdout": true, "tyy": true}, 400, `unknown field "tyy"`},
		{"no command", "/api/v1/containers/box/exec", map[string]any{"stdout": true}, 400, "command is required"},
		{"unknown container", "/api/v1/containers/nope/exec", map[string]any{"command": []string{"true"}, "stdout": true}, 404, `container "nope" not found`},
	} {
		var st status
		if resp := g.do(t, "POST", tc.path, tc.body, &st); resp.StatusCode != tc.code || !strings.Contains(st.Message, tc.want) || st.Kind != "Status" {
			t.Errorf("%s: %d %+v", tc.name, resp.StatusCode, st)
		}
	}
	// The number of pending URLs is bounded.
	var st status
	for i := 0; ; i++ {
		resp := g.do(t, "POST", "/api/v1/containers/box/exec", map[string]any{"command": []string{"true"}, "stdout": true}, &st)
		if resp.StatusCode == 429 {
			if resp.Header.Get("Retry-After") == "" || st.Reason != "TooManyRequests" || i != 3 {
				t.Errorf("429 after %d: %v %+v", i, resp.Header, st)
			}
			break
		}
		if i > 3 {
			t.Fatal("no 429 after 4 pending URLs")
		}
	}
}

// TestAuthVariants: the bearer subprotocol for browsers, the login cookie,
// and the Origin checks.
func TestAuthVariants(t *testing.T) {
	g := startGateway(t, "--allowed-origins", "https://ok.example")
	wsURL := "ws" + strings.TrimPrefix(g.url, "http") + "api/v1/containers/box/exec?command=true&stdout=1"
	bearer := "base64url.bearer.authorization.k8s.io." + base64.RawURLEncoding.EncodeToString([]byte(g.token))

	d := websocket.Dialer{Subprotocols: []string{"v5.channel.k8s.io", bearer}}
	c, resp, err := d.Dial(wsURL, nil)
	if err != nil {
		t.Fatalf("bearer subprotocol: %v", err)
	}
	if p := resp.Header.Get("Sec-Websocket-Protocol"); p != "v5.channel.k8s.io" {
		t.Errorf("negotiated %q", p)
	}
	c.Close()

	for _, tc := range []struct {
		name   string
		protos []string
		header http.Header
		code   int
	}{
		{"wrong bearer subprotocol", []string{"v5.channel.k8s.io", "base64url.bearer.authorization.k8s.io.bm9wZQ"}, nil, 401},
		{"foreign origin", []string{"v5.channel.k8s.io"}, http.Header{"Authorization": {"Bearer " + g.token}, "Origin": {"https://evil.example"}}, 403},
	} {
		d := websocket.Dialer{Subprotocols: tc.protos}
		_, resp, err := d.Dial(wsURL, tc.header)
		if err == nil || resp.StatusCode != tc.code {
			t.Errorf("%s: %v %v", tc.name, resp.Status, err)
		}
	}
	c, _, err = d.Dial(wsURL, http.Header{"Origin": {"https://ok.example"}})
	if err != nil {
		t.Errorf("allowed origin: %v", err)
	} else {
		c.Close()
	}

	// The login cookie: HttpOnly, SameSite=Strict, and refused from a
	// foreign origin.
	login := func(token string) *http.Response {
		resp, err := http.Post(g.url+"login", "application/json", strings.NewReader(`{"token":"`+token+`"}`))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	if resp := login("wrong"); resp.StatusCode != 401 {
		t.Errorf("login with a wrong token: %d", resp.StatusCode)
	}
	resp = login(g.token)
	cookies := resp.Cookies()
	if resp.StatusCode != 204 || len(cookies) != 1 || !cookies[0].HttpOnly || cookies[0].SameSite != http.SameSiteStrictMode {
		t.Fatalf("login: %d %+v", resp.StatusCode, cookies)
	}
	get := func(origin string) int {
		req, _ := http.NewRequest("GET", g.url+"api/v1/containers", nil)
		req.AddCookie(cookies[0])
		if origin != "" {
			req.Header.Set("Origin", origin)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := get(""); code != 200 {
		t.Errorf("cookie: %d", code)
	}
	if code := get("https://evil.example"); code != 403 {
		t.Errorf("cookie from a foreign origin: %d", code)
	}

	// /metrics is open by default; everything else needs the token.
	for path, want := range map[string]int{"metrics": 200, "healthz": 200, "readyz": 200, "api/v1/sessions": 401, "api/v1/sandboxes": 401} {
		resp, err := http.Get(g.url + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET /%s without a token: %d, want %d", path, resp.StatusCode, want)
		}
	}
	g2 := startGateway(t, "--metrics-auth")
	if resp, _ := http.Get(g2.url + "metrics"); resp.StatusCode != 401 {
		t.Errorf("--metrics-auth: %d", resp.StatusCode)
	}
}

func TestExecSyncAPI(t *testing.T) {
	g := startGateway(t, "--exec-sync-max-output", "1KiB")
	type result struct {
		ExitCode        int
		Stdout, Stderr  []byte
		TimedOut        bool
		Truncated       bool
		Message, Reason string
	}
	var r result
	resp := g.do(t, "POST", "/api/v1/containers/box/exec-sync", map[string]any{
		"command": []string{"sh", "-c", "cat; echo oops >&2; exit 4"}, "stdin": []byte("input\n"),
	}, &r)
	if resp.StatusCode != 200 || r.ExitCode != 4 || string(r.Stdout) != "input\n" || string(r.Stderr) != "oops\n" || r.TimedOut || r.Truncated {
		t.Errorf("exec-sync: %d %+v", resp.StatusCode, r)
	}
	r = result{}
	g.do(t, "POST", "/api/v1/containers/box/exec-sync", map[string]any{"command": []string{"head", "-c", "5000", "/dev/zero"}}, &r)
	if len(r.Stdout) != 1024 || !r.Truncated || r.ExitCode != 0 {
		t.Errorf("cap: %d bytes, truncated %v", len(r.Stdout), r.Truncated)
	}
	r = result{}
	start := time.Now()
	g.do(t, "POST", "/api/v1/containers/box/exec-sync", map[string]any{"command": []string{"sleep", "1000"}, "timeoutSeconds": 1}, &r)
	if !r.TimedOut || r.ExitCode != 143 || time.Since(start) > 20*time.Second {
		t.Errorf("timeout: %+v after %v", r, time.Since(start))
	}
	for _, tc := range []struct {
		body any
		code int
		want string
	}{
		{map[string]any{"command": []string{"true"}, "timeoutSeconds": -1}, 400, "timeoutSeconds -1"},
		{map[string]any{"command": []string{}}, 400, "command is required"},
		{map[string]any{"command": []string{"true"}, "extra": 1}, 400, `unknown field "extra"`},
		{map[string]any{"command": []string{"true"}, "stdin": "not base64!"}, 400, "request body"},
	} {
		var st status
		if resp := g.do(t, "POST", "/api/v1/containers/box/exec-sync", tc.body, &st); resp.StatusCode != tc.code || !strings.Contains(st.Message, tc.want) {
			t.Errorf("%v: %d %q", tc.body, resp.StatusCode, st.Message)
		}
	}
	// Content-Type is matched as a media type: case-insensitive, with
	// parameters.
	for ct, code := range map[string]int{"Application/JSON; charset=utf-8": 200, "text/plain": 400} {
		req := authed(g, "POST", "api/v1/containers/box/exec-sync")
		req.Body = io.NopCloser(strings.NewReader(`{"command": ["true"]}`))
		req.Header.Set("Content-Type", ct)
		if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != code {
			t.Errorf("Content-Type %q: %v %v, want %d", ct, resp, err, code)
		} else {
			resp.Body.Close()
		}
	}
	// Deleting the container ends an exec-sync in it: 409, the process gone.
	pidFile := filepath.Join(t.TempDir(), "pid")
	type reply struct {
		code int
		st   status
	}
	replied := make(chan reply, 1)
	go func() {
		body := `{"command": ["sh", "-c", "echo $$ > ` + pidFile + `; exec sleep 1000"]}`
		req, _ := http.NewRequest("POST", g.url+"api/v1/containers/box/exec-sync", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+g.token)
		var r reply
		if resp, err := http.DefaultClient.Do(req); err == nil {
			r.code = resp.StatusCode
			_ = json.NewDecoder(resp.Body).Decode(&r.st)
			resp.Body.Close()
		}
		replied <- r
	}()
	pid := waitPidFile(t, pidFile)
	if resp := g.do(t, "DELETE", "/api/v1/containers/box", nil, nil); resp.StatusCode != http.StatusNoContent {
		t.Errorf("delete: %d", resp.StatusCode)
	}
	if r := <-replied; r.code != http.StatusConflict || !strings.Contains(r.st.Message, "stopped during the exec-sync") {
		t.Errorf("exec-sync in a deleted container: %d %+v, want 409", r.code, r.st)
	}
	if proctest.Alive(pid) {
		t.Errorf("exec-sync process %d still running", pid)
	}
}

// TestCallerMistakes: what the caller got wrong is a 4xx Status naming the
// program or path, never a 500 (which the gateway keeps for its own
// faults).
func TestCallerMistakes(t *testing.T) {
	g := startGateway(t)
	script := filepath.Join(t.TempDir(), "script")
	if err := os.WriteFile(script, []byte("#!/nonexistent/bin/sh\necho hi\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, path string
		body       any
		code       int
		want       string
	}{
		{"missing interpreter", "/api/v1/containers", map[string]any{"id": "bad", "command": []string{script}},
			422, `its interpreter /nonexistent/bin/sh is missing`},
		{"exec-sync of a missing program", "/api/v1/containers/box/exec-sync", map[string]any{"command": []string{"no-such-program"}},
			422, `"no-such-program": executable file not found`},
		{"exec-sync of a missing interpreter", "/api/v1/containers/box/exec-sync", map[string]any{"command": []string{script}},
			422, `its interpreter /nonexistent/bin/sh is missing`},
		{"exec-sync of a directory", "/api/v1/containers/box/exec-sync", map[string]any{"command": []string{"/tmp"}},
			422, `"/tmp": is a directory`},
		{"missing network namespace", "/api/v1/sandboxes", map[string]any{"id": "lab", "network": "/nonexistent/netns"},
			422, "/nonexistent/netns"},
		{"not a network namespace", "/api/v1/sandboxes", map[string]any{"id": "lab", "network": "/etc/hostname"},
			422, "/etc/hostname is not a namespace"},
		// No argument, variable or directory of execve can hold a NUL.
		{"a NUL in an exec-sync argument", "/api/v1/containers/box/exec-sync", map[string]any{"command": []string{"echo", "a\x00b"}},
			400, `command[1] "a\x00b" holds a NUL byte`},
		{"a NUL in a container's argument", "/api/v1/containers", map[string]any{"id": "bad", "command": []string{"sleep", "1\x002"}},
			400, `command[1] "1\x002" holds a NUL byte`},
		{"a NUL in a container's variable", "/api/v1/containers", map[string]any{"id": "bad", "command": []string{"true"}, "env": map[string]string{"A": "b\x00"}},
			400, "the value of A holds a NUL byte"},
		{"a NUL in a container's directory", "/api/v1/containers", map[string]any{"id": "bad", "command": []string{"true"}, "workingDir": "/tmp\x00"},
			400, `workingDir "/tmp\x00": want an absolute path`},
		{"a NUL in a minted exec's argument", "/api/v1/containers/box/exec", map[string]any{"command": []string{"echo", "a\x00"}, "stdout": true},
			400, `command[1] "a\x00" holds a NUL byte`},
		{"a container's body over its bound", "/api/v1/containers", map[string]any{"id": "big", "command": []string{"true"}, "env": map[string]string{"A": strings.Repeat("x", 2<<20)}},
			413, "request body over 1048576 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var st status
			resp := g.do(t, "POST", tc.path, tc.body, &st)
			reason := map[int]string{400: "BadRequest", 413: "RequestEntityTooLarge", 422: "Invalid"}[tc.code]
			if resp.StatusCode != tc.code || st.Reason != reason || !strings.Contains(st.Message, tc.want) {
				t.Errorf("%d %s %q, want %d %s %q", resp.StatusCode, st.Reason, st.Message, tc.code, reason, tc.want)
			}
		})
	}
	if strings.Contains(g.log.String(), "level=ERROR") {
		t.Errorf("the gateway logged its own fault for a caller's mistake:\n%s", g.log)
	}
}

type sessionInfo struct {
	ID, Kind, Target, State, RemoteAddr string
	CreatedAt                           time.Time
	ClosedAt                            *time.Time
	BytesIn, BytesOut                   int64
	ExitCode                            *int
}

func TestSessionsAPI(t *testing.T) {
	g := startGateway(t)
	ctx := testContext(t)

	var out bytes.Buffer
	if err := g.exec(ctx, v5, "box", []string{"echo", "hello"}, remotecommand.StreamOptions{Stdout: &out}); err != nil {
		t.Fatal(err)
	}
	stdinR, stdinW := io.Pipe()
	defer stdinW.Close()
	done := make(chan error, 1)
	go func() {
		done <- g.exec(ctx, v5, "box", []string{"cat"}, remotecommand.StreamOptions{Stdin: stdinR, Stdout: io.Discard})
	}()
	stdinW.Write([]byte("12345"))

	var active struct{ Items []sessionInfo }
	for range 500 {
		g.do(t, "GET", "/api/v1/sessions?state=active", nil, &active)
		if len(active.Items) == 1 && active.Items[0].BytesIn == 5 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if len(active.Items) != 1 {
		t.Fatalf("active sessions: %+v", active.Items)
	}
	s := active.Items[0]
	if s.Kind != "exec" || s.Target != "box" || s.State != "active" || !strings.HasPrefix(s.RemoteAddr, "127.0.0.1:") || s.BytesIn != 5 {
		t.Errorf("session %+v", s)
	}
	var all struct{ Items []sessionInfo }
	g.do(t, "GET", "/api/v1/sessions?kind=exec", nil, &all)
	if len(all.Items) != 2 || all.Items[0].State != "closed" || *all.Items[0].ExitCode != 0 || all.Items[0].BytesOut != 6 {
		t.Errorf("all sessions: %+v", all.Items)
	}
	resp, err := http.DefaultClient.Do(authed(g, "GET", "api/v1/sessions/"+all.Items[0].ID+"/output"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "hello\n" {
		t.Errorf("output %q", b)
	}

	if resp := g.do(t, "DELETE", "/api/v1/sessions/"+s.ID, nil, nil); resp.StatusCode != 204 {
		t.Errorf("DELETE: %d", resp.StatusCode)
	}
	// Asked to close, it counts as closed, even before its stream ends.
	if resp := g.do(t, "DELETE", "/api/v1/sessions/"+s.ID, nil, nil); resp.StatusCode != 409 {
		t.Errorf("DELETE while the first close is under way: %d, want 409", resp.StatusCode)
	}
	if err := <-done; err == nil || !strings.Contains(err.Error(), "4000") {
		t.Errorf("client saw %v, want close 4000", err)
	}
	var one sessionInfo
	for range 500 {
		g.do(t, "GET", "/api/v1/sessions/"+s.ID, nil, &one)
		if one.State == "closed" {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if one.State != "closed" || one.ClosedAt == nil {
		t.Errorf("after DELETE: %+v", one)
	}
	var st status
	if resp := g.do(t, "DELETE", "/api/v1/sessions/"+s.ID, nil, &st); resp.StatusCode != 409 || st.Reason != "Conflict" {
		t.Errorf("second DELETE: %d %+v", resp.StatusCode, st)
	}
	if resp := g.do(t, "DELETE", "/api/v1/sessions/nope", nil, &st); resp.StatusCode != 404 || st.Details == nil || st.Details.Kind != "sessions" {
		t.Errorf("unknown DELETE: %d %+v", resp.StatusCode, st)
	}
	if resp := g.do(t, "GET", "/api/v1/sessions?state=sleepy", nil, &st); resp.StatusCode != 400 {
		t.Errorf("bad filter: %d", resp.StatusCode)
	}
}

func authed(g *gateway, method, path string) *http.Request {
	req, _ := http.NewRequest(method, g.url+path, nil)
	req.Header.Set("Authorization", "Bearer "+g.token)
	return req
}

func TestContainersAndSandboxesAPI(t *testing.T) {
	g := startGateway(t)
	ctx := testContext(t)
	type info struct {
		ID, Sandbox, State string
		Pid                int
		ExitCode           *int
	}
	var c info
	resp := g.do(t, "POST", "/api/v1/containers", map[string]any{"id": "extra", "command": []string{"sleep", "1000"}, "env": map[string]string{"X": "1"}}, &c)
	if resp.StatusCode != 201 || c.State != "running" || c.Pid == 0 || c.Sandbox != "host" {
		t.Fatalf("create: %d %+v", resp.StatusCode, c)
	}
	var out bytes.Buffer
	if err := g.exec(ctx, v5, "extra", []string{"sh", "-c", "echo $X"}, remotecommand.StreamOptions{Stdout: &out}); err != nil || out.String() != "1\n" {
		t.Errorf("exec into the new container: %q %v", out.String(), err)
	}
	// Deleting the container ends its streams.
	done := make(chan error, 1)
	go func() {
		done <- g.exec(ctx, v5, "extra", []string{"sleep", "1000"}, remotecommand.StreamOptions{Stdout: io.Discard})
	}()
	waitActive(t, g, 1)
	if resp := g.do(t, "DELETE", "/api/v1/containers/extra", nil, nil); resp.StatusCode != 204 {
		t.Errorf("DELETE: %d", resp.StatusCode)
	}
	if err := <-done; err == nil {
		t.Error("the exec survived its container")
	}
	var st status
	if resp := g.do(t, "GET", "/api/v1/containers/extra", nil, &st); resp.StatusCode != 404 || st.Details == nil || st.Details.Name != "extra" {
		t.Errorf("after DELETE: %d %+v", resp.StatusCode, st)
	}
	for _, tc := range []struct {
		body any
		code int
		want string
	}{
		{map[string]any{"id": "box", "command": []string{"true"}}, 409, "already exists"},
		{map[string]any{"id": "Bad_ID", "command": []string{"true"}}, 400, "does not match"},
		{map[string]any{"id": "x", "command": []string{"no-such-program"}}, 400, "executable file not found"},
		{map[string]any{"id": "x", "comand": []string{"true"}}, 400, `unknown field "comand"`},
		{map[string]any{"id": "x", "sandbox": "nope"}, 404, `sandbox "nope" not found`},
	} {
		if resp := g.do(t, "POST", "/api/v1/containers", tc.body, &st); resp.StatusCode != tc.code || !strings.Contains(st.Message, tc.want) {
			t.Errorf("%v: %d %q", tc.body, resp.StatusCode, st.Message)
		}
	}

	var sbs struct {
		Items []struct{ ID, Network string }
	}
	g.do(t, "GET", "/api/v1/sandboxes", nil, &sbs)
	if len(sbs.Items) != 1 || sbs.Items[0].ID != "host" || sbs.Items[0].Network != "host" {
		t.Errorf("sandboxes: %+v", sbs.Items)
	}
	if resp := g.do(t, "POST", "/api/v1/sandboxes", map[string]any{"id": "web", "network": "host", "ports": []string{"8080", "9000-9100"}}, nil); resp.StatusCode != 201 {
		t.Errorf("create sandbox: %d", resp.StatusCode)
	}
	if resp := g.do(t, "DELETE", "/api/v1/sandboxes/host", nil, &st); resp.StatusCode != 409 {
		t.Errorf("delete host: %d", resp.StatusCode)
	}
	if resp := g.do(t, "DELETE", "/api/v1/sandboxes/web", nil, nil); resp.StatusCode != 204 {
		t.Errorf("delete web: %d", resp.StatusCode)
	}
	if resp := g.do(t, "POST", "/api/v1/sandboxes", map[string]any{"id": "x", "network": "relative/path"}, &st); resp.StatusCode != 400 {
		t.Errorf("bad network: %d %+v", resp.StatusCode, st)
	}
}

func waitActive(t *testing.T, g *gateway, n int) {
	t.Helper()
	for range 500 {
		var l struct{ Items []sessionInfo }
		g.do(t, "GET", "/api/v1/sessions?state=active", nil, &l)
		if len(l.Items) == n {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("never %d active sessions", n)
}

func TestRoutingErrors(t *testing.T) {
	g := startGateway(t)
	for _, tc := range []struct {
		method, path string
		code         int
		reason       string
	}{
		{"GET", "/api/v1/nope", 404, "NotFound"},
		{"PUT", "/api/v1/containers", 405, "MethodNotAllowed"},
		{"GET", "/api/v1/containers/..%2F..%2Fetc", 400, "BadRequest"},
		{"GET", "/api/v1/containers/nope", 404, "NotFound"},
		{"GET", "/nowhere", 404, "NotFound"},
	} {
		var st status
		resp := g.do(t, tc.method, tc.path, nil, &st)
		if resp.StatusCode != tc.code || st.Reason != tc.reason || st.Kind != "Status" || st.APIVersion != "v1" || st.Code != tc.code {
			t.Errorf("%s %s: %d %+v", tc.method, tc.path, resp.StatusCode, st)
		}
	}
}

// TestMetricsEndpoint: the metrics move with real sessions, and promtool
// accepts the exposition.
func TestMetricsEndpoint(t *testing.T) {
	g := startGateway(t)
	ctx := testContext(t)
	scrape := func() (map[string]*dto.MetricFamily, []byte) {
		resp, err := http.Get(g.url + "metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		p := expfmt.NewTextParser(model.UTF8Validation)
		mfs, err := p.TextToMetricFamilies(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		return mfs, b
	}
	value := func(mfs map[string]*dto.MetricFamily, name string, labels map[string]string) float64 {
		for _, m := range mfs[name].GetMetric() {
			match := true
			for _, l := range m.GetLabel() {
				if v, ok := labels[l.GetName()]; ok && v != l.GetValue() {
					match = false
				}
			}
			if match {
				switch {
				case m.Counter != nil:
					return m.Counter.GetValue()
				case m.Gauge != nil:
					return m.Gauge.GetValue()
				case m.Histogram != nil:
					return float64(m.Histogram.GetSampleCount())
				}
			}
		}
		t.Fatalf("no %s%v", name, labels)
		return 0
	}
	execKind := map[string]string{"kind": "exec"}
	mfs, _ := scrape()
	if v := value(mfs, "gateway_sessions_total", map[string]string{"kind": "exec", "result": "success"}); v != 0 {
		t.Errorf("success before any session: %v", v)
	}
	if v := value(mfs, "gateway_containers", map[string]string{"state": "running"}); v != 1 {
		t.Errorf("running containers: %v", v)
	}

	g.exec(ctx, v5, "box", []string{"head", "-c", "1000", "/dev/zero"}, remotecommand.StreamOptions{Stdout: io.Discard})
	g.exec(ctx, v5, "box", []string{"sh", "-c", "exit 2"}, remotecommand.StreamOptions{Stdout: io.Discard})
	stdinR, stdinW := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- g.exec(ctx, v5, "box", []string{"cat"}, remotecommand.StreamOptions{Stdin: stdinR, Stdout: io.Discard})
	}()
	stdinW.Write([]byte("abc"))
	waitActive(t, g, 1)
	mfs, _ = scrape()
	if v := value(mfs, "gateway_sessions_active", execKind); v != 1 {
		t.Errorf("active: %v", v)
	}
	stdinW.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	waitActive(t, g, 0)
	mfs, text := scrape()
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"gateway_sessions_active", execKind, 0},
		{"gateway_sessions_total", map[string]string{"kind": "exec", "result": "success"}, 2},
		{"gateway_sessions_total", map[string]string{"kind": "exec", "result": "nonzero_exit"}, 1},
		{"gateway_stream_bytes_total", map[string]string{"kind": "exec", "direction": "out"}, 1003}, // cat echoes "abc"
		{"gateway_stream_bytes_total", map[string]string{"kind": "exec", "direction": "in"}, 3},
		{"gateway_session_duration_seconds", execKind, 3},
	} {
		if v := value(mfs, c.name, c.labels); v != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, v, c.want)
		}
	}
	for _, name := range []string{"go_goroutines", "process_resident_memory_bytes", "gateway_stream_errors_total"} {
		if mfs[name] == nil {
			t.Errorf("no %s", name)
		}
	}
	promtool := findPromtool(t)
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = bytes.NewReader(text)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
}

// findPromtool finds promtool: $PROMTOOL, the Makefile's cache, or PATH.
// Under make test (GATEWAY_REQUIRE_TOOLS=1) a missing promtool fails.
func findPromtool(t *testing.T) string {
	for _, p := range []string{os.Getenv("PROMTOOL"), filepath.Join("..", "..", ".cache", "bin", "promtool")} {
		if p != "" {
			if _, err := os.Stat(p); err == nil {
				return p
			}
		}
	}
	if p, err := exec.LookPath("promtool"); err == nil {
		return p
	}
	tooltest.SkipOrFail(t, "promtool not found: make test installs it")
	return ""
}

// TestShutdownCutsLongResponses: a recording followed live and a kubectl
// logs -f whose reader stopped (a full socket) do not hold the shutdown:
// both end at the drain, and the streams close in time of their own.
func TestShutdownCutsLongResponses(t *testing.T) {
	g := startGateway(t, "--record-dir", t.TempDir(), "--shutdown-timeout", "20s")
	g.createContainer(t, map[string]any{"id": "flood", "workingDir": g.dir,
		"command": []string{"sh", "-c", "while [ ! -f go ]; do sleep 0.05; done; seq 1 3000000; exec sleep 1000"}})
	c := g.dialWS(t, execPath("box", "stdout", "sh", "-c", "echo hi; exec sleep 1000"), "v5.channel.k8s.io")
	readUntil(t, c, func(b []byte) bool { return bytes.Contains(b, []byte("hi")) })
	var list struct{ Items []struct{ ID string } }
	g.do(t, "GET", "/api/v1/recordings?container=box", nil, &list)
	if len(list.Items) != 1 {
		t.Fatalf("recordings %+v", list.Items)
	}
	resp, err := http.DefaultClient.Do(authed(g, "GET", "/api/v1/recordings/"+list.Items[0].ID+"?follow=1"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if _, err := bufio.NewReader(resp.Body).ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	// A log follower that reads nothing, on a small receive buffer.
	conn, err := net.Dial("tcp", strings.TrimSuffix(strings.TrimPrefix(g.url, "http://"), "/"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.(*net.TCPConn).SetReadBuffer(4096)
	fmt.Fprintf(conn, "GET /api/v1/namespaces/default/pods/host/log?container=flood&follow=true HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n", g.token)
	if err := os.WriteFile(filepath.Join(g.dir, "go"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for { // the log fills the follower's socket
		var ct struct{ OutputBytes int64 }
		if g.do(t, "GET", "/api/v1/containers/flood", nil, &ct); ct.OutputBytes > 8<<20 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := g.stop(); err != nil {
		t.Fatal(err)
	}
	if code, _ := closeCode(c, 10*time.Second); code != 1001 {
		t.Errorf("the exec's close: %d, want 1001", code)
	}
	if l := g.log.String(); strings.Contains(l, "http shutdown") || strings.Contains(l, "close streams") {
		t.Errorf("the shutdown waited:\n%s", l)
	}
}

// waitPidFile waits for a process to write its pid to path.
func waitPidFile(t *testing.T, path string) int {
	t.Helper()
	for range 1000 {
		b, _ := os.ReadFile(path)
		if pid, _ := strconv.Atoi(strings.TrimSpace(string(b))); pid != 0 {
			return pid
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no pid in %s", path)
	return 0
}

// TestHostSandboxFromConfig: the config file's entry for the host sandbox
// sets its port-forward limit: shown, and kept.
func TestHostSandboxFromConfig(t *testing.T) {
	cfgFile := filepath.Join(t.TempDir(), "host.yaml")
	cfg := "sandboxes:\n  - id: host\n    ports: [5432]\ncontainers:\n  - id: box\n    command: [sleep, \"1000000\"]\n"
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	g := startGateway(t, "--config", cfgFile)
	var sb struct{ Ports []string }
	if g.do(t, "GET", "/api/v1/sandboxes/host", nil, &sb); !slices.Equal(sb.Ports, []string{"5432"}) {
		t.Errorf("the host sandbox's ports: %v", sb.Ports)
	}
	var st status
	if resp := g.do(t, "POST", "/api/v1/sandboxes/host/portforward", map[string]any{"ports": []int{22}}, &st); resp.StatusCode != http.StatusForbidden {
		t.Errorf("a tunnel to port 22 of a host limited to 5432: %d %+v, want 403", resp.StatusCode, st)
	}
}

// TestShutdown: a signal ends open streams with 1001 and an exec-sync in
// flight with 503 (its process terminated, not orphaned), stops the
// containers and returns cleanly, well before --shutdown-timeout.
func TestShutdown(t *testing.T) {
	logs := &logBuffer{ready: make(chan string, 1)}
	ready := logs.ready
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "c.yaml")
	os.WriteFile(cfgFile, []byte("containers:\n  - id: box\n    command: [sh, -c, 'echo $$ > "+dir+"/pid; exec sleep 1000']\n"), 0o600)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"--listen", "127.0.0.1:0", "--kube-listen", "", "--token", testToken, "--config", cfgFile,
			"--shutdown-timeout", "5m"}, noEnv, io.Discard, logs)
	}()
	g := &gateway{url: <-ready, token: testToken}
	execDone := make(chan error, 1)
	go func() {
		execDone <- g.exec(context.Background(), v5, "box", []string{"sleep", "1000"}, remotecommand.StreamOptions{Stdout: io.Discard})
	}()
	syncPidFile := filepath.Join(dir, "sync-pid")
	type reply struct {
		code int
		st   status
		err  error
	}
	syncDone := make(chan reply, 1)
	go func() {
		body := `{"command": ["sh", "-c", "echo $$ > ` + syncPidFile + `; exec sleep 1000"]}`
		req, _ := http.NewRequest("POST", g.url+"api/v1/containers/box/exec-sync", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+g.token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			syncDone <- reply{err: err}
			return
		}
		defer resp.Body.Close()
		var r reply
		r.code, r.err = resp.StatusCode, json.NewDecoder(resp.Body).Decode(&r.st)
		syncDone <- r
	}()
	waitActive(t, g, 1)
	syncPid := waitPidFile(t, syncPidFile)
	cancel()
	if err := <-execDone; err == nil || !strings.Contains(err.Error(), "1001") {
		t.Errorf("client saw %v, want close 1001", err)
	}
	if r := <-syncDone; r.err != nil || r.code != http.StatusServiceUnavailable || r.st.Reason != "ServiceUnavailable" {
		t.Errorf("exec-sync at shutdown: %d %+v %v, want 503 ServiceUnavailable", r.code, r.st, r.err)
	}
	if proctest.Alive(syncPid) {
		t.Errorf("exec-sync process %d still running", syncPid)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("run: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no shutdown")
	}
	b, _ := os.ReadFile(filepath.Join(dir, "pid"))
	if pid, _ := strconv.Atoi(strings.TrimSpace(string(b))); pid == 0 {
		t.Error("no pid")
	} else if proctest.Alive(pid) {
		t.Errorf("container process %d still running", pid)
	}
	if z := proctest.Zombies(); len(z) > 0 {
		t.Errorf("zombie children: %v", z)
	}
	if !strings.Contains(logs.String(), `msg=stopped`) {
		t.Errorf("log:\n%s", logs)
	}
}
