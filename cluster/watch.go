package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// A watch of the pods or the events across the replicas: every
// replica's watch, their events in one stream. Each replica counts its own resource versions, so
// the versions this stream gives (a merged list's, each event's) name
// every replica's: node=version pairs in a query string, opaque to
// clients, split again when a client resumes from one.

// joinVersions is the resource version naming each replica's.
func joinVersions(rvs map[string]string) string {
	v := url.Values{}
	for node, rv := range rvs {
		v.Set(node, rv)
	}
	return v.Encode()
}

// splitVersions reads a version joinVersions made; ok is false for any
// other (one replica's own, say).
func splitVersions(s string) (map[string]string, bool) {
	v, err := url.ParseQuery(s)
	if err != nil || len(v) == 0 {
		return nil, false
	}
	out := make(map[string]string, len(v))
	for node, rvs := range v {
		if node == "" || len(rvs) != 1 {
			return nil, false
		}
		if _, err := strconv.ParseUint(rvs[0], 10, 64); err != nil {
			return nil, false
		}
		out[node] = rvs[0]
	}
	return out, true
}

// watchEvent is a watch's line, its object left as it came but for its
// metadata.
type watchEvent struct {
	Type   string                     `json:"type"`
	Object map[string]json.RawMessage `json:"object"`
}

// meta is an object's metadata, as far as the merge reads and writes it.
func (e *watchEvent) meta() map[string]json.RawMessage {
	var m map[string]json.RawMessage
	json.Unmarshal(e.Object["metadata"], &m)
	if m == nil {
		m = map[string]json.RawMessage{}
	}
	return m
}

const initialEventsEnd = "k8s.io/initial-events-end" // the bookmark that ends a watch-list's initial events

// writeTimeout ends a merged watch whose client has not taken an event in
// that long, as a replica's own watch does.
const writeTimeout = time.Minute

// watchAll serves a watch (of pods, of events) from every replica that answers (those that
// do not are named in a Warning header). The stream ends when any
// replica's does (its timeout, its shutdown, an error event passed on),
// so that the client watches again from the versions it has: nothing
// is silently missing. With sendInitialEvents, the one bookmark ending the
// initial events comes once every replica has sent its own.
func (c *Cluster) watchAll(w http.ResponseWriter, r *http.Request, h http.Handler) {
	q := r.URL.Query()
	from := map[string]string{}
	if rv := q.Get("resourceVersion"); rv != "" && rv != "0" && q.Get("sendInitialEvents") != "true" {
		var ok bool
		if from, ok = splitVersions(rv); !ok {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusOK)
			json.NewEncoder(w).Encode(map[string]any{"type": "ERROR", "object": map[string]any{"kind": "Status", "apiVersion": "v1",
				"status": "Failure", "code": http.StatusGone, "reason": "Expired",
				"message": fmt.Sprintf("too old resource version: %s (not one given by a merged list)", rv)}})
			return
		}
	}
	ctx, cancel := context.WithCancel(r.Context())
	local := newPipeWriter()
	var wg sync.WaitGroup
	defer func() { cancel(); local.r.Close(); wg.Wait() }() // the close frees the local watch from its write
	uri := func(node string) string {
		q := r.URL.Query()
		if len(from) > 0 {
			q.Set("resourceVersion", from[node]) // "" for a replica the list did not have: from its start
		}
		return r.URL.Path + "?" + q.Encode()
	}

	// This replica's own watch, through a pipe: its refusal (a bad
	// selector, say) is the answer.
	lr := r.Clone(ctx)
	lr.URL, _ = url.Parse(uri(c.cfg.Node))
	lr.RequestURI = lr.URL.RequestURI()
	wg.Go(func() { h.ServeHTTP(local, lr); local.close() })
	if code := <-local.code; code != http.StatusOK {
		maps.Copy(w.Header(), local.header)
		w.WriteHeader(code)
		io.Copy(w, local.r)
		return
	}
	bodies := map[string]io.Reader{c.cfg.Node: local.r}
	var down []string
	var mu sync.Mutex
	var opened sync.WaitGroup
	for _, p := range c.Peers() {
		if !p.Up() {
			down = append(down, p.Node())
			continue
		}
		opened.Go(func() {
			resp, err := c.open(ctx, p, uri(p.Node()), r.Header.Get("Accept"))
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				down = append(down, p.Node())
				return
			}
			if resp.StatusCode != http.StatusOK {
				resp.Body.Close()
				down = append(down, p.Node())
				return
			}
			bodies[p.Node()] = resp.Body
			wg.Go(func() { <-ctx.Done(); resp.Body.Close() })
		})
	}
	opened.Wait()

	w.Header().Set("Content-Type", "application/json")
	if len(down) > 0 {
		slices.Sort(down)
		w.Header().Set("Warning", fmt.Sprintf(`299 - "replicas not answering, their items are not watched: %s"`, strings.Join(down, ", ")))
	}
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	rc.Flush()
	defer rc.SetWriteDeadline(time.Time{}) // while the handler runs: the connection's next answer has none

	type line struct {
		node string
		ev   *watchEvent
	}
	lines := make(chan line)
	for node, body := range bodies {
		wg.Go(func() {
			dec := json.NewDecoder(body)
			for {
				var e watchEvent
				err := dec.Decode(&e)
				var ev *watchEvent // nil: this replica's watch ended
				if err == nil {
					ev = &e
				}
				select {
				case lines <- line{node, ev}:
				case <-ctx.Done():
					return
				}
				if err != nil {
					return
				}
			}
		})
	}
	rvs := maps.Clone(from)
	initial := map[string]bool{} // the replicas whose initial events have ended
	enc := json.NewEncoder(w)
	for {
		var l line
		select {
		case l = <-lines:
		case <-ctx.Done():
			return
		}
		if l.ev == nil {
			return
		}
		m := l.ev.meta()
		var rv string
		if json.Unmarshal(m["resourceVersion"], &rv) == nil && rv != "" {
			rvs[l.node] = rv
		}
		switch l.ev.Type {
		case "ERROR":
			enc.Encode(l.ev)
			return
		case "BOOKMARK":
			var ann map[string]string
			json.Unmarshal(m["annotations"], &ann)
			if ann[initialEventsEnd] == "true" {
				if initial[l.node] = true; len(initial) < len(bodies) {
					continue
				}
			}
		}
		m["resourceVersion"], _ = json.Marshal(joinVersions(rvs))
		l.ev.Object["metadata"], _ = json.Marshal(m)
		rc.SetWriteDeadline(time.Now().Add(writeTimeout)) // a client that stops reading is let go
		if enc.Encode(l.ev) != nil || rc.Flush() != nil {
			return
		}
	}
}

