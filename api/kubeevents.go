package api

import (
	"fmt"
	"net/http"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/duration"
	"k8s.io/apimachinery/pkg/watch"

	"gateway/container"
)

// The containers' events as the pods' Events, for kubectl describe pod
// (which selects them by the pod's kind, name, namespace and uid),
// kubectl get events and kubectl events.

// eventFields are the fields an event can be selected by, as the API
// server's event registry has them.
func eventFields(e *corev1.Event) fields.Set {
	return fields.Set{
		"metadata.name":                  e.Name,
		"metadata.namespace":             e.Namespace,
		"involvedObject.kind":            e.InvolvedObject.Kind,
		"involvedObject.namespace":       e.InvolvedObject.Namespace,
		"involvedObject.name":            e.InvolvedObject.Name,
		"involvedObject.uid":             string(e.InvolvedObject.UID),
		"involvedObject.apiVersion":      e.InvolvedObject.APIVersion,
		"involvedObject.resourceVersion": e.InvolvedObject.ResourceVersion,
		"involvedObject.fieldPath":       e.InvolvedObject.FieldPath,
		"reason":                         e.Reason,
		"reportingComponent":             e.ReportingController,
		"source":                         e.Source.Component,
		"type":                           e.Type,
	}
}

func (a *API) listEvents(w http.ResponseWriter, r *http.Request) {
	ls, fs, err := parseSelectors(r, eventFields(&corev1.Event{}))
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	ns := r.PathValue("ns")
	match := func(ev container.Event) (corev1.Event, bool) {
		e, ok := a.eventObject(ev)
		return e, ok && (ns == "" || ns == Namespace) && ls.Matches(labels.Set(e.Labels)) && fs.Matches(eventFields(&e))
	}
	if isTrue(r.URL.Query(), "watch") {
		a.watchEvents(w, r, match)
		return
	}
	evs, v := a.runtime.Events(0)
	items := []corev1.Event{}
	for _, ev := range evs {
		if e, ok := match(ev); ok {
			items = append(items, e)
		}
	}
	rv := strconv.FormatUint(a.eventBase+v, 10)
	if wantsTable(r) {
		writeJSON(w, http.StatusOK, eventTable(r, items, rv))
		return
	}
	writeJSON(w, http.StatusOK, corev1.EventList{TypeMeta: metav1.TypeMeta{Kind: "EventList", APIVersion: "v1"},
		ListMeta: metav1.ListMeta{ResourceVersion: rv}, Items: items})
}

// watchEvents serves an event watch: the events added or counted up after
// resourceVersion (from none, every event as added first). The runtime
// keeps each event's last state, so a watch resumes from any version of
// this gateway's; an event that ages out of the runtime's last 1,000, or
// whose sandbox goes, is not told as deleted.
func (a *API) watchEvents(w http.ResponseWriter, r *http.Request, match func(container.Event) (corev1.Event, bool)) {
	s := a.startWatch(w, r)
	if s == nil {
		return
	}
	defer s.stop()
	table := wantsTable(r)
	for first := true; ; first = false {
		changed := a.runtime.EventsChanged() // before the read: no event is missed
		since := uint64(0)
		if !s.initial || !first {
			since = s.from - a.eventBase
		}
		evs, v := a.runtime.Events(since)
		switch {
		case first && !s.initial && s.from < a.eventBase:
			s.tooOld(s.from) // a version of a gateway before this one
			return
		case first && !s.initial && s.from > a.eventBase+v:
			s.tooLarge(s.from, a.eventBase+v)
			return
		}
		for _, ev := range evs {
			e, ok := match(ev)
			if !ok {
				continue
			}
			typ := watch.Modified
			if ev.Added > since {
				typ = watch.Added
			}
			var obj any = e
			if table {
				obj = eventTable(r, []corev1.Event{e}, e.ResourceVersion)
			}
			if s.send(typ, obj) != nil {
				return
			}
		}
		s.from = a.eventBase + v
		if !s.wait(changed, nil) {
			return
		}
	}
}

// eventObject is a container event as its pod's Event; ok is false once
// its sandbox is gone (or is another made since with its id).
func (a *API) eventObject(ev container.Event) (corev1.Event, bool) {
	sb, err := a.sandboxes.Get(ev.Sandbox)
	if err != nil || ev.First.Before(sb.Created()) {
		return corev1.Event{}, false
	}
	pod := a.podName(sb)
	typ := corev1.EventTypeNormal
	if ev.Warning {
		typ = corev1.EventTypeWarning
	}
	return corev1.Event{
		TypeMeta: metav1.TypeMeta{Kind: "Event", APIVersion: "v1"},
		ObjectMeta: metav1.ObjectMeta{Name: pod + "." + strconv.FormatUint(ev.Added, 16), Namespace: Namespace,
			CreationTimestamp: metav1.NewTime(ev.First), ResourceVersion: strconv.FormatUint(a.eventBase+ev.Version, 10)},
		InvolvedObject: corev1.ObjectReference{Kind: "Pod", Namespace: Namespace, Name: pod, UID: a.podUID(sb), APIVersion: "v1",
			FieldPath: fmt.Sprintf("spec.containers{%s}", ev.Container)},
		Reason: ev.Reason, Message: ev.Message, Type: typ, Count: int32(ev.Count),
		FirstTimestamp: metav1.NewTime(ev.First), LastTimestamp: metav1.NewTime(ev.Last),
		Source:              corev1.EventSource{Component: "gateway", Host: a.cfg.Node},
		ReportingController: "gateway", ReportingInstance: a.cfg.Node,
	}, true
}

// eventTable is the Table kubectl get events prints: the API server's
// event columns (the wide ones at priority 1).
func eventTable(r *http.Request, events []corev1.Event, rv string) metav1.Table {
	t := metav1.Table{TypeMeta: metav1.TypeMeta{Kind: "Table", APIVersion: "meta.k8s.io/v1"}, ListMeta: metav1.ListMeta{ResourceVersion: rv},
		ColumnDefinitions: []metav1.TableColumnDefinition{
			{Name: "Last Seen", Type: "string", Description: "since it last happened"},
			{Name: "Type", Type: "string", Description: "Normal or Warning"},
			{Name: "Reason", Type: "string"},
			{Name: "Object", Type: "string", Description: "the pod"},
			{Name: "Subobject", Type: "string", Priority: 1, Description: "the container"},
			{Name: "Source", Type: "string", Priority: 1},
			{Name: "Message", Type: "string"},
			{Name: "First Seen", Type: "string", Priority: 1},
			{Name: "Count", Type: "string", Priority: 1},
			{Name: "Name", Type: "string", Format: "name", Priority: 1},
		},
		Rows: []metav1.TableRow{},
	}
	for _, e := range events {
		row := metav1.TableRow{Cells: []any{since(e.LastTimestamp.Time), e.Type, e.Reason, "pod/" + e.InvolvedObject.Name,
			e.InvolvedObject.FieldPath, e.Source.Component + ", " + e.Source.Host, e.Message, since(e.FirstTimestamp.Time),
			strconv.Itoa(int(e.Count)), e.Name}}
		row.Object = rowObject(r, e, e.ObjectMeta)
		t.Rows = append(t.Rows, row)
	}
	return t
}

func since(t time.Time) string { return duration.HumanDuration(time.Since(t)) }
