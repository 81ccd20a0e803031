package api

import (
	"bytes"
	"errors"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"gateway/container"
	"gateway/internal/reqerr"
	"gateway/stream/wsproto"
)

// logOptions are kubectl logs' parameters (PodLogOptions).
type logOptions struct {
	follow, previous, timestamps bool
	since                        time.Time // zero: all
	tail                         int       // -1: all
	limit                        int64     // 0: none
}

func parseLogOptions(q url.Values) (logOptions, error) {
	o := logOptions{follow: isTrue(q, "follow"), previous: isTrue(q, "previous"), timestamps: isTrue(q, "timestamps"), tail: -1}
	if v := q.Get("tailLines"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return o, reqerr.New(reqerr.ErrBadRequest, "tailLines %q: want a whole number of lines", v)
		}
		o.tail = n
	}
	if v := q.Get("limitBytes"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 1 {
			return o, reqerr.New(reqerr.ErrBadRequest, "limitBytes %q: want a positive number", v)
		}
		o.limit = n
	}
	switch s, t := q.Get("sinceSeconds"), q.Get("sinceTime"); {
	case s != "" && t != "":
		return o, reqerr.New(reqerr.ErrBadRequest, "at most one of sinceSeconds or sinceTime may be given")
	case s != "":
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 1 {
			return o, reqerr.New(reqerr.ErrBadRequest, "sinceSeconds %q: want a positive number", s)
		}
		if n <= int64(math.MaxInt64/time.Second) { // else since the beginning
			o.since = time.Now().Add(-time.Duration(n) * time.Second)
		}
	case t != "":
		since, err := time.Parse(time.RFC3339, t)
		if err != nil {
			return o, reqerr.New(reqerr.ErrBadRequest, "sinceTime %q: want an RFC 3339 time", t)
		}
		o.since = since
	}
	return o, nil
}

func isTrue(q url.Values, name string) bool { return wsproto.ParseBool(q[name]) }

// podLog serves kubectl logs: the container's output kept in its
// scrollback (the current run's, or the previous run's), each line with
// its time if asked, then, with follow, the live output until the run
// ends, the client leaves or the gateway drains.
func (a *API) podLog(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	_, c, err := a.podContainer(r, q)
	if err == nil {
		var o logOptions
		if o, err = parseLogOptions(q); err == nil {
			err = a.writeLogs(w, r, c, o)
		}
	}
	if err != nil {
		a.writeError(w, r, err)
	}
}

func (a *API) writeLogs(w http.ResponseWriter, r *http.Request, c *container.Container, o logOptions) error {
	lines, att, err := c.Logs(o.previous, o.follow)
	if errors.Is(err, container.ErrNoPrevious) {
		return reqerr.New(reqerr.ErrBadRequest, "previous terminated container %q in pod %q not found: %v", c.ID(), c.Spec().Sandbox, err)
	}
	if err != nil {
		return err
	}
	if att != nil {
		defer func() { att.Detach() }() // the last one joined (see below)
	}
	for len(lines) > 0 && !o.since.IsZero() && lines[0].Time.Before(o.since) {
		lines = lines[1:]
	}
	if o.tail >= 0 && len(lines) > o.tail {
		lines = lines[len(lines)-o.tail:]
	}
	w.Header().Set("Content-Type", "text/plain")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	lw := &logWriter{w: w, rc: http.NewResponseController(w), stamps: o.timestamps, left: o.limit, start: true}
	lw.dl = a.newWriteDeadline(lw.rc) // a reader that stopped does not hold the handler for good
	defer lw.dl.stop()
	for _, l := range lines {
		if !lw.write(l.Time, l.Data) {
			return nil
		}
	}
	lw.flush()
	if att == nil {
		return nil
	}
	off := att.Offset // of the next byte to come
	for {
		select {
		case ch, ok := <-att.C:
			if !ok {
				if !errors.Is(att.Err(), container.ErrSlowConsumer) {
					return nil // the run ended
				}
				// A follower that fell behind is cut, so that the container
				// never waits for it: join again where it left off, from
				// the scrollback. When that is no longer kept the response
				// is cut short, and the client reports the error (a clean
				// end would read as the end of the log).
				if att, err = c.Attach(container.Join{From: off}, nil); err != nil {
					a.log.Warn("kubectl logs -f: the follower fell behind the scrollback", "container", c.ID(), "error", err)
					panic(http.ErrAbortHandler)
				}
				for _, r := range att.Replay {
					if !lw.write(time.Now(), r.Data) {
						return nil
					}
					off += int64(len(r.Data))
				}
				lw.flush()
				continue
			}
			if !lw.write(time.Now(), ch.Data) {
				return nil
			}
			off += int64(len(ch.Data))
			lw.flush()
		case <-r.Context().Done():
			return nil
		case <-a.drainCtx.Done():
			return nil
		}
	}
}

// logWriter writes log bytes, a timestamp at the start of each line if
// asked, up to a limit.
type logWriter struct {
	w      http.ResponseWriter
	rc     *http.ResponseController
	dl     *writeDeadline
	stamps bool
	start  bool  // at the start of a line
	left   int64 // bytes still allowed; 0: no limit
	failed bool
}

// write writes p; it returns false when nothing more may be written.
func (l *logWriter) write(t time.Time, p []byte) bool {
	l.dl.extend()
	for len(p) > 0 && !l.failed {
		line := p
		if i := bytes.IndexByte(p, '\n'); i >= 0 {
			line = p[:i+1]
		}
		p = p[len(line):]
		if l.stamps && l.start {
			if !l.out([]byte(t.UTC().Format(time.RFC3339Nano) + " ")) {
				return false
			}
		}
		if !l.out(line) {
			return false
		}
		l.start = line[len(line)-1] == '\n'
	}
	return !l.failed
}

func (l *logWriter) out(b []byte) bool {
	if l.left > 0 {
		if int64(len(b)) >= l.left {
			b, l.failed = b[:l.left], true // the limit: the last bytes
		}
		l.left -= int64(len(b))
	}
	if _, err := l.w.Write(b); err != nil {
		l.failed = true
	}
	return !l.failed
}

func (l *logWriter) flush() { _ = l.rc.Flush() }
