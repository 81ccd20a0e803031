package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"gateway/internal/proctest"
	"go.yaml.in/yaml/v3"
)

func TestMain(m *testing.M) {
	cleanup := proctest.Hermetic() // no test depends on the user's HOME, shell or locale
	goleak.VerifyTestMain(m, goleak.Cleanup(func(int) { cleanup() }))
}

// needRoot skips tests that create namespaces, saying why.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipped: creating network namespaces needs root (CAP_SYS_ADMIN); CI runs as root")
	}
}

func TestRegistry(t *testing.T) {
	r := NewRegistry()
	if sb, err := r.Get(HostID); err != nil || sb.Spec().Network != NetworkHost {
		t.Fatalf("host: %v %v", sb, err)
	}
	if _, err := r.Create(Spec{ID: "web", Ports: []PortRange{{80, 80}, {8000, 8100}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Create(Spec{ID: "web"}); !errors.Is(err, ErrExists) {
		t.Errorf("duplicate: %v", err)
	}
	for _, bad := range []Spec{{ID: "Web"}, {ID: "a", Network: "bridge"}, {ID: "a", Ports: []PortRange{{0, 5}}}, {ID: "a", Ports: []PortRange{{9, 5}}}} {
		if _, err := r.Create(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("%+v: %v", bad, err)
		}
	}
	if _, err := r.Create(Spec{ID: "a", Network: "/no/such/netns"}); err == nil {
		t.Error("a missing namespace path was accepted")
	}
	web, _ := r.Get("web")
	for port, want := range map[uint16]bool{80: true, 81: false, 8000: true, 8100: true, 8101: false} {
		if got := web.AllowsPort(port); got != want {
			t.Errorf("AllowsPort(%d) = %v", port, got)
		}
	}
	if host, _ := r.Get(HostID); !host.AllowsPort(1) {
		t.Error("host refuses ports without a limit")
	}
	if l := r.List(); len(l) != 2 || l[0].ID() != "host" || l[1].ID() != "web" {
		t.Errorf("List %v", l)
	}
	if err := r.Remove(HostID); !errors.Is(err, ErrInUse) {
		t.Errorf("remove host: %v", err)
	}
	if err := r.Remove("web"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Get("web"); !errors.Is(err, ErrNotFound) {
		t.Errorf("after remove: %v", err)
	}
}

// TestPortRanges: the text, JSON and YAML forms of port limits.
func TestPortRanges(t *testing.T) {
	var spec Spec
	if err := json.Unmarshal([]byte(`{"id":"a","ports":[80," 8000-8100 ","65535"]}`), &spec); err != nil {
		t.Fatal(err)
	}
	got := spec.Ports
	if len(got) != 3 || got[0] != (PortRange{80, 80}) || got[1] != (PortRange{8000, 8100}) || got[2].String() != "65535" || got[1].String() != "8000-8100" {
		t.Errorf("%v", got)
	}
	if b, _ := json.Marshal(spec); string(b) != `{"id":"a","network":"","ports":["80","8000-8100","65535"]}` {
		t.Errorf("JSON %s", b)
	}
	var y Spec
	if err := yaml.Unmarshal([]byte("id: a\nports: [5432, 8000-8100]\n"), &y); err != nil || len(y.Ports) != 2 || y.Ports[1].Last != 8100 {
		t.Errorf("YAML %v %v", y, err)
	}
	for _, bad := range []string{"", "0", "x", "90-80", "1-70000", "-5"} {
		var r PortRange
		if err := r.UnmarshalText([]byte(bad)); !errors.Is(err, ErrInvalid) {
			t.Errorf("%q: %v", bad, err)
		}
	}
	if err := yaml.Unmarshal([]byte("ports:\n  - 22\n  - 0\n"), &y); err == nil || !strings.Contains(err.Error(), "line 3") {
		t.Errorf("YAML error %v, want its line", err)
	}
}

// TestHostDial: a port of the host's loopback is reached on 127.0.0.1, or
// on ::1 when the server listens only there.
func TestHostDial(t *testing.T) {
	for _, addr := range []string{"127.0.0.1:0", "[::1]:0"} {
		ln, err := net.Listen("tcp", addr)
		if err != nil && addr == "[::1]:0" {
			t.Logf("no IPv6 loopback here: %v", err)
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", addr, err)
		}
		defer ln.Close()
		go func() {
			if c, err := ln.Accept(); err == nil {
				c.Write([]byte("hi"))
				c.Close()
			}
		}()
		host, _ := NewRegistry().Get(HostID)
		c, err := host.Dial(context.Background(), uint16(ln.Addr().(*net.TCPAddr).Port))
		if err != nil {
			t.Fatalf("%s: %v", addr, err)
		}
		defer c.Close()
		b := make([]byte, 2)
		if _, err := c.Read(b); err != nil || string(b) != "hi" {
			t.Errorf("%s: read %q %v", addr, b, err)
		}
	}
}

// listenIn starts a one-shot server inside a sandbox.
func listenIn(t *testing.T, sb *Sandbox) (uint16, func()) {
	t.Helper()
	var ln net.Listener
	if err := sb.Do(func() (err error) { ln, err = net.Listen("tcp", "127.0.0.1:0"); return }); err != nil {
		t.Fatalf("listen in %s: %v", sb.ID(), err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("inside"))
			c.Close()
		}
	}()
	return uint16(ln.Addr().(*net.TCPAddr).Port), func() { ln.Close(); <-done }
}

func checkIsolated(t *testing.T, sb *Sandbox) {
	t.Helper()
	port, stop := listenIn(t, sb)
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := sb.Dial(ctx, port)
	if err != nil {
		t.Fatalf("dial inside: %v", err)
	}
	b := make([]byte, 6)
	n, _ := c.Read(b)
	c.Close()
	if string(b[:n]) != "inside" {
		t.Errorf("read %q", b[:n])
	}
	// The host's loopback is another network: nothing listens there.
	if c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(int(port)), time.Second); err == nil {
		c.Close()
		t.Errorf("the sandbox's port %d is reachable from the host", port)
	}
}

func TestNewNetns(t *testing.T) {
	needRoot(t)
	r := NewRegistry()
	defer r.Close()
	sb, err := r.Create(Spec{ID: "lab", Network: NetworkNew})
	if err != nil {
		t.Fatal(err)
	}
	checkIsolated(t, sb)
	if err := r.Remove("lab"); err != nil {
		t.Fatal(err)
	}
}

// TestExistingNetns joins a namespace made by ip netns add.
func TestExistingNetns(t *testing.T) {
	needRoot(t)
	ip, err := exec.LookPath("ip")
	if err != nil {
		t.Skip("skipped: the ip command (iproute2) is not installed; make test installs it")
	}
	name := fmt.Sprintf("gwtest-%d", os.Getpid())
	if out, err := exec.Command(ip, "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v %s", err, out)
	}
	defer exec.Command(ip, "netns", "del", name).Run()
	exec.Command(ip, "-n", name, "link", "set", "lo", "up").Run()
	r := NewRegistry()
	defer r.Close()
	sb, err := r.Create(Spec{ID: "ext", Network: "/run/netns/" + name})
	if err != nil {
		t.Fatal(err)
	}
	checkIsolated(t, sb)
	for _, path := range []string{"/etc/hostname", "/proc/self/status", "/proc/self/ns/uts"} {
		if _, err := r.Create(Spec{ID: "notns", Network: path}); err == nil {
			t.Errorf("%s was accepted as a network namespace", path)
		}
	}
}
