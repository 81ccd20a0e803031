// Package proctest inspects processes through /proc, for tests that check
// that no child is left running or unreaped, gives test binaries an
// environment of their own, and repeats input to a process until its
// output shows it took effect.
package proctest

import (
	"os"

	"gateway/internal/procfs"
)

// Alive reports whether pid exists and is not a zombie.
func Alive(pid int) bool {
	p, ok := procfs.Stat(pid)
	return ok && p.State != "Z"
}

// Zombies lists the unreaped children of this process.
func Zombies() []int {
	var out []int
	for _, p := range procfs.All() {
		if p.State == "Z" && p.PPid == os.Getpid() {
			out = append(out, p.Pid)
		}
	}
	return out
}

// LiveInGroup lists the processes of a group that are not zombies.
func LiveInGroup(pgid int) []int {
	var out []int
	for _, p := range procfs.All() {
		if p.PGid == pgid && p.State != "Z" {
			out = append(out, p.Pid)
		}
	}
	return out
}

// InSession lists the live (not zombie) processes of a session.
func InSession(sid int) []int {
	var out []int
	for _, p := range procfs.All() {
		if p.Session == sid && p.State != "Z" {
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