// open starts a streaming request to a peer, with the replica's own
// credentials: the peer has the usual time to answer, and then as long
// as ctx lasts to stream.
func (c *Cluster) open(ctx context.Context, p *Peer, path, accept string) (*http.Response, error) {
	rctx, stop := context.WithCancel(ctx)
	timer := time.AfterFunc(c.cfg.Timeout, stop)
	resp, err := c.proxy.RoundTrip(c.peerRequest(rctx, p, "GET", path, accept)) // not c.client, whose timeout covers the body
	if !timer.Stop() && err == nil {
		resp.Body.Close()
		err = fmt.Errorf("%s: no answer in %v", p.Node(), c.cfg.Timeout)
	}
	if err != nil {
		stop()
		return nil, err
	}
	resp.Body = stopOnClose{resp.Body, stop}
	return resp, nil
}

type stopOnClose struct {
	io.ReadCloser
	stop context.CancelFunc
}

func (s stopOnClose) Close() error { s.stop(); return s.ReadCloser.Close() }

// pipeWriter is a ResponseWriter whose body is read from r as it is
// written; code gives the status once it is known.
type pipeWriter struct {
	header http.Header
	code   chan int
	r      *io.PipeReader
	w      *io.PipeWriter
	sent   bool
}

func newPipeWriter() *pipeWriter {
	pr, pw := io.Pipe()
	return &pipeWriter{header: http.Header{}, code: make(chan int, 1), r: pr, w: pw}
}

func (p *pipeWriter) Header() http.Header { return p.header }
func (p *pipeWriter) WriteHeader(code int) {
	if !p.sent {
		p.sent = true
		p.code <- code
	}
}

func (p *pipeWriter) Write(b []byte) (int, error) {
	p.WriteHeader(http.StatusOK)
	return p.w.Write(b)
}

func (p *pipeWriter) Flush() {}

// close ends the body, once the handler has returned.
func (p *pipeWriter) close() {
	p.WriteHeader(http.StatusOK)
	p.w.Close()
}
