package api

import (
	"net/http"
	"slices"

	"gateway/internal/reqerr"
	"gateway/session"
)

func (a *API) listSessions(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := session.Filter{Kind: session.Kind(q.Get("kind")), State: session.State(q.Get("state"))}
	if f.Kind != "" && !slices.Contains(session.Kinds, f.Kind) {
		a.writeError(w, r, reqerr.New(reqerr.ErrBadRequest, "kind %q: want exec, attach or portforward", f.Kind))
		return
	}
	if f.State != "" && !slices.Contains([]session.State{session.Pending, session.Active, session.Closed}, f.State) {
		a.writeError(w, r, reqerr.New(reqerr.ErrBadRequest, "state %q: want pending, active or closed", f.State))
		return
	}
	writeJSON(w, http.StatusOK, newList(a.sessions.List(f)))
}

func (a *API) getSession(w http.ResponseWriter, r *http.Request) {
	s, err := a.sessions.Get(r.PathValue("id"))
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, s.Info())
}

// deleteSession asks the stream to end and answers at once; the session
// shows closed when its stream has finished.
func (a *API) deleteSession(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if err := a.sessions.Close(id, session.ErrClosedByAPI); err != nil {
		a.writeError(w, r, err)
		return
	}
	a.log.Info("session close requested", "session", id)
	w.WriteHeader(http.StatusNoContent)
}

// sessionOutput returns the session's most recent output, raw.
func (a *API) sessionOutput(w http.ResponseWriter, r *http.Request) {
	s, err := a.sessions.Get(r.PathValue("id"))
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Write(s.Output())
}
