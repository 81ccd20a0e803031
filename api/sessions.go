package api

import (
	"math"
	"net/http"
	"net/url"
	"slices"
	"time"

	"gateway/audit"
	"gateway/internal/reqerr"
	"gateway/session"
	"gateway/stream"
)

func (a *API) listSessions(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := session.Filter{Kind: session.Kind(q.Get("kind")), State: session.State(q.Get("state"))}
	if f.Kind != "" && !slices.Contains(session.Kinds, f.Kind) {
		a.writeError(w, r, reqerr.New(reqerr.ErrBadRequest, "kind %q: want exec, attach or portforward", f.Kind))
		return
	}
	if f.State != "" && !slices.Contains(append(session.States, session.Closed), f.State) {
		a.writeError(w, r, reqerr.New(reqerr.ErrBadRequest, "state %q: want pending, active, detached or closed", f.State))
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

// shareRequest is the body of POST /api/v1/sessions/{id}/shares.
type shareRequest struct {
	Mode       string `json:"mode"`
	TTLSeconds int64  `json:"ttlSeconds"`
}

// shareCreated answers it: the token is shown this once, and url opens
// the page on the session with it.
type shareCreated struct {
	stream.ShareInfo
	Token string `json:"token"`
	URL   string `json:"url"`
}

func (a *API) createShare(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	var req shareRequest
	if err := decodeJSON(w, r, &req, 4<<10); err != nil {
		a.writeError(w, r, err)
		return
	}
	if req.TTLSeconds < 0 || req.TTLSeconds > int64(time.Duration(math.MaxInt64)/time.Second) {
		a.writeError(w, r, reqerr.New(reqerr.ErrBadRequest, "ttlSeconds %d: want a positive number of seconds", req.TTLSeconds))
		return
	}
	info, token, err := a.streams.CreateShare(id, req.Mode, time.Duration(req.TTLSeconds)*time.Second)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	u := scheme + "://" + r.Host + "/#session=" + url.QueryEscape(id) + "&share=" + url.QueryEscape(token)
	a.audit.Record(audit.Event{Event: audit.ShareCreate, Session: id, Share: info.ID, Mode: info.Mode,
		Remote: r.RemoteAddr, UserAgent: r.UserAgent(), Auth: audit.AuthOf(r.Context())})
	writeJSON(w, http.StatusCreated, shareCreated{ShareInfo: info, Token: token, URL: u})
}

func (a *API) listShares(w http.ResponseWriter, r *http.Request) {
	shares, err := a.streams.Shares(r.PathValue("id"))
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, newList(shares))
}

func (a *API) revokeShare(w http.ResponseWriter, r *http.Request) {
	if err := a.streams.RevokeShare(r.PathValue("id"), r.PathValue("share")); err != nil {
		a.writeError(w, r, err)
		return
	}
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
