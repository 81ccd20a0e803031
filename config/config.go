// Package config reads the gateway's configuration: command-line flags,
// each of which an environment variable can also set, and an optional YAML
// file of sandboxes and containers (an embedded default otherwise).
// Precedence: flag, then environment, then default.
package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"gateway/api"
	"gateway/container"
	"gateway/session"
	"gateway/stream"
)

// Config is the gateway's whole configuration.
type Config struct {
	Listen          string
	KubeListen      string
	StateDir        string
	Kubeconfig      string
	Node            string
	Peers           string
	Token           string
	TokenFile       string
	ConfigFile      string
	AllowedOrigins  []string
	TLSCert         string
	TLSKey          string
	MetricsAuth     bool
	MaxSessions     int
	MaxPendingURLs  int
	URLTTL          time.Duration
	Retention       time.Duration
	History         int
	SessionBuffer   ByteSize
	Scrollback      ByteSize
	MaxMessage      ByteSize
	ExecSyncOutput  ByteSize
	StopGrace       time.Duration
	IdleTimeout     time.Duration
	MaxDetach       time.Duration
	DetachKeep      ByteSize
	RecordDir       string
	RecordInput     bool
	RecordMaxAge    time.Duration
	RecordMaxSize   ByteSize
	AuditLog        string
	AuditMaxSize    ByteSize
	PprofListen     string
	ShutdownTimeout time.Duration
	LogLevel        string
	LogFormat       string
	Version         bool

	// File holds the sandboxes and containers: from ConfigFile, or the
	// embedded default.
	File *File
}

// flagSpec documents one flag: its name, environment variable, and help.
type flagSpec struct {
	name, env, arg, help string
}

// register declares every flag on fs, bound to c, with c's current values
// as defaults.
func (c *Config) register(fs *flag.FlagSet) []flagSpec {
	specs := []flagSpec{}
	add := func(v flag.Value, name, arg, help string) {
		env := "GATEWAY_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
		if name == "version" {
			env = ""
		}
		fs.Var(v, name, help)
		specs = append(specs, flagSpec{name: name, env: env, arg: arg, help: help})
	}
	add((*stringValue)(&c.Listen), "listen", "ADDR", "address to serve on; a non-loopback address requires a token")
	add((*stringValue)(&c.KubeListen), "kube-listen", "ADDR", "address of the Kubernetes API for kubectl (HTTPS); empty turns it off")
	add((*stringValue)(&c.StateDir), "state-dir", "DIR", "where the gateway keeps its CA, certificate and kubeconfig")
	add((*stringValue)(&c.Kubeconfig), "kubeconfig", "FILE", "write a kubeconfig for the Kubernetes API here (mode 0600); default: in --state-dir")
	add((*stringValue)(&c.Node), "node", "NAME", "the gateway's name: its kubeconfig context, and the node of its pods")
	add((*stringValue)(&c.Peers), "peers", "PEERS", "other replicas: URLs (comma-separated), dns://NAME:PORT or dns+srv://NAME (re-resolved every 5 s)")
	add((*stringValue)(&c.Token), "token", "TOKEN", "bearer token that clients must send; generated and printed when unset on loopback")
	add((*stringValue)(&c.TokenFile), "token-file", "FILE", "read the token from FILE (trailing newline ignored)")
	add((*stringValue)(&c.ConfigFile), "config", "FILE", "YAML file of sandboxes and containers; default: a host sandbox and a shell container")
	add((*listValue)(&c.AllowedOrigins), "allowed-origins", "LIST", "origins (scheme://host:port, comma-separated, or *) that browsers may also connect from")
	add((*stringValue)(&c.TLSCert), "tls-cert", "FILE", "serve HTTPS with this certificate (PEM); needs --tls-key")
	add((*stringValue)(&c.TLSKey), "tls-key", "FILE", "private key (PEM) of --tls-cert")
	add((*boolValue)(&c.MetricsAuth), "metrics-auth", "", "require the token on /metrics too")
	add((*intValue)(&c.MaxSessions), "max-sessions", "N", "most streams open at once; more get 429")
	add((*intValue)(&c.MaxPendingURLs), "max-pending-urls", "N", "most single-use stream URLs issued and not yet used; more get 429")
	add((*durationValue)(&c.URLTTL), "url-ttl", "DURATION", "how long a single-use stream URL stays valid")
	add((*durationValue)(&c.Retention), "session-retention", "DURATION", "how long closed sessions stay listed")
	add((*intValue)(&c.History), "session-history", "N", "most closed sessions kept listed; the oldest go first")
	add(&c.SessionBuffer, "session-buffer", "SIZE", "recent output kept per session (GET /api/v1/sessions/{id}/output)")
	add(&c.Scrollback, "scrollback", "SIZE", "output kept per container and replayed to attachers")
	add(&c.MaxMessage, "max-message", "SIZE", "largest WebSocket message accepted from a client")
	add(&c.ExecSyncOutput, "exec-sync-max-output", "SIZE", "exec-sync keeps at most this much of stdout and of stderr")
	add((*durationValue)(&c.StopGrace), "stop-grace", "DURATION", "time between SIGTERM and SIGKILL when stopping a process")
	add((*durationValue)(&c.IdleTimeout), "idle-timeout", "DURATION", "close streams that carry no data for this long; 0 never")
	add((*durationValue)(&c.MaxDetach), "max-detach", "DURATION", "longest an exec opened with detach= outlives its last client (0: no detached shells)")
	add(&c.DetachKeep, "detach-keep", "SIZE", "output of each detachable exec kept for clients that rejoin with since=")
	add((*stringValue)(&c.RecordDir), "record-dir", "DIR", "record sessions (asciicast v2) into DIR; unset: those whose container says record: true, in --state-dir")
	add((*boolValue)(&c.RecordInput), "record-input", "", "record what clients type too (off by default: it carries passwords)")
	add((*durationValue)(&c.RecordMaxAge), "record-max-age", "DURATION", "remove recordings older than this (0: keep)")
	add(&c.RecordMaxSize, "record-max-size", "SIZE", "keep at most this much of recordings, the oldest removed first (0: no bound)")
	add((*stringValue)(&c.AuditLog), "audit-log", "FILE", "write the audit trail (JSON lines) to FILE, or - for standard error")
	add(&c.AuditMaxSize, "audit-max-size", "SIZE", "rotate the audit log past this size (FILE.1 ... FILE.5)")
	add((*stringValue)(&c.PprofListen), "pprof-listen", "ADDR", "serve Go's profiles (net/http/pprof) on this loopback address; off when empty")
	add((*durationValue)(&c.ShutdownTimeout), "shutdown-timeout", "DURATION", "how long each step of a shutdown waits: for requests, then streams, then processes to end")
	add((*stringValue)(&c.LogLevel), "log-level", "LEVEL", "debug, info, warn or error")
	add((*stringValue)(&c.LogFormat), "log-format", "FORMAT", "text or json (logs go to standard error)")
	add((*boolValue)(&c.Version), "version", "", "print the version and exit")
	return specs
}

