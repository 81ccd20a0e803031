package api

import (
	"errors"
	"net/http"
	"net/url"
	"time"

	"gateway/internal/reqerr"
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

// stream serves a WebSocket GET for the container or sandbox named in the
// path: serve upgrades it, or returns why it refused. The query is parsed
// once, here, and a query that does not parse is refused (Query() would
// drop what it could not parse, and the request look empty).
func (a *API) stream(kind string, serve func(w http.ResponseWriter, r *http.Request, id string, q url.Values) error) http.HandlerFunc {
	return a.streamChecks(func(w http.ResponseWriter, r *http.Request) {
		id, err := pathID(r, kind)
		q, qerr := url.ParseQuery(r.URL.RawQuery)
		if err == nil && qerr != nil {
			err = reqerr.New(reqerr.ErrBadRequest, "query: %v", qerr)
		}
		if err == nil {
			err = serve(w, r, id, q)
		}
		if err != nil && !stream.IsAnswered(err) {
			a.writeError(w, r, err)
		}
	})
}

func (a *API) execStream(w http.ResponseWriter, r *http.Request, id string, q url.Values) error {
	return a.streams.Exec(w, r, id, stream.ParseExecQuery(q))
}

func (a *API) attachStream(w http.ResponseWriter, r *http.Request, id string, q url.Values) error {
	return a.streams.Attach(w, r, id, stream.ParseAttachQuery(q))
}

// joinStream joins a shared exec, as the gateway's token or a share link
// allows.
func (a *API) joinStream(w http.ResponseWriter, r *http.Request, id string, q url.Values) error {
	opts, err := stream.ParseJoinQuery(q)
	if err != nil {
		return err
	}
	opts.Grant = grant(r)
	return a.streams.Join(w, r, id, opts)
}

func (a *API) portForwardStream(w http.ResponseWriter, r *http.Request, id string, q url.Values) error {
	opts, err := stream.ParsePortForwardQuery(q)
	if err != nil {
		return err
	}
	return a.streams.PortForward(w, r, id, opts)
}

// mint answers a POST that asks for a single-use stream URL: the JSON body
// holds the options of type T, and check validates them against the
// container or sandbox named in the path and returns the stored request.
func mint[T any](a *API, kind string, check func(id string, opts *T) (streamRequest, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id, err := pathID(r, kind)
		var opts T
		if err == nil {
			err = decodeJSON(w, r, &opts, 64<<10)
		}
		var req streamRequest
		if err == nil {
			req, err = check(id, &opts)
		}
		var token string
		var expires time.Time
		if err == nil {
			token, expires, err = a.urls.Put(req)
		}
		if err != nil {
			a.writeError(w, r, err)
			return
		}
		u := "/stream/" + token
		if a.cfg.QualifyPods { // among replicas: the URL names the one that keeps it
			u += "?node=" + url.QueryEscape(a.cfg.Node)
		}
		writeJSON(w, http.StatusCreated, streamURL{URL: u, ExpiresAt: expires.UTC().Truncate(time.Second)})
	}
}

// checkExec validates a minted exec: everything that can be checked
// before the upgrade.
func (a *API) checkExec(id string, opts *stream.ExecOptions) (streamRequest, error) {
	if _, err := a.streams.ExecTarget(id, opts); err != nil {
		return streamRequest{}, err
	}
	return streamRequest{kind: session.Exec, target: id, exec: *opts}, nil
}

func (a *API) checkAttach(id string, opts *stream.AttachOptions) (streamRequest, error) {
	if _, err := a.streams.AttachTarget(id, opts); err != nil {
		return streamRequest{}, err
	}
	return streamRequest{kind: session.Attach, target: id, attach: *opts}, nil
}

func (a *API) checkPortForward(id string, opts *stream.PortForwardOptions) (streamRequest, error) {
	if _, err := a.streams.PortForwardTarget(id, *opts); err != nil {
		return streamRequest{}, err
	}
	return streamRequest{kind: session.PortForward, target: id, ports: *opts}, nil
}

// serveStreamURL serves GET /stream/{token}, once streamChecks passed (a
// request refused before cannot burn the token, nor one offering none of
// its kind's subprotocols): the token is consumed (it works once), and
// the stored request is served as if it had come with its parameters.
func (a *API) serveStreamURL(w http.ResponseWriter, r *http.Request) {
	v, err := a.urls.Consume(r.PathValue("token"), func(req any) error {
		return stream.CheckProtocols(r, req.(streamRequest).kind == session.PortForward)
	})
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
	if err != nil && !stream.IsAnswered(err) {
		a.writeError(w, r, err)
	}
}
