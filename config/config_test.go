package config

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"gateway/container"
	"gateway/sandbox"
)

func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestDefaults(t *testing.T) {
	c, err := Parse(nil, env(nil), nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != "127.0.0.1:8080" || c.URLTTL != 30*time.Second || c.Scrollback != 1<<20 || c.Token != "" {
		t.Errorf("defaults %+v", c)
	}
	if len(c.File.Containers) != 1 || c.File.Containers[0].ID != "shell" || !c.File.Containers[0].TTY ||
		len(c.File.Containers[0].Command) != 0 || c.File.Sandboxes[0].ID != "host" {
		t.Errorf("embedded default %+v", c.File)
	}
}

func TestPrecedence(t *testing.T) {
	e := env(map[string]string{"GATEWAY_LISTEN": "127.0.0.1:9", "GATEWAY_STOP_GRACE": "2s", "GATEWAY_ALLOWED_ORIGINS": "https://a.example, https://b.example"})
	c, err := Parse([]string{"--listen", "127.0.0.1:7", "--scrollback", "64KiB"}, e, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != "127.0.0.1:7" || c.StopGrace != 2*time.Second || c.Scrollback != 64<<10 ||
		len(c.AllowedOrigins) != 2 || c.AllowedOrigins[1] != "https://b.example" {
		t.Errorf("got %+v", c)
	}
}

// TestEnvironment: a flag on the command line overrides its variable,
// and the variable of a flag it excludes; an empty variable sets a flag
// that can be empty and no other.
func TestEnvironment(t *testing.T) {
	file := filepath.Join(t.TempDir(), "tok")
	os.WriteFile(file, []byte("from-file\n"), 0o600)
	for _, tc := range []struct {
		name  string
		args  []string
		env   map[string]string
		check func(c *Config) bool
	}{
		{"--token-file over $GATEWAY_TOKEN", []string{"--token-file", file}, map[string]string{"GATEWAY_TOKEN": "from-env"},
			func(c *Config) bool { return c.Token == "from-file" }},
		{"--token over $GATEWAY_TOKEN_FILE", []string{"--token", "from-flag"}, map[string]string{"GATEWAY_TOKEN_FILE": file},
			func(c *Config) bool { return c.Token == "from-flag" && c.TokenFile == "" }},
		{"empty $GATEWAY_KUBE_LISTEN", nil, map[string]string{"GATEWAY_KUBE_LISTEN": ""},
			func(c *Config) bool { return c.KubeListen == "" }},
		{"empty $GATEWAY_ALLOWED_ORIGINS", nil, map[string]string{"GATEWAY_ALLOWED_ORIGINS": ""},
			func(c *Config) bool { return len(c.AllowedOrigins) == 0 }},
		{"empty $GATEWAY_MAX_SESSIONS", nil, map[string]string{"GATEWAY_MAX_SESSIONS": ""},
			func(c *Config) bool { return c.MaxSessions == Default().MaxSessions }},
		{"empty $GATEWAY_METRICS_AUTH", nil, map[string]string{"GATEWAY_METRICS_AUTH": ""},
			func(c *Config) bool { return c.MetricsAuth == Default().MetricsAuth }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse(tc.args, env(tc.env), nil)
			if err != nil || !tc.check(c) {
				t.Errorf("Parse = %+v, %v", c, err)
			}
		})
	}
	if _, err := Parse(nil, env(map[string]string{"GATEWAY_TOKEN": "a", "GATEWAY_TOKEN_FILE": file}), nil); err == nil || !strings.Contains(err.Error(), "choose one") {
		t.Errorf("both variables: %v", err)
	}
}

func TestParseErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(body), 0o600)
		return p
	}
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"bad duration", []string{"--url-ttl", "soon"}, nil, "want a duration"},
		{"bad size", []string{"--scrollback", "lots"}, nil, "want a size"},
		{"negative size", []string{"--scrollback", "-1"}, nil, "want a size"},
		{"zero sessions", []string{"--max-sessions", "0"}, nil, "--max-sessions must be positive"},
		{"bad env", nil, map[string]string{"GATEWAY_IDLE_TIMEOUT": "x"}, "GATEWAY_IDLE_TIMEOUT"},
		{"bad listen", []string{"--listen", "8080"}, nil, "want host:port"},
		{"token and file", []string{"--token", "a", "--token-file", "b"}, nil, "choose one"},
		{"lone tls cert", []string{"--tls-cert", "c.pem"}, nil, "go together"},
		{"bad log level", []string{"--log-level", "loud"}, nil, "--log-level"},
		{"bad origin", []string{"--allowed-origins", "example.com"}, nil, "scheme://host"},
		{"unknown flag", []string{"--colour"}, nil, "flag provided but not defined"},
		{"missing file", []string{"--config", filepath.Join(dir, "nope.yaml")}, nil, "no such file"},
		{"unknown key", []string{"--config", write("a.yaml", "containers:\n  - id: a\n    tyy: true\n")}, nil, "field tyy not found"},
		{"unknown top key", []string{"--config", write("b.yaml", "container:\n  - id: a\n")}, nil, "field container not found"},
		{"bad id", []string{"--config", write("c.yaml", "containers:\n  - id: A_B\n")}, nil, `containers[0]: invalid container: id "A_B"`},
		{"missing id", []string{"--config", write("d.yaml", "containers:\n  - tty: true\n")}, nil, "containers[0].id: required"},
		{"host twice", []string{"--config", write("e2.yaml", "sandboxes:\n  - id: host\n  - id: host\n")}, nil, `sandboxes[1].id: "host" is listed twice`},
		{"duplicate", []string{"--config", write("e.yaml", "containers:\n  - id: a\n  - id: a\n")}, nil, `containers[1].id: "a" is listed twice`},
		{"unknown sandbox", []string{"--config", write("f.yaml", "containers:\n  - id: a\n    sandbox: lab\n")}, nil, `containers[0].sandbox: "lab"`},
		{"bad network", []string{"--config", write("g.yaml", "sandboxes:\n  - id: lab\n    network: bridge\n")}, nil, `sandboxes[0]: invalid sandbox: network "bridge"`},
		{"bad port", []string{"--config", write("h.yaml", "sandboxes:\n  - id: lab\n    ports: [0]\n")}, nil, `line 3: invalid sandbox: port "0"`},
		{"bad type", []string{"--config", write("i.yaml", "containers:\n  - id: a\n    tty: maybe\n")}, nil, "cannot unmarshal"},
		{"relative dir", []string{"--config", write("j.yaml", "containers:\n  - id: a\n    workingDir: srv\n")}, nil, "workingDir"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(tc.args, env(tc.env), nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Parse = %v, want an error with %q", err, tc.want)
			}
		})
	}
}

func TestConfigFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "g.yaml")
	os.WriteFile(p, []byte(`
sandboxes:
  - id: lab
    network: new
    ports: [5432, "8000-8100"]
containers:
  - id: db
    sandbox: lab
    command: [sleep, "100"]
    env: {A: b}
    workingDir: /tmp
    stdin: true
`), 0o600)
	c, err := Parse([]string{"--config", p}, env(nil), nil)
	if err != nil {
		t.Fatal(err)
	}
	sb := c.File.Sandboxes[0]
	if len(sb.Ports) != 2 || sb.Ports[0].First != 5432 || sb.Ports[1].Last != 8100 || sb.Network != "new" {
		t.Errorf("sandbox %+v", sb)
	}
	ct := c.File.Containers[0]
	if ct.Sandbox != "lab" || ct.Env["A"] != "b" || !ct.Stdin || ct.TTY || ct.WorkingDir != "/tmp" {
		t.Errorf("container %+v", ct)
	}
}

func TestTokenFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "tok")
	os.WriteFile(p, []byte("s3cret\n"), 0o600)
	c, err := Parse(nil, env(map[string]string{"GATEWAY_TOKEN_FILE": p}), nil)
	if err != nil || c.Token != "s3cret" {
		t.Errorf("token %q %v", c.Token, err)
	}
}

