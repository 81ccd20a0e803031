// Package sandbox provides the network contexts that containers run in and
// that port-forward dials into: the host network, or a Linux network
// namespace.
package sandbox

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.yaml.in/yaml/v3"

	"gateway/internal/notify"
	"gateway/record"
)

// Network values besides a namespace path.
const (
	NetworkHost = "host" // the gateway's own network
	NetworkNew  = "new"  // a network namespace the gateway creates
)

// HostID is the sandbox that always exists.
const HostID = "host"

// IDPattern is what sandbox and container ids look like.
var IDPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

// Errors that callers tell apart.
var (
	ErrNotFound = errors.New("sandbox not found")
	ErrExists   = errors.New("sandbox already exists")
	ErrInvalid  = errors.New("invalid sandbox")
	ErrInUse    = errors.New("sandbox in use")
	ErrPort     = errors.New("port not allowed")
	// ErrNetwork: the network path names no network namespace that can be
	// opened: the caller's mistake.
	ErrNetwork = errors.New("not a usable network namespace")
)

// NotFoundError names the missing sandbox.
type NotFoundError struct{ ID string }

func (e *NotFoundError) Error() string                 { return fmt.Sprintf("sandbox %q not found", e.ID) }
func (e *NotFoundError) Is(target error) bool          { return target == ErrNotFound }
func (e *NotFoundError) Resource() (kind, name string) { return "sandboxes", e.ID }

// Spec describes a sandbox.
// The same type is read from the config file (YAML) and the REST API
// (JSON), where a port range is 8080 or "8000-8100".
type Spec struct {
	ID string `json:"id" yaml:"id"`
	// Network is "host", "new", or the path of an existing network
	// namespace (/run/netns/x, /proc/<pid>/ns/net).
	Network string `json:"network" yaml:"network"`
	// Ports limits port-forward to these ports; empty allows all.
	Ports []PortRange `json:"ports,omitempty" yaml:"ports"`
	// Record is the recording mode of its containers' sessions (see
	// container.Spec.Record).
	Record record.Mode `json:"record,omitempty" yaml:"record"`
}

// PortRange is an inclusive range of ports; a single port has First == Last.
// Its text form is "8080" or "8000-8100".
type PortRange struct{ First, Last uint16 }

// MarshalText implements encoding.TextMarshaler.
func (r PortRange) MarshalText() ([]byte, error) { return []byte(r.String()), nil }

// UnmarshalYAML reads a port or a range, naming the line of a bad one.
func (r *PortRange) UnmarshalYAML(n *yaml.Node) error {
	if err := r.UnmarshalText([]byte(n.Value)); err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	return nil
}

// UnmarshalText reads "8080" or "8000-8100".
func (r *PortRange) UnmarshalText(b []byte) error {
	p, err := parsePortRange(string(b))
	if err != nil {
		return err
	}
	*r = p
	return nil
}

// UnmarshalJSON reads a port number or a string.
func (r *PortRange) UnmarshalJSON(b []byte) error {
	return r.UnmarshalText(bytes.Trim(b, `"`))
}

// Contains reports whether p is in the range.
func (r PortRange) Contains(p uint16) bool { return p >= r.First && p <= r.Last }

func (r PortRange) String() string {
	if r.First == r.Last {
		return strconv.Itoa(int(r.First))
	}
	return fmt.Sprintf("%d-%d", r.First, r.Last)
}

// Sandbox is one network context. Its spec is static after construction.
type Sandbox struct {
	spec    Spec
	ns      *netns // nil for the host network
	created time.Time
}

// Created is when the sandbox was created.
func (s *Sandbox) Created() time.Time { return s.created }

// ID returns the sandbox id.
func (s *Sandbox) ID() string { return s.spec.ID }

// Spec returns the sandbox's spec.
func (s *Sandbox) Spec() Spec { return s.spec }

// Do runs fn with the calling goroutine inside the sandbox's network
// namespace: sockets it opens and processes it starts belong to the
// sandbox's network. On the host network it just calls fn.
func (s *Sandbox) Do(fn func() error) error {
	if s.ns == nil {
		return fn()
	}
	return s.ns.do(fn)
}

// AllowsPort reports whether port-forward may reach port.
func (s *Sandbox) AllowsPort(port uint16) bool {
	return len(s.spec.Ports) == 0 || slices.ContainsFunc(s.spec.Ports, func(r PortRange) bool { return r.Contains(port) })
}

// Dial opens a TCP connection to port on the sandbox's loopback address:
// 127.0.0.1, else ::1 (a server that listens on localhost may have only
// that), as containerd does.
func (s *Sandbox) Dial(ctx context.Context, port uint16) (net.Conn, error) {
	var conn net.Conn
	err := s.Do(func() error {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port))))
		if err != nil && ctx.Err() == nil {
			var err6 error
			if c, err6 = d.DialContext(ctx, "tcp", net.JoinHostPort("::1", strconv.Itoa(int(port)))); err6 == nil {
				err = nil
			} else if op := (*net.OpError)(nil); errors.As(err6, &op) {
				err = fmt.Errorf("%w (and on [::1]: %v)", err, op.Err)
			}
		}
		conn = c
		return err
	})
	return conn, err
}

