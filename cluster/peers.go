// Package cluster makes replicas of the gateway one front door: each
// replica serves the containers, sandboxes and sessions of its own host,
// and a request that reaches another replica is forwarded to the owner,
// upgrades included, streaming; lists are gathered from every replica.
//
// Replicas find each other through --peers: a static list of URLs, or a
// DNS name resolved again every few seconds (dns://NAME:PORT, the A and
// AAAA records of a headless Service; dns+srv://NAME, its SRV records).
// They talk with the gateway's own token over the network the operator
// gives them (HTTPS when it serves TLS); a forwarded request is
// authenticated by its owner as any request is, with the client's own
// credentials, so no replica trusts a request it cannot authenticate. The
// client's address travels in X-Forwarded-For, believed only when the
// connection comes from a known peer with its proof (an HMAC of the token).
package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Config says who the replica is and where its peers are.
type Config struct {
	Node  string // this replica's name
	Peers string // the peers: URLs (comma-separated), dns://NAME:PORT or dns+srv://NAME
	Token string // the gateway's token, for the replica's own calls to its peers
	// Scheme is how DNS-found peers are called: "https" when the replicas
	// serve TLS (verified as TLS says: nil, the system's roots), else
	// "http".
	Scheme string
	TLS    *tls.Config
	// Refresh is how often the peers are resolved and probed (5 s).
	Refresh time.Duration
	// Timeout bounds a dial to a peer and a peer's answer to a lookup (1 s).
	Timeout time.Duration
	Log     *slog.Logger
	Metrics *Metrics
}

// Metrics are the cluster's series, by peer (its node name).
type Metrics struct {
	Forwarded *prometheus.CounterVec // peer
	Bytes     *prometheus.CounterVec // peer, direction (out: to the peer)
	Up        *prometheus.GaugeVec   // peer
}

// NewMetrics registers the cluster's series.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Forwarded: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "gateway_forwarded_requests_total",
			Help: "Requests forwarded to the replica that owns their target, by peer."}, []string{"peer"}),
		Bytes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "gateway_forwarded_bytes_total",
			Help: "Bytes on connections to peers (requests, streams, answers), by peer and direction (out: to the peer)."}, []string{"peer", "direction"}),
		Up: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "gateway_peer_up",
			Help: "Whether a peer answers its readiness probe (1) or not (0)."}, []string{"peer"}),
	}
	reg.MustRegister(m.Forwarded, m.Bytes, m.Up)
	return m
}

// Peer is another replica.
type Peer struct {
	URL *url.URL

	node    atomic.Pointer[string] // learned from its answers; the URL's host until then
	up      atomic.Bool
	lastErr atomic.Pointer[string]
}

func newPeer(u *url.URL) *Peer {
	p := &Peer{URL: u}
	host := u.Host
	p.node.Store(&host)
	return p
}

// Node is the peer's name.
func (p *Peer) Node() string { return *p.node.Load() }

// Up reports whether the peer answered its last probe as ready.
func (p *Peer) Up() bool { return p.up.Load() }

// Cluster is the replica's view of its peers.
type Cluster struct {
	cfg    Config
	client *http.Client // probes and lookups
	proxy  *http.Transport

	mu    sync.Mutex
	peers []*Peer           // by URL, sorted
	ips   map[string]bool   // the peers' addresses, for X-Forwarded-For
	owner map[string]cached // kind/id → owner

	streams sync.WaitGroup // forwarded upgrades under way
}

type cached struct {
	node string
	at   time.Time
}

