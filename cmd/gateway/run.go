package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"gateway/api"
	"gateway/audit"
	"gateway/cluster"
	"gateway/config"
	"gateway/container"
	"gateway/kube"
	"gateway/metrics"
	"gateway/record"
	"gateway/sandbox"
	"gateway/session"
	"gateway/stream"
	"gateway/web"
)

// run starts the gateway and serves until ctx ends, then shuts down in
// order: stop accepting, end streams, stop containers.
func run(ctx context.Context, args []string, lookupenv func(string) (string, bool), stdout, stderr io.Writer) error {
	cfg, err := config.Parse(args, lookupenv, stdout)
	if err != nil {
		return err
	}
	if cfg.Version {
		fmt.Fprintln(stdout, "gateway", version())
		return nil
	}
	log := newLogger(cfg, stderr)
	raiseFileLimit(log, cfg.MaxSessions)
	tuneGC(lookupenv)

	generated := false
	if cfg.Token == "" {
		for _, addr := range []string{cfg.Listen, cfg.KubeListen} {
			if addr != "" && !config.IsLoopback(addr) {
				return fmt.Errorf("refusing to listen on %s without a token: anyone who can reach it could run commands; "+
					"set --token, --token-file or GATEWAY_TOKEN, or listen on 127.0.0.1", addr)
			}
		}
		cfg.Token = newToken()
		generated = true
	}

	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	defer ln.Close()

	var host []sandbox.Spec // the file's entry for the host sandbox: its ports and recording
	for _, s := range cfg.File.Sandboxes {
		if s.ID == sandbox.HostID {
			host = append(host, s)
		}
	}
	sandboxes := sandbox.NewRegistry(host...)
	defer sandboxes.Close()
	for i, s := range cfg.File.Sandboxes {
		if s.ID == sandbox.HostID {
			continue
		}
		if _, err := sandboxes.Create(s); err != nil {
			return fmt.Errorf("config sandboxes[%d] (%s): %w", i, s.ID, err)
		}
	}
	rt := container.New(container.Config{StopGrace: cfg.StopGrace, Scrollback: int(cfg.Scrollback), Log: log}, sandboxes)
	stopContainers := func() {
		sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
		defer cancel()
		if err := rt.Shutdown(sctx); err != nil {
			log.Error("stop containers", "error", err)
		}
	}
	for i, c := range cfg.File.Containers {
		if _, err := rt.Create(c); err != nil {
			stopContainers()
			return fmt.Errorf("config containers[%d] (%s): %w", i, c.ID, err)
		}
	}

	reg := prometheus.NewRegistry()
	m := metrics.New(reg, rt.StateCounts)
	sessions := session.NewRegistry(session.Config{MaxSessions: cfg.MaxSessions, Retention: cfg.Retention,
		History: cfg.History, OutputBuffer: int(cfg.SessionBuffer)})
	scfg := stream.DefaultConfig()
	scfg.MaxMessageSize = int64(cfg.MaxMessage)
	scfg.IdleTimeout = cfg.IdleTimeout
	scfg.MaxDetach = cfg.MaxDetach
	scfg.SharedKeep = int(cfg.DetachKeep)
	trail, recordings, err := openRecords(cfg, m, log)
	if err != nil {
		stopContainers()
		return err
	}
	defer trail.Close()
	scfg.Record, scfg.Audit = recordings, trail
	// Streams outlive requests and the signal: they end through CloseAll,
	// with a close frame, during the shutdown below.
	streams := stream.NewServer(context.WithoutCancel(ctx), scfg, log, rt, sandboxes, sessions, m)
	a := api.New(api.Config{
		Token: cfg.Token, AllowedOrigins: cfg.AllowedOrigins, MetricsAuth: cfg.MetricsAuth,
		SecureCookie: cfg.TLSCert != "", ExecSyncMaxOutput: int(cfg.ExecSyncOutput), StopGrace: cfg.StopGrace, Node: cfg.Node,
		QualifyPods: cfg.Peers != "",
	}, log, api.Deps{
		Runtime: rt, Sandboxes: sandboxes, Sessions: sessions, Recordings: recordings.Store, Audit: trail,
		URLs:    session.NewStore(cfg.URLTTL, cfg.MaxPendingURLs, nil),
		Streams: streams,
		Metrics: promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}),
		Web:     web.Handler(),
	})

	handler := a.Handler()
	var peers *cluster.Cluster
	if cfg.Peers != "" {
		scheme := "http"
		if cfg.TLSCert != "" {
			scheme = "https" // peers found by DNS serve as this one does
		}
		if peers, err = cluster.New(cluster.Config{Node: cfg.Node, Peers: cfg.Peers, Token: cfg.Token, Scheme: scheme, Log: log,
			Metrics: cluster.NewMetrics(reg)}); err != nil {
			stopContainers()
			return err
		}
		handler = peers.Handler(handler, func(kind, id string) bool {
			var err error
			switch kind {
			case "containers":
				_, err = rt.Get(id)
			case "sandboxes":
				_, err = sandboxes.Get(id)
			case "sessions":
				_, err = sessions.Get(id)
			case "recordings":
				if recordings.Store == nil {
					return false
				}
				_, err = recordings.Store.Get(id)
			}
			return err == nil
		})
		peersCtx, stopPeers := context.WithCancel(context.WithoutCancel(ctx))
		peersDone := make(chan struct{})
		go func() { defer close(peersDone); peers.Run(peersCtx) }()
		defer func() { stopPeers(); <-peersDone }()
	}
	newServer := func() *http.Server {
		return &http.Server{
			Handler: handler,
			// Bounds slow handshakes; upgraded streams set their own deadlines.
			ReadHeaderTimeout: 10 * time.Second,
			IdleTimeout:       2 * time.Minute,
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		}
	}
	srv := newServer()
	serveErr := make(chan error, 2)
	go func() {
		if cfg.TLSCert != "" {
			serveErr <- srv.ServeTLS(stream.Listener(ln), cfg.TLSCert, cfg.TLSKey)
		} else {
			serveErr <- srv.Serve(stream.UpgradeListener(ln, handler, srv.ReadHeaderTimeout, log))
		}
	}()
	var kubeSrv *http.Server
	kubeURL := ""
	if cfg.KubeListen != "" {
		kubeSrv = newServer()
		if kubeURL, err = serveKube(cfg, kubeSrv, serveErr); err != nil {
			srv.Close()
			stopContainers()
			return err
		}
	}

	if cfg.PprofListen != "" {
		stopPprof, err := servePprof(cfg.PprofListen, log)
		if err != nil {
			srv.Close()
			stopContainers()
			return err
		}
		defer stopPprof()
	}

	// The ready line is printed whatever the log level: it says where to
	// connect, and with which token when one was generated, and where
	// kubectl's kubeconfig is.
	url := baseURL(ln.Addr(), cfg.TLSCert != "")
	readyLog := newLogger(&config.Config{LogLevel: "info", LogFormat: cfg.LogFormat}, stderr)
	attrs := []any{"url", url}
	if generated {
		attrs = append(attrs, "token", cfg.Token, "open", url+"#token="+cfg.Token)
	}
	if kubeURL != "" {
		attrs = append(attrs, "kubernetes", kubeURL, "kubeconfig", cfg.Kubeconfig, "try", "KUBECONFIG="+cfg.Kubeconfig+" kubectl get pods")
	}
	if peers != nil {
		attrs = append(attrs, "node", peers.Node(), "peers", cfg.Peers)
	}
	readyLog.Info("gateway ready", attrs...)

	idleCtx, stopIdle := context.WithCancel(ctx)
	idleDone := make(chan struct{})
	go func() { defer close(idleDone); returnIdleMemory(idleCtx, sessions.Counts) }()
	defer func() { stopIdle(); <-idleDone }()

	select {
	case err = <-serveErr:
		err = fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
		log.Info("shutting down")
	}

	// 1. Refuse new work, stop listening, finish plain requests.
	a.Drain()
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	for _, s := range []*http.Server{srv, kubeSrv} {
		if s == nil {
			continue
		}
		if serr := s.Shutdown(sctx); serr != nil {
			log.Warn("http shutdown", "error", serr)
		}
	}
	// 2. End every stream with a close frame, and wait for them: with time
	// of their own, whatever the requests took.
	stctx, cancelStreams := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancelStreams()
	if cerr := sessions.CloseAll(stctx); cerr != nil {
		log.Warn("close streams", "error", cerr)
	}
	if werr := streams.Wait(stctx); werr != nil {
		log.Warn("close streams", "error", werr)
	}
	// Every recording's writer has synced its file by now (sessions end
	// theirs); wait for the last to return.
	if recordings.Store != nil {
		recordings.Store.Wait()
	}
	// Streams this replica relays to their owners go on until they end or
	// the shutdown's time is up.
	if peers != nil {
		if werr := peers.Wait(stctx); werr != nil {
			log.Warn("forwarded streams", "error", werr)
		}
	}
	// 3. Stop the containers: SIGTERM, then SIGKILL after the grace period.
	stopContainers()
	log.Info("stopped")
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

