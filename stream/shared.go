package stream

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"time"

	"gateway/container"
	"gateway/internal/reqerr"
	"gateway/metrics"
	"gateway/session"
	"gateway/stream/wsproto"
)

// A shared exec (an exec opened with detach) is a session whose process
// outlives its clients. The process runs as a container.Job; the client
// that opened it is its first client, and more join with Server.Join, each
// an attachStream on the job, getting every byte from where it joins. The
// session is active while a client is connected and detached while none
// is, until it is reaped (SIGHUP, then the stop grace) when its detach
// time runs out. It ends when the process exits, whatever ended it: the
// reaping, DELETE /api/v1/sessions/{id} (its clients get 4000), the
// gateway's shutdown (1001), or the process itself (every client gets the
// exit status and 1000).

// Why a shared session was ended, besides session.ErrClosedByAPI and
// session.ErrShutdown; errShareRevoked is why a client was cut.
var (
	errDetachExpired = errors.New("detached for longer than its detach time: reaped")
	errShareRevoked  = errors.New("share link revoked")
)

type shared struct {
	srv    *Server
	sess   *session.Session
	job    *container.Job
	km     *metrics.Kind
	log    *slog.Logger
	detach time.Duration
	start  time.Time

	mu      sync.Mutex
	viewers map[*client]struct{}
	reap    *time.Timer // running while detached
	cause   error       // why it was asked to end; nil until then
	done    bool        // the process has ended
	shares  map[string]*share
}

// sharedExec is the client that opens a shared exec: until the process
// runs, it holds the size the client sends; then it is an attachStream on
// the job.
type sharedExec struct {
	attachStream
	c       *container.Container
	command []string
	detach  time.Duration

	mu          sync.Mutex
	job         *container.Job
	pendingSize *wsproto.TerminalSize
}

// serveShared serves an exec opened with detach, capped by MaxDetach.
func (s *Server) serveShared(cl *client, c *container.Container, opts ExecOptions) {
	e := &sharedExec{c: c, command: opts.Command, detach: min(opts.Detach.Duration, s.cfg.MaxDetach)}
	e.attachStream = attachStream{client: cl, join: container.Live, opts: opts.Streams, stdin: newInputQueue(),
		closeStdin: func(done <-chan struct{}) error { return e.started().CloseStdin(done) }}
	s.serve(cl, e.onFrame, e.run)
}

func (e *sharedExec) started() *container.Job {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.job
}

// onFrame holds resizes until the process runs, then treats frames as any
// client of the job does.
func (e *sharedExec) onFrame(ctx context.Context, f wsproto.Frame) error {
	if f.Channel == wsproto.Resize && e.opts.TTY {
		e.resize.handle(e.client, f.Payload, func(sz wsproto.TerminalSize) {
			e.mu.Lock()
			defer e.mu.Unlock()
			if e.job == nil {
				e.pendingSize = &sz
			} else if err := e.job.Resize(container.Size{Cols: sz.Width, Rows: sz.Height}); err != nil {
				e.log.Warn("resize failed", "error", err)
			}
		})
		return nil
	}
	return e.attachStream.onFrame(ctx, f)
}

// run starts the process as an exec does (at the size the client sent
// first), makes the session shared, and follows the job's output.
func (e *sharedExec) run(ctx context.Context) error {
	defer e.stdin.close()
	if !e.ready(ctx, e.opts.Stdout, e.opts.Stderr) {
		return nil
	}
	if e.opts.TTY {
		e.SyncInput(ctx)
	}
	if ctx.Err() != nil {
		return nil
	}
	s := e.srv
	e.mu.Lock()
	spec := container.ExecSpec{Command: e.command, TTY: e.opts.TTY, Stdin: e.opts.Stdin, Stdout: e.opts.Stdout, Stderr: e.opts.Stderr}
	if e.pendingSize != nil {
		spec.Size = container.Size{Cols: e.pendingSize.Width, Rows: e.pendingSize.Height}
	}
	if err := e.record(e.c, spec.Command, spec.TTY, spec.Size); err != nil {
		e.mu.Unlock()
		e.fail(ctx, err)
		return nil
	}
	job, err := e.c.StartJob(spec, container.JobConfig{Keep: s.cfg.SharedKeep, OnOutput: e.sess.RecordOut})
	e.job = job
	e.mu.Unlock()
	if err != nil {
		e.startFailed(ctx, err)
		return nil
	}
	e.src = job
	e.sess.OutputFrom(job.Tail, s.cfg.SharedKeep) // the job keeps its output for joins already
	att, _ := job.Attach(container.Live, e.cut)   // nothing is published before Run
	defer att.Detach()
	sh := s.share(e.client, job, e.detach)
	if e.opts.Stdin {
		e.stdin.start(attachInput{a: &e.attachStream, done: e.stdin.stop}, e.log)
	}
	e.log.Info("shared exec started", "pid", job.Pid(), "detach", sh.detach)
	return e.follow(ctx, att)
}

