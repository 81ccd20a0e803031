package main

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"time"
)

// The harness. A scenario declares arms, one per target (the gateway, its
// ceiling, references such as the CRI library), each a function that does
// the work once and records its values; measure runs the arms in turn for
// every repetition; report prints each figure beside the others' and adds
// it to the summary.

// bench is one run of gwload: the servers it measures and the summary.
type bench struct {
	o      options
	ctx    context.Context
	gw     *endpoint    // the gateway
	gwProc *gatewayProc // the gateway gwload started; nil with -addr
	cri    *criServer   // the CRI library's server, started when first needed
	bare   *child       // the bare server (bare.go), started when first needed
	bareEP *endpoint
	procs  []*proc // processes whose CPU is measured, not "other load"
	sum    []sumRow
}

// proc is a process that gwload measures: the gateway, the CRI server, a
// relay. Its CPU is its own and not part of the other load.
type proc struct {
	name string
	pid  int // 0 when unknown (a running gateway without -pid)
}

func newBench(ctx context.Context, o options) (*bench, error) {
	b := &bench{o: o, ctx: ctx}
	gwp := &proc{name: "gateway", pid: o.pid}
	if o.gateway != "" {
		g, err := startGateway(ctx, o)
		if err != nil {
			return nil, err
		}
		b.gwProc = g
		o.addr, gwp.pid = g.addr, g.pid()
	}
	b.gw = &endpoint{proc: gwp, addr: o.addr, token: o.token, container: o.container, proto: v5, metrics: true,
		timeout: o.timeout, hc: http.DefaultClient}
	b.own(gwp)
	return b, nil
}

// close stops the servers gwload started.
func (b *bench) close() {
	if b.bare != nil {
		b.bare.close()
	}
	if b.cri != nil {
		b.cri.stop()
		fmt.Printf("\ncri log: %s\n", b.cri.log.Name())
	}
	if b.gwProc != nil {
		b.gwProc.stop()
		fmt.Printf("\ngateway log: %s\n", b.gwProc.logPath)
	}
}

// own counts p's CPU as the measurements', until disown.
func (b *bench) own(p *proc) { b.procs = append(b.procs, p) }

func (b *bench) disown(p *proc) {
	b.procs = slices.DeleteFunc(b.procs, func(q *proc) bool { return q == p })
}

// arm is one target of a measurement.
type arm struct {
	name string // in the lines and figures: "gateway", "ceiling", "cri", ...
	what string // what it is, for the summary: "the pty read directly"
	proc *proc  // the server it measures; nil when the work is gwload's own
	run  func(r *rep) error
	// metrics, when set, is the host:port of the server's /metrics: a run
	// of concurrentArm notes what the server allocated per set-up.
	metrics string
}

// rep is one run of an arm: what it measured.
type rep struct {
	n     int // 1-based
	cpu   *cpuMeter
	vals  map[string]float64
	times map[string][]time.Duration
	line  string // the result, first in the printed line
	notes []string
}

func (r *rep) set(key string, v float64)           { r.vals[key] = v }
func (r *rep) time(key string, d ...time.Duration) { r.times[key] = append(r.times[key], d...) }
func (r *rep) say(format string, args ...any)      { r.line = fmt.Sprintf(format, args...) }
func (r *rep) note(format string, args ...any) {
	r.notes = append(r.notes, fmt.Sprintf(format, args...))
}

// setCPU records the CPU p used in this run, in ms per MiB of mib MiB
// carried, when p's pid is known.
func (r *rep) setCPU(key string, p *proc, mib float64) {
	if p != nil && p.pid > 0 {
		r.set(key, ms(r.cpu.used(p))/mib)
	}
}

// results are the repetitions of each arm of one measurement.
type results struct {
	arms   map[string]*arm
	reps   map[string][]*rep
	others []float64 // the other load of each run, in cores
}