// Default returns the built-in defaults: the packages' own, and the
// command's.
func Default() Config {
	sess, rt, st, ap := session.DefaultConfig(), container.DefaultConfig(), stream.DefaultConfig(), api.DefaultConfig()
	return Config{
		Listen:          "127.0.0.1:8080",
		KubeListen:      "127.0.0.1:6443",
		StateDir:        defaultStateDir(),
		Node:            hostname(),
		MaxSessions:     sess.MaxSessions,
		MaxPendingURLs:  session.DefaultMaxPending,
		URLTTL:          session.DefaultTokenTTL,
		Retention:       sess.Retention,
		History:         sess.History,
		SessionBuffer:   ByteSize(sess.OutputBuffer),
		Scrollback:      ByteSize(rt.Scrollback),
		MaxMessage:      ByteSize(st.MaxMessageSize),
		ExecSyncOutput:  ByteSize(ap.ExecSyncMaxOutput),
		StopGrace:       rt.StopGrace,
		IdleTimeout:     st.IdleTimeout,
		MaxDetach:       st.MaxDetach,
		DetachKeep:      ByteSize(st.SharedKeep),
		RecordMaxSize:   10 << 30,
		AuditMaxSize:    100 << 20,
		ShutdownTimeout: 10 * time.Second,
		LogLevel:        "info",
		LogFormat:       "text",
	}
}

const intro = `gateway serves processes over WebSocket: exec into containers (in a pty or
with pipes), attach to their main processes, and port-forward into their
network sandboxes, speaking the Kubernetes channel protocols
(v5.channel.k8s.io and older) that kubectl and client-go use, plus a web
terminal at /. With no flags it serves a login shell on 127.0.0.1:8080 and
prints a URL with a fresh token.

Usage: gateway [flags]

Every flag can also be set by the environment variable shown beside it;
a flag on the command line wins (--token or --token-file there overrides
both variables), and an empty variable empties a flag that can be empty,
like --kube-listen. Durations look like 30s, 5m or 4h; sizes like 65536,
64KiB or 16MiB.

`

