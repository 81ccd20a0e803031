// Package metrics defines the gateway's Prometheus metrics. Every label
// value comes from a small fixed set, and every series exists from the
// start with the value 0: never a session, container or user id as a label.
package metrics

import (
	"fmt"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"gateway/internal/park"
)

// Kinds are the session kinds (the "kind" label).
var Kinds = []string{"exec", "attach", "portforward"}

// Results say how a session ended (the "result" label).
const (
	ResultSuccess          = "success"           // ended normally: exit 0, or a clean close
	ResultNonZeroExit      = "nonzero_exit"      // the process exited with a non-zero code
	ResultClientDisconnect = "client_disconnect" // the client closed or vanished first
	ResultTerminated       = "terminated"        // ended by the gateway: API, shutdown, eviction, idle
	ResultError            = "error"             // failed: start failure, I/O error, protocol error
)

// Results lists every result.
var Results = []string{ResultSuccess, ResultNonZeroExit, ResultClientDisconnect, ResultTerminated, ResultError}

// Reasons say what went wrong in a stream (the "reason" label).
const (
	ReasonProtocol       = "protocol"        // malformed frame or close signal
	ReasonFrameTooLarge  = "frame_too_large" // a client message over the read limit
	ReasonBadResize      = "bad_resize"      // malformed or invalid resize
	ReasonUnknownChannel = "unknown_channel" // a frame on a channel the session lacks (ignored)
	ReasonWrite          = "write"           // writing to the client failed or timed out
	ReasonRead           = "read"            // reading from the client failed
	ReasonStart          = "start"           // the process could not start
	ReasonDial           = "dial"            // a port-forward dial failed
	ReasonSlowConsumer   = "slow_consumer"   // an attacher fell too far behind and was cut
	ReasonIdleTimeout    = "idle_timeout"    // no traffic for the idle timeout
)

// Reasons lists every reason.
var Reasons = []string{ReasonProtocol, ReasonFrameTooLarge, ReasonBadResize, ReasonUnknownChannel,
	ReasonWrite, ReasonRead, ReasonStart, ReasonDial, ReasonSlowConsumer, ReasonIdleTimeout}

// Transports are what streams travel on (the "transport" label): a
// WebSocket, SPDY/3.1 (kubectl with WebSockets off, older clients), or
// SPDY inside a WebSocket (kubectl's port-forward).
const (
	TransportWebSocket     = "websocket"
	TransportSPDY          = "spdy"
	TransportSPDYWebSocket = "spdy-websocket"
)

// Transports lists every transport.
var Transports = []string{TransportWebSocket, TransportSPDY, TransportSPDYWebSocket}

// Ignored says what a view-only client sent that was dropped (the "what"
// label).
var Ignored = []string{"input", "resize"}

// ContainerStates are the values of the "state" label of gateway_containers.
var ContainerStates = []string{"created", "running", "exited"}

// Metrics holds the gateway's collectors.
type Metrics struct {
	SessionsActive  *prometheus.GaugeVec     // kind
	SessionsTotal   *prometheus.CounterVec   // kind, result
	StreamBytes     *prometheus.CounterVec   // kind, direction
	SessionDuration *prometheus.HistogramVec // kind
	StreamErrors    *prometheus.CounterVec   // kind, reason
	SessionsOpened  *prometheus.CounterVec   // kind, transport

	// Shared sessions (exec with detach): those with no client, the
	// clients of them all, what view-only clients sent that was dropped,
	// and the share links that are valid.
	SessionsDetached prometheus.Gauge
	Viewers          prometheus.Gauge
	ViewOnlyIgnored  *prometheus.CounterVec // what
	Shares           prometheus.Gauge

	// Session recordings: being written, bytes written, failed writes,
	// and recordings cut short (a slow or full disk).
	RecordingsActive    prometheus.Gauge
	RecordingBytes      prometheus.Counter
	RecordingErrors     prometheus.Counter
	RecordingsTruncated prometheus.Counter

	kinds map[string]*Kind
}

// Kind is the series of one session kind, resolved once so that hot paths
// never look up labels.
type Kind struct {
	Active   prometheus.Gauge
	BytesIn  prometheus.Counter // client to process or port
	BytesOut prometheus.Counter // process or port to client
	m        *Metrics
	name     string
}