// measure runs every arm reps times. Each repetition starts with the next
// arm in turn, so that drift in the machine's load hits all alike; each run
// prints its line.
func (b *bench) measure(reps int, arms ...*arm) (*results, error) {
	res := &results{arms: map[string]*arm{}, reps: map[string][]*rep{}}
	for _, a := range arms {
		res.arms[a.name] = a
	}
	for i := range reps {
		for j := range arms {
			a := arms[(i+j)%len(arms)]
			r := &rep{n: i + 1, vals: map[string]float64{}, times: map[string][]time.Duration{}}
			r.cpu = b.startCPU(a.proc)
			if err := a.run(r); err != nil {
				return nil, fmt.Errorf("%s: %w", a.name, err)
			}
			line, other, ok := r.cpu.stop()
			if ok {
				res.others = append(res.others, other)
			}
			fmt.Printf("  rep %d %s: %s (%s)\n", r.n, a.name, r.line, strings.Join(append(r.notes, line), "; "))
			res.reps[a.name] = append(res.reps[a.name], r)
		}
		if err := b.ctx.Err(); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// values returns an arm's value of key in each repetition that has one.
func (res *results) values(name, key string) []float64 {
	var v []float64
	for _, r := range res.reps[name] {
		if x, ok := r.vals[key]; ok {
			v = append(v, x)
		}
	}
	return v
}

// pooled returns an arm's times of key over all its repetitions.
func (res *results) pooled(name, key string) []time.Duration {
	var d []time.Duration
	for _, r := range res.reps[name] {
		d = append(d, r.times[key]...)
	}
	return d
}

// fig is one figure of a scenario: the gateway's value beside the others'.
type fig struct {
	label string // the figure, in the summary
	key   string // the value each arm records
	// pcts, when set: the figure is these percentiles of the times of key,
	// pooled over the repetitions, in ms; the first is compared.
	pcts  []float64
	unit  func(float64) string
	lower bool // lower values are better (times, memory, CPU)
	// The arms compared: the gateway ("gateway" when empty), the ceiling
	// ("ceiling"), the CRI library ("cri"); an arm absent from the results
	// leaves its column empty. refs get a summary row each.
	main, ceil, cri string
	ceilWhat        string // the ceiling's description, when not its arm's
	refs            []string
	goals           []goal
}

// goal is a target of a figure: the gateway's performance ratio to arm vs
// (its value itself when vs is empty) is at least bound, or for a value
// that is better lower, under bound. With above set, the gateway's value
// is no more than above over vs's (a lower-is-better figure).
type goal struct {
	vs    string
	bound float64
	above float64
}

// value returns the figure of an arm: the median over its repetitions and
// the value of each repetition, or the first pooled percentile.
func (f fig) value(res *results, name string) (float64, []float64, bool) {
	if len(f.pcts) > 0 {
		d := res.pooled(name, f.key)
		return ms(pct(d, f.pcts[0])), nil, len(d) > 0
	}
	v := res.values(name, f.key)
	return median(v), v, len(v) > 0
}

// cell formats an arm's figure: its value, or every percentile.
func (f fig) cell(res *results, name string) string {
	if len(f.pcts) == 0 {
		v, _, _ := f.value(res, name)
		return f.unit(v)
	}
	d := res.pooled(name, f.key)
	var parts []string
	for _, p := range f.pcts {
		parts = append(parts, fmt.Sprintf("p%g %s", p, f.unit(ms(pct(d, p)))))
	}
	return strings.Join(parts, ", ")
}

// ratio is the performance of g relative to x: above 1, g does better.
func (f fig) ratio(g, x float64) float64 {
	if f.lower {
		return x / g
	}
	return g / x
}

// report prints each figure (the medians, ranges, ratios and goals) and
// adds its rows to the summary.
func (b *bench) report(scenario string, res *results, figs ...fig) {
	other := ""
	if len(res.others) > 0 {
		other = fmt.Sprintf("%.2f", median(res.others))
	}
	or := func(s, def string) string {
		if s == "" {
			return def
		}
		return s
	}
	for _, f := range figs {
		main := or(f.main, "gateway")
		g, gv, ok := f.value(res, main)
		if !ok {
			fmt.Printf("%s, %s: no value measured\n", scenario, f.label)
			continue
		}
		row := sumRow{scenario: scenario, figure: f.label, gateway: f.cell(res, main), target: "none set", met: "n/a", other: other}
		vals := []string{main + " " + row.gateway}
		ranges := []string{rangeOf(main, gv, f.unit)}
		var ratios []string
		// compare adds an arm's value and its ratio to the lines.
		compare := func(name string) (cell, ratio string, x float64, ok bool) {
			x, xv, ok := f.value(res, name)
			if !ok {
				return "", "", 0, false
			}
			cell, ratio = f.cell(res, name), fmt.Sprintf("%.3f", f.ratio(g, x))
			vals, ranges = append(vals, name+" "+cell), append(ranges, rangeOf(name, xv, f.unit))
			r := fmt.Sprintf("%s/%s %s", main, name, ratio)
			if len(gv) > 1 && len(xv) == len(gv) {
				r += " " + perRep(gv, xv, f.ratio)
			}
			ratios = append(ratios, r)
			return cell, ratio, x, true
		}
		ceil, cri := or(f.ceil, "ceiling"), or(f.cri, "cri")
		cell, ratio, c, hasCeil := compare(ceil)
		if hasCeil {
			row.ceiling, row.ratio = fmt.Sprintf("%s (%s)", cell, or(f.ceilWhat, res.arms[ceil].what)), ratio
		}
		row.cri, row.criRatio, _, _ = compare(cri)
		var refRows []sumRow
		for _, name := range f.refs {
			cell, ratio, x, ok := compare(name)
			if !ok {
				continue
			}
			r := sumRow{scenario: scenario, figure: f.label + ", reference: " + or(res.arms[name].what, name), gateway: row.gateway,
				ceiling: fmt.Sprintf("%s (%s)", cell, name), ratio: ratio, other: other}
			if hasCeil {
				r.ceiling += fmt.Sprintf("; %s/%s %.3f", name, ceil, f.ratio(x, c))
			}
			if xc, _, ok := f.value(res, cri); ok {
				r.ceiling += fmt.Sprintf("; %s/%s %.3f", name, cri, f.ratio(x, xc))
			}
			refRows = append(refRows, r)
		}
		var targets, mets []string
		for _, gl := range f.goals {
			var t string
			var met bool
			switch {
			case gl.vs == "" && f.lower:
				t, met = "< "+f.unit(gl.bound), g < gl.bound
			case gl.vs == "":
				t, met = ">= "+f.unit(gl.bound), g >= gl.bound
			default:
				x, _, ok := f.value(res, gl.vs)
				if !ok {
					continue
				}
				t, met = fmt.Sprintf(">= %g× %s", gl.bound, gl.vs), f.ratio(g, x) >= gl.bound
				if gl.above > 0 {
					t, met = fmt.Sprintf("<= %s + %s", gl.vs, f.unit(gl.above)), g <= x+gl.above
				}
			}
			targets, mets = append(targets, t), append(mets, verdict(met))
		}
		how := "medians"
		if len(f.pcts) > 0 {
			how = "all repetitions pooled"
		}
		fmt.Printf("%s, %s: %s (%s)\n", scenario, f.label, strings.Join(vals, ", "), how)
		if len(ratios) > 0 {
			fmt.Printf("  ratios (performance, above 1 the %s does better): %s\n", main, strings.Join(ratios, ", "))
		}
		if rs := strings.Join(slices.DeleteFunc(ranges, func(s string) bool { return s == "" }), ", "); rs != "" {
			fmt.Printf("  ranges: %s\n", rs)
		}
		if len(targets) > 0 {
			row.target, row.met = strings.Join(targets, "; "), strings.Join(mets, "; ")
			fmt.Printf("  target %s: %s\n", row.target, row.met)
		}
		b.sum = append(b.sum, row)
		b.sum = append(b.sum, refRows...)
	}
}

// sumRow is one line of the summary table.
type sumRow struct {
	scenario, figure string
	gateway, ceiling string
	ratio            string
	cri, criRatio    string
	target, met      string
	other            string // the median other load of its measurement, in cores
}

func (b *bench) printSummary() {
	if len(b.sum) == 0 {
		return
	}
	fmt.Printf("\n== summary (medians over %d repetitions; ratio = gateway performance / ceiling performance, gateway/CRI the same\n"+
		"against the CRI streaming library; other load = median CPU used by the rest of the machine during the measurements,\n"+
		"in cores of %d)\n", b.o.reps, runtime.NumCPU())
	fmt.Printf("| scenario | figure | gateway | ceiling | ratio | CRI library | gateway/CRI | target | met | other load |\n" +
		"|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range b.sum {
		fmt.Printf("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n",
			r.scenario, r.figure, r.gateway, r.ceiling, r.ratio, r.cri, r.criRatio, r.target, r.met, r.other)
	}
}

// --- CPU ----------------------------------------------------------------------

// cpuMeter measures, over one run, the CPU time of gwload and of the
// processes it measures, and the CPU the rest of the machine used
// meanwhile ("other load": other sessions' builds and tests on a shared
// machine, and kernel workers such as the pty's flush work).
type cpuMeter struct {
	b                  *bench
	show               *proc // the run's server, whose CPU the line shows
	t0                 time.Time
	self0, kids0, all0 time.Duration
	procs              []procCPU
}

// procCPU is one measured process at the start: its CPU with its reaped
// children (clock ticks), its own CPU to the nanosecond, its context
// switches.
type procCPU struct {
	p          *proc
	pid        int
	all0, own0 time.Duration
	cs0        int64
}

func (b *bench) startCPU(show *proc) *cpuMeter {
	m := &cpuMeter{b: b, show: show}
	m.restart()
	return m
}

// restart starts the measurement again from now.
func (m *cpuMeter) restart() {
	m.procs = m.procs[:0]
	for _, p := range m.b.procs {
		pc := procCPU{p: p, pid: p.pid}
		if p.pid > 0 {
			pc.all0, _ = cpuTimeAll(p.pid)
			pc.own0, pc.cs0 = cpuTimeFine(p.pid), ctxSwitches(p.pid)
		}
		m.procs = append(m.procs, pc)
	}
	m.self0, m.kids0, m.all0, m.t0 = selfCPU(), childrenCPU(), machineBusy(), time.Now()
}

// used returns the CPU p used so far, to the nanosecond.
func (m *cpuMeter) used(p *proc) time.Duration {
	for _, pc := range m.procs {
		if pc.p == p && pc.pid > 0 {
			return cpuTimeFine(pc.pid) - pc.own0
		}
	}
	return 0
}

// stop returns "gateway cpu X, N context switches; gwload cpu Y; other
// load Z cores" for a line, and the other load; ok is false when a
// measured process's pid is unknown, so that its CPU cannot be told apart.
func (m *cpuMeter) stop() (line string, other float64, ok bool) {
	wall := time.Since(m.t0)
	self, kids, all := selfCPU()-m.self0, childrenCPU()-m.kids0, machineBusy()-m.all0
	mine, ok := self+kids, true
	var parts []string
	for _, pc := range m.procs {
		if pc.pid <= 0 {
			ok = false
			continue
		}
		a, _ := cpuTimeAll(pc.pid)
		mine += a - pc.all0
		if pc.p == m.show {
			parts = append(parts, fmt.Sprintf("%s cpu %.2fs, %d context switches", pc.p.name, m.used(pc.p).Seconds(), ctxSwitches(pc.pid)-pc.cs0))
		}
	}
	other = max(0, (all-mine).Seconds()/wall.Seconds())
	parts = append(parts, fmt.Sprintf("gwload cpu %.2fs", self.Seconds()))
	if !ok {
		return strings.Join(parts, "; ") + fmt.Sprintf("; rest of the machine, gateway included, %.2f cores", other), 0, false
	}
	return strings.Join(parts, "; ") + fmt.Sprintf("; other load %.2f cores", other), other, true
}

// --- statistics and units ---------------------------------------------------

func median(v []float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// pct returns the p-th percentile (nearest rank).
func pct(v []time.Duration, p float64) time.Duration {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[max(0, min(i, len(s)-1))]
}

// perRep lists the ratio of each repetition (the first 10, then their
// range).
func perRep(g, x []float64, ratio func(g, x float64) float64) string {
	var parts []string
	var rs []float64
	for i := range min(len(g), len(x)) {
		rs = append(rs, ratio(g[i], x[i]))
		if i < 10 {
			parts = append(parts, fmt.Sprintf("%.2f", rs[i]))
		}
	}
	if len(rs) > 10 {
		parts = append(parts, fmt.Sprintf("... (%d in all, from %.2f to %.2f)", len(rs), slices.Min(rs), slices.Max(rs)))
	}
	return "[" + strings.Join(parts, " ") + "]"
}

// rangeOf is "name lo..hi" over several repetitions, or "".
func rangeOf(name string, v []float64, unit func(float64) string) string {
	if len(v) < 2 {
		return ""
	}
	return fmt.Sprintf("%s %s..%s", name, unit(slices.Min(v)), unit(slices.Max(v)))
}

func verdict(ok bool) string {
	if ok {
		return "MET"
	}
	return "MISSED"
}

func mibps(bps float64) string              { return fmt.Sprintf("%.1f MiB/s", bps/(1<<20)) }
func perSec(v float64) string               { return fmt.Sprintf("%.1f /s", v) }
func kib(v float64) string                  { return fmt.Sprintf("%.1f KiB", v) }
func micros(v float64) string               { return fmt.Sprintf("%.0f µs", v) }
func millis(v float64) string               { return fmt.Sprintf("%.3f ms", v) }
func msPerMiB(v float64) string             { return fmt.Sprintf("%.3f ms/MiB", v) }
func ms(d time.Duration) float64            { return float64(d) / float64(time.Millisecond) }
func us(d time.Duration) float64            { return float64(d) / float64(time.Microsecond) }
func mib(n int64) float64                   { return float64(n) / (1 << 20) }
func rate(n int64, d time.Duration) float64 { return float64(n) / d.Seconds() }
