package api

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strings"
	"time"

	"github.com/gorilla/websocket"

	"gateway/audit"
	"gateway/container"
	"gateway/internal/reqerr"
	"gateway/record"
	"gateway/sandbox"
	"gateway/session"
	"gateway/stream"
)

// Config sets what the API enforces.
type Config struct {
	// Token is the bearer token every API and stream request must carry.
	Token string
	// AllowedOrigins may use the login cookie and open streams besides the
	// gateway's own origin.
	AllowedOrigins []string
	// MetricsAuth requires the token on /metrics too.
	MetricsAuth bool
	// SecureCookie marks the login cookie Secure (when serving TLS).
	SecureCookie bool
	// ExecSyncMaxOutput caps each output of exec-sync.
	ExecSyncMaxOutput int
	// StopGrace is the runtime's grace period, to bound DELETE requests.
	StopGrace time.Duration
	// Node names the gateway in the pods it serves.
	Node string
	// QualifyPods names pods SANDBOX.NODE, unique among replicas (the
	// plain sandbox id is accepted too), and minted stream URLs name the
	// replica that keeps them (?node=).
	QualifyPods bool
}

// DefaultConfig is the API's defaults but the token: exec-sync keeps 16 MiB
// of each output, and DELETE allows the runtime's default grace.
func DefaultConfig() Config {
	return Config{ExecSyncMaxOutput: 16 << 20, StopGrace: container.DefaultConfig().StopGrace}
}

// API serves the gateway's HTTP endpoints.
type API struct {
	cfg       Config
	tokenHash [sha256.Size]byte
	log       *slog.Logger
	runtime   *container.Runtime
	sandboxes *sandbox.Registry
	sessions  *session.Registry
	urls      *session.Store
	streams   *stream.Server
	records   *record.Store // nil: no recordings
	audit     *audit.Log
	metrics   http.Handler
	web       http.Handler
	drainCtx  context.Context // done once Drain is called
	drain     context.CancelFunc
	eventBase uint64 // the events' resource versions start past it, as the pods' do
	pods      podCache
	started   time.Time
}

// Deps are the parts the API serves.
type Deps struct {
	Runtime   *container.Runtime
	Sandboxes *sandbox.Registry
	Sessions  *session.Registry
	URLs      *session.Store
	Streams   *stream.Server
	// Recordings is the store of session recordings (nil: none); Audit
	// the audit trail (nil: none).
	Recordings *record.Store
	Audit      *audit.Log
	Metrics    http.Handler // /metrics
	Web        http.Handler // the web terminal at /; nil serves none
}

// New returns the API.
func New(cfg Config, log *slog.Logger, d Deps) *API {
	a := &API{cfg: cfg, tokenHash: sha256.Sum256([]byte(cfg.Token)), log: log,
		runtime: d.Runtime, sandboxes: d.Sandboxes, sessions: d.Sessions, urls: d.URLs,
		streams: d.Streams, records: d.Recordings, audit: d.Audit, metrics: d.Metrics, web: d.Web, started: time.Now()}
	// Resource versions start at the time in microseconds, so that those of
	// a gateway started later are all newer: a client resuming a watch
	// across a restart is told to list again.
	a.eventBase = uint64(a.started.UnixMicro())
	a.pods = newPodCache(a.eventBase)
	a.drainCtx, a.drain = context.WithCancel(context.Background())
	return a
}

// Drain makes /readyz fail, refuses new streams and stream URLs and ends
// watches and followed logs, for a graceful shutdown.
func (a *API) Drain() { a.drain() }

func (a *API) draining() bool { return a.drainCtx.Err() != nil }

