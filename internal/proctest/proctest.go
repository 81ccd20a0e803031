// Package proctest inspects processes through /proc, for tests that check
// that no child is left running or unreaped.
package proctest

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Proc is one process as /proc/<pid>/stat shows it.
type Proc struct {
	Pid, PPid, PGid int
	State           string // R, S, Z, ...
}

// All returns every process that can be read.
func All() []Proc {
	var out []Proc
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if p, ok := Stat(pid); ok {
			out = append(out, p)
		}
	}
	return out
}

// Stat reads one process; ok is false when it does not exist.
func Stat(pid int) (Proc, bool) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return Proc{}, false
	}
	// pid (comm) state ppid pgrp ...: comm may hold spaces and parentheses.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(f) < 3 {
		return Proc{}, false
	}
	ppid, _ := strconv.Atoi(f[1])
	pgid, _ := strconv.Atoi(f[2])
	return Proc{Pid: pid, PPid: ppid, PGid: pgid, State: f[0]}, true
}

// Alive reports whether pid exists and is not a zombie.
func Alive(pid int) bool {
	p, ok := Stat(pid)
	return ok && p.State != "Z"
}

// Zombies lists the unreaped children of this process.
func Zombies() []int {
	var out []int
	for _, p := range All() {
		if p.State == "Z" && p.PPid == os.Getpid() {
			out = append(out, p.Pid)
		}
	}
	return out
}

// LiveInGroup lists the processes of a group that are not zombies.
func LiveInGroup(pgid int) []int {
	var out []int
	for _, p := range All() {
		if p.PGid == pgid && p.State != "Z" {
			out = append(out, p.Pid)
		}
	}
	return out
}

// Hermetic gives the test binary's processes, and every process they
// start, an environment of their own: a fresh empty HOME (no dotfiles),
// SHELL=/bin/sh, a known locale, and no ENV or BASH_ENV startup files. Call
// it first in TestMain; the returned function removes the HOME.
func Hermetic() (cleanup func()) {
	home, err := os.MkdirTemp("", "gateway-test-home-")
	if err != nil {
		panic(err)
	}
	for k, v := range map[string]string{"HOME": home, "SHELL": "/bin/sh", "LANG": "C.UTF-8", "TERM": "dumb"} {
		os.Setenv(k, v)
	}
	for _, k := range []string{"ENV", "BASH_ENV", "LC_ALL", "PROMPT_COMMAND", "ZDOTDIR", "XDG_CONFIG_HOME"} {
		os.Unsetenv(k)
	}
	return func() { os.RemoveAll(home) }
}
