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

	"gateway/container"
	"gateway/internal/reqerr"
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
	q := r.URL.Query()
	if isTrue(q, "watch") {
		a.writeError(w, r, reqerr.New(reqerr.ErrMethodNotAllowed, "events cannot be watched here: list them"))
		return
	}
	ls, fs, err := parseSelectors(r, eventFields(&corev1.Event{}))
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	items := []corev1.Event{}
	if ns := r.PathValue("ns"); ns == "" || ns == Namespace {
		for _, ev := range a.runtime.Events() {
			if e, ok := a.eventObject(ev); ok && ls.Matches(labels.Set(e.Labels)) && fs.Matches(eventFields(&e)) {
				items = append(items, e)
			}
		}
	}
	_, rv := a.syncPods()
	if wantsTable(r) {
		writeJSON(w, http.StatusOK, eventTable(r, items, strconv.FormatUint(rv, 10)))
		return
	}
	writeJSON(w, http.StatusOK, corev1.EventList{TypeMeta: metav1.TypeMeta{Kind: "EventList", APIVersion: "v1"},
		ListMeta: metav1.ListMeta{ResourceVersion: strconv.FormatUint(rv, 10)}, Items: items})
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
		ObjectMeta: metav1.ObjectMeta{Name: pod + "." + strconv.FormatUint(ev.Seq, 16), Namespace: Namespace,
			CreationTimestamp: metav1.NewTime(ev.First)},
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
