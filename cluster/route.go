package cluster

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"time"

	"gateway/stream"
	"gateway/stream/wsproto"
)

// Local answers whether this replica holds an item: kind is containers,
// sandboxes, sessions or recordings.
type Local func(kind, id string) bool

// forwardedHeader marks a request a peer forwarded: it is served here,
// never forwarded again.
const forwardedHeader = "X-Gateway-Forwarded"

// Handler routes requests: those for an item another replica owns go to
// it, lists are gathered from every replica, the rest is served by h.
// Every answer names the replica that gave it (X-Gateway-Node).
func (c *Cluster) Handler(h http.Handler, local Local) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(nodeHeader, c.cfg.Node)
		if r.Header.Get(forwardedHeader) != "" {
			c.trustForwarded(r)
			h.ServeHTTP(w, r)
			return
		}
		if node := r.URL.Query().Get("node"); node != "" && node != c.cfg.Node {
			c.forwardTo(w, r, node)
			return
		}
		if kind, id, ok := target(r); ok && hasCredential(r) {
			// A pod named SANDBOX.NODE is on that node.
			if _, node, ok := strings.Cut(id, "."); ok && strings.HasPrefix(r.URL.Path, "/api/v1/namespaces/") {
				if node == c.cfg.Node {
					h.ServeHTTP(w, r)
				} else {
					c.forwardTo(w, r, node)
				}
				return
			}
			if local(kind, id) {
				h.ServeHTTP(w, r)
				return
			}
			c.route(w, r, h, kind, id)
			return
		}
		if r.Method == http.MethodGet && isList(r.URL.Path) && len(c.Peers()) > 0 {
			if isWatch(r) && isKubeList(r.URL.Path) {
				c.watchAll(w, r, h)
			} else {
				c.gather(w, r, h)
			}
			return
		}
		if r.Method == http.MethodPost && (r.URL.Path == "/api/v1/containers" || r.URL.Path == "/api/v1/sandboxes") {
			c.create(w, r, h)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// hasCredential reports whether a request carries something that may
// authenticate it (the owner checks it): a request with none is answered
// here (401), without asking the peers.
func hasCredential(r *http.Request) bool {
	if r.Header.Get("Authorization") != "" || strings.Contains(r.Header.Get("Sec-WebSocket-Protocol"), "bearer.authorization.k8s.io") {
		return true
	}
	if strings.HasPrefix(r.URL.Path, "/stream/") {
		return true // a single-use URL is its own authorization
	}
	for _, ck := range r.Cookies() {
		if ck.Value != "" {
			return true
		}
	}
	return false
}

// target finds the item a request is about.
func target(r *http.Request) (kind, id string, ok bool) {
	parts := strings.Split(strings.TrimPrefix(r.URL.Path, "/"), "/")
	switch {
	case len(parts) >= 4 && parts[0] == "api" && parts[1] == "v1" &&
		(parts[2] == "containers" || parts[2] == "sandboxes" || parts[2] == "sessions" || parts[2] == "recordings") && parts[3] != "":
		return parts[2], parts[3], true
	case len(parts) >= 6 && parts[0] == "api" && parts[1] == "v1" && parts[2] == "namespaces" && parts[4] == "pods" && parts[5] != "":
		return "sandboxes", parts[5], true // a pod is a sandbox
	}
	return "", "", false
}

// isList reports the lists that every replica contributes to.
func isList(path string) bool {
	switch path {
	case "/api/v1/containers", "/api/v1/sandboxes", "/api/v1/sessions", "/api/v1/recordings",
		"/api/v1/pods", "/api/v1/namespaces/default/pods", "/api/v1/events", "/api/v1/namespaces/default/events":
		return true
	}
	return false
}

// isKubeList reports the Kubernetes API's lists (pods, events), which
// merge as Kubernetes lists and can be watched.
func isKubeList(path string) bool {
	return strings.Contains(path, "pods") || strings.Contains(path, "events")
}

// isWatch reports a watch of a list.
func isWatch(r *http.Request) bool {
	v := r.URL.Query().Get("watch")
	return v == "true" || v == "1"
}

// ownerTTL is how long a found owner is believed without asking again.
const ownerTTL = 30 * time.Second

// route forwards a request for an item this replica does not hold to its
// owner, found by asking the peers (and remembered): NotFound when no
// replica has it, 503 when one that might does not answer, 409 when
// several have items of that id (?node= picks one).
func (c *Cluster) route(w http.ResponseWriter, r *http.Request, h http.Handler, kind, id string) {
	key := kind + "/" + id
	c.mu.Lock()
	e, ok := c.owner[key]
	c.mu.Unlock()
	if ok && time.Since(e.at) < ownerTTL {
		if p := c.peer(e.node); p != nil && p.Up() {
			c.forward(w, r, p)
			return
		}
	}
	owners, down := c.lookup(r.Context(), kind, id)
	switch {
	case len(owners) == 1:
		c.remember(key, owners[0].Node())
		c.forward(w, r, owners[0])
	case len(owners) > 1:
		var names []string
		for _, p := range owners {
			names = append(names, p.Node())
		}
		writeStatus(w, http.StatusConflict, "Conflict", fmt.Sprintf("%s %q is on several replicas (%s): add ?node=NAME", kind, id, strings.Join(names, ", ")))
	case len(down) > 0:
		writeStatus(w, http.StatusServiceUnavailable, "ServiceUnavailable",
			fmt.Sprintf("%s %q is not on this replica, and replicas that may hold it do not answer: %s", kind, id, strings.Join(down, ", ")))
	default:
		h.ServeHTTP(w, r) // this replica's own NotFound
	}
}

// remember caches an owner; past ownerCacheMax entries the expired ones
// go, so that the ids of sessions long gone do not pile up.
func (c *Cluster) remember(key, node string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	if len(c.owner) >= ownerCacheMax {
		for k, e := range c.owner {
			if now.Sub(e.at) >= ownerTTL {
				delete(c.owner, k)
			}
		}
	}
	c.owner[key] = cached{node: node, at: now}
}

// ownerCacheMax is the size past which remember sweeps the cache.
const ownerCacheMax = 4096

// lookup asks every peer whether it holds the item.
func (c *Cluster) lookup(ctx context.Context, kind, id string) (owners []*Peer, down []string) {
	down = c.askPeers(ctx, "HEAD", "/api/v1/"+kind+"/"+url.PathEscape(id), "", func(p *Peer, resp *http.Response) bool {
		if resp.StatusCode == http.StatusOK {
			owners = append(owners, p)
		}
		return resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusNotFound
	})
	return owners, down
}

// askPeers makes the same call to every peer that is up, at once, and
// hands each answer to took (one at a time), which reports whether the
// peer answered as it should; it returns the peers down, or that did not.
func (c *Cluster) askPeers(ctx context.Context, method, path, accept string, took func(*Peer, *http.Response) bool) (down []string) {
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, p := range c.Peers() {
		if !p.Up() {
			mu.Lock()
			down = append(down, p.Node())
			mu.Unlock()
			continue
		}
		wg.Go(func() {
			resp, err := c.call(ctx, p, method, path, accept)
			mu.Lock()
			defer mu.Unlock()
			if err != nil || !took(p, resp) {
				down = append(down, p.Node())
			}
		})
	}
	wg.Wait()
	return down
}

// call makes the replica's own request to a peer, with the token.
func (c *Cluster) call(ctx context.Context, p *Peer, method, path, accept string) (*http.Response, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	resp, err := c.client.Do(c.peerRequest(ctx, p, method, path, accept))
	if err != nil {
		return nil, err
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(b))
	return resp, err
}

// peerRequest is a request of the replica's own to a peer.
func (c *Cluster) peerRequest(ctx context.Context, p *Peer, method, path, accept string) *http.Request {
	req, _ := http.NewRequestWithContext(ctx, method, p.URL.String()+path, nil)
	req.Header.Set("Authorization", "Bearer "+c.cfg.Token)
	if accept != "" {
		req.Header.Set("Accept", accept) // the same form: a Table for kubectl get
	}
	req.Header.Set(forwardedHeader, c.cfg.Node)
	req.Header.Set(proofHeader, c.proof())
	return req
}

// forwardTo forwards to a peer named by ?node=.
func (c *Cluster) forwardTo(w http.ResponseWriter, r *http.Request, node string) {
	p := c.peer(node)
	switch {
	case p == nil:
		writeStatus(w, http.StatusNotFound, "NotFound", fmt.Sprintf("node %q is not a replica of this gateway", node))
	case !p.Up():
		writeStatus(w, http.StatusServiceUnavailable, "ServiceUnavailable", fmt.Sprintf("node %q does not answer", node))
	default:
		c.forward(w, r, p)
	}
}

// forward proxies the request to p as it is (the client's credentials
// included, for p to check), streaming both ways; upgrades become a
// relay of the two connections.
func (c *Cluster) forward(w http.ResponseWriter, r *http.Request, p *Peer) {
	if c.cfg.Metrics != nil {
		c.cfg.Metrics.Forwarded.WithLabelValues(p.Node()).Inc()
	}
	if r.Header.Get("Upgrade") != "" {
		c.streams.Add(1)
		defer c.streams.Done()
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(p.URL)
			pr.Out.Host = r.Host // the owner sees the host the client used (share links, Origin)
			pr.SetXForwarded()
			pr.Out.Header.Set(forwardedHeader, c.cfg.Node)
			pr.Out.Header.Set(proofHeader, c.proof())
		},
		Transport:     c.proxy,
		FlushInterval: -1, // streams (logs -f, recordings followed) as they come
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if errors.Is(err, context.Canceled) {
				return
			}
			c.cfg.Log.Warn("forward", "peer", p.Node(), "path", stream.LogPath(r.URL.Path), "error", err)
			writeStatus(w, http.StatusServiceUnavailable, "ServiceUnavailable", fmt.Sprintf("node %q, which holds this, does not answer", p.Node()))
		},
	}
	rp.ServeHTTP(w, r)
}