// share makes the session of the client that started job a shared one,
// with that client its first, and runs the job on a goroutine of the
// server's.
func (s *Server) share(c *client, job *container.Job, detach time.Duration) *shared {
	sh := &shared{srv: s, sess: c.sess, job: job, km: c.km, log: c.log, detach: detach, start: time.Now(),
		viewers: map[*client]struct{}{c: {}}, shares: make(map[string]*share)}
	s.sharedMu.Lock()
	s.shared[c.sess.ID] = sh
	s.sharedMu.Unlock()
	c.shared.Store(sh)
	s.metrics.Viewers.Inc()
	if !c.sess.Share(sh, detach) {
		// Asked to close while it started: end it now.
		sh.Close(session.ErrClosedByAPI)
	}
	s.streams.Go(sh.run)
	return sh
}

// run runs the process, then ends the session with it.
func (sh *shared) run() {
	sh.job.Run()
	code, err := sh.job.Wait()
	s := sh.srv
	s.sharedMu.Lock()
	delete(s.shared, sh.sess.ID)
	for id := range sh.shares {
		delete(s.shares, id)
	}
	s.sharedMu.Unlock()
	sh.mu.Lock()
	sh.done = true
	if sh.reap != nil {
		sh.reap.Stop()
		sh.reap = nil
		s.metrics.SessionsDetached.Dec()
	}
	for _, sr := range sh.shares {
		sr.drop()
	}
	sh.shares = nil
	cause := sh.cause
	sh.mu.Unlock()

	var exit *int
	result := metrics.ResultSuccess
	switch {
	case err != nil:
		result = metrics.ResultError
	case cause != nil:
		result = metrics.ResultTerminated
	default:
		exit = &code
		if code != 0 {
			result = metrics.ResultNonZeroExit
		}
	}
	s.finished(sh.sess, sh.km, sh.log, result, exit, cause, time.Since(sh.start))
}

// Close ends the shared session (session.Closer): the process is
// terminated and every client is closed with cause.
func (sh *shared) Close(cause error) {
	sh.mu.Lock()
	if sh.cause != nil || sh.done {
		sh.mu.Unlock()
		return
	}
	sh.cause = cause
	viewers := slices.Collect(maps.Keys(sh.viewers))
	sh.mu.Unlock()
	sh.log.Info("shared exec ending", "cause", cause.Error())
	// The clients first: a process quick to die of the signal would
	// otherwise end their streams with its exit status, not with why.
	for _, c := range viewers {
		c.t.Close(cause)
	}
	sh.job.Terminate()
}

// grants reports whether a share link still lets clients in.
func (sh *shared) grants(shareID string) bool {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return sh.shares[shareID] != nil
}

// join adds a client, unless the session is ending or the share link that
// let it in was revoked since it was checked: then it says why.
func (sh *shared) join(c *client) error {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	switch {
	case sh.cause != nil || sh.done:
		return session.ErrClosedByAPI
	case c.share != "" && sh.shares[c.share] == nil:
		return errShareRevoked
	}
	if sh.reap != nil {
		sh.reap.Stop()
		sh.reap = nil
		sh.srv.metrics.SessionsDetached.Dec()
	}
	sh.viewers[c] = struct{}{}
	c.shared.Store(sh)
	sh.srv.metrics.Viewers.Inc()
	sh.sess.SetViewers(len(sh.viewers), time.Time{})
	return nil
}

// leave removes a client whose stream ended; the last one to leave
// detaches the session until it is reaped.
func (sh *shared) leave(c *client, cause error) {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if _, ok := sh.viewers[c]; !ok {
		return
	}
	delete(sh.viewers, c)
	sh.srv.metrics.Viewers.Dec()
	attrs := []any{"clients", len(sh.viewers)}
	if cause != nil {
		attrs = append(attrs, "cause", cause.Error())
	}
	if len(sh.viewers) > 0 || sh.done || sh.cause != nil {
		sh.sess.SetViewers(len(sh.viewers), time.Time{})
		c.log.Info("client left the shared exec", attrs...)
		return
	}
	reapAt := time.Now().Add(sh.detach)
	sh.reap = time.AfterFunc(sh.detach, sh.expire)
	sh.srv.metrics.SessionsDetached.Inc()
	sh.sess.SetViewers(0, reapAt)
	c.log.Info("shared exec detached", append(attrs, "reap_at", reapAt.UTC().Format(time.RFC3339))...)
}

