package api

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/watch"

	"gateway/container"
	"gateway/internal/reqerr"
)

// Pods as lists and watches see them: each with the resource version of
// its last change, the last changes kept for watches that resume, and the
// label and field selectors of the API server's pod registry.

// maxPodEvents is how many changes the cache keeps: a watch resuming from
// an older resource version is told to list again (410 Expired), as the
// API server does past its watch cache.
const maxPodEvents = 1024

// defaultWatchTimeout ends a watch that gave no timeoutSeconds, as the API
// server's --min-request-timeout does; clients watch again.
const defaultWatchTimeout = 30 * time.Minute

// podCache holds the pods last served and the changes that led to them.
// It is brought up to date when read (syncPods) rather than by a goroutine of
// its own: the sandbox registry and the container runtime only signal
// that something changed, at no cost when no one watches.
type podCache struct {
	mu     sync.Mutex
	rv     uint64              // the last change's resource version
	pods   map[string]podEntry // by name
	events []podEvent          // the last maxPodEvents changes, oldest first
	// The pods by name as last computed, and the sandboxes' and
	// containers' change counts then: while they stand, so do the pods,
	// and watchers woken by one change compute them once between them.
	last    []corev1.Pod // nil before the first read
	lastGen [2]uint64
}

type podEntry struct {
	pod corev1.Pod
	key []byte // the pod's JSON without its resource version
}

// podEvent is a change: prev is the pod before it (nil when added).
type podEvent struct {
	rv        uint64
	typ       watch.EventType
	pod, prev *corev1.Pod
}

// newPodCache starts the resource versions at base.
func newPodCache(base uint64) podCache {
	return podCache{rv: base, pods: make(map[string]podEntry)}
}

// syncPods brings the cache up to the sandboxes and containers as they are,
// and returns the pods by name and the resource version they are at. The
// slice is shared: callers copy what they change.
func (a *API) syncPods() ([]corev1.Pod, uint64) {
	c := &a.pods
	gen := [2]uint64{a.sandboxes.Changes(), a.runtime.Changes()} // before the read, as a watcher's channels
	c.mu.Lock()
	if c.last != nil && c.lastGen == gen {
		defer c.mu.Unlock()
		return c.last, c.rv
	}
	c.mu.Unlock()

	bySandbox := make(map[string][]*container.Container)
	for _, ct := range a.runtime.List() {
		id := ct.Spec().Sandbox
		bySandbox[id] = append(bySandbox[id], ct)
	}
	var now []corev1.Pod
	for _, sb := range a.sandboxes.List() {
		now = append(now, a.podObject(sb, bySandbox[sb.ID()]))
	}
	slices.SortFunc(now, func(x, y corev1.Pod) int { return strings.Compare(x.Name, y.Name) })

	c.mu.Lock()
	defer c.mu.Unlock()
	if c.last != nil && c.lastGen[0] >= gen[0] && c.lastGen[1] >= gen[1] {
		return c.last, c.rv // a read as new as this one came first: this one must not undo it
	}
	seen := make(map[string]bool, len(now))
	for i := range now {
		p := &now[i]
		seen[p.Name] = true
		p.ResourceVersion = ""
		key, _ := json.Marshal(p)
		old, ok := c.pods[p.Name]
		switch {
		case ok && string(old.key) == string(key):
			*p = old.pod
			continue
		case ok:
			c.record(watch.Modified, p, &old.pod)
		default:
			c.record(watch.Added, p, nil)
		}
		c.pods[p.Name] = podEntry{pod: *p, key: key}
	}
	for _, name := range slices.Sorted(maps.Keys(c.pods)) {
		if !seen[name] {
			old := c.pods[name]
			gone := old.pod
			c.record(watch.Deleted, &gone, &old.pod)
			delete(c.pods, name)
		}
	}
	c.last, c.lastGen = now, gen
	return now, c.rv
}

// record adds a change, giving p the next resource version.
func (c *podCache) record(typ watch.EventType, p, prev *corev1.Pod) {
	c.rv++
	p.ResourceVersion = strconv.FormatUint(c.rv, 10)
	pod := *p
	c.events = append(c.events, podEvent{rv: c.rv, typ: typ, pod: &pod, prev: prev})
	if n := len(c.events) - maxPodEvents; n > 0 {
		c.events = slices.Delete(c.events, 0, n)
	}
}

// since returns the changes after resource version rv; ok is false when
// some of them are no longer kept.
func (c *podCache) since(rv uint64) (evs []podEvent, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	oldest := c.rv - uint64(len(c.events)) // the version before the first change kept (they are consecutive)
	switch {
	case rv < oldest:
		return nil, false
	case rv >= c.rv:
		return nil, true
	}
	return slices.Clone(c.events[rv-oldest:]), true
}

