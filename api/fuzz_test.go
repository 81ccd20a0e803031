package api

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"gateway/container"
	"gateway/sandbox"
	"gateway/stream"
)

// bodyKinds are the request bodies the API decodes, each with the check
// its handler makes before acting on it.
var bodyKinds = []struct {
	name     string
	new      func() any
	validate func(any) error
}{
	{"container", func() any { return new(container.Spec) }, func(v any) error { return container.Validate(*v.(*container.Spec)) }},
	{"sandbox", func() any { return new(sandbox.Spec) }, func(v any) error { return sandbox.Validate(*v.(*sandbox.Spec)) }},
	{"exec", func() any { return new(stream.ExecOptions) }, func(v any) error { return v.(*stream.ExecOptions).Validate(true) }},
	{"attach", func() any { return new(stream.AttachOptions) }, func(v any) error { return v.(*stream.AttachOptions).Validate() }},
	{"portforward", func() any { return new(stream.PortForwardOptions) }, func(v any) error { return v.(*stream.PortForwardOptions).Validate() }},
	{"exec-sync", func() any { return new(execSyncRequest) }, func(any) error { return nil }},
	{"share", func() any { return new(shareRequest) }, func(any) error { return nil }},
}

func decodeBody(b []byte, v any) error {
	r := httptest.NewRequest("POST", "/", bytes.NewReader(b))
	r.Header.Set("Content-Type", "application/json")
	return decodeJSON(httptest.NewRecorder(), r, v, 64<<10)
}

// FuzzRequestBodies: whatever a body holds, decoding and checking it end
// in a 4xx (never a panic or a 500), and what passes both encodes back to
// a body that decodes to the same value and passes again.
func FuzzRequestBodies(f *testing.F) {
	for i, s := range []string{
		`{"id":"c","command":["sh","-c","date"],"env":{"A":"1"},"workingDir":"/tmp","restartPolicy":"always","record":"required"}`,
		`{"id":"s","network":"new","ports":[8080,"8000-8100"],"record":true}`,
		`{"command":["sh"],"stdin":true,"stdout":true,"tty":true,"detach":"15m","flow":true,"info":true}`,
		`{"stdout":true,"replay":false}`,
		`{"ports":[80,443]}`,
		`{"command":["true"],"timeoutSeconds":5,"stdin":"aGkK"}`,
		`{"mode":"view","ttlSeconds":3600}`,
		`{"command":["echo","a\u0000b"],"stdout":true,"detach":1e300}`,
		`{"id":"c","env":{"A":"b\u0000"}}`,
	} {
		f.Add(uint8(i), []byte(s))
	}
	f.Fuzz(func(t *testing.T, kind uint8, body []byte) {
		k := bodyKinds[int(kind)%len(bodyKinds)]
		v := k.new()
		err := decodeBody(body, v)
		if err == nil {
			err = k.validate(v)
		}
		if err != nil {
			if code, _ := statusOf(err); code < 400 || code > 499 {
				t.Fatalf("%s %q: %d for %v", k.name, body, code, err)
			}
			return
		}
		b1, err := json.Marshal(v)
		if err != nil {
			t.Fatalf("%s %q: encoding the decoded body: %v", k.name, body, err)
		}
		v2 := k.new()
		if err := decodeBody(b1, v2); err != nil {
			t.Fatalf("%s %q encoded as %s: %v", k.name, body, b1, err)
		}
		if err := k.validate(v2); err != nil {
			t.Fatalf("%s %q encoded as %s is no longer valid: %v", k.name, body, b1, err)
		}
		if b2, _ := json.Marshal(v2); !bytes.Equal(b1, b2) {
			t.Fatalf("%s %q: encoded as %s, then as %s", k.name, body, b1, b2)
		}
	})
}

// FuzzLogOptions: kubectl logs' parameters are refused with a 400 or read
// into options that make sense: a tail of -1 (all) or more lines, a
// limit of 0 (none) or more bytes, a start not in the future.
func FuzzLogOptions(f *testing.F) {
	for _, s := range []string{
		"follow=true&tailLines=10&timestamps=1",
		"limitBytes=100&sinceSeconds=60",
		"sinceTime=2026-12-01T10:00:00Z&previous=true",
		"sinceSeconds=99999999999",
		"sinceSeconds=9223372036854775807",
		"tailLines=-1",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		q, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		before := time.Now()
		o, err := parseLogOptions(q)
		if err != nil {
			if code, _ := statusOf(err); code != 400 {
				t.Fatalf("%q: %d for %v", raw, code, err)
			}
			return
		}
		if o.tail < -1 || o.limit < 0 {
			t.Fatalf("%q: tail %d, limit %d", raw, o.tail, o.limit)
		}
		if q.Get("sinceSeconds") != "" && o.since.After(before) {
			t.Fatalf("%q: since %v, in the future", raw, o.since)
		}
	})
}

// FuzzPodSelector: any labelSelector and fieldSelector is parsed or
// refused with a 400, and what parses matches a pod without panicking.
func FuzzPodSelector(f *testing.F) {
	for _, s := range [][2]string{{"", ""}, {"a=b,c!=d", "metadata.name=x"}, {"a in (b,c),!d", "status.phase!=Running,spec.hostNetwork=true"},
		{"a in (", "foo=bar"}, {"x", "metadata.name==y"}, {"k notin (v)", `metadata.name=a\,b`}} {
		f.Add(s[0], s[1])
	}
	pod := corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "x", Namespace: Namespace, Labels: map[string]string{"a": "b"}}}
	f.Fuzz(func(t *testing.T, ls, fs string) {
		r := httptest.NewRequest("GET", "/api/v1/pods?"+url.Values{"labelSelector": {ls}, "fieldSelector": {fs}}.Encode(), nil)
		sel, err := parsePodSelector(r)
		if err != nil {
			if code, _ := statusOf(err); code != 400 {
				t.Fatalf("%q %q: %d %v", ls, fs, code, err)
			}
			return
		}
		sel.matches(&pod)
	})
}

// FuzzKubeBodies: any body sent as a review is answered, or refused with
// a 4xx, never with a 500 or a panic; so is any body of a pod's delete.
func FuzzKubeBodies(f *testing.F) {
	for _, s := range []string{`{"kind":"SelfSubjectAccessReview","apiVersion":"authorization.k8s.io/v1","spec":{"resourceAttributes":{"verb":"get"}}}`,
		`{"spec":{}}`, `{"kind":"Pod","apiVersion":"v1"}`, "k8s\x00\n\x1a", "kind: SelfSubjectRulesReview\n", "",
		`{"kind":"DeleteOptions","apiVersion":"v1","gracePeriodSeconds":0,"dryRun":["All"]}`} {
		f.Add(s)
	}
	a := New(Config{}, slog.New(slog.DiscardHandler), Deps{})
	f.Fuzz(func(t *testing.T, body string) {
		for _, h := range []http.HandlerFunc{a.selfSubjectReview, a.selfSubjectAccessReview, a.selfSubjectRulesReview} {
			w := httptest.NewRecorder()
			h(w, httptest.NewRequest("POST", "/", strings.NewReader(body)))
			if w.Code != 201 && (w.Code < 400 || w.Code >= 500) {
				t.Fatalf("%q: %d %s", body, w.Code, w.Body)
			}
		}
		var opts metav1.DeleteOptions
		err := decodeKube(httptest.NewRecorder(), httptest.NewRequest("DELETE", "/", strings.NewReader(body)), &opts, "", "DeleteOptions")
		if code, _ := statusOf(err); err != nil && code != 400 {
			t.Fatalf("%q: %d %v", body, code, err)
		}
	})
}