// serveKube serves the Kubernetes API on --kube-listen, over TLS with
// --tls-cert or else with the state directory's own certificate, writes
// the kubeconfig, and returns the server's URL.
func serveKube(cfg *config.Config, srv *http.Server, serveErr chan<- error) (string, error) {
	kln, err := net.Listen("tcp", cfg.KubeListen)
	if err != nil {
		return "", fmt.Errorf("--kube-listen: %w", err)
	}
	host, _, _ := net.SplitHostPort(cfg.KubeListen)
	var cert tls.Certificate
	var caPEM []byte
	if cfg.TLSCert != "" {
		if cert, err = tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey); err == nil {
			caPEM, err = os.ReadFile(cfg.TLSCert) // the chain: kubectl trusts it as given
		}
	} else {
		var c *kube.Cert
		if c, err = kube.EnsureCert(cfg.StateDir, kube.Hosts(host)); err == nil {
			cert, caPEM = c.TLS, c.CAPEM
		}
	}
	if err != nil {
		kln.Close()
		return "", fmt.Errorf("kubernetes API certificate: %w", err)
	}
	url := strings.TrimSuffix(baseURL(kln.Addr(), true), "/")
	if err := kube.WriteKubeconfig(cfg.Kubeconfig, kube.Kubeconfig{Name: cfg.Node, Server: url, CAPEM: caPEM,
		Token: cfg.Token, Namespace: api.Namespace}); err != nil {
		kln.Close()
		return "", fmt.Errorf("--kubeconfig: %w", err)
	}
	srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	go func() { serveErr <- srv.ServeTLS(stream.Listener(kln), "", "") }()
	return url, nil
}

