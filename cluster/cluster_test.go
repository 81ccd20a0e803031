package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestParseSpec(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string // the URLs resolved, or the error's start
	}{
		{"", ""},
		{"http://10.0.0.1:8080, https://b.example:443", "http://10.0.0.1:8080 https://b.example:443"},
		{"dns://localhost:8080", "http://127.0.0.1:8080"},
		{"10.0.0.1:8080", "error"},
		{"ftp://x:1", "error"},
		{"dns://localhost", "error"},
		{"dns+srv://", "error"},
	} {
		urls, err := resolve(context.Background(), tc.in, time.Second, "")
		var got []string
		for _, u := range urls {
			got = append(got, u.String())
		}
		if err != nil {
			got = []string{"error"}
		}
		// localhost may also resolve to ::1.
		if s := strings.Join(got, " "); s != tc.want && !(strings.HasPrefix(tc.in, "dns://localhost:") && strings.Contains(s, tc.want)) {
			t.Errorf("%q: %q, want %q", tc.in, s, tc.want)
		}
	}
}

func TestTarget(t *testing.T) {
	for path, want := range map[string]string{
		"/api/v1/containers/c1/exec":                        "containers c1",
		"/api/v1/sessions/abc":                              "sessions abc",
		"/api/v1/recordings/abc":                            "recordings abc",
		"/api/v1/namespaces/default/pods/host.n2/exec":      "sandboxes host.n2",
		"/api/v1/containers":                                "",
		"/api/v1/containers/":                               "",
		"/healthz":                                          "",
		"/api/v1/namespaces/default/pods/lab/portforward/x": "sandboxes lab",
	} {
		r, _ := http.NewRequest("GET", path, nil)
		kind, id, ok := target(r)
		got := ""
		if ok {
			got = kind + " " + id
		}
		if got != want {
			t.Errorf("%s: %q, want %q", path, got, want)
		}
	}
}

// TestMerge: the gateway's lists get each item's node and the replicas
// that did not answer; a Table's rows and a PodList's items are joined.
func TestMerge(t *testing.T) {
	out, err := merge([]json.RawMessage{[]byte(`{"items":[{"id":"a"}]}`), []byte(`{"items":[{"id":"b"},{"id":"c"}]}`)},
		[]string{"n1", "n2"}, []string{"n3"}, "/api/v1/containers")
	if err != nil || string(out) != `{"items":[{"id":"a","node":"n1"},{"id":"b","node":"n2"},{"id":"c","node":"n2"}],"unreachable":["n3"]}` {
		t.Errorf("%s %v", out, err)
	}
	out, err = merge([]json.RawMessage{[]byte(`{"kind":"Table","rows":[{"cells":["a"]}]}`), []byte(`{"kind":"Table","rows":[{"cells":["b"]}]}`)},
		[]string{"n1", "n2"}, nil, "/api/v1/namespaces/default/pods")
	if err != nil || string(out) != `{"kind":"Table","rows":[{"cells":["a"]},{"cells":["b"]}]}` {
		t.Errorf("%s %v", out, err)
	}
	// A pod list's version names each replica's, for a watch from it.
	out, err = merge([]json.RawMessage{[]byte(`{"kind":"PodList","metadata":{"resourceVersion":"17"},"items":[]}`),
		[]byte(`{"kind":"PodList","metadata":{"resourceVersion":"9"},"items":[{"metadata":{"name":"b"}}]}`)},
		[]string{"n1", "n2"}, nil, "/api/v1/pods")
	if err != nil || string(out) != `{"items":[{"metadata":{"name":"b"}}],"kind":"PodList","metadata":{"resourceVersion":"n1=17\u0026n2=9"}}` {
		t.Errorf("%s %v", out, err)
	}
}

// TestVersions: a merged resource version gives back each replica's, and
// nothing else passes for one.
func TestVersions(t *testing.T) {
	rvs := map[string]string{"n1": "17", "a b&c=": "1796410803020423"}
	got, ok := splitVersions(joinVersions(rvs))
	if !ok || !maps.Equal(got, rvs) {
		t.Errorf("%q: %v %v", joinVersions(rvs), got, ok)
	}
	for _, s := range []string{"", "17", "n1", "n1=", "n1=x", "n1=1&n1=2", "=5", "%zz=1"} {
		if got, ok := splitVersions(s); ok {
			t.Errorf("%q taken for a merged version: %v", s, got)
		}
	}
}

func FuzzSplitVersions(f *testing.F) {
	for _, s := range []string{"n1=17&n2=9", "17", "n1=1&n1=2", "%zz"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		rvs, ok := splitVersions(s)
		if !ok {
			return
		}
		if again, ok := splitVersions(joinVersions(rvs)); !ok || !maps.Equal(again, rvs) {
			t.Fatalf("%q: %v, then %v %v", s, rvs, again, ok)
		}
	})
}

func FuzzParseSpec(f *testing.F) {
	for _, s := range []string{"", "http://a:1,http://b:2", "dns://x:1", "dns+srv://_http._tcp.x", "https://[::1]:8443"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		sp, err := parseSpec(s)
		if err != nil {
			return
		}
		for _, u := range sp.static {
			if u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
				t.Fatalf("%q: a peer %v", s, u)
			}
		}
	})
}

// TestOwnerCache: the owners' cache does not keep expired entries past
// its size.
func TestOwnerCache(t *testing.T) {
	c, err := New(Config{Node: "n1"})
	if err != nil {
		t.Fatal(err)
	}
	for i := range ownerCacheMax {
		c.owner[fmt.Sprintf("sessions/%d", i)] = cached{node: "n2", at: time.Now().Add(-time.Hour)}
	}
	c.remember("sessions/new", "n3")
	if len(c.owner) != 1 || c.owner["sessions/new"].node != "n3" {
		t.Errorf("%d entries after a sweep", len(c.owner))
	}
}