// podSelector is a request's namespace, labelSelector and fieldSelector.
type podSelector struct {
	ns     string // "" for every namespace
	labels labels.Selector
	fields fields.Selector
}

// podFields are the fields a pod can be selected by, as the API server's
// pod registry has them.
func podFields(p *corev1.Pod) fields.Set {
	return fields.Set{
		"metadata.name":            p.Name,
		"metadata.namespace":       p.Namespace,
		"spec.nodeName":            p.Spec.NodeName,
		"spec.restartPolicy":       string(p.Spec.RestartPolicy),
		"spec.schedulerName":       p.Spec.SchedulerName,
		"spec.serviceAccountName":  p.Spec.ServiceAccountName,
		"spec.hostNetwork":         strconv.FormatBool(p.Spec.HostNetwork),
		"status.phase":             string(p.Status.Phase),
		"status.podIP":             p.Status.PodIP,
		"status.nominatedNodeName": p.Status.NominatedNodeName,
	}
}

// parsePodSelector reads a pod list's or watch's selectors.
func parsePodSelector(r *http.Request) (podSelector, error) {
	sel := podSelector{ns: r.PathValue("ns")}
	var err error
	sel.labels, sel.fields, err = parseSelectors(r, podFields(&corev1.Pod{}))
	return sel, err
}

// parseSelectors reads a list's labelSelector and fieldSelector: a
// malformed one, or a field not among known, is the caller's mistake.
func parseSelectors(r *http.Request, known fields.Set) (labels.Selector, fields.Selector, error) {
	q := r.URL.Query()
	ls, err := labels.Parse(q.Get("labelSelector"))
	if err != nil {
		return nil, nil, reqerr.New(reqerr.ErrBadRequest, "%v", err)
	}
	fs, err := fields.ParseSelector(q.Get("fieldSelector"))
	if err != nil {
		return nil, nil, reqerr.New(reqerr.ErrBadRequest, "%v", err)
	}
	for _, req := range fs.Requirements() {
		if _, ok := known[req.Field]; !ok {
			return nil, nil, reqerr.New(reqerr.ErrBadRequest, "field label not supported: %s", req.Field)
		}
	}
	return ls, fs, nil
}

func (s podSelector) matches(p *corev1.Pod) bool {
	return p != nil && (s.ns == "" || s.ns == p.Namespace) && s.labels.Matches(labels.Set(p.Labels)) && s.fields.Matches(podFields(p))
}

func (s podSelector) filter(pods []corev1.Pod) []corev1.Pod {
	var out []corev1.Pod
	for i := range pods {
		if s.matches(&pods[i]) {
			out = append(out, pods[i])
		}
	}
	return out
}

// watchEvent is one line of a watch: the object a pod, a Table of its
// row, or a Status.
type watchEvent struct {
	Type   watch.EventType `json:"type"`
	Object any             `json:"object"`
}

// watchStream is a watch's answer: events as JSON lines, until the
// watch's timeoutSeconds, the client leaves or the gateway drains.
type watchStream struct {
	a       *API
	r       *http.Request
	rc      *http.ResponseController
	enc     *json.Encoder
	end     *time.Timer
	dl      *writeDeadline // a round of events has longWriteTimeout (see longwrite.go)
	columns bool           // the next Table carries the column definitions, as the first of the API server's do
	from    uint64         // the resource version to resume after, unless initial
	initial bool           // from none or "0", or sendInitialEvents: every object first
}

// startWatch reads a watch's timeoutSeconds and resourceVersion and
// starts the answer; a malformed one is answered with a 400 and nil.
func (a *API) startWatch(w http.ResponseWriter, r *http.Request) *watchStream {
	q := r.URL.Query()
	timeout := defaultWatchTimeout
	if s := q.Get("timeoutSeconds"); s != "" {
		n, err := strconv.ParseUint(s, 10, 32)
		if err != nil {
			a.writeError(w, r, reqerr.New(reqerr.ErrBadRequest, "timeoutSeconds %q: want a whole number of seconds", s))
			return nil
		}
		if n > 0 { // 0: the default, as the API server has it
			timeout = time.Duration(n) * time.Second
		}
	}
	s := &watchStream{a: a, r: r, columns: true, initial: true}
	if v := q.Get("resourceVersion"); v != "" && v != "0" && !isTrue(q, "sendInitialEvents") {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			a.writeError(w, r, reqerr.New(reqerr.ErrBadRequest, "resourceVersion %q: want a resource version this gateway gave", v))
			return nil
		}
		s.from, s.initial = n, false
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	s.rc = http.NewResponseController(w)
	_ = s.rc.Flush()
	s.enc = json.NewEncoder(w)
	s.enc.SetEscapeHTML(false)
	s.end = time.NewTimer(timeout)
	s.dl = a.newWriteDeadline(s.rc) // a watch that ends at the drain ends whole
	return s
}

