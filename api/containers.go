package api

import (
	"context"
	"net/http"
	"time"

	"gateway/audit"
	"gateway/container"
	"gateway/internal/reqerr"
	"gateway/sandbox"
	"gateway/session"
)

func (a *API) listContainers(w http.ResponseWriter, r *http.Request) {
	var items []container.Info
	for _, c := range a.runtime.List() {
		items = append(items, c.Info())
	}
	writeJSON(w, http.StatusOK, newList(items))
}

func (a *API) getContainer(w http.ResponseWriter, r *http.Request) {
	id, err := pathID(r, "container")
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	c, err := a.runtime.Get(id)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, c.Info())
}

func (a *API) createContainer(w http.ResponseWriter, r *http.Request) {
	var spec container.Spec
	if err := decodeJSON(w, r, &spec, 1<<20); err != nil {
		a.writeError(w, r, err)
		return
	}
	if spec.ID == "" {
		a.writeError(w, r, reqerr.New(reqerr.ErrBadRequest, "id is required"))
		return
	}
	c, err := a.runtime.Create(spec)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	a.log.Info("container created", "container", spec.ID)
	a.audit.Record(audit.Event{Event: audit.ContainerCreate, Container: spec.ID, Sandbox: c.Info().Sandbox, Command: c.Command(),
		Remote: r.RemoteAddr, UserAgent: r.UserAgent(), Auth: audit.AuthOf(r.Context())})
	writeJSON(w, http.StatusCreated, c.Info())
}

// deleteContainer closes the container's streams, then stops it.
func (a *API) deleteContainer(w http.ResponseWriter, r *http.Request) {
	id, err := pathID(r, "container")
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	if _, err := a.runtime.Get(id); err != nil {
		a.writeError(w, r, err)
		return
	}
	if err := a.removeContainer(r, id, stopTimeout(a.cfg.StopGrace)); err != nil {
		a.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// removeContainer closes a container's streams, stops it (killing it
// once timeout has passed) and forgets it.
func (a *API) removeContainer(r *http.Request, id string, timeout time.Duration) error {
	a.sessions.CloseTarget(id, session.ErrClosedByAPI)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), timeout)
	defer cancel()
	if err := a.runtime.Remove(ctx, id); err != nil {
		return err
	}
	a.log.Info("container removed", "container", id)
	a.audit.Record(audit.Event{Event: audit.ContainerDelete, Container: id, Remote: r.RemoteAddr, UserAgent: r.UserAgent(), Auth: audit.AuthOf(r.Context())})
	return nil
}

func (a *API) listSandboxes(w http.ResponseWriter, r *http.Request) {
	var items []sandbox.Spec
	for _, sb := range a.sandboxes.List() {
		items = append(items, sb.Spec())
	}
	writeJSON(w, http.StatusOK, newList(items))
}

func (a *API) getSandbox(w http.ResponseWriter, r *http.Request) {
	id, err := pathID(r, "sandbox")
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	sb, err := a.sandboxes.Get(id)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, sb.Spec())
}

func (a *API) createSandbox(w http.ResponseWriter, r *http.Request) {
	var spec sandbox.Spec
	if err := decodeJSON(w, r, &spec, 64<<10); err != nil {
		a.writeError(w, r, err)
		return
	}
	sb, err := a.sandboxes.Create(spec)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	a.log.Info("sandbox created", "sandbox", spec.ID, "network", sb.Spec().Network)
	a.audit.Record(audit.Event{Event: audit.SandboxCreate, Sandbox: spec.ID, Remote: r.RemoteAddr, UserAgent: r.UserAgent(), Auth: audit.AuthOf(r.Context())})
	writeJSON(w, http.StatusCreated, sb.Spec())
}

// deleteSandbox refuses while a container runs in the sandbox, and closes
// its port-forward streams.
func (a *API) deleteSandbox(w http.ResponseWriter, r *http.Request) {
	id, err := pathID(r, "sandbox")
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	if _, err := a.sandboxes.Get(id); err != nil {
		a.writeError(w, r, err)
		return
	}
	if err := a.removeSandbox(r, id); err != nil {
		a.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// removeSandbox removes a sandbox, if no container uses it, and closes its
// streams.
func (a *API) removeSandbox(r *http.Request, id string) error {
	if err := a.runtime.RemoveSandbox(id); err != nil {
		return err
	}
	a.sessions.CloseTarget(id, session.ErrClosedByAPI)
	a.log.Info("sandbox removed", "sandbox", id)
	a.audit.Record(audit.Event{Event: audit.SandboxDelete, Sandbox: id, Remote: r.RemoteAddr, UserAgent: r.UserAgent(), Auth: audit.AuthOf(r.Context())})
	return nil
}