// New returns the cluster; Run keeps its peers up to date.
func New(cfg Config) (*Cluster, error) {
	if cfg.Refresh <= 0 {
		cfg.Refresh = 5 * time.Second
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = time.Second
	}
	if _, err := parseSpec(cfg.Peers); err != nil {
		return nil, err
	}
	c := &Cluster{cfg: cfg, owner: map[string]cached{}, ips: map[string]bool{}}
	dialer := &net.Dialer{Timeout: cfg.Timeout, KeepAlive: 30 * time.Second}
	c.proxy = &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			conn, err := dialer.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return c.counted(conn, addr), nil
		},
		TLSClientConfig:     cfg.TLS,
		TLSHandshakeTimeout: cfg.Timeout,
		MaxIdleConnsPerHost: 16,
		IdleConnTimeout:     90 * time.Second,
		ForceAttemptHTTP2:   false, // upgrades need HTTP/1.1
	}
	c.client = &http.Client{Transport: c.proxy, Timeout: cfg.Timeout}
	return c, nil
}

// Node is this replica's name.
func (c *Cluster) Node() string { return c.cfg.Node }

// Peers returns the peers known now.
func (c *Cluster) Peers() []*Peer {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.peers)
}

// peer returns the peer of a node name, or nil.
func (c *Cluster) peer(node string) *Peer {
	for _, p := range c.Peers() {
		if p.Node() == node {
			return p
		}
	}
	return nil
}

// Run resolves and probes the peers every Refresh until ctx ends.
func (c *Cluster) Run(ctx context.Context) {
	t := time.NewTicker(c.cfg.Refresh)
	defer t.Stop()
	for {
		c.refresh(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Wait waits for the forwarded streams to end, or ctx.
func (c *Cluster) Wait(ctx context.Context) error {
	done := make(chan struct{})
	go func() { c.streams.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return errors.New("forwarded streams still open")
	}
}

// refresh resolves the spec, probes every peer, and keeps the answers.
func (c *Cluster) refresh(ctx context.Context) {
	urls, err := resolve(ctx, c.cfg.Peers, c.cfg.Timeout, c.cfg.Scheme)
	if err != nil {
		// Keep what was known: a DNS hiccup must not make every other
		// replica's items vanish for a refresh.
		c.cfg.Log.Warn("peers: resolve", "peers", c.cfg.Peers, "error", err)
		for _, p := range c.Peers() {
			c.probe(ctx, p)
		}
		return
	}
	c.mu.Lock()
	old := map[string]*Peer{}
	for _, p := range c.peers {
		old[p.URL.String()] = p
	}
	c.mu.Unlock()
	var peers []*Peer
	var wg sync.WaitGroup
	for _, u := range urls {
		p := old[u.String()]
		if p == nil {
			p = newPeer(u)
		}
		peers = append(peers, p)
		wg.Go(func() { c.probe(ctx, p) })
	}
	wg.Wait()
	// Ourselves, when the list names us too (a headless Service does).
	peers = slices.DeleteFunc(peers, func(p *Peer) bool { return p.Node() == c.cfg.Node })
	ips := map[string]bool{}
	for _, p := range peers {
		if host := p.URL.Hostname(); net.ParseIP(host) != nil {
			ips[host] = true
		} else if addrs, err := net.DefaultResolver.LookupHost(ctx, host); err == nil {
			for _, a := range addrs {
				ips[a] = true
			}
		}
	}
	slices.SortFunc(peers, func(a, b *Peer) int { return strings.Compare(a.Node(), b.Node()) })
	c.mu.Lock()
	c.peers, c.ips = peers, ips
	c.mu.Unlock()
}

// nodeHeader names the replica that answers; every answer carries it.
const nodeHeader = "X-Gateway-Node"

// probe asks a peer's /readyz: up when it is ready (a draining one takes
// no new work).
func (c *Cluster) probe(ctx context.Context, p *Peer) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", p.URL.JoinPath("/readyz").String(), nil)
	resp, err := c.client.Do(req)
	was := p.up.Load()
	if err != nil {
		msg := err.Error()
		p.lastErr.Store(&msg)
		p.up.Store(false)
	} else {
		resp.Body.Close()
		if n := resp.Header.Get(nodeHeader); n != "" {
			p.node.Store(&n)
		}
		p.up.Store(resp.StatusCode == http.StatusOK)
		if resp.StatusCode != http.StatusOK {
			msg := "not ready: " + resp.Status
			p.lastErr.Store(&msg)
		}
	}
	if c.cfg.Metrics != nil && p.Node() != c.cfg.Node {
		c.cfg.Metrics.Up.WithLabelValues(p.Node()).Set(map[bool]float64{true: 1}[p.up.Load()])
	}
	if up := p.up.Load(); up != was {
		c.cfg.Log.Info("peer "+map[bool]string{true: "up", false: "down"}[up], "peer", p.Node(), "url", p.URL.String())
	}
}

// spec is a parsed --peers.
type spec struct {
	static []*url.URL
	dns    string // host:port for A/AAAA
	srv    string // name for SRV
	scheme string
}

func parseSpec(s string) (spec, error) {
	return parseSpecScheme(s, "http")
}

func parseSpecScheme(s, scheme string) (spec, error) {
	s = strings.TrimSpace(s)
	switch {
	case s == "":
		return spec{}, nil
	case strings.HasPrefix(s, "dns+srv://"):
		name := strings.TrimPrefix(s, "dns+srv://")
		if name == "" {
			return spec{}, errors.New("--peers dns+srv://NAME: the name is missing")
		}
		return spec{srv: name, scheme: scheme}, nil
	case strings.HasPrefix(s, "dns://"):
		hp := strings.TrimPrefix(s, "dns://")
		if _, port, err := net.SplitHostPort(hp); err != nil || port == "" {
			return spec{}, fmt.Errorf("--peers %s: want dns://NAME:PORT", s)
		}
		return spec{dns: hp, scheme: scheme}, nil
	}
	var out spec
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		u, err := url.Parse(part)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return spec{}, fmt.Errorf("--peers: %q is not an http(s)://HOST:PORT URL", part)
		}
		out.static = append(out.static, &url.URL{Scheme: u.Scheme, Host: u.Host})
	}
	return out, nil
}

