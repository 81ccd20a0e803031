package metrics

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"gateway/container"
	"gateway/session"
)

func TestMetricsLint(t *testing.T) {
	reg := prometheus.NewRegistry()
	New(reg, func() map[string]int { return map[string]int{"running": 2} })
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}

func TestMetricsValues(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := New(reg, func() map[string]int { return map[string]int{"running": 2, "exited": 1} })
	k := m.For("exec")
	k.Active.Inc()
	k.BytesOut.Add(10)
	k.Error(ReasonBadResize)
	k.Ended(ResultNonZeroExit, 2*time.Second)
	k.Active.Dec()

	if v := testutil.ToFloat64(m.StreamBytes.WithLabelValues("exec", "out")); v != 10 {
		t.Errorf("bytes out = %v", v)
	}
	if v := testutil.ToFloat64(m.SessionsTotal.WithLabelValues("exec", ResultNonZeroExit)); v != 1 {
		t.Errorf("sessions total = %v", v)
	}
	if v := testutil.ToFloat64(m.StreamErrors.WithLabelValues("exec", ReasonBadResize)); v != 1 {
		t.Errorf("errors = %v", v)
	}
	want := `
# HELP gateway_containers Containers, by state.
# TYPE gateway_containers gauge
gateway_containers{state="created"} 0
gateway_containers{state="exited"} 1
gateway_containers{state="running"} 2
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "gateway_containers"); err != nil {
		t.Error(err)
	}
	// Every series exists from the start: 3 kinds x 5 results.
	if n := testutil.CollectAndCount(m.SessionsTotal); n != 15 {
		t.Errorf("%d sessions_total series, want 15", n)
	}
}

func TestUnknownLabelPanics(t *testing.T) {
	m := New(prometheus.NewRegistry(), nil)
	for name, f := range map[string]func(){
		"kind":   func() { m.For("shell") },
		"reason": func() { m.For("exec").Error("oops") },
		"result": func() { m.For("exec").Ended("meh", 0) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("unknown %s did not panic", name)
				}
			}()
			f()
		}()
	}
}

// TestLabelSetsMatch ties the label sets to what they label: the session
// kinds and the container states, so that neither can change alone.
func TestLabelSetsMatch(t *testing.T) {
	var kinds, states []string
	for _, k := range session.Kinds {
		kinds = append(kinds, string(k))
	}
	for _, s := range container.States {
		states = append(states, string(s))
	}
	if !slices.Equal(Kinds, kinds) {
		t.Errorf("metrics.Kinds %q, session.Kinds %q", Kinds, kinds)
	}
	if !slices.Equal(ContainerStates, states) {
		t.Errorf("metrics.ContainerStates %q, container.States %q", ContainerStates, states)
	}
}
