// Package session tracks every stream the gateway serves (exec, attach,
// port-forward) in a Registry, and keeps the single-use stream URLs of the
// CRI flow in a Store.
//
// A Session moves pending → active → closed. The stream that serves it
// registers a Closer when it becomes active, so that the registry can end a
// live stream (DELETE /api/v1/sessions/{id}, shutdown) without knowing how
// streams work. Closed sessions stay listed for a retention period.
package session