// defaultStateDir is the user's state directory: $XDG_STATE_HOME/gateway,
// else ~/.local/state/gateway.
func defaultStateDir() string {
	if d := os.Getenv("XDG_STATE_HOME"); d != "" {
		return filepath.Join(d, "gateway")
	}
	if h, err := os.UserHomeDir(); err == nil {
		return filepath.Join(h, ".local", "state", "gateway")
	}
	return filepath.Join(os.TempDir(), "gateway-state")
}

func hostname() string {
	if h, err := os.Hostname(); err == nil && h != "" {
		return strings.ToLower(h)
	}
	return "gateway"
}

// Parse reads args and then, for the flags not on the command line, the
// environment (through lookupenv, os.LookupEnv's shape). A variable set to
// "" sets a flag that can be empty (--kube-listen, --allowed-origins) and
// is no setting for the others. --help prints the usage to out and returns
// flag.ErrHelp.
func Parse(args []string, lookupenv func(string) (string, bool), out io.Writer) (*Config, error) {
	c := Default()
	fs := flag.NewFlagSet("gateway", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	specs := c.register(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			usage(out, fs, specs)
			return nil, err
		}
		return nil, fmt.Errorf("%w (see gateway --help)", err)
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q (see gateway --help)", fs.Arg(0))
	}
	onCommandLine := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { onCommandLine[f.Name] = true })
	for _, s := range specs {
		v, ok := lookupenv(s.env)
		if s.env == "" || !ok || onCommandLine[s.name] || onCommandLine[excludes[s.name]] {
			continue
		}
		if err := fs.Set(s.name, v); err != nil && v != "" {
			return nil, fmt.Errorf("environment %s=%q: %w", s.env, v, err)
		}
	}
	if err := c.check(); err != nil {
		return nil, err
	}
	return &c, nil
}

func usage(out io.Writer, fs *flag.FlagSet, specs []flagSpec) {
	io.WriteString(out, intro)
	for _, s := range specs {
		name := "--" + s.name
		if s.arg != "" {
			name += " " + s.arg
		}
		var notes []string
		if s.env != "" {
			notes = append(notes, "$"+s.env)
		}
		if def := fs.Lookup(s.name).DefValue; def != "" && def != "false" {
			notes = append(notes, "default "+def)
		}
		if len(notes) > 0 {
			name += "  (" + strings.Join(notes, ", ") + ")"
		}
		fmt.Fprintf(out, "  %s\n      %s\n", name, s.help)
	}
	io.WriteString(out, `
Config file (--config), YAML; unknown keys are errors:

  sandboxes:
    - id: lab
      network: new            # host (default), new, or /path/of/a/netns
      ports: [5432, 8000-8100] # port-forward limit; default: any port
  containers:
    - id: shell
      sandbox: host
      command: [/bin/bash, -l] # default: $SHELL -l
      env: {LANG: C.UTF-8}
      workingDir: /srv
      tty: true
      stdin: true
      restartPolicy: always   # never (default), on-failure or always
`)
}

// excludes pairs the flags that cannot both be set: one on the command
// line overrides the other's variable.
var excludes = map[string]string{"token": "token-file", "token-file": "token"}