// proofHeader carries a forwarding replica's proof that it holds the
// token (an HMAC of it: the token itself never travels in it).
const proofHeader = "X-Gateway-Peer"

func (c *Cluster) proof() string {
	m := hmac.New(sha256.New, []byte(c.cfg.Token))
	m.Write([]byte("gateway peer"))
	return hex.EncodeToString(m.Sum(nil))
}

// trustForwarded takes the client's address from X-Forwarded-For when the
// request comes from a peer (a known peer's address, with the proof), for
// the registry and the audit trail.
func (c *Cluster) trustForwarded(r *http.Request) {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return
	}
	c.mu.Lock()
	known := c.ips[host]
	c.mu.Unlock()
	if !known || !hmac.Equal([]byte(r.Header.Get(proofHeader)), []byte(c.proof())) {
		return
	}
	xff := strings.Split(r.Header.Get("X-Forwarded-For"), ",")
	if client := strings.TrimSpace(xff[len(xff)-1]); net.ParseIP(client) != nil {
		r.RemoteAddr = net.JoinHostPort(client, "0")
	}
}

// create serves a POST of a container or sandbox on the replica its
// "node" names (this one when it names none).
func (c *Cluster) create(w http.ResponseWriter, r *http.Request, h http.Handler) {
	// Bounded in time as the API bounds bodies: a trickled body must not
	// hold a goroutine.
	_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(10 * time.Second))
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20+1))
	if err != nil {
		writeStatus(w, http.StatusBadRequest, "BadRequest", "reading the body: "+err.Error())
		return
	}
	var spec map[string]json.RawMessage
	node := ""
	if json.Unmarshal(body, &spec) == nil {
		if raw, ok := spec["node"]; ok {
			json.Unmarshal(raw, &node)
			delete(spec, "node")
			body, _ = json.Marshal(spec)
		}
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	r.ContentLength = int64(len(body))
	if node == "" || node == c.cfg.Node {
		h.ServeHTTP(w, r)
		return
	}
	c.forwardTo(w, r, node)
}

