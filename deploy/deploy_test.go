// Package deploy holds the manifests and proxy configuration that run the
// gateway on Kubernetes and behind HAProxy; its test checks them.
package deploy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"
)

// objects are the manifests, decoded strictly: an unknown field anywhere
// is an error (no schema download is possible here; the Go types are the
// schema).
type objects struct {
	daemonSets      []*appsv1.DaemonSet
	services        []*corev1.Service
	configMaps      []*corev1.ConfigMap
	namespaces      []*corev1.Namespace
	serviceMonitors []*monitoringv1.ServiceMonitor
}

func decode(t *testing.T) objects {
	t.Helper()
	paths, err := filepath.Glob("kubernetes/*.yaml")
	if err != nil || len(paths) == 0 {
		t.Fatalf("no manifests: %v", err)
	}
	var o objects
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range bytes.Split(b, []byte("\n---\n")) {
			js, err := yaml.YAMLToJSON(doc)
			if err != nil {
				t.Fatalf("%s #%d: %v", p, i, err)
			}
			var meta struct{ APIVersion, Kind string }
			json.Unmarshal(js, &meta)
			var obj any
			switch meta.APIVersion + " " + meta.Kind {
			case "apps/v1 DaemonSet":
				ds := &appsv1.DaemonSet{}
				o.daemonSets, obj = append(o.daemonSets, ds), ds
			case "v1 Service":
				s := &corev1.Service{}
				o.services, obj = append(o.services, s), s
			case "v1 ConfigMap":
				c := &corev1.ConfigMap{}
				o.configMaps, obj = append(o.configMaps, c), c
			case "v1 Namespace":
				n := &corev1.Namespace{}
				o.namespaces, obj = append(o.namespaces, n), n
			case "monitoring.coreos.com/v1 ServiceMonitor":
				m := &monitoringv1.ServiceMonitor{}
				o.serviceMonitors, obj = append(o.serviceMonitors, m), m
			default:
				t.Fatalf("%s #%d: unexpected %s %s", p, i, meta.APIVersion, meta.Kind)
			}
			dec := json.NewDecoder(bytes.NewReader(js))
			dec.DisallowUnknownFields()
			if err := dec.Decode(obj); err != nil {
				t.Fatalf("%s #%d: %v", p, i, err)
			}
		}
	}
	return o
}

