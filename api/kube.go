package api

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
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

	authnv1 "k8s.io/api/authentication/v1"
	authzv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/duration"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/watch"

	"gateway/container"
	"gateway/internal/reqerr"
	"gateway/sandbox"
	"gateway/stream"
)

// The Kubernetes API, for kubectl and client-go straight at the gateway:
// discovery, and the gateway's sandboxes as pods of namespace default
// (their containers are the pod's containers, as in the CRI, where the pod
// sandbox holds the network), with the exec, attach, portforward and log
// subresources. Only what kubectl reads of a pod is filled in.

// Namespace is the one namespace: every sandbox is a pod in it.
const Namespace = "default"

// DefaultContainerAnnotation names the container kubectl picks without -c.
const DefaultContainerAnnotation = "kubectl.kubernetes.io/default-container"

// kubeVersion is what /version says: the Kubernetes minor version whose
// kubectl the gateway is tested with, so that kubectl sees no skew.
var kubeVersion = map[string]string{"major": "1", "minor": "37", "gitVersion": "v1.37.0+gateway",
	"platform": "linux/amd64", "goVersion": "", "compiler": "gc"}

func (a *API) kubeRoutes(route func(method, path string, h http.HandlerFunc)) {
	auth := a.authenticated
	route("GET", "/api", auth(a.apiVersions))
	route("GET", "/apis", auth(a.apiGroups))
	route("GET", "/api/v1", auth(a.apiResources))
	route("GET", "/version", auth(func(w http.ResponseWriter, r *http.Request) { writeJSON(w, http.StatusOK, kubeVersion) }))
	route("GET", "/api/v1/pods", auth(a.listPods))
	route("GET", "/api/v1/namespaces/{ns}/pods", auth(a.listPods))
	route("GET", "/api/v1/namespaces/{ns}/pods/{pod}", auth(a.getPod))
	route("DELETE", "/api/v1/namespaces/{ns}/pods/{pod}", auth(a.deletePod))
	route("GET", "/api/v1/events", auth(a.listEvents))
	route("GET", "/api/v1/namespaces/{ns}/events", auth(a.listEvents))
	route("GET", "/api/v1/namespaces", auth(a.listNamespaces))
	route("GET", "/api/v1/namespaces/{ns}", auth(a.getNamespace))
	for _, m := range []string{"GET", "POST"} { // WebSocket GETs, SPDY POSTs
		route(m, "/api/v1/namespaces/{ns}/pods/{pod}/exec", auth(a.work(a.podStream(a.podExec))))
		route(m, "/api/v1/namespaces/{ns}/pods/{pod}/attach", auth(a.work(a.podStream(a.podAttach))))
		route(m, "/api/v1/namespaces/{ns}/pods/{pod}/portforward", auth(a.work(a.podStream(a.podPortForward))))
	}
	route("GET", "/api/v1/namespaces/{ns}/pods/{pod}/log", auth(a.podLog))
	a.authRoutes(route)
}

func (a *API) apiVersions(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, metav1.APIVersions{TypeMeta: metav1.TypeMeta{Kind: "APIVersions"}, Versions: []string{"v1"},
		ServerAddressByClientCIDRs: []metav1.ServerAddressByClientCIDR{{ClientCIDR: "0.0.0.0/0", ServerAddress: r.Host}}})
}

func (a *API) apiGroups(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, apiGroupList())
}