func newLogger(cfg *config.Config, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.LogLevel)) // checked by config
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// newToken returns 128 random bits, URL-safe.
func newToken() string {
	var b [16]byte
	rand.Read(b[:]) // never fails (crypto/rand)
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// baseURL is the URL to print: an unspecified address becomes localhost.
func baseURL(addr net.Addr, tls bool) string {
	scheme := "http"
	if tls {
		scheme = "https"
	}
	host, port, _ := net.SplitHostPort(addr.String())
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		host = "localhost"
	}
	return fmt.Sprintf("%s://%s/", scheme, net.JoinHostPort(host, port))
}

func version() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "(devel)"
}

// openRecords opens the audit trail and the recordings' store: in
// --record-dir, where every session is recorded unless its container or
// sandbox says otherwise, or else in the state directory, for those that
// ask.
func openRecords(cfg *config.Config, m *metrics.Metrics, log *slog.Logger) (*audit.Log, stream.RecordConfig, error) {
	var trail *audit.Log
	if cfg.AuditLog != "" {
		var err error
		if trail, err = audit.Open(cfg.AuditLog, int64(cfg.AuditMaxSize), 5); err != nil {
			return nil, stream.RecordConfig{}, err
		}
	}
	rc := record.Config{Dir: cfg.RecordDir, Input: cfg.RecordInput, MaxAge: cfg.RecordMaxAge, MaxBytes: int64(cfg.RecordMaxSize)}
	mode := record.On
	if rc.Dir == "" {
		rc.Dir, mode = filepath.Join(cfg.StateDir, "recordings"), record.Off
	}
	store, err := record.Open(rc, record.Counters{Active: m.RecordingsActive, Bytes: m.RecordingBytes,
		Errors: m.RecordingErrors, Truncated: m.RecordingsTruncated}, log)
	if err != nil {
		if mode == record.On {
			trail.Close()
			return nil, stream.RecordConfig{}, err
		}
		log.Warn("no recordings: containers that ask to be recorded will not be", "error", err)
		store = nil
	}
	return trail, stream.RecordConfig{Store: store, Default: mode}, nil
}

// servePprof serves net/http/pprof on a loopback address of its own, for
// profiling (never on the API's listener: profiles show what the gateway
// does, to anyone who can reach them).
func servePprof(addr string, log *slog.Logger) (stop func(), err error) {
	if !config.IsLoopback(addr) {
		return nil, fmt.Errorf("--pprof-listen %s: profiles are served on loopback only", addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--pprof-listen: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(ln) }()
	log.Info("profiles served", "url", "http://"+ln.Addr().String()+"/debug/pprof/")
	return func() { srv.Close(); <-done }, nil
}
