package stream

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"gateway/audit"
	"gateway/container"
	"gateway/record"
	"gateway/session"
)

// Recording and the audit trail: the one place a stream's session is
// recorded, and its start and end written to the trail.

// RecordConfig says where sessions are recorded and which by default.
type RecordConfig struct {
	// Store keeps the recordings; nil records nothing.
	Store *record.Store
	// Default is the mode of a container whose spec and sandbox name none.
	Default record.Mode
}

// errRecordingFailed ends a session whose required recording failed.
var errRecordingFailed = errors.New("this session must be recorded, and its recording failed")

// recordMode is the container's mode: its own, else its sandbox's, else
// the server's.
func (s *Server) recordMode(c *container.Container) record.Mode {
	if m := c.Spec().Record; m != "" {
		return m
	}
	if sb := c.Sandbox(); sb != nil && sb.Spec().Record != "" {
		return sb.Spec().Record
	}
	if s.cfg.Record.Default != "" {
		return s.cfg.Record.Default
	}
	return record.Off
}

// record starts the recording of the client's session when its container
// asks for one: size is the terminal's at the start (80x24 without a pty).
// It fails only when the recording is required and cannot start.
func (c *client) record(ctr *container.Container, command []string, tty bool, size container.Size) error {
	s := c.srv
	mode := s.recordMode(ctr)
	if mode == record.Off {
		return nil
	}
	if s.cfg.Record.Store == nil {
		if mode == record.Required {
			return errors.New("recording is required and no recording directory is set")
		}
		return nil
	}
	if size.Cols == 0 || size.Rows == 0 {
		size = container.DefaultSize
	}
	env := map[string]string{}
	if tty {
		env["TERM"] = ctr.Term()
	}
	onFail := func(err error) {}
	if mode == record.Required {
		id := c.sess.ID
		onFail = func(err error) {
			_ = s.sessions.Close(id, fmt.Errorf("%w: %w", errRecordingFailed, err))
		}
	}
	rec, err := s.cfg.Record.Store.Start(record.Meta{ID: c.sess.ID, Session: c.sess.ID, Kind: string(c.sess.Kind),
		Container: ctr.ID(), Command: command, TTY: tty, StartedAt: time.Now().UTC()},
		record.Header{Width: int(size.Cols), Height: int(size.Rows), Command: command, Env: env}, onFail)
	if err != nil {
		c.log.Warn("recording failed to start", "error", err)
		s.metrics.RecordingErrors.Inc()
		if mode == record.Required {
			return fmt.Errorf("%w: %w", errRecordingFailed, err)
		}
		return nil
	}
	c.sess.SetRecorder(rec)
	c.log.Debug("recording", "recording", rec.ID())
	return nil
}

// from notes who sent the request, for the trail.
func (c *client) from(r *http.Request) {
	c.auth, c.userAgent = audit.AuthOf(r.Context()), r.UserAgent()
}

// auditStart writes the start of a session to the trail.
func (c *client) auditStart() {
	if c.srv.cfg.Audit == nil {
		return
	}
	info := c.sess.Info()
	c.srv.cfg.Audit.Record(audit.Event{Event: audit.SessionStart, Session: c.sess.ID, Kind: string(c.sess.Kind),
		Target: c.sess.Target, Command: c.command, TTY: c.tty, Remote: c.sess.RemoteAddr, UserAgent: c.userAgent,
		Auth: c.auth, Recording: info.Recording})
}

// auditEnd writes the end of a session to the trail.
func auditEnd(trail *audit.Log, sess *session.Session, info session.Info, result string, cause error) {
	if trail == nil {
		return
	}
	ev := audit.Event{Event: audit.SessionEnd, Session: sess.ID, Kind: string(sess.Kind), Target: sess.Target,
		Remote: sess.RemoteAddr, BytesIn: audit.Int64(info.BytesIn), BytesOut: audit.Int64(info.BytesOut),
		ExitCode: info.ExitCode, Result: result, Recording: info.Recording}
	if cause != nil {
		ev.Cause = cause.Error()
	}
	trail.Record(ev)
}