func (a *API) apiResources(w http.ResponseWriter, r *http.Request) {
	sub := func(name string, verbs ...string) metav1.APIResource {
		return metav1.APIResource{Name: "pods/" + name, Namespaced: true, Kind: kindOf(name), Verbs: verbs}
	}
	writeJSON(w, http.StatusOK, metav1.APIResourceList{
		TypeMeta:     metav1.TypeMeta{Kind: "APIResourceList", APIVersion: "v1"},
		GroupVersion: "v1",
		APIResources: []metav1.APIResource{
			{Name: "pods", SingularName: "pod", Namespaced: true, Kind: "Pod", Verbs: []string{"get", "list", "watch", "delete"},
				ShortNames: []string{"po"}, Categories: []string{"all"}},
			sub("attach", "create", "get"), sub("exec", "create", "get"), sub("log", "get"), sub("portforward", "create", "get"),
			{Name: "events", SingularName: "event", Namespaced: true, Kind: "Event", Verbs: []string{"list", "watch"}, ShortNames: []string{"ev"}},
			{Name: "namespaces", SingularName: "namespace", Kind: "Namespace", Verbs: []string{"get", "list", "watch"}, ShortNames: []string{"ns"}},
		},
	})
}

func kindOf(sub string) string {
	switch sub {
	case "attach":
		return "PodAttachOptions"
	case "exec":
		return "PodExecOptions"
	case "log":
		return "Pod"
	}
	return "PodPortForwardOptions"
}

// kubeCodecs decode the bodies clients send as kubectl does: protobuf
// (the clientset's choice for built-in kinds), JSON or YAML.
var kubeCodecs = func() serializer.CodecFactory {
	s := runtime.NewScheme()
	metav1.AddToGroupVersion(s, schema.GroupVersion{Version: "v1"})                       // DeleteOptions
	metav1.AddToGroupVersion(s, schema.GroupVersion{Group: "meta.k8s.io", Version: "v1"}) // as some clients send them
	utilruntime.Must(authnv1.AddToScheme(s))
	utilruntime.Must(authzv1.AddToScheme(s))
	return serializer.NewCodecFactory(s)
}()

// decodeKube reads a body into obj, of the given kind (in group's v1); a
// body that names no kind is taken for one.
func decodeKube(w http.ResponseWriter, r *http.Request, obj runtime.Object, group, kind string) error {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<16))
	if err != nil {
		return bodyError(err)
	}
	want := schema.GroupVersionKind{Group: group, Version: "v1", Kind: kind}
	got, gvk, err := kubeCodecs.UniversalDeserializer().Decode(body, &want, obj)
	switch {
	case err != nil:
		return reqerr.New(reqerr.ErrBadRequest, "request body: %v", err)
	case got != obj || gvk.Kind != kind:
		return reqerr.New(reqerr.ErrBadRequest, "a %s was sent where a %s is expected", gvk.Kind, kind)
	}
	obj.GetObjectKind().SetGroupVersionKind(want)
	return nil
}

// podNotFound is the Status kubectl prints for an unknown pod.
type podNotFound struct{ name string }

func (e podNotFound) Error() string                 { return fmt.Sprintf("pods %q not found", e.name) }
func (e podNotFound) Unwrap() error                 { return reqerr.ErrNotFound }
func (e podNotFound) Resource() (kind, name string) { return "pods", e.name }

// pod finds the sandbox that is pod name in namespace ns: its id, or its
// id and this replica's node (see podName); an id may hold dots.
func (a *API) pod(ns, name string) (*sandbox.Sandbox, error) {
	if ns != Namespace {
		return nil, podNotFound{name}
	}
	ids := []string{name}
	if id, ok := strings.CutSuffix(name, "."+a.cfg.Node); ok {
		ids = append(ids, id)
		if a.cfg.QualifyPods {
			ids[0], ids[1] = id, name
		}
	}
	for _, id := range ids {
		if !sandbox.IDPattern.MatchString(id) {
			continue
		}
		if sb, err := a.sandboxes.Get(id); err == nil {
			return sb, nil
		}
	}
	return nil, podNotFound{name}
}

// podUID is a sandbox's pod's uid: the same for the sandbox's life, and
// another for a sandbox made again with its id.
func (a *API) podUID(sb *sandbox.Sandbox) types.UID {
	uid := sha256.Sum256([]byte(a.cfg.Node + "/" + sb.ID() + "/" + sb.Created().String()))
	return types.UID(fmt.Sprintf("%x", uid[:16]))
}