// gather answers a list with every replica's items, each naming its node;
// replicas that do not answer are listed under "unreachable" and in a
// Warning header, never silently missing.
func (c *Cluster) gather(w http.ResponseWriter, r *http.Request, h http.Handler) {
	rec := &recorder{header: http.Header{}}
	h.ServeHTTP(rec, r)
	if rec.code != http.StatusOK {
		rec.copyTo(w)
		return
	}
	lists := []json.RawMessage{rec.body.Bytes()}
	nodes := []string{c.cfg.Node}
	down := c.askPeers(r.Context(), "GET", r.URL.RequestURI(), r.Header.Get("Accept"), func(p *Peer, resp *http.Response) bool {
		if resp.StatusCode != http.StatusOK {
			return false
		}
		b, _ := io.ReadAll(resp.Body)
		lists, nodes = append(lists, b), append(nodes, p.Node())
		return true
	})
	out, err := merge(lists, nodes, down, r.URL.Path)
	if err != nil {
		rec.copyTo(w)
		return
	}
	for k, v := range rec.header {
		w.Header()[k] = v
	}
	if len(down) > 0 {
		w.Header().Set("Warning", fmt.Sprintf(`299 - "replicas not answering, their items are missing: %s"`, strings.Join(down, ", ")))
	}
	w.Header().Set("Content-Length", fmt.Sprint(len(out)))
	w.WriteHeader(http.StatusOK)
	w.Write(out)
}