func TestHelp(t *testing.T) {
	var out bytes.Buffer
	if _, err := Parse([]string{"-h"}, env(nil), &out); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("err %v", err)
	}
	// Every flag is documented with its variable.
	for _, want := range []string{"--listen ADDR  ($GATEWAY_LISTEN, default 127.0.0.1:8080)", "--metrics-auth  ($GATEWAY_METRICS_AUTH)", "--version\n"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("help lacks %q", want)
		}
	}
	for line := range strings.SplitSeq(out.String(), "\n") {
		if len(line) > 110 {
			t.Errorf("help line over 110 columns: %q", line)
		}
	}
}

func TestByteSize(t *testing.T) {
	for in, want := range map[string]int64{"65536": 65536, "64KiB": 64 << 10, "64K": 64 << 10, "16MiB": 16 << 20, "1Gi": 1 << 30, "0": 0, " 2 MiB ": 2 << 20} {
		var b ByteSize
		if err := b.Set(in); err != nil || int64(b) != want {
			t.Errorf("Set(%q) = %d, %v", in, b, err)
		}
	}
	for _, in := range []string{"", "KiB", "1.5MiB", "-3", "10TiB", "99999999GiB"} {
		var b ByteSize
		if err := b.Set(in); err == nil {
			t.Errorf("Set(%q) accepted", in)
		}
	}
	b := ByteSize(3 << 20)
	if b.String() != "3MiB" {
		t.Errorf("String %s", b.String())
	}
}

func TestIsLoopback(t *testing.T) {
	for addr, want := range map[string]bool{"127.0.0.1:8080": true, "localhost:1": true, "[::1]:80": true, "127.1.2.3:9": true,
		"0.0.0.0:8080": false, ":8080": false, "10.0.0.1:80": false, "[::]:80": false, "example.com:80": false} {
		if got := IsLoopback(addr); got != want {
			t.Errorf("IsLoopback(%q) = %v", addr, got)
		}
	}
}

// FuzzConfigFile: a configuration file is refused with an error or read
// into sandboxes and containers that pass the API's own checks, and what
// was read writes back to a file that reads the same.
func FuzzConfigFile(f *testing.F) {
	f.Add(defaultFile)
	for _, s := range []string{
		"sandboxes:\n  - id: lab\n    network: new\n    ports: [5432, \"8000-8100\"]\n    record: required\n",
		"containers:\n  - id: db\n    sandbox: lab\n    command: [sleep, \"100\"]\n    env: {A: b}\n    restartPolicy: on-failure\n",
		"containers:\n  - id: x\n    env: {\"\": b}\n",
		"containers:\n  - id: x\n    command: [\"a\\0b\"]\n",
		"a: &a [*a, *a]\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		file, err := parseFile("fuzz", b)
		if err != nil {
			return
		}
		for _, s := range file.Sandboxes {
			if s.Network == "" {
				s.Network = sandbox.NetworkHost
			}
			if err := sandbox.Validate(s); err != nil {
				t.Fatalf("%q: sandbox %+v accepted: %v", b, s, err)
			}
		}
		for _, c := range file.Containers {
			if err := container.Validate(c); err != nil {
				t.Fatalf("%q: container %+v accepted: %v", b, c, err)
			}
		}
		out, err := yaml.Marshal(file)
		if err != nil {
			t.Fatalf("%q: writing it back: %v", b, err)
		}
		again, err := parseFile("fuzz", out)
		if err != nil {
			t.Fatalf("%q written back as %q: %v", b, out, err)
		}
		if out2, _ := yaml.Marshal(again); !bytes.Equal(out, out2) {
			t.Fatalf("%q: written back as %q, then as %q", b, out, out2)
		}
	})
}