// podName is a sandbox's pod's name: SANDBOX.NODE among replicas.
func (a *API) podName(sb *sandbox.Sandbox) string {
	if a.cfg.QualifyPods {
		return sb.ID() + "." + a.cfg.Node
	}
	return sb.ID()
}

// podContainers are a sandbox's containers, oldest first: the first is
// the pod's default.
func (a *API) podContainers(sb *sandbox.Sandbox) []*container.Container {
	var out []*container.Container
	for _, c := range a.runtime.List() {
		if c.Spec().Sandbox == sb.ID() {
			out = append(out, c)
		}
	}
	return oldestFirst(out)
}

func oldestFirst(cs []*container.Container) []*container.Container {
	slices.SortStableFunc(cs, func(x, y *container.Container) int { return x.Created().Compare(y.Created()) })
	return cs
}

// podObject is the pod of a sandbox with containers cs, as kubectl reads
// one; its resource version is the pod cache's to give.
func (a *API) podObject(sb *sandbox.Sandbox, cs []*container.Container) corev1.Pod {
	cs = oldestFirst(cs)
	pod := corev1.Pod{
		TypeMeta: metav1.TypeMeta{Kind: "Pod", APIVersion: "v1"},
		ObjectMeta: metav1.ObjectMeta{Name: a.podName(sb), Namespace: Namespace, UID: a.podUID(sb),
			CreationTimestamp: metav1.NewTime(sb.Created()),
			Labels:            map[string]string{"gateway/sandbox": sb.ID(), "gateway/network": networkLabel(sb)}},
		Spec: corev1.PodSpec{NodeName: a.cfg.Node, HostNetwork: sb.Spec().Network == sandbox.NetworkHost,
			RestartPolicy: corev1.RestartPolicyNever},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, HostIP: "127.0.0.1", StartTime: ptr(metav1.NewTime(sb.Created()))},
	}
	if pod.Spec.HostNetwork {
		pod.Status.PodIP = "127.0.0.1"
	}
	running, finished, failed := 0, 0, 0
	for _, c := range cs {
		spec, info := c.Spec(), c.Info()
		if pod.Annotations == nil {
			pod.Annotations = map[string]string{DefaultContainerAnnotation: spec.ID}
		}
		ct := corev1.Container{Name: spec.ID, Image: spec.Command[0], Command: spec.Command, WorkingDir: spec.WorkingDir,
			TTY: spec.TTY, Stdin: spec.Stdin}
		for _, k := range slices.Sorted(maps.Keys(spec.Env)) {
			ct.Env = append(ct.Env, corev1.EnvVar{Name: k, Value: spec.Env[k]})
		}
		pod.Spec.Containers = append(pod.Spec.Containers, ct)
		st := corev1.ContainerStatus{Name: spec.ID, Image: spec.Command[0], ImageID: spec.Command[0],
			ContainerID: "gateway://" + spec.ID, RestartCount: int32(info.Restarts)}
		switch info.State {
		case container.Running:
			running++
			st.Ready, st.Started = true, ptr(true)
			st.State.Running = &corev1.ContainerStateRunning{StartedAt: timeOf(info.StartedAt)}
		case container.Exited:
			term := &corev1.ContainerStateTerminated{StartedAt: timeOf(info.StartedAt), FinishedAt: timeOf(info.FinishedAt),
				Reason: "Completed", Message: info.Message}
			if info.ExitCode != nil {
				term.ExitCode = int32(*info.ExitCode)
			}
			if term.ExitCode != 0 {
				term.Reason = "Error"
			}
			if spec.RestartPolicy == container.RestartNever || (spec.RestartPolicy == container.RestartOnFailure && term.ExitCode == 0) {
				st.State.Terminated = term
				finished++
				if term.ExitCode != 0 {
					failed++
				}
			} else { // waiting for its restart
				st.State.Waiting = &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff", Message: "back-off restarting the container"}
				st.LastTerminationState.Terminated = term
			}
		default:
			st.State.Waiting = &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}
		}
		pod.Status.ContainerStatuses = append(pod.Status.ContainerStatuses, st)
	}
	switch {
	case running > 0 || len(cs) == 0: // a sandbox without containers is its network, up
	case finished == len(cs) && failed == 0:
		pod.Status.Phase = corev1.PodSucceeded
	case finished == len(cs):
		pod.Status.Phase = corev1.PodFailed
	default:
		pod.Status.Phase = corev1.PodPending
	}
	ready := corev1.ConditionFalse
	if running == len(cs) {
		ready = corev1.ConditionTrue
	}
	for _, t := range []corev1.PodConditionType{corev1.PodInitialized, corev1.PodReady, corev1.ContainersReady, corev1.PodScheduled} {
		s := corev1.ConditionTrue
		if t == corev1.PodReady || t == corev1.ContainersReady {
			s = ready
		}
		pod.Status.Conditions = append(pod.Status.Conditions, corev1.PodCondition{Type: t, Status: s,
			LastTransitionTime: metav1.NewTime(sb.Created())})
	}
	return pod
}