// TestManifests: every manifest decodes strictly into its API type, and
// the parts fit: selectors match the pods' labels, probes and services
// name ports the container has, the peers' DNS name is the headless
// Service, the ServiceMonitor finds the client Service's port, the config
// is the ConfigMap's, and the token comes from a Secret.
func TestManifests(t *testing.T) {
	o := decode(t)
	if len(o.daemonSets) != 1 || len(o.serviceMonitors) != 1 || len(o.configMaps) != 1 || len(o.namespaces) != 1 {
		t.Fatalf("want one DaemonSet, ServiceMonitor, ConfigMap and Namespace: %+v", o)
	}
	ds := o.daemonSets[0]
	ns := o.namespaces[0].Name
	pod := ds.Spec.Template
	sel, err := metaSelector(ds.Spec.Selector.MatchLabels)
	if err != nil || !sel.Matches(labels.Set(pod.Labels)) {
		t.Errorf("the DaemonSet's selector %v does not match its pods' labels %v", ds.Spec.Selector.MatchLabels, pod.Labels)
	}
	if len(pod.Spec.Containers) != 1 {
		t.Fatalf("containers: %d", len(pod.Spec.Containers))
	}
	c := pod.Spec.Containers[0]
	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	hasPort := func(what string, p intstr.IntOrString) {
		if p.Type == intstr.String && ports[p.StrVal] == 0 || p.Type == intstr.Int && !slices.Contains(mapValues(ports), p.IntVal) {
			t.Errorf("%s: port %v is not one of the container's %v", what, p.String(), ports)
		}
	}
	for what, pr := range map[string]*corev1.Probe{"liveness": c.LivenessProbe, "readiness": c.ReadinessProbe} {
		if pr == nil || pr.HTTPGet == nil {
			t.Errorf("no %s probe", what)
			continue
		}
		hasPort(what+" probe", pr.HTTPGet.Port)
		if want := map[string]string{"liveness": "/healthz", "readiness": "/readyz"}[what]; pr.HTTPGet.Path != want {
			t.Errorf("%s probe path %q, want %q", what, pr.HTTPGet.Path, want)
		}
	}
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Limits.Memory().IsZero() {
		t.Error("resources: want CPU requested and memory limited")
	}
	env := map[string]corev1.EnvVar{}
	for _, e := range c.Env {
		env[e.Name] = e
	}
	if e := env["GATEWAY_NODE"]; e.ValueFrom == nil || e.ValueFrom.FieldRef == nil || e.ValueFrom.FieldRef.FieldPath != "spec.nodeName" {
		t.Errorf("GATEWAY_NODE must come from the downward API: %+v", e)
	}
	if e := env["GATEWAY_TOKEN"]; e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil {
		t.Errorf("GATEWAY_TOKEN must come from a Secret: %+v", e)
	}
	caps := c.SecurityContext.Capabilities.Add
	if !slices.Contains(caps, "SYS_ADMIN") || !slices.Contains(caps, "NET_ADMIN") {
		t.Errorf("capabilities %v: a network: new sandbox needs SYS_ADMIN and NET_ADMIN", caps)
	}
	// The config file is the ConfigMap's key, mounted where --config says.
	cm := o.configMaps[0]
	var mount string
	for _, v := range pod.Spec.Volumes {
		if v.ConfigMap != nil && v.ConfigMap.Name == cm.Name {
			for _, m := range c.VolumeMounts {
				if m.Name == v.Name {
					mount = m.MountPath
				}
			}
		}
	}
	var cfgArg string
	for i, a := range c.Args {
		if a == "--config" && i+1 < len(c.Args) {
			cfgArg = c.Args[i+1]
		}
	}
	if mount == "" || filepath.Dir(cfgArg) != mount || cm.Data[filepath.Base(cfgArg)] == "" {
		t.Errorf("--config %q is not the ConfigMap %s mounted at %q (keys %v)", cfgArg, cm.Name, mount, mapKeys(cm.Data))
	}

	// Services: each selects the pods and targets a port they have; one
	// is headless, and the peers' DNS name is its.
	var headless, client *corev1.Service
	for _, s := range o.services {
		if s.Namespace != ns {
			t.Errorf("service %s in namespace %q", s.Name, s.Namespace)
		}
		if sel, _ := metaSelector(s.Spec.Selector); len(s.Spec.Selector) == 0 || !sel.Matches(labels.Set(pod.Labels)) {
			t.Errorf("service %s selects %v, not the pods (%v)", s.Name, s.Spec.Selector, pod.Labels)
		}
		for _, p := range s.Spec.Ports {
			hasPort("service "+s.Name, p.TargetPort)
		}
		if s.Spec.ClusterIP == corev1.ClusterIPNone {
			headless = s
		} else {
			client = s
		}
	}
	if headless == nil || client == nil {
		t.Fatal("want a headless Service for the peers and one for clients")
	}
	want := fmt.Sprintf("dns://%s.%s.svc.cluster.local:%d", headless.Name, ns, headless.Spec.Ports[0].Port)
	if got := env["GATEWAY_PEERS"].Value; got != want {
		t.Errorf("GATEWAY_PEERS %q, want %q", got, want)
	}
	// The ServiceMonitor finds the client Service and a port it has.
	sm := o.serviceMonitors[0]
	if sel, _ := metaSelector(sm.Spec.Selector.MatchLabels); !sel.Matches(labels.Set(client.Labels)) || sel.Matches(labels.Set(headless.Labels)) {
		t.Errorf("the ServiceMonitor selects %v: want the client Service only", sm.Spec.Selector.MatchLabels)
	}
	for _, ep := range sm.Spec.Endpoints {
		if !slices.ContainsFunc(client.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == ep.Port }) || ep.Path != "/metrics" {
			t.Errorf("ServiceMonitor endpoint %q %q", ep.Port, ep.Path)
		}
	}
	// The HAProxy front door checks readiness and keeps streams open.
	b, err := os.ReadFile("haproxy/haproxy.cfg")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{"option httpchk GET /readyz", "timeout tunnel", "http-check expect status 200"} {
		if !strings.Contains(string(b), line) {
			t.Errorf("haproxy.cfg lacks %q", line)
		}
	}
}

func metaSelector(m map[string]string) (labels.Selector, error) {
	return labels.ValidatedSelectorFromSet(m)
}

func mapValues(m map[string]int32) []int32 {
	var out []int32
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

func mapKeys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