// Handler returns the router. Every check that several routes share is a
// wrapper here, written once: auth (the token), work (refused while
// draining) and stream (a WebSocket upgrade from an allowed origin).
func (a *API) Handler() http.Handler {
	mux := http.NewServeMux()
	route := func(method, path string, h http.HandlerFunc) {
		mux.HandleFunc(method+" "+path, h)
	}
	auth, work := a.authenticated, a.work

	route("GET", "/healthz", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok\n") })
	route("GET", "/readyz", a.readyz)
	metrics := a.metrics.ServeHTTP
	if a.cfg.MetricsAuth {
		metrics = auth(metrics)
	}
	route("GET", "/metrics", metrics)
	route("POST", "/login", a.login)
	route("POST", "/logout", a.logout)

	route("GET", "/api/v1/containers", auth(a.listContainers))
	route("POST", "/api/v1/containers", auth(work(a.createContainer)))
	route("GET", "/api/v1/containers/{id}", auth(a.getContainer))
	route("DELETE", "/api/v1/containers/{id}", auth(a.deleteContainer))
	route("GET", "/api/v1/containers/{id}/exec", auth(work(a.stream("container", a.execStream))))
	route("POST", "/api/v1/containers/{id}/exec", auth(work(spdyOr(a.stream("container", a.execStream), mint(a, "container", a.checkExec)))))
	route("POST", "/api/v1/containers/{id}/exec-sync", auth(work(a.execSync)))
	route("GET", "/api/v1/containers/{id}/attach", auth(work(a.stream("container", a.attachStream))))
	route("POST", "/api/v1/containers/{id}/attach", auth(work(spdyOr(a.stream("container", a.attachStream), mint(a, "container", a.checkAttach)))))

	route("GET", "/api/v1/sandboxes", auth(a.listSandboxes))
	route("POST", "/api/v1/sandboxes", auth(work(a.createSandbox)))
	route("GET", "/api/v1/sandboxes/{id}", auth(a.getSandbox))
	route("DELETE", "/api/v1/sandboxes/{id}", auth(a.deleteSandbox))
	route("GET", "/api/v1/sandboxes/{id}/portforward", auth(work(a.stream("sandbox", a.portForwardStream))))
	route("POST", "/api/v1/sandboxes/{id}/portforward", auth(work(mint(a, "sandbox", a.checkPortForward))))

	route("GET", "/api/v1/sessions", auth(a.listSessions))
	route("GET", "/api/v1/sessions/{id}", auth(a.getSession))
	route("DELETE", "/api/v1/sessions/{id}", auth(a.deleteSession))
	route("GET", "/api/v1/sessions/{id}/output", auth(a.sessionOutput))
	// Joining a shared exec: the one route a share link's token opens.
	route("GET", "/api/v1/sessions/{id}/attach", a.authOrShare(work(a.stream("session", a.joinStream))))
	route("GET", "/api/v1/sessions/{id}/shares", auth(a.listShares))
	route("POST", "/api/v1/sessions/{id}/shares", auth(work(a.createShare)))
	route("DELETE", "/api/v1/sessions/{id}/shares/{share}", auth(a.revokeShare))

	route("GET", "/api/v1/recordings", auth(a.listRecordings))
	route("GET", "/api/v1/recordings/{id}", auth(a.getRecording))
	route("DELETE", "/api/v1/recordings/{id}", auth(a.deleteRecording))

	// The token in the path is the authorization, as in the CRI.
	route("GET", "/stream/{token}", work(a.streamChecks(byURL(a.serveStreamURL))))
	route("POST", "/stream/{token}", work(a.streamChecks(byURL(a.serveStreamURL))))

	a.kubeRoutes(route)

	// The web terminal: the page logs in by itself (POST /login).
	if a.web != nil {
		route("GET", "/{$}", a.web.ServeHTTP)
		route("GET", "/assets/", a.web.ServeHTTP)
	}

	// Known paths with another method get a 405 Status, unknown paths a
	// 404 Status.
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if allowed := allowedMethods(mux, r); len(allowed) > 0 {
			w.Header().Set("Allow", strings.Join(allowed, ", "))
			a.writeError(w, r, reqerr.New(reqerr.ErrMethodNotAllowed, "%s is not allowed on %s; allowed: %s",
				r.Method, r.URL.Path, strings.Join(allowed, ", ")))
			return
		}
		a.writeError(w, r, reqerr.New(reqerr.ErrNotFound, "no such endpoint: %s %s", r.Method, r.URL.Path))
	})
	return bodyDeadline(mux)
}

// Request bodies must arrive within bodyTimeout (the headers are bounded
// by the server's ReadHeaderTimeout), or within execSyncBodyTimeout for
// exec-sync, whose body carries up to 64 MiB of input: a client that
// trickles a body does not hold a goroutine and a descriptor for long.
// Streams set deadlines of their own once upgraded.
const (
	bodyTimeout         = 10 * time.Second
	execSyncBodyTimeout = time.Minute
)

// bodyDeadline bounds the body read of every request that has a body and
// is not an upgrade. The deadline is lifted once the body is read, so a
// handler that runs long (exec-sync, a log that follows) is not cut.
func bodyDeadline(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength != 0 && !headerHas(r.Header, "Connection", "upgrade") {
			d := bodyTimeout
			if strings.HasSuffix(r.URL.Path, "/exec-sync") {
				d = execSyncBodyTimeout
			}
			rc := http.NewResponseController(w)
			if rc.SetReadDeadline(time.Now().Add(d)) == nil {
				r.Body = &deadlineBody{ReadCloser: r.Body, rc: rc}
			}
		}
		h.ServeHTTP(w, r)
	})
}

