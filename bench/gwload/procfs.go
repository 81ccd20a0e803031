package main

import (
	"bufio"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"gateway/internal/procfs"
)

// Readings of /proc, and the gateway's /metrics.

// vmRSS returns the VmRSS of pid in KiB.
func vmRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(v)
			if len(f) < 1 {
				break
			}
			return strconv.ParseInt(f[0], 10, 64)
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

// clockTick is USER_HZ, which is 100 on Linux for every architecture Go
// supports.
const clockTick = 100

// cpuTimeFine returns the time pid's live threads have run, to the
// nanosecond (/proc/PID/task/*/schedstat; /proc/PID/stat counts in clock
// ticks, too coarse for a measurement of a tenth of a second). Threads
// that exited are not counted; Go seldom ends threads.
func cpuTimeFine(pid int) time.Duration {
	paths, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/[0-9]*/schedstat", pid))
	var sum int64
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		if f := strings.Fields(string(b)); len(f) > 0 {
			ns, _ := strconv.ParseInt(f[0], 10, 64)
			sum += ns
		}
	}
	return time.Duration(sum)
}

// ctxSwitches sums the voluntary and involuntary context switches of
// every thread of pid (threads that exited are not counted; Go seldom ends
// threads).
func ctxSwitches(pid int) int64 {
	paths, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/[0-9]*/status", pid))
	var n int64
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		for line := range strings.SplitSeq(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "voluntary_ctxt_switches:"); ok {
				k, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
				n += k
			} else if v, ok := strings.CutPrefix(line, "nonvoluntary_ctxt_switches:"); ok {
				k, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
				n += k
			}
		}
	}
	return n
}

// threadsIn counts the threads of pid that are in the system call nr (see
// /proc/pid/task/tid/syscall), and returns the number of threads too.
func threadsIn(pid int, nr string) (in, all int) {
	paths, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/[0-9]*/syscall", pid))
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		all++
		if f := strings.Fields(string(b)); len(f) > 0 && f[0] == nr {
			in++
		}
	}
	return in, all
}

// sysWaitid is the number of waitid(2) on this architecture, or "".
func sysWaitid() string {
	switch runtime.GOARCH {
	case "amd64":
		return "247"
	case "arm64", "riscv64", "loong64":
		return "95"
	}
	return ""
}

// cpuTimeAll returns the CPU time of pid and of its children it has
// waited for (utime+stime+cutime+cstime).
func cpuTimeAll(pid int) (time.Duration, error) {
	f, err := procfs.StatFields(pid)
	if err != nil {
		return 0, err
	}
	if len(f) < 15 {
		return 0, fmt.Errorf("/proc/%d/stat: short", pid)
	}
	var sum int64
	for _, s := range f[11:15] {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, err
		}
		sum += v
	}
	return time.Duration(sum) * time.Second / clockTick, nil
}

// machineBusy returns the CPU time all CPUs spent busy since boot (user,
// nice, system, irq and softirq; not idle, iowait or steal).
func machineBusy() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return 0
	}
	var sum int64
	for _, i := range []int{1, 2, 3, 6, 7} {
		v, _ := strconv.ParseInt(f[i], 10, 64)
		sum += v
	}
	return time.Duration(sum) * time.Second / clockTick
}

// childrenCPU returns the CPU time of this process's waited-for children.
func childrenCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_CHILDREN, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// selfCPU returns this process's user+system CPU time.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// children counts the processes whose parent is pid: the children of each
// of its threads.
func children(pid int) int {
	paths, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/[0-9]*/children", pid))
	n := 0
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err == nil { // else the thread ended meanwhile
			n += len(strings.Fields(string(b)))
		}
	}
	return n
}

// waitChildren waits until pid has want children, at most d. It polls
// every 10 ms, or less often when a poll costs more than a millisecond or
// so (a process with many threads), so that polling stays a small load.
func waitChildren(pid, want int, d time.Duration) (int, error) {
	deadline := time.Now().Add(d)
	for {
		t := time.Now()
		n := children(pid)
		if n == want {
			return n, nil
		}
		if time.Now().After(deadline) {
			return n, fmt.Errorf("pid %d has %d child processes after %v, want %d", pid, n, d, want)
		}
		time.Sleep(max(10*time.Millisecond, 10*time.Since(t)))
	}
}

// metricsSnapshot reads a few series from the gateway's /metrics (the Go
// and process collectors).
func metricsSnapshot(addr string) (map[string]float64, error) {
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("/metrics: HTTP %d", resp.StatusCode)
	}
	want := map[string]bool{
		"go_goroutines": true, "go_threads": true, "go_memstats_heap_inuse_bytes": true,
		"go_memstats_stack_inuse_bytes": true, "go_memstats_sys_bytes": true,
		"process_open_fds": true, "process_resident_memory_bytes": true,
		"go_memstats_alloc_bytes_total": true, "go_memstats_mallocs_total": true,
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) == 2 && want[f[0]] {
			v, err := strconv.ParseFloat(f[1], 64)
			if err == nil {
				out[f[0]] = v
			}
		}
	}
	return out, sc.Err()
}

// allocMeter reads what a server allocated over a run, from its /metrics.
type allocMeter struct {
	addr string
	m0   map[string]float64 // nil when there is no reading
}

// startAllocs starts an allocMeter on the /metrics at addr; with no addr,
// or when /metrics cannot be read, it reports nothing.
func startAllocs(addr string) *allocMeter {
	a := &allocMeter{addr: addr}
	if addr != "" {
		a.m0, _ = metricsSnapshot(addr)
	}
	return a
}

// per returns "server allocated X KiB, N objects per set-up" over n calls,
// or "". A reading of /metrics itself allocates some tens of KiB, counted
// in the next reading: about 0.05 KiB per set-up over 1,000.
func (a *allocMeter) per(n int) string {
	if a.m0 == nil || n == 0 {
		return ""
	}
	m1, err := metricsSnapshot(a.addr)
	if err != nil {
		return ""
	}
	const b, o = "go_memstats_alloc_bytes_total", "go_memstats_mallocs_total"
	return fmt.Sprintf("server allocated %.1f KiB, %.0f objects per set-up",
		(m1[b]-a.m0[b])/1024/float64(n), (m1[o]-a.m0[o])/float64(n))
}