// resolve turns the spec into the peers' URLs, now.
func resolve(ctx context.Context, s string, timeout time.Duration, scheme string) ([]*url.URL, error) {
	if scheme == "" {
		scheme = "http"
	}
	sp, err := parseSpecScheme(s, scheme)
	if err != nil || (sp.dns == "" && sp.srv == "") {
		return sp.static, err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var out []*url.URL
	if sp.dns != "" {
		host, port, _ := net.SplitHostPort(sp.dns)
		addrs, err := net.DefaultResolver.LookupHost(ctx, host)
		if err != nil {
			return nil, err
		}
		for _, a := range addrs {
			out = append(out, &url.URL{Scheme: sp.scheme, Host: net.JoinHostPort(a, port)})
		}
		return out, nil
	}
	_, srvs, err := net.DefaultResolver.LookupSRV(ctx, "", "", sp.srv)
	if err != nil {
		return nil, err
	}
	for _, r := range srvs {
		out = append(out, &url.URL{Scheme: sp.scheme, Host: net.JoinHostPort(strings.TrimSuffix(r.Target, "."), strconv.Itoa(int(r.Port)))})
	}
	return out, nil
}

// counted counts a peer connection's bytes.
func (c *Cluster) counted(conn net.Conn, addr string) net.Conn {
	if c.cfg.Metrics == nil {
		return conn
	}
	node := addr
	for _, p := range c.Peers() {
		if p.URL.Host == addr {
			node = p.Node()
		}
	}
	return &countedConn{Conn: conn, in: c.cfg.Metrics.Bytes.WithLabelValues(node, "in"), out: c.cfg.Metrics.Bytes.WithLabelValues(node, "out")}
}

type countedConn struct {
	net.Conn
	in, out prometheus.Counter
}

func (c *countedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.in.Add(float64(n))
	return n, err
}

func (c *countedConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.out.Add(float64(n))
	return n, err
}