// deadlineBody lifts the read deadline at the end of the body.
type deadlineBody struct {
	io.ReadCloser
	rc   *http.ResponseController
	done bool
}

func (b *deadlineBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF && !b.done {
		b.done = true
		_ = b.rc.SetReadDeadline(time.Time{})
	}
	return n, err
}

// headerHas reports whether a comma-separated header lists token (any case).
func headerHas(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for t := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// spdyOr serves a POST that asks for SPDY/3.1 as a stream, and any other
// POST with h.
func spdyOr(streamHandler, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if stream.IsSPDYUpgrade(r) {
			streamHandler(w, r)
			return
		}
		h(w, r)
	}
}

// work refuses requests that would start new work (streams, processes,
// containers, sandboxes, stream URLs) while the gateway drains.
func (a *API) work(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if a.draining() {
			a.writeError(w, r, errDraining)
			return
		}
		h(w, r)
	}
}

// streamChecks refuses what cannot become a stream before anything else
// happens: a request that is not a WebSocket (GET) or SPDY (POST) upgrade
// (400), and one from a browser origin that may not open streams (403).
func (a *API) streamChecks(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		switch {
		case !(r.Method == http.MethodGet && websocket.IsWebSocketUpgrade(r)) && !(r.Method == http.MethodPost && stream.IsSPDYUpgrade(r)):
			a.writeError(w, r, reqerr.New(reqerr.ErrBadRequest, "this endpoint streams: send GET with Connection: Upgrade and Upgrade: websocket (or POST with Upgrade: SPDY/3.1)"))
		case !a.originAllowed(r):
			a.writeError(w, r, reqerr.New(reqerr.ErrForbidden, "origin %q may not open streams on %s", r.Header.Get("Origin"), r.Host))
		default:
			h(w, r)
		}
	}
}

// allowedMethods lists the methods that have a route for r's path.
func allowedMethods(mux *http.ServeMux, r *http.Request) []string {
	var out []string
	for _, m := range []string{"GET", "POST", "DELETE"} {
		r2 := r.Clone(r.Context())
		r2.Method = m
		if _, pattern := mux.Handler(r2); pattern != "" && pattern != "/" {
			out = append(out, m)
		}
	}
	return out
}

func (a *API) readyz(w http.ResponseWriter, r *http.Request) {
	if a.draining() {
		http.Error(w, "draining", http.StatusServiceUnavailable)
		return
	}
	io.WriteString(w, "ok\n")
}

// decodeJSON reads a JSON body of at most limit bytes, refusing unknown
// fields and trailing data.
func decodeJSON(w http.ResponseWriter, r *http.Request, v any, limit int64) error {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" { // case-insensitive
			return reqerr.New(reqerr.ErrBadRequest, "Content-Type %q: want application/json", ct)
		}
	}
	body := http.MaxBytesReader(w, r.Body, limit)
	defer io.Copy(io.Discard, body) // to its end, which lifts the body deadline
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return bodyError(err)
	}
	if dec.More() {
		return reqerr.New(reqerr.ErrBadRequest, "request body: data after the JSON object")
	}
	return nil
}

// bodyError is the refusal of a body that could not be read or decoded:
// 413 past its bound (http.MaxBytesReader's), else 400.
func bodyError(err error) error {
	if tooBig := (*http.MaxBytesError)(nil); errors.As(err, &tooBig) {
		return reqerr.New(reqerr.ErrTooLarge, "request body over %d bytes", tooBig.Limit)
	}
	return reqerr.New(reqerr.ErrBadRequest, "request body: %v", err)
}

// pathID returns a path id, refusing what cannot be an id (a traversal
// attempt, say) before any lookup.
func pathID(r *http.Request, kind string) (string, error) {
	id := r.PathValue("id")
	if !sandbox.IDPattern.MatchString(id) {
		return "", reqerr.New(reqerr.ErrBadRequest, "%s id %q does not match %s", kind, id, sandbox.IDPattern)
	}
	return id, nil
}

// list is the shape of every list answer.
type list[T any] struct {
	Items []T `json:"items"`
}

func newList[T any](items []T) list[T] {
	if items == nil {
		items = []T{}
	}
	return list[T]{Items: items}
}

// stopTimeout bounds a DELETE that stops processes.
func stopTimeout(grace time.Duration) time.Duration { return grace + 5*time.Second }
