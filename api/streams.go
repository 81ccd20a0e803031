package api

import (
	"errors"
	"net/http"
	"time"

	"gateway/sandbox"
	"gateway/session"
	"gateway/stream"
)

// streamRequest is what a single-use URL stands for.
type streamRequest struct {
	kind   session.Kind
	target string
	exec   stream.ExecOptions
	attach stream.AttachOptions
	ports  stream.PortForwardOptions
}

// streamURL is the answer to a POST that mints a single-use URL.
type streamURL struct {
	URL       string    `json:"url"`
	ExpiresAt time.Time `json:"expiresAt"`
}

// execStream upgrades GET .../exec.
func (a *API) execStream(w http.ResponseWriter, r *http.Request) {
	id, err := pathID(r, "container")
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	if a.draining.Load() {
		a.writeError(w, r, errDraining)
		return
	}
	if err := a.streams.Exec(w, r, id, stream.ParseExecQuery(r.URL.Query())); err != nil {
		a.writeError(w, r, err)
	}
}

// mintExec answers POST .../exec with a single-use stream URL, after
// checking everything that can be checked before the upgrade.
func (a *API) mintExec(w http.ResponseWriter, r *http.Request) {
	id, err := pathID(r, "container")
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	var opts stream.ExecOptions
	if err := decodeJSON(w, r, &opts, 1<<20); err != nil {
		a.writeError(w, r, err)
		return
	}
	if err := opts.Validate(true); err != nil {
		a.writeError(w, r, err)
		return
	}
	if _, err := a.runtime.Get(id); err != nil {
		a.writeError(w, r, err)
		return
	}
	a.mint(w, r, streamRequest{kind: session.Exec, target: id, exec: opts})
}

// attachStream upgrades GET .../attach.
func (a *API) attachStream(w http.ResponseWriter, r *http.Request) {
	id, err := pathID(r, "container")
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	if a.draining.Load() {
		a.writeError(w, r, errDraining)
		return
	}
	if err := a.streams.Attach(w, r, id, stream.ParseAttachQuery(r.URL.Query())); err != nil {
		a.writeError(w, r, err)
	}
}

// mintAttach answers POST .../attach with a single-use stream URL.
func (a *API) mintAttach(w http.ResponseWriter, r *http.Request) {
	id, err := pathID(r, "container")
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	var opts stream.AttachOptions
	if err := decodeJSON(w, r, &opts, 64<<10); err != nil {
		a.writeError(w, r, err)
		return
	}
	if err := opts.Validate(); err != nil {
		a.writeError(w, r, err)
		return
	}
	c, err := a.runtime.Get(id)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	if opts.Stdin && !c.Spec().Stdin {
		a.writeError(w, r, newError(errBadRequest, "container %q was started without stdin: attach without stdin", id))
		return
	}
	a.mint(w, r, streamRequest{kind: session.Attach, target: id, attach: opts})
}

// portForwardStream upgrades GET /api/v1/sandboxes/{id}/portforward.
func (a *API) portForwardStream(w http.ResponseWriter, r *http.Request) {
	id, err := pathID(r, "sandbox")
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	if a.draining.Load() {
		a.writeError(w, r, errDraining)
		return
	}
	opts, err := stream.ParsePortForwardQuery(r.URL.Query())
	if err == nil {
		err = a.streams.PortForward(w, r, id, opts)
	}
	if err != nil {
		a.writeError(w, r, err)
	}
}

// mintPortForward answers POST .../portforward ({"ports":[8080]}) with a
// single-use stream URL.
func (a *API) mintPortForward(w http.ResponseWriter, r *http.Request) {
	id, err := pathID(r, "sandbox")
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	var opts stream.PortForwardOptions
	if err := decodeJSON(w, r, &opts, 64<<10); err != nil {
		a.writeError(w, r, err)
		return
	}
	if err := opts.Validate(); err != nil {
		a.writeError(w, r, err)
		return
	}
	sb, err := a.sandboxes.Get(id)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	for _, p := range opts.Ports {
		if !sb.AllowsPort(p) {
			a.writeError(w, r, newError(sandbox.ErrPort, "sandbox %q does not allow port %d", id, p))
			return
		}
	}
	a.mint(w, r, streamRequest{kind: session.PortForward, target: id, ports: opts})
}

func (a *API) mint(w http.ResponseWriter, r *http.Request, req streamRequest) {
	if a.draining.Load() {
		a.writeError(w, r, errDraining)
		return
	}
	token, expires, err := a.urls.Put(req)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, streamURL{URL: "/stream/" + token, ExpiresAt: expires.UTC().Truncate(time.Second)})
}

// serveStreamURL serves GET /stream/{token}: the token is consumed (it
// works once), and the stored request is served as if it had come with
// its parameters.
func (a *API) serveStreamURL(w http.ResponseWriter, r *http.Request) {
	if !isUpgrade(r) {
		// Keep the token: a stray plain GET must not burn it.
		a.writeError(w, r, newError(errBadRequest, "this endpoint streams over WebSocket: send GET with Connection: Upgrade and Upgrade: websocket"))
		return
	}
	if a.draining.Load() {
		a.writeError(w, r, errDraining)
		return
	}
	v, err := a.urls.Consume(r.PathValue("token"))
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	req := v.(streamRequest)
	switch req.kind {
	case session.Exec:
		err = a.streams.Exec(w, r, req.target, req.exec)
	case session.Attach:
		err = a.streams.Attach(w, r, req.target, req.attach)
	case session.PortForward:
		err = a.streams.PortForward(w, r, req.target, req.ports)
	default:
		err = errors.New("unknown stream kind " + string(req.kind))
	}
	if err != nil {
		a.writeError(w, r, err)
	}
}

func isUpgrade(r *http.Request) bool {
	return headerHas(r.Header, "Connection", "upgrade") && headerHas(r.Header, "Upgrade", "websocket")
}
