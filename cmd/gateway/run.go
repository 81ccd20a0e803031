package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"gateway/api"
	"gateway/config"
	"gateway/container"
	"gateway/metrics"
	"gateway/sandbox"
	"gateway/session"
	"gateway/stream"
	"gateway/web"
)

// run starts the gateway and serves until ctx ends, then shuts down in
// order: stop accepting, end streams, stop containers.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg, err := config.Parse(args, getenv, stdout)
	if err != nil {
		return err
	}
	if cfg.Version {
		fmt.Fprintln(stdout, "gateway", version())
		return nil
	}
	log := newLogger(cfg, stderr)
	raiseFileLimit(log, cfg.MaxSessions)

	generated := false
	if cfg.Token == "" {
		if !config.IsLoopback(cfg.Listen) {
			return fmt.Errorf("refusing to listen on %s without a token: anyone who can reach it could run commands; "+
				"set --token, --token-file or GATEWAY_TOKEN, or listen on 127.0.0.1", cfg.Listen)
		}
		cfg.Token = newToken()
		generated = true
	}

	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	defer ln.Close()

	sandboxes := sandbox.NewRegistry()
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
	// Streams outlive requests and the signal: they end through CloseAll,
	// with a close frame, during the shutdown below.
	streams := stream.NewServer(context.WithoutCancel(ctx), scfg, log, rt, sandboxes, sessions, m)
	a := api.New(api.Config{
		Token: cfg.Token, AllowedOrigins: cfg.AllowedOrigins, MetricsAuth: cfg.MetricsAuth,
		SecureCookie: cfg.TLSCert != "", ExecSyncMaxOutput: int(cfg.ExecSyncOutput), StopGrace: cfg.StopGrace,
	}, log, api.Deps{
		Runtime: rt, Sandboxes: sandboxes, Sessions: sessions,
		URLs:    session.NewStore(cfg.URLTTL, cfg.MaxPendingURLs, nil),
		Streams: streams,
		Metrics: promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}),
		Web:     web.Handler(),
	})

	srv := &http.Server{
		Handler: a.Handler(),
		// Bounds slow handshakes; upgraded streams set their own deadlines.
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	serveErr := make(chan error, 1)
	go func() {
		if cfg.TLSCert != "" {
			serveErr <- srv.ServeTLS(stream.Listener(ln), cfg.TLSCert, cfg.TLSKey)
		} else {
			serveErr <- srv.Serve(stream.Listener(ln))
		}
	}()

	// The ready line is printed whatever the log level: it says where to
	// connect, and with which token when one was generated.
	url := baseURL(ln.Addr(), cfg.TLSCert != "")
	readyLog := newLogger(&config.Config{LogLevel: "info", LogFormat: cfg.LogFormat}, stderr)
	if generated {
		readyLog.Info("gateway ready", "url", url, "token", cfg.Token, "open", url+"#token="+cfg.Token)
	} else {
		readyLog.Info("gateway ready", "url", url)
	}

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
	if serr := srv.Shutdown(sctx); serr != nil {
		log.Warn("http shutdown", "error", serr)
	}
	// 2. End every stream with a close frame, and wait for them.
	if cerr := sessions.CloseAll(sctx); cerr != nil {
		log.Warn("close streams", "error", cerr)
	}
	if werr := streams.Wait(sctx); werr != nil {
		log.Warn("close streams", "error", werr)
	}
	// 3. Stop the containers: SIGTERM, then SIGKILL after the grace period.
	stopContainers()
	log.Info("stopped")
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
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