// Registry holds the sandboxes. The host sandbox always exists. It is safe
// for concurrent use.
type Registry struct {
	changes notify.Signal // a sandbox came or went

	mu        sync.Mutex
	sandboxes map[string]*Sandbox
}

// NewRegistry returns a registry holding only the host sandbox, with no
// port limit and the server's recording mode; host, when given, sets them
// (its network is always the host's).
func NewRegistry(host ...Spec) *Registry {
	spec := Spec{ID: HostID}
	if len(host) > 0 {
		spec.Ports, spec.Record = host[0].Ports, host[0].Record
	}
	spec.Network = NetworkHost
	r := &Registry{sandboxes: make(map[string]*Sandbox)}
	r.sandboxes[HostID] = &Sandbox{spec: spec, created: time.Now()}
	return r
}

// Validate checks a spec without creating anything.
func Validate(spec Spec) error {
	if !IDPattern.MatchString(spec.ID) {
		return fmt.Errorf("%w: id %q does not match %s", ErrInvalid, spec.ID, IDPattern)
	}
	switch spec.Network {
	case "", NetworkHost, NetworkNew:
	default:
		if spec.Network[0] != '/' {
			return fmt.Errorf("%w: network %q: want host, new or the absolute path of a network namespace", ErrInvalid, spec.Network)
		}
	}
	for _, r := range spec.Ports {
		if r.First == 0 || r.First > r.Last {
			return fmt.Errorf("%w: port range %s", ErrInvalid, r)
		}
	}
	return nil
}

// Create adds a sandbox, creating its network namespace if asked to.
func (r *Registry) Create(spec Spec) (*Sandbox, error) {
	if spec.Network == "" {
		spec.Network = NetworkHost
	}
	if err := Validate(spec); err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.sandboxes[spec.ID]; ok {
		return nil, fmt.Errorf("%w: %q", ErrExists, spec.ID)
	}
	sb := &Sandbox{spec: spec, created: time.Now()}
	switch spec.Network {
	case NetworkHost:
	case NetworkNew:
		ns, err := newNetns()
		if err != nil {
			return nil, fmt.Errorf("sandbox %q: create network namespace: %w", spec.ID, err)
		}
		sb.ns = ns
	default:
		ns, err := openNetns(spec.Network)
		if err != nil {
			return nil, fmt.Errorf("sandbox %q: %w: %w", spec.ID, ErrNetwork, err)
		}
		sb.ns = ns
	}
	r.sandboxes[spec.ID] = sb
	r.changes.Notify()
	return sb, nil
}

// Get returns the sandbox with the given id.
func (r *Registry) Get(id string) (*Sandbox, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if sb, ok := r.sandboxes[id]; ok {
		return sb, nil
	}
	return nil, &NotFoundError{ID: id}
}

// List returns every sandbox, by id.
func (r *Registry) List() []*Sandbox {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*Sandbox, 0, len(r.sandboxes))
	for _, sb := range r.sandboxes {
		out = append(out, sb)
	}
	slices.SortFunc(out, func(a, b *Sandbox) int { return cmpString(a.spec.ID, b.spec.ID) })
	return out
}

// Changed returns a channel closed at the next sandbox created or removed.
func (r *Registry) Changed() <-chan struct{} { return r.changes.C() }

// Changes counts the sandboxes created and removed so far.
func (r *Registry) Changes() uint64 { return r.changes.Gen() }

// Remove deletes a sandbox and releases its namespace. The host sandbox
// cannot be removed. The caller checks that no container uses it.
func (r *Registry) Remove(id string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	sb, ok := r.sandboxes[id]
	if !ok {
		return &NotFoundError{ID: id}
	}
	if id == HostID {
		return fmt.Errorf("%w: the host sandbox cannot be removed", ErrInUse)
	}
	delete(r.sandboxes, id)
	r.changes.Notify()
	if sb.ns != nil {
		return sb.ns.close()
	}
	return nil
}

// Close releases every namespace.
func (r *Registry) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var errs []error
	for id, sb := range r.sandboxes {
		if sb.ns != nil {
			errs = append(errs, sb.ns.close())
		}
		if id != HostID {
			delete(r.sandboxes, id)
		}
	}
	return errors.Join(errs...)
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// parsePortRange reads "8080" or "8000-8100".
func parsePortRange(v string) (PortRange, error) {
	first, last, isRange := strings.Cut(strings.TrimSpace(v), "-")
	a, err1 := strconv.ParseUint(strings.TrimSpace(first), 10, 16)
	b := a
	var err2 error
	if isRange {
		b, err2 = strconv.ParseUint(strings.TrimSpace(last), 10, 16)
	}
	if err1 != nil || err2 != nil || a == 0 || b < a {
		return PortRange{}, fmt.Errorf("%w: port %q: want a port (1..65535) or a range like 8000-8100", ErrInvalid, v)
	}
	return PortRange{First: uint16(a), Last: uint16(b)}, nil
}