func networkLabel(sb *sandbox.Sandbox) string {
	switch n := sb.Spec().Network; n {
	case sandbox.NetworkHost, sandbox.NetworkNew:
		return n
	}
	return "path"
}

func timeOf(t *time.Time) metav1.Time {
	if t == nil {
		return metav1.Time{}
	}
	return metav1.NewTime(*t)
}

func ptr[T any](v T) *T { return &v }

func (a *API) getPod(w http.ResponseWriter, r *http.Request) {
	sb, err := a.pod(r.PathValue("ns"), r.PathValue("pod"))
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	pod, err := a.podOf(r, sb)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	if wantsTable(r) {
		writeJSON(w, http.StatusOK, podTable(r, []corev1.Pod{pod}, pod.ResourceVersion))
		return
	}
	writeJSON(w, http.StatusOK, pod)
}

// podOf is a sandbox's pod as the pod cache has it: NotFound if the
// sandbox was removed meanwhile.
func (a *API) podOf(r *http.Request, sb *sandbox.Sandbox) (corev1.Pod, error) {
	pods, _ := a.syncPods()
	i := slices.IndexFunc(pods, func(p corev1.Pod) bool { return p.Name == a.podName(sb) })
	if i < 0 {
		return corev1.Pod{}, podNotFound{r.PathValue("pod")}
	}
	return pods[i], nil
}

// deletePod removes a sandbox and its containers, as kubectl delete pod
// asks: each container gets the grace period asked for (the runtime's
// at most), then is killed. The answer is the pod as it was, with its
// deletion's time; with dryRun nothing is removed. The host pod stays.
func (a *API) deletePod(w http.ResponseWriter, r *http.Request) {
	err := a.deletePodErr(w, r)
	if err != nil {
		a.writeError(w, r, err)
	}
}