// New creates the metrics and registers them, with the Go, process and
// build-info collectors, on reg. containerStates, when not nil, is called at
// each scrape and returns the number of containers in each state.
func New(reg prometheus.Registerer, containerStates func() map[string]int) *Metrics {
	m := &Metrics{
		SessionsActive: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "gateway_sessions_active",
			Help: "Streams open now, by kind.",
		}, []string{"kind"}),
		SessionsTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gateway_sessions_total",
			Help: "Streams ended, by kind and how they ended.",
		}, []string{"kind", "result"}),
		StreamBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gateway_stream_bytes_total",
			Help: "Payload bytes streamed; direction in is client to process or port, out is the reverse.",
		}, []string{"kind", "direction"}),
		SessionDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "gateway_session_duration_seconds",
			Help:    "How long streams lasted, by kind.",
			Buckets: []float64{0.01, 0.1, 0.5, 1, 5, 30, 60, 300, 1800, 3600, 4 * 3600},
		}, []string{"kind"}),
		StreamErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gateway_stream_errors_total",
			Help: "Errors in streams, by kind and reason.",
		}, []string{"kind", "reason"}),
		SessionsOpened: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gateway_sessions_opened_total",
			Help: "Streams opened, by kind and the transport they travel on.",
		}, []string{"kind", "transport"}),
		SessionsDetached: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gateway_sessions_detached",
			Help: "Shared exec sessions whose process runs with no client connected.",
		}),
		Viewers: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gateway_session_viewers",
			Help: "Clients connected to shared exec sessions.",
		}),
		ViewOnlyIgnored: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gateway_view_only_ignored_total",
			Help: "Frames from view-only clients (share links) that were dropped, by what they carried.",
		}, []string{"what"}),
		Shares: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gateway_shares",
			Help: "Share links that are valid now.",
		}),
		RecordingsActive: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gateway_recordings_active",
			Help: "Session recordings being written now.",
		}),
		RecordingBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gateway_recording_bytes_total",
			Help: "Bytes written to session recordings.",
		}),
		RecordingErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gateway_recording_write_errors_total",
			Help: "Failed writes of session recordings.",
		}),
		RecordingsTruncated: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gateway_recordings_truncated_total",
			Help: "Session recordings cut short because the disk could not keep up or failed.",
		}),
		kinds: make(map[string]*Kind),
	}
	for _, w := range Ignored {
		m.ViewOnlyIgnored.WithLabelValues(w)
	}
	for _, k := range Kinds {
		m.kinds[k] = &Kind{
			Active:   m.SessionsActive.WithLabelValues(k),
			BytesIn:  m.StreamBytes.WithLabelValues(k, "in"),
			BytesOut: m.StreamBytes.WithLabelValues(k, "out"),
			m:        m,
			name:     k,
		}
		m.SessionDuration.WithLabelValues(k)
		for _, r := range Results {
			m.SessionsTotal.WithLabelValues(k, r)
		}
		for _, r := range Reasons {
			m.StreamErrors.WithLabelValues(k, r)
		}
		for _, t := range Transports {
			m.SessionsOpened.WithLabelValues(k, t)
		}
	}
	reg.MustRegister(m.SessionsActive, m.SessionsTotal, m.StreamBytes, m.SessionDuration, m.StreamErrors, m.SessionsOpened,
		m.SessionsDetached, m.Viewers, m.ViewOnlyIgnored, m.Shares,
		m.RecordingsActive, m.RecordingBytes, m.RecordingErrors, m.RecordingsTruncated,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "gateway_streams_resting",
			Help: "Quiet client connections and process outputs parked in the gateway's own poller, holding no goroutine.",
		}, func() float64 { return float64(park.Parked()) }),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		collectors.NewBuildInfoCollector(),
	)
	if containerStates != nil {
		reg.MustRegister(&containerCollector{
			desc:   prometheus.NewDesc("gateway_containers", "Containers, by state.", []string{"state"}, nil),
			states: containerStates,
		})
	}
	return m
}

// For returns the series of one kind. It panics on a kind outside Kinds:
// that is a programming error, and the label set must stay fixed.
func (m *Metrics) For(kind string) *Kind {
	k, ok := m.kinds[kind]
	if !ok {
		panic(fmt.Sprintf("metrics: unknown kind %q", kind))
	}
	return k
}

// Error counts one error of the kind. reason must be one of Reasons.
func (k *Kind) Error(reason string) {
	if !slices.Contains(Reasons, reason) {
		panic(fmt.Sprintf("metrics: unknown reason %q", reason))
	}
	k.m.StreamErrors.WithLabelValues(k.name, reason).Inc()
}

// Opened counts a stream opened on a transport (one of Transports).
func (k *Kind) Opened(transport string) {
	if !slices.Contains(Transports, transport) {
		panic(fmt.Sprintf("metrics: unknown transport %q", transport))
	}
	k.m.SessionsOpened.WithLabelValues(k.name, transport).Inc()
}

// Ended records a finished session: its result (one of Results) and how long
// it lasted.
func (k *Kind) Ended(result string, d time.Duration) {
	if !slices.Contains(Results, result) {
		panic(fmt.Sprintf("metrics: unknown result %q", result))
	}
	k.m.SessionsTotal.WithLabelValues(k.name, result).Inc()
	k.m.SessionDuration.WithLabelValues(k.name).Observe(d.Seconds())
}

type containerCollector struct {
	desc   *prometheus.Desc
	states func() map[string]int
}

func (c *containerCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *containerCollector) Collect(ch chan<- prometheus.Metric) {
	counts := c.states()
	for _, s := range ContainerStates {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(counts[s]), s)
	}
}
