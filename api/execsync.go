package api

import (
	"context"
	"net/http"
	"time"

	"gateway/internal/reqerr"
)

type execSyncRequest struct {
	Command        []string `json:"command"`
	TimeoutSeconds int64    `json:"timeoutSeconds"`
	Stdin          []byte   `json:"stdin"` // base64 in JSON
}

type execSyncResponse struct {
	ExitCode  int    `json:"exitCode"`
	Stdout    []byte `json:"stdout"`
	Stderr    []byte `json:"stderr"`
	TimedOut  bool   `json:"timedOut"`
	Truncated bool   `json:"truncated"`
}

// maxExecSyncTimeout bounds timeoutSeconds (a day).
const maxExecSyncTimeout = 86400

// execSync runs a command to completion and answers with its outputs. The
// process is terminated when the timeout passes, the client goes away, the
// container is stopped (409) or the gateway shuts down (503).
func (a *API) execSync(w http.ResponseWriter, r *http.Request) {
	id, err := pathID(r, "container")
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	var req execSyncRequest
	if err := decodeJSON(w, r, &req, 64<<20); err != nil {
		a.writeError(w, r, err)
		return
	}
	switch {
	case len(req.Command) == 0 || req.Command[0] == "":
		a.writeError(w, r, reqerr.New(reqerr.ErrBadRequest, "command is required"))
		return
	case req.TimeoutSeconds < 0 || req.TimeoutSeconds > maxExecSyncTimeout:
		a.writeError(w, r, reqerr.New(reqerr.ErrBadRequest, "timeoutSeconds %d: want 0 (none) to %d", req.TimeoutSeconds, maxExecSyncTimeout))
		return
	}
	c, err := a.runtime.Get(id)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	// A shutdown ends the process too: it must not outlive the gateway.
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	defer context.AfterFunc(a.drainCtx, cancel)()
	res, err := c.ExecSync(ctx, req.Command, req.Stdin, time.Duration(req.TimeoutSeconds)*time.Second, a.cfg.ExecSyncMaxOutput)
	switch {
	case err == nil:
	case r.Context().Err() != nil:
		return // the client went away; the process was terminated
	case a.draining():
		a.writeError(w, r, errDraining)
		return
	default:
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, execSyncResponse{ExitCode: res.ExitCode, Stdout: nonNil(res.Stdout),
		Stderr: nonNil(res.Stderr), TimedOut: res.TimedOut, Truncated: res.Truncated})
}

func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}