func (a *API) deletePodErr(w http.ResponseWriter, r *http.Request) error {
	var opts metav1.DeleteOptions
	if r.ContentLength != 0 && r.Body != http.NoBody {
		if err := decodeKube(w, r, &opts, "", "DeleteOptions"); err != nil {
			return err
		}
	}
	// The API server reads DeleteOptions from the query too.
	opts.DryRun = append(opts.DryRun, r.URL.Query()["dryRun"]...)
	if s := r.URL.Query().Get("gracePeriodSeconds"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return reqerr.New(reqerr.ErrBadRequest, "gracePeriodSeconds %q: want a whole number of seconds", s)
		}
		opts.GracePeriodSeconds = &n
	}
	grace := a.cfg.StopGrace
	if g := opts.GracePeriodSeconds; g != nil {
		if *g < 0 {
			return reqerr.New(reqerr.ErrBadRequest, "gracePeriodSeconds %d: want 0 or more", *g)
		}
		if *g < int64(grace/time.Second) {
			grace = time.Duration(*g) * time.Second
		}
	}
	sb, err := a.pod(r.PathValue("ns"), r.PathValue("pod"))
	if err != nil {
		return err
	}
	if sb.ID() == sandbox.HostID {
		return reqerr.New(reqerr.ErrConflict, "pod %q is the gateway's host sandbox: it cannot be deleted (delete its containers instead)", a.podName(sb))
	}
	pod, err := a.podOf(r, sb)
	if err != nil {
		return err
	}
	if pre := opts.Preconditions; pre != nil {
		if pre.UID != nil && *pre.UID != pod.UID {
			return reqerr.New(reqerr.ErrConflict, "Precondition failed: UID in precondition: %s, UID in object meta: %s", *pre.UID, pod.UID)
		}
		if pre.ResourceVersion != nil && *pre.ResourceVersion != pod.ResourceVersion {
			return reqerr.New(reqerr.ErrConflict, "Precondition failed: ResourceVersion in precondition: %s, ResourceVersion in object meta: %s",
				*pre.ResourceVersion, pod.ResourceVersion)
		}
	}
	for _, d := range opts.DryRun {
		if d != metav1.DryRunAll {
			return reqerr.New(reqerr.ErrBadRequest, "dryRun %q: want All", d)
		}
	}
	seconds := int64(grace / time.Second)
	pod.DeletionTimestamp, pod.DeletionGracePeriodSeconds = ptr(metav1.Now()), &seconds
	if len(opts.DryRun) == 0 {
		// The containers stop together, each within the grace.
		var wg sync.WaitGroup
		cs := a.podContainers(sb)
		errs := make([]error, len(cs))
		for i, c := range cs {
			wg.Go(func() { errs[i] = a.removeContainer(r, c.ID(), grace) })
		}
		wg.Wait()
		for _, err := range errs {
			// Past its grace a container is killed and removed: the
			// deadline's error says only that.
			if err != nil && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, container.ErrNotFound) {
				return err
			}
		}
		if err := a.removeSandbox(r, sb.ID()); err != nil {
			return err
		}
	}
	writeJSON(w, http.StatusOK, pod)
	return nil
}

// listPods lists the pods its selectors match, or watches them.
func (a *API) listPods(w http.ResponseWriter, r *http.Request) {
	sel, err := parsePodSelector(r)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	if isTrue(r.URL.Query(), "watch") {
		a.watchPods(w, r, sel)
		return
	}
	pods, rv := a.syncPods()
	pods, version := sel.filter(pods), strconv.FormatUint(rv, 10)
	if wantsTable(r) {
		writeJSON(w, http.StatusOK, podTable(r, pods, version))
		return
	}
	if pods == nil {
		pods = []corev1.Pod{}
	}
	writeJSON(w, http.StatusOK, corev1.PodList{TypeMeta: metav1.TypeMeta{Kind: "PodList", APIVersion: "v1"},
		ListMeta: metav1.ListMeta{ResourceVersion: version}, Items: pods})
}

// namespace is the one namespace's object; kubectl reads it to explain a
// pod that is not found.
func (a *API) namespace() corev1.Namespace {
	return corev1.Namespace{TypeMeta: metav1.TypeMeta{Kind: "Namespace", APIVersion: "v1"},
		ObjectMeta: metav1.ObjectMeta{Name: Namespace, UID: "default", ResourceVersion: "1", CreationTimestamp: metav1.NewTime(a.started)},
		Status:     corev1.NamespaceStatus{Phase: corev1.NamespaceActive}}
}

type namespaceNotFound struct{ name string }

