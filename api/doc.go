// Package api is the gateway's HTTP front: authentication, the REST
// endpoints (containers, sandboxes, sessions, exec-sync, single-use stream
// URLs), health and metrics, and the routing of WebSocket requests to
// package stream. Every error goes out as a Kubernetes Status object, and
// errors.go is the one place that picks status codes.
package api
