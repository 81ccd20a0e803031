// Package audit writes the gateway's audit trail: one JSON line per
// event (sessions started and ended, containers and sandboxes created and
// deleted, share links created and revoked, logins), never a token.
//
// Each line is one write(2) to a file opened for appending, so a crash
// loses at most the line being written; the file is rotated by size
// (FILE.1 is the previous one, up to FILE.<keep>).
package audit

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"sync"
	"time"
)

// Event is one line. Fields that do not apply are left out.
type Event struct {
	Time  time.Time `json:"time"`
	Event string    `json:"event"`

	Session   string   `json:"session,omitempty"`
	Kind      string   `json:"kind,omitempty"`
	Target    string   `json:"target,omitempty"` // container or sandbox
	Command   []string `json:"command,omitempty"`
	TTY       *bool    `json:"tty,omitempty"`
	Remote    string   `json:"remote,omitempty"`
	UserAgent string   `json:"userAgent,omitempty"`
	Auth      string   `json:"auth,omitempty"` // bearer, cookie, single-use-url, share
	Share     string   `json:"share,omitempty"`
	Mode      string   `json:"mode,omitempty"`
	BytesIn   *int64   `json:"bytesIn,omitempty"`
	BytesOut  *int64   `json:"bytesOut,omitempty"`
	ExitCode  *int     `json:"exitCode,omitempty"`
	Result    string   `json:"result,omitempty"`
	Cause     string   `json:"cause,omitempty"`
	Recording string   `json:"recording,omitempty"`
	Container string   `json:"container,omitempty"`
	Sandbox   string   `json:"sandbox,omitempty"`
	Reason    string   `json:"reason,omitempty"`
}

// The events.
const (
	SessionStart    = "session.start"
	SessionEnd      = "session.end"
	ContainerCreate = "container.create"
	ContainerDelete = "container.delete"
	SandboxCreate   = "sandbox.create"
	SandboxDelete   = "sandbox.delete"
	ShareCreate     = "share.create"
	ShareRevoke     = "share.revoke"
	Login           = "login"
	LoginFailed     = "login.failed"
)

// Log is an audit trail. A nil *Log records nothing.
type Log struct {
	mu      sync.Mutex
	w       io.Writer // the file, or stderr
	f       *os.File  // the file, when rotated
	path    string
	size    int64
	cut     bool // the file ends with part of a line
	maxSize int64
	keep    int
	now     func() time.Time
}

// Open opens the trail: path "-" is stderr (never rotated); else the file
// is appended to and rotated past maxSize bytes (0: never), keeping keep
// old files.
func Open(path string, maxSize int64, keep int) (*Log, error) {
	l := &Log{path: path, maxSize: maxSize, keep: max(keep, 1), now: time.Now}
	if path == "-" {
		l.w = os.Stderr
		return l, nil
	}
	if err := l.open(); err != nil {
		return nil, err
	}
	return l, nil
}

func (l *Log) open() error {
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("audit log: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("audit log: %w", err)
	}
	l.f, l.w, l.size = f, f, fi.Size()
	return nil
}

// Record writes one event (its time set when zero). Errors go nowhere
// else to be written: the trail reports them on stderr.
func (l *Log) Record(ev Event) {
	if l == nil {
		return
	}
	if ev.Time.IsZero() {
		ev.Time = l.now().UTC()
	}
	b, err := json.Marshal(ev)
	if err != nil {
		return
	}
	b = append(b, '\n')
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil && l.path != "-" { // a reopen failed: try again
		if err := l.open(); err != nil {
			fmt.Fprintf(os.Stderr, "%v\n", err)
			return
		}
	}
	if l.f != nil && l.maxSize > 0 && l.size+int64(len(b)) > l.maxSize && l.size > 0 {
		l.rotate()
		if l.f == nil {
			return
		}
	}
	if l.cut { // a line was cut and could not be taken back: end it
		b = append([]byte{'\n'}, b...)
	}
	n, err := l.w.Write(b)
	if err != nil && n > 0 { // a full disk, say: take the part back
		if l.f != nil && l.f.Truncate(l.size) == nil {
			n = 0
		} else {
			l.cut = true
		}
	} else if err == nil {
		l.cut = false
	}
	l.size += int64(n)
	if err != nil {
		fmt.Fprintf(os.Stderr, "audit log: %v\n", err)
	}
}

// rotate moves FILE to FILE.1 (and FILE.i to FILE.i+1, dropping the
// oldest) and opens a new FILE. l.mu is held.
func (l *Log) rotate() {
	l.f.Close()
	os.Remove(l.path + "." + strconv.Itoa(l.keep))
	for i := l.keep - 1; i >= 1; i-- {
		os.Rename(l.path+"."+strconv.Itoa(i), l.path+"."+strconv.Itoa(i+1))
	}
	os.Rename(l.path, l.path+".1")
	if err := l.open(); err != nil {
		fmt.Fprintf(os.Stderr, "%v\n", err)
		l.f, l.w = nil, io.Discard // the next Record tries again
	}
}

// Close closes the file.
func (l *Log) Close() error {
	if l == nil {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f, l.w, l.path = nil, io.Discard, "-" // a late Record writes nowhere, and does not reopen
	return err
}

// How a request authenticated, as the API found it: the streams read it
// from the request's context for their events.
const (
	AuthBearer = "bearer"
	AuthCookie = "cookie"
	AuthURL    = "single-use-url"
	AuthShare  = "share"
	AuthNone   = "none"
)

type authKey struct{}

// WithAuth records how the request authenticated.
func WithAuth(ctx context.Context, how string) context.Context {
	return context.WithValue(ctx, authKey{}, how)
}

// AuthOf says how the request authenticated ("" when unknown).
func AuthOf(ctx context.Context) string {
	s, _ := ctx.Value(authKey{}).(string)
	return s
}

// Bool and Int64 make the optional fields.
func Bool(v bool) *bool { return &v }

func Int64(v int64) *int64 { return &v }