func (e namespaceNotFound) Error() string                 { return fmt.Sprintf("namespaces %q not found", e.name) }
func (e namespaceNotFound) Unwrap() error                 { return reqerr.ErrNotFound }
func (e namespaceNotFound) Resource() (kind, name string) { return "namespaces", e.name }

func (a *API) getNamespace(w http.ResponseWriter, r *http.Request) {
	if ns := r.PathValue("ns"); ns != Namespace {
		a.writeError(w, r, namespaceNotFound{ns})
		return
	}
	writeJSON(w, http.StatusOK, a.namespace())
}

// listNamespaces lists the one namespace, or watches it: it never
// changes, so a watch says it is there (from no version) and then waits
// for its end.
func (a *API) listNamespaces(w http.ResponseWriter, r *http.Request) {
	if !isTrue(r.URL.Query(), "watch") {
		writeJSON(w, http.StatusOK, corev1.NamespaceList{TypeMeta: metav1.TypeMeta{Kind: "NamespaceList", APIVersion: "v1"},
			ListMeta: metav1.ListMeta{ResourceVersion: "1"}, Items: []corev1.Namespace{a.namespace()}})
		return
	}
	s := a.startWatch(w, r)
	if s == nil {
		return
	}
	defer s.stop()
	if s.initial && s.send(watch.Added, a.namespace()) != nil {
		return
	}
	for s.wait(nil, nil) {
	}
}

// wantsTable reports whether the client asks for the Table form, as kubectl
// get does for what it prints.
func wantsTable(r *http.Request) bool {
	for _, v := range r.Header.Values("Accept") {
		if strings.Contains(v, "as=Table") {
			return true
		}
	}
	return false
}

// podTable is the Table kubectl get pods prints: the columns of the API
// server's pod printer (the wide ones at priority 1).
func podTable(r *http.Request, pods []corev1.Pod, rv string) metav1.Table {
	t := metav1.Table{TypeMeta: metav1.TypeMeta{Kind: "Table", APIVersion: "meta.k8s.io/v1"}, ListMeta: metav1.ListMeta{ResourceVersion: rv},
		ColumnDefinitions: []metav1.TableColumnDefinition{
			{Name: "Name", Type: "string", Format: "name", Description: "the sandbox"},
			{Name: "Ready", Type: "string", Description: "containers running, of all"},
			{Name: "Status", Type: "string", Description: "the pod's phase, or why it is not running"},
			{Name: "Restarts", Type: "string", Description: "restarts of its containers"},
			{Name: "Age", Type: "string", Description: "since the sandbox was created"},
			{Name: "IP", Type: "string", Priority: 1, Description: "the pod's address"},
			{Name: "Node", Type: "string", Priority: 1, Description: "the gateway serving it"},
			{Name: "Nominated Node", Type: "string", Priority: 1},
			{Name: "Readiness Gates", Type: "string", Priority: 1},
		},
		Rows: []metav1.TableRow{},
	}
	for _, p := range pods {
		ready, restarts, status := 0, int32(0), string(p.Status.Phase)
		var last time.Time
		for _, cs := range p.Status.ContainerStatuses {
			if cs.Ready {
				ready++
			}
			restarts += cs.RestartCount
			if cs.State.Waiting != nil {
				status = cs.State.Waiting.Reason
			} else if cs.State.Terminated != nil && p.Status.Phase != corev1.PodRunning {
				status = cs.State.Terminated.Reason
			}
			if lt := cs.LastTerminationState.Terminated; lt != nil && lt.FinishedAt.After(last) {
				last = lt.FinishedAt.Time
			}
		}
		restartCell := fmt.Sprint(restarts)
		if !last.IsZero() {
			restartCell += fmt.Sprintf(" (%s ago)", duration.HumanDuration(time.Since(last)))
		}
		ip := p.Status.PodIP
		if ip == "" {
			ip = "<none>"
		}
		row := metav1.TableRow{Cells: []any{p.Name, fmt.Sprintf("%d/%d", ready, len(p.Spec.Containers)), status, restartCell,
			duration.HumanDuration(time.Since(p.CreationTimestamp.Time)), ip, p.Spec.NodeName, "<none>", "<none>"}}
		row.Object = rowObject(r, p, p.ObjectMeta)
		t.Rows = append(t.Rows, row)
	}
	return t
}

