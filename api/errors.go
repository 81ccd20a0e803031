package api

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"

	"gateway/container"
	"gateway/internal/reqerr"
	"gateway/sandbox"
	"gateway/session"
	"gateway/stream"
	"gateway/stream/wsproto"
)

// errDraining refuses new work during a shutdown.
var errDraining = reqerr.New(reqerr.ErrUnavailable, "the gateway is shutting down")

// statusTable maps the errors callers tell apart to HTTP answers. It is the
// only place that chooses status codes.
var statusTable = []struct {
	err    error
	code   int
	reason string
}{
	{reqerr.ErrBadRequest, http.StatusBadRequest, "BadRequest"},
	{container.ErrInvalid, http.StatusBadRequest, "BadRequest"},
	{container.ErrNotRunning, http.StatusBadRequest, "BadRequest"},
	{sandbox.ErrInvalid, http.StatusBadRequest, "BadRequest"},
	{wsproto.ErrBadPort, http.StatusBadRequest, "BadRequest"},
	{reqerr.ErrUnauthorized, http.StatusUnauthorized, "Unauthorized"},
	{reqerr.ErrForbidden, http.StatusForbidden, "Forbidden"},
	{sandbox.ErrPort, http.StatusForbidden, "Forbidden"},
	{reqerr.ErrNotFound, http.StatusNotFound, "NotFound"},
	{container.ErrNotFound, http.StatusNotFound, "NotFound"},
	{sandbox.ErrNotFound, http.StatusNotFound, "NotFound"},
	{session.ErrNotFound, http.StatusNotFound, "NotFound"},
	{session.ErrTokenNotFound, http.StatusNotFound, "NotFound"},
	{reqerr.ErrMethodNotAllowed, http.StatusMethodNotAllowed, "MethodNotAllowed"},
	{reqerr.ErrConflict, http.StatusConflict, "Conflict"},
	{session.ErrClosed, http.StatusConflict, "Conflict"},
	{container.ErrStopped, http.StatusConflict, "Conflict"},
	{reqerr.ErrGone, http.StatusGone, "Gone"},
	{container.ErrGone, http.StatusGone, "Gone"},
	{reqerr.ErrTooLarge, http.StatusRequestEntityTooLarge, "RequestEntityTooLarge"},
	{reqerr.ErrTooMany, http.StatusTooManyRequests, "TooManyRequests"},
	{sandbox.ErrInUse, http.StatusConflict, "Conflict"},
	{container.ErrExists, http.StatusConflict, "AlreadyExists"},
	{sandbox.ErrExists, http.StatusConflict, "AlreadyExists"},
	{session.ErrTooMany, http.StatusTooManyRequests, "TooManyRequests"},
	{session.ErrTooManyPending, http.StatusTooManyRequests, "TooManyRequests"},
	{reqerr.ErrInvalid, http.StatusUnprocessableEntity, "Invalid"},
	{container.ErrCannotStart, http.StatusUnprocessableEntity, "Invalid"},
	{sandbox.ErrNetwork, http.StatusUnprocessableEntity, "Invalid"},
	{reqerr.ErrUnavailable, http.StatusServiceUnavailable, "ServiceUnavailable"},
	{container.ErrClosed, http.StatusServiceUnavailable, "ServiceUnavailable"},
}

// statusOf is the HTTP status and reason of err: 500 for an error of the
// gateway's own.
func statusOf(err error) (code int, reason string) {
	for _, e := range statusTable {
		if errors.Is(err, e.err) {
			return e.code, e.reason
		}
	}
	return http.StatusInternalServerError, "InternalError"
}

// retryAfter is the Retry-After of 429 answers, in seconds.
const retryAfter = 1

// writeError answers with the Status for err. Unknown errors are 500 and
// are logged.
func (a *API) writeError(w http.ResponseWriter, r *http.Request, err error) {
	code, reason := statusOf(err)
	st := wsproto.Status{Kind: "Status", APIVersion: "v1", Status: wsproto.StatusFailure,
		Message: err.Error(), Reason: reason, Code: int32(code)}
	var res interface{ Resource() (kind, name string) }
	if errors.As(err, &res) {
		kind, name := res.Resource()
		st.Details = &wsproto.StatusDetails{Kind: kind, Name: name}
	}
	switch code {
	case http.StatusInternalServerError:
		a.log.Error("request failed", "method", r.Method, "path", stream.LogPath(r.URL.Path), "error", err)
		st.Message = "Internal error occurred: " + err.Error()
	case http.StatusUnauthorized:
		w.Header().Set("WWW-Authenticate", `Bearer realm="gateway"`)
	case http.StatusTooManyRequests:
		w.Header().Set("Retry-After", strconv.Itoa(retryAfter))
		if st.Details == nil {
			st.Details = &wsproto.StatusDetails{}
		}
		st.Details.RetryAfterSeconds = retryAfter
	}
	writeJSON(w, code, st)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v) // the client may be gone; nothing to do
}
