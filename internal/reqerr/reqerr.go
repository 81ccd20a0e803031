// Package reqerr is the error of a refused request: a kind, which package
// api maps to an HTTP status in its one table, and a message for the
// caller. Packages that refuse requests (api, stream) build them with New.
package reqerr

import (
	"errors"
	"fmt"
)

// The kinds of refusal.
var (
	ErrBadRequest       = errors.New("bad request")                  // 400
	ErrUnauthorized     = errors.New("unauthorized")                 // 401
	ErrForbidden        = errors.New("forbidden")                    // 403
	ErrNotFound         = errors.New("not found")                    // 404
	ErrMethodNotAllowed = errors.New("method not allowed")           // 405
	ErrConflict         = errors.New("conflict")                     // 409
	ErrGone             = errors.New("gone")                         // 410
	ErrTooLarge         = errors.New("request body too large")       // 413
	ErrTooMany          = errors.New("too many")                     // 429
	ErrInvalid          = errors.New("invalid")                      // 422: well-formed, but it cannot be done
	ErrUnavailable      = errors.New("the gateway is shutting down") // 503
)

// Error is a refusal: Kind is one of the kinds above, Msg says why.
type Error struct {
	Kind error
	Msg  string
}

func (e *Error) Error() string { return e.Msg }
func (e *Error) Unwrap() error { return e.Kind }

// New returns a refusal of the given kind.
func New(kind error, format string, args ...any) error {
	return &Error{Kind: kind, Msg: fmt.Sprintf(format, args...)}
}