// expire reaps a session that stayed detached for its detach time.
func (sh *shared) expire() {
	sh.mu.Lock()
	if sh.reap == nil || len(sh.viewers) > 0 || sh.done || sh.cause != nil {
		sh.mu.Unlock()
		return
	}
	sh.cause = errDetachExpired
	sh.mu.Unlock()
	sh.log.Info("detached shared exec reaped", "detach", sh.detach)
	sh.job.Terminate()
}

// JoinOptions are the parameters of a join: the streams and replay as for
// attach, and since, the output bytes the client already has.
type JoinOptions struct {
	AttachOptions
	// Since, when not nil, starts the output right after that many bytes
	// (the session's bytesOut counts them), if they are still kept.
	Since *int64
	// Grant is what let the client in: nil for the gateway's token, else a
	// share link (view-only ones drop the client's input and resizes).
	Grant *Grant
}

// ParseJoinQuery reads join parameters: those of attach and since.
func ParseJoinQuery(q url.Values) (JoinOptions, error) {
	o := JoinOptions{AttachOptions: ParseAttachQuery(q)}
	if v, ok := q["since"]; ok {
		n, err := strconv.ParseInt(v[0], 10, 64)
		if err != nil || n < 0 {
			return o, badRequest("since=%q: want the number of output bytes the client has", v[0])
		}
		o.Since = &n
	}
	return o, nil
}

// Join serves a WebSocket (or SPDY) that joins a shared exec (see
// shared): the client gets the output from where it asks (since), or
// what there is to see (the screen with a tty, unless replay=0), then the
// live output; with stdin its input goes to the process, and its resizes
// to the pty. Several clients may be joined at once. An error means the
// request was refused before the upgrade: an unknown session, one that is
// not shared (409), an offset no longer kept (410).
func (s *Server) Join(w http.ResponseWriter, r *http.Request, sessionID string, opts JoinOptions) error {
	if err := opts.Validate(); err != nil {
		return err
	}
	sess, err := s.sessions.Get(sessionID)
	if err != nil {
		return err
	}
	s.sharedMu.Lock()
	sh := s.shared[sessionID]
	s.sharedMu.Unlock()
	if sh == nil {
		if !sess.Live() {
			return reqerr.New(reqerr.ErrConflict, "session %q has ended", sessionID)
		}
		return reqerr.New(reqerr.ErrConflict, "session %q is not shared: only an exec opened with detach can be joined", sessionID)
	}
	if g := opts.Grant; g != nil && g.Session != sessionID {
		return reqerr.New(reqerr.ErrForbidden, "the share link is for another session")
	}
	if g := opts.Grant; g != nil && !sh.grants(g.Share) {
		return reqerr.New(reqerr.ErrForbidden, "the share link was revoked or has expired")
	}
	viewOnly := opts.Grant != nil && opts.Grant.ViewOnly
	if opts.Stdin && !sh.job.HasStdin() {
		return badRequest("session %q was started without stdin: join without stdin", sessionID)
	}
	join := container.Live
	switch {
	case opts.Since != nil:
		join = container.Join{From: *opts.Since}
	case opts.replay():
		join = container.Replay
	}
	// An offset no longer kept is refused with a Status before the
	// upgrade (and, should it be dropped in between, after it).
	if err := sh.job.CheckJoin(join); err != nil {
		return err
	}
	cl, err := s.openFor(w, r, sess, opts.Streams)
	if err != nil {
		return err
	}
	cl.joined, cl.viewOnly = true, viewOnly
	if opts.Grant != nil {
		cl.share = opts.Grant.Share
	}
	a := &attachStream{client: cl, src: sh.job, join: join, opts: opts.Streams, stdin: newInputQueue()}
	if err := sh.join(cl); err != nil {
		cl.t.Close(err)
	}
	cl.log.Info("client joining the shared exec", "remote", r.RemoteAddr, "view_only", viewOnly)
	s.serve(cl, a.onFrame, a.run)
	return nil
}
