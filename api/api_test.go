package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"gateway/container"
	"gateway/internal/reqerr"
	"gateway/sandbox"
	"gateway/session"
	"gateway/stream/wsproto"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestStatusTable: each error callers tell apart gets its Kubernetes
// Status code and reason, the object it names, and Retry-After for 429.
func TestStatusTable(t *testing.T) {
	a := New(Config{Token: "t"}, slog.New(slog.DiscardHandler), Deps{})
	tests := []struct {
		err    error
		code   int
		reason string
		kind   string
	}{
		{&container.NotFoundError{ID: "x"}, 404, "NotFound", "containers"},
		{&sandbox.NotFoundError{ID: "x"}, 404, "NotFound", "sandboxes"},
		{&session.NotFoundError{ID: "x"}, 404, "NotFound", "sessions"},
		{session.TokenNotFoundError{}, 404, "NotFound", "streams"},
		{fmt.Errorf("wrapped: %w", session.ErrClosed), 409, "Conflict", ""},
		{fmt.Errorf("%w: c", container.ErrExists), 409, "AlreadyExists", ""},
		{fmt.Errorf("%w: 9 open", session.ErrTooMany), 429, "TooManyRequests", ""},
		{fmt.Errorf("%w", session.ErrTooManyPending), 429, "TooManyRequests", ""},
		{reqerr.New(reqerr.ErrBadRequest, "no"), 400, "BadRequest", ""},
		{reqerr.New(reqerr.ErrForbidden, "no"), 403, "Forbidden", ""},
		{reqerr.New(reqerr.ErrInvalid, "no"), 422, "Invalid", ""},
		{fmt.Errorf("%w: port 22", sandbox.ErrPort), 403, "Forbidden", ""},
		{wsproto.ErrBadPort, 400, "BadRequest", ""},
		{errDraining, 503, "ServiceUnavailable", ""},
		{errors.New("disk on fire"), 500, "InternalError", ""},
	}
	for _, tc := range tests {
		t.Run(tc.err.Error(), func(t *testing.T) {
			rec := httptest.NewRecorder()
			a.writeError(rec, httptest.NewRequest("GET", "/x", nil), tc.err)
			var st wsproto.Status
			if err := json.Unmarshal(rec.Body.Bytes(), &st); err != nil {
				t.Fatal(err)
			}
			if rec.Code != tc.code || st.Code != int32(tc.code) || st.Reason != tc.reason || st.Kind != "Status" || st.Status != "Failure" {
				t.Errorf("%d %+v", rec.Code, st)
			}
			if tc.kind != "" && (st.Details == nil || st.Details.Kind != tc.kind) {
				t.Errorf("details %+v, want kind %s", st.Details, tc.kind)
			}
			if tc.code == 429 && rec.Header().Get("Retry-After") == "" {
				t.Error("429 without Retry-After")
			}
			if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
		})
	}
}

// TestDrain: once draining, /readyz fails and new streams and stream URLs
// are refused, while /healthz stays up.
func TestDrain(t *testing.T) {
	a := New(Config{Token: "t"}, slog.New(slog.DiscardHandler), Deps{Metrics: http.NotFoundHandler()})
	h := a.Handler()
	get := func(method, path string) (int, string) {
		req := httptest.NewRequest(method, path, strings.NewReader(`{"command":["true"],"stdout":true}`))
		req.Header.Set("Authorization", "Bearer t")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		b, _ := io.ReadAll(rec.Body)
		return rec.Code, string(b)
	}
	if code, _ := get("GET", "/readyz"); code != 200 {
		t.Errorf("readyz before draining: %d", code)
	}
	a.Drain()
	for _, tc := range []struct {
		method, path string
		code         int
	}{
		{"GET", "/readyz", http.StatusServiceUnavailable},
		{"GET", "/healthz", http.StatusOK},
		{"GET", "/api/v1/containers/box/exec?command=true&stdout=1", http.StatusServiceUnavailable},
		{"POST", "/api/v1/containers/box/exec", http.StatusServiceUnavailable},
		{"POST", "/api/v1/containers", http.StatusServiceUnavailable},
	} {
		if code, body := get(tc.method, tc.path); code != tc.code {
			t.Errorf("%s %s: %d %s, want %d", tc.method, tc.path, code, body, tc.code)
		}
	}
}

func TestPathIDAndMethods(t *testing.T) {
	a := New(Config{Token: "t"}, slog.New(slog.DiscardHandler), Deps{Metrics: http.NotFoundHandler()})
	h := a.Handler()
	for _, tc := range []struct {
		method, path string
		code         int
		allow        string
	}{
		{"PATCH", "/api/v1/sessions/abc", 405, "GET, DELETE"},
		{"GET", "/api/v1/containers/UPPER/exec", 400, ""},
		{"GET", "/api/v1/nothing", 404, ""},
	} {
		req := httptest.NewRequest(tc.method, tc.path, nil)
		req.Header.Set("Authorization", "Bearer t")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != tc.code || rec.Header().Get("Allow") != tc.allow {
			t.Errorf("%s %s: %d Allow=%q", tc.method, tc.path, rec.Code, rec.Header().Get("Allow"))
		}
	}
}

// TestWebRoutes: the page and its assets go to the web handler, without a
// token; other unknown paths still get a 404 Status.
func TestWebRoutes(t *testing.T) {
	web := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "page:"+r.URL.Path) })
	h := New(Config{Token: "t"}, slog.New(slog.DiscardHandler), Deps{Metrics: http.NotFoundHandler(), Web: web}).Handler()
	for path, want := range map[string]string{"/": "page:/", "/assets/app.js": "page:/assets/app.js"} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		if rec.Code != 200 || rec.Body.String() != want {
			t.Errorf("GET %s: %d %q", path, rec.Code, rec.Body)
		}
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/elsewhere", nil))
	if rec.Code != 404 || !strings.Contains(rec.Body.String(), `"kind":"Status"`) {
		t.Errorf("GET /elsewhere: %d %q", rec.Code, rec.Body)
	}
}