// rowObject is what a Table's row carries of its object, as includeObject
// asks: the object, nothing, or (the API server's default) its metadata.
func rowObject(r *http.Request, obj any, meta metav1.ObjectMeta) runtime.RawExtension {
	var b []byte
	switch r.URL.Query().Get("includeObject") {
	case "None":
		return runtime.RawExtension{}
	case "Object":
		b, _ = json.Marshal(obj)
	default:
		b, _ = json.Marshal(metav1.PartialObjectMetadata{TypeMeta: metav1.TypeMeta{Kind: "PartialObjectMetadata",
			APIVersion: "meta.k8s.io/v1"}, ObjectMeta: meta})
	}
	return runtime.RawExtension{Raw: b}
}

// podContainer resolves a request's pod and container: the container
// parameter, or the pod's default.
func (a *API) podContainer(r *http.Request, q url.Values) (*sandbox.Sandbox, *container.Container, error) {
	sb, err := a.pod(r.PathValue("ns"), r.PathValue("pod"))
	if err != nil {
		return nil, nil, err
	}
	cs := a.podContainers(sb)
	name := q.Get("container")
	for _, c := range cs {
		if name == "" || c.ID() == name {
			return sb, c, nil
		}
	}
	if name == "" {
		return nil, nil, reqerr.New(reqerr.ErrBadRequest, "pod %q has no container", sb.ID())
	}
	return nil, nil, reqerr.New(reqerr.ErrBadRequest, "container %s is not valid for pod %s", name, sb.ID())
}

// podStream serves a pod's streaming subresource: the checks of every
// stream (a WebSocket or SPDY upgrade, from an allowed origin), then
// serve, whose refusals get a Status (unless already answered).
func (a *API) podStream(serve func(w http.ResponseWriter, r *http.Request, q url.Values) error) http.HandlerFunc {
	return a.streamChecks(func(w http.ResponseWriter, r *http.Request) {
		q, err := url.ParseQuery(r.URL.RawQuery)
		if err != nil {
			err = reqerr.New(reqerr.ErrBadRequest, "query: %v", err)
		} else {
			err = serve(w, r, q)
		}
		if err != nil && !stream.IsAnswered(err) {
			a.writeError(w, r, err)
		}
	})
}

func (a *API) podExec(w http.ResponseWriter, r *http.Request, q url.Values) error {
	_, c, err := a.podContainer(r, q)
	if err != nil {
		return err
	}
	return a.streams.Exec(w, r, c.ID(), stream.ParseExecQuery(q))
}

func (a *API) podAttach(w http.ResponseWriter, r *http.Request, q url.Values) error {
	_, c, err := a.podContainer(r, q)
	if err != nil {
		return err
	}
	opts := stream.ParseAttachQuery(q)
	if opts.Replay == nil { // kubectl attach shows what comes, as with a kubelet
		opts.Replay = ptr(false)
	}
	return a.streams.Attach(w, r, c.ID(), opts)
}

func (a *API) podPortForward(w http.ResponseWriter, r *http.Request, q url.Values) error {
	sb, err := a.pod(r.PathValue("ns"), r.PathValue("pod"))
	if err != nil {
		return err
	}
	if stream.IsSPDYPortForward(r) {
		return a.streams.PortForwardSPDY(w, r, sb.ID())
	}
	opts, err := stream.ParsePortForwardQuery(q) // the kubelet's channel protocol, ports in the query
	if err != nil {
		return err
	}
	return a.streams.PortForward(w, r, sb.ID(), opts)
}