// merge joins lists: the gateway's ({"items": [...]}, each item given its
// node) and the Kubernetes API's (a PodList's items, a Table's rows).
func merge(lists []json.RawMessage, nodes, down []string, path string) ([]byte, error) {
	var base map[string]json.RawMessage
	if err := json.Unmarshal(lists[0], &base); err != nil {
		return nil, err
	}
	field := "items"
	if _, ok := base["rows"]; ok {
		field = "rows"
	}
	kube := isKubeList(path)
	all := []json.RawMessage{}
	rvs := map[string]string{}
	for i, l := range lists {
		var m map[string]json.RawMessage
		if err := json.Unmarshal(l, &m); err != nil {
			continue
		}
		var meta struct{ ResourceVersion string }
		if json.Unmarshal(m["metadata"], &meta) == nil && meta.ResourceVersion != "" {
			rvs[nodes[i]] = meta.ResourceVersion
		}
		var items []json.RawMessage
		json.Unmarshal(m[field], &items)
		for _, it := range items {
			if !kube {
				var obj map[string]json.RawMessage
				if json.Unmarshal(it, &obj) == nil {
					obj["node"], _ = json.Marshal(nodes[i])
					it, _ = json.Marshal(obj)
				}
			}
			all = append(all, it)
		}
	}
	base[field], _ = json.Marshal(all)
	if kube && len(rvs) > 0 { // a watch from it resumes each replica's (watchAll)
		var meta map[string]json.RawMessage
		json.Unmarshal(base["metadata"], &meta)
		if meta == nil {
			meta = map[string]json.RawMessage{}
		}
		meta["resourceVersion"], _ = json.Marshal(joinVersions(rvs))
		base["metadata"], _ = json.Marshal(meta)
	}
	if !kube {
		if down == nil {
			down = []string{}
		}
		base["unreachable"], _ = json.Marshal(down)
	}
	return json.Marshal(base)
}

// recorder keeps a local answer to merge it.
type recorder struct {
	header http.Header
	code   int
	body   bytes.Buffer
}

func (r *recorder) Header() http.Header { return r.header }
func (r *recorder) WriteHeader(code int) {
	if r.code == 0 {
		r.code = code
	}
}

func (r *recorder) Write(p []byte) (int, error) {
	if r.code == 0 {
		r.code = http.StatusOK
	}
	return r.body.Write(p)
}

func (r *recorder) copyTo(w http.ResponseWriter) {
	for k, v := range r.header {
		w.Header()[k] = v
	}
	w.WriteHeader(r.code)
	w.Write(r.body.Bytes())
}

// writeStatus answers with a Kubernetes Status, as every error is.
func writeStatus(w http.ResponseWriter, code int, reason, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(wsproto.Status{Kind: "Status", APIVersion: "v1", Status: wsproto.StatusFailure,
		Message: msg, Reason: reason, Code: int32(code)})
}