// check validates values that flags cannot check alone, and loads the
// config file.
func (c *Config) check() error {
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		return fmt.Errorf("--listen %q: want host:port, like 127.0.0.1:8080", c.Listen)
	}
	if _, _, err := net.SplitHostPort(c.KubeListen); c.KubeListen != "" && err != nil {
		return fmt.Errorf("--kube-listen %q: want host:port, like 127.0.0.1:6443, or empty", c.KubeListen)
	}
	if c.Kubeconfig == "" {
		c.Kubeconfig = filepath.Join(c.StateDir, "kubeconfig")
	}
	if c.Token != "" && c.TokenFile != "" {
		return errors.New("--token and --token-file are both set: choose one")
	}
	if c.TokenFile != "" {
		b, err := os.ReadFile(c.TokenFile)
		if err != nil {
			return fmt.Errorf("--token-file: %w", err)
		}
		c.Token = strings.TrimRight(string(b), "\r\n")
		if c.Token == "" {
			return fmt.Errorf("--token-file %s is empty", c.TokenFile)
		}
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return errors.New("--tls-cert and --tls-key go together")
	}
	positive := []struct {
		name string
		v    int64
	}{
		{"max-sessions", int64(c.MaxSessions)}, {"max-pending-urls", int64(c.MaxPendingURLs)},
		{"session-history", int64(c.History)},
		{"url-ttl", int64(c.URLTTL)}, {"max-message", int64(c.MaxMessage)},
		{"stop-grace", int64(c.StopGrace)}, {"shutdown-timeout", int64(c.ShutdownTimeout)},
		{"exec-sync-max-output", int64(c.ExecSyncOutput)},
	}
	for _, p := range positive {
		if p.v <= 0 {
			return fmt.Errorf("--%s must be positive", p.name)
		}
	}
	for _, p := range []struct {
		name string
		v    int64
	}{{"session-retention", int64(c.Retention)}, {"idle-timeout", int64(c.IdleTimeout)},
		{"session-buffer", int64(c.SessionBuffer)}, {"scrollback", int64(c.Scrollback)},
		{"max-detach", int64(c.MaxDetach)}, {"detach-keep", int64(c.DetachKeep)},
		{"record-max-age", int64(c.RecordMaxAge)}, {"record-max-size", int64(c.RecordMaxSize)},
		{"audit-max-size", int64(c.AuditMaxSize)}} {
		if p.v < 0 {
			return fmt.Errorf("--%s must not be negative", p.name)
		}
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("--log-level %q: want debug, info, warn or error", c.LogLevel)
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		return fmt.Errorf("--log-format %q: want text or json", c.LogFormat)
	}
	for _, o := range c.AllowedOrigins {
		if o != "*" && !strings.Contains(o, "://") {
			return fmt.Errorf("--allowed-origins: %q: want scheme://host[:port] or *", o)
		}
	}
	if c.ConfigFile == "" {
		c.File = DefaultFile()
		return nil
	}
	f, err := LoadFile(c.ConfigFile)
	if err != nil {
		return err
	}
	c.File = f
	return nil
}

// IsLoopback reports whether addr (host:port) listens on loopback only.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Flag values.

type stringValue string

func (v *stringValue) Set(s string) error { *v = stringValue(s); return nil }
func (v *stringValue) String() string     { return string(*v) }

type boolValue bool

func (v *boolValue) Set(s string) error {
	b, err := strconv.ParseBool(s)
	if err != nil {
		return errors.New("want true or false")
	}
	*v = boolValue(b)
	return nil
}
func (v *boolValue) String() string   { return strconv.FormatBool(bool(*v)) }
func (v *boolValue) IsBoolFlag() bool { return true }

type intValue int

func (v *intValue) Set(s string) error {
	n, err := strconv.Atoi(s)
	if err != nil {
		return errors.New("want a whole number")
	}
	*v = intValue(n)
	return nil
}
func (v *intValue) String() string { return strconv.Itoa(int(*v)) }

type durationValue time.Duration

func (v *durationValue) Set(s string) error {
	d, err := time.ParseDuration(s)
	if err != nil {
		return errors.New("want a duration like 30s, 5m or 4h")
	}
	*v = durationValue(d)
	return nil
}
func (v *durationValue) String() string { return time.Duration(*v).String() }

type listValue []string

func (v *listValue) Set(s string) error {
	*v = nil
	for item := range strings.SplitSeq(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			*v = append(*v, item)
		}
	}
	return nil
}
func (v *listValue) String() string { return strings.Join(*v, ",") }

// ByteSize is a size in bytes that reads 65536, 64KiB, 64K or 16MiB.
type ByteSize int64

// Set parses a size.
func (b *ByteSize) Set(s string) error {
	units := []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"Ki", 1 << 10}, {"Mi", 1 << 20}, {"Gi", 1 << 30},
		{"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"B", 1}}
	num, mult := strings.TrimSpace(s), int64(1)
	for _, u := range units {
		if n, ok := strings.CutSuffix(num, u.suffix); ok {
			num, mult = strings.TrimSpace(n), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 || n > (1<<40)/mult {
		return errors.New("want a size like 65536, 64KiB or 16MiB")
	}
	*b = ByteSize(n * mult)
	return nil
}

func (b *ByteSize) String() string {
	switch n := int64(*b); {
	case n != 0 && n%(1<<20) == 0:
		return strconv.FormatInt(n>>20, 10) + "MiB"
	case n != 0 && n%(1<<10) == 0:
		return strconv.FormatInt(n>>10, 10) + "KiB"
	default:
		return strconv.FormatInt(n, 10)
	}
}