// send writes an event; a Table after the first loses its columns.
func (s *watchStream) send(typ watch.EventType, obj any) error {
	if t, ok := obj.(metav1.Table); ok {
		if !s.columns {
			t.ColumnDefinitions = nil
		}
		s.columns, obj = false, t
	}
	return s.enc.Encode(watchEvent{Type: typ, Object: obj})
}

// fail writes the error event that ends a watch.
func (s *watchStream) fail(code int32, reason metav1.StatusReason, msg string, details *metav1.StatusDetails) {
	_ = s.enc.Encode(watchEvent{Type: watch.Error, Object: metav1.Status{TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"},
		Status: metav1.StatusFailure, Code: code, Reason: reason, Message: msg, Details: details}})
}

// tooLarge is the error of a watch from a version not given yet, with
// the cause on which client-go lists again.
func (s *watchStream) tooLarge(from, now uint64) {
	s.fail(http.StatusGatewayTimeout, metav1.StatusReasonTimeout, fmt.Sprintf("Too large resource version: %d, current: %d", from, now),
		&metav1.StatusDetails{RetryAfterSeconds: 1, Causes: []metav1.StatusCause{
			{Type: metav1.CauseTypeResourceVersionTooLarge, Message: "Too large resource version"}}})
}

// tooOld is the error of a watch from a version whose changes are gone.
func (s *watchStream) tooOld(from uint64) {
	s.fail(http.StatusGone, metav1.StatusReasonExpired, fmt.Sprintf("too old resource version: %d", from), nil)
}

// wait flushes what was sent and waits for c1 or c2 (either may be nil);
// false: the watch is over.
func (s *watchStream) wait(c1, c2 <-chan struct{}) bool {
	if s.rc.Flush() != nil {
		return false
	}
	select {
	case <-c1:
	case <-c2:
	case <-s.end.C:
		return false
	case <-s.r.Context().Done():
		return false
	case <-s.a.drainCtx.Done():
		return false
	}
	s.dl.extend() // not every writer has deadlines (a replica's merge)
	return true
}

// stop ends the watch's timers; the connection's next answer has no
// deadline of this one's.
func (s *watchStream) stop() {
	s.end.Stop()
	s.dl.stop()
}

// watchPods serves a pod watch: the changes after resourceVersion (or, from
// none or "0", every matching pod as added first; with sendInitialEvents,
// then a bookmark saying so). A pod that comes to match the selectors is
// added and one that ceases to is deleted, as the API server does.
func (a *API) watchPods(w http.ResponseWriter, r *http.Request, sel podSelector) {
	s := a.startWatch(w, r)
	if s == nil {
		return
	}
	defer s.stop()
	table := wantsTable(r)
	send := func(typ watch.EventType, p *corev1.Pod) error {
		if table {
			return s.send(typ, podTable(r, []corev1.Pod{*p}, p.ResourceVersion))
		}
		return s.send(typ, p)
	}
	for first := true; ; first = false {
		sandboxes, containers := a.sandboxes.Changed(), a.runtime.Changed() // before the read: no change is missed
		pods, rv := a.syncPods()
		switch {
		case first && s.initial:
			for i := range pods {
				if p := &pods[i]; sel.matches(p) && send(watch.Added, p) != nil {
					return
				}
			}
			if isTrue(r.URL.Query(), "sendInitialEvents") {
				mark := &corev1.Pod{TypeMeta: metav1.TypeMeta{Kind: "Pod", APIVersion: "v1"}, ObjectMeta: metav1.ObjectMeta{
					ResourceVersion: strconv.FormatUint(rv, 10), Annotations: map[string]string{metav1.InitialEventsAnnotationKey: "true"}}}
				if s.send(watch.Bookmark, mark) != nil {
					return
				}
			}
		case first && s.from > rv:
			s.tooLarge(s.from, rv)
			return
		default:
			evs, ok := a.pods.since(s.from)
			if !ok {
				s.tooOld(s.from)
				return
			}
			for _, e := range evs {
				if e.rv > rv {
					break // a change after this read: the next round sends it
				}
				typ := e.typ
				now, before := e.typ != watch.Deleted && sel.matches(e.pod), e.prev != nil && sel.matches(e.prev)
				switch {
				case now && !before:
					typ = watch.Added
				case !now && before:
					typ = watch.Deleted
				case !now:
					continue
				}
				if send(typ, e.pod) != nil {
					return
				}
			}
		}
		s.from = rv
		if !s.wait(sandboxes, containers) {
			return
		}
	}
}
