package vt

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"gateway/internal/ptyio"
)

// The recordings in testdata/programs are the raw output of real programs
// in a pty, which the tests feed to this package and to xterm.js. They are
// made with `go test ./vt -run TestRecord -record` (vim, less and htop
// installed) and kept, so that the tests see the same bytes everywhere.
var record = flag.Bool("record", false, "record testdata/programs again from the real programs")

// recording is one program run: the command (run by sh), the keys typed
// into it, each after a pause, and the terminal size.
type recording struct {
	name       string
	cols, rows uint16
	command    string
	keys       []string
}

var recordings = []recording{
	{name: "vim", cols: 80, rows: 24,
		command: "printf 'package main\\n\\nfunc main() {\\n\\tprintln(\"hello\")\\n}\\n' > main.go; exec vim --clean -n main.go",
		keys:    []string{"", "Go", "// marker: héllo wörld 日本語\x1b", ":set number\r", "gg"}},
	{name: "vim-split", cols: 100, rows: 30,
		command: "seq 1 200 > a.txt; exec vim --clean -n -o a.txt a.txt",
		keys:    []string{"", "50G", "\x17jG", ":vsplit\r", "ix\x1b"}},
	{name: "less", cols: 80, rows: 24,
		command: "for i in $(seq 1 300); do printf '\\033[1;3%dmline %d\\033[0m %s\\n' $((i % 8)) $i 'a long line that wraps around the screen because it goes on and on and on past eighty columns'; done > f.txt; exec less -R f.txt",
		keys:    []string{"", " ", " ", "G", "g", "/line 150\r"}},
	{name: "htop", cols: 120, rows: 40, command: "exec htop --no-mouse -d 5 -p $$", keys: []string{"", "", "t", ""}},
	{name: "colours", cols: 80, rows: 24, command: `for i in $(seq 0 255); do printf '\033[38;5;%dm%3d\033[48;5;%dm  \033[0m ' $i $i $i; [ $((i % 12)) = 11 ] && printf '\n'; done
printf '\n\033[38;2;255;100;0mtruecolor\033[48;2;0;50;100m bg\033[0m \033[1mbold\033[2mdim\033[0m \033[3mitalic\033[23m \033[4munder\033[24m \033[7mreverse\033[27m \033[9mstrike\033[0m \033[53mover\033[0m\n'
printf '\033[44m\033[Kblue to the end\033[0m\n\033[41m  \033[0m\033[42m\033[3X\033[0m\n'`},
	{name: "unicode", cols: 40, rows: 12, command: `printf 'wide: 日本語のテキスト 中文 한국어\n'
printf 'combining: e\314\201 a\314\210 n\314\203 o\314\202\314\243\n'
printf 'wrap wide: 0123456789012345678901234567890123456789日本語\n'
printf 'last col: 012345678901234567890123456789012345678日x\n'
printf 'fullwidth: ＡＢＣ１２３ half: ｱｲｳ\n'
printf 'box: \033(0lqqqk\nx   x\nmqqqj\033(B done\n'
printf 'overwrite: 日本\033[12G\033[1@x\033[3Py\n'`},
	{name: "scroll-region", cols: 60, rows: 16, command: `printf '\033[2J\033[Htop line\033[16;1Hbottom line\033[2;15r\033[15;1H'
for i in $(seq 1 30); do printf 'scrolled %d\n' $i; done
printf '\033[5;1H\033[3L\033[8;1H\033[2M\033[1;15r\033[1;1H\033[2S\033[3T\033[r\033[10;20Hend'`},
	{name: "shell", cols: 80, rows: 24, command: "PS1='\\[\\e[1;32m\\]user@host\\[\\e[0m\\]:\\[\\e[1;34m\\]~\\[\\e[0m\\]$ ' exec bash --noprofile --norc -i",
		keys: []string{"", "mkdir -p dir/sub; touch a.txt b.tar.gz run.sh; chmod +x run.sh; ln -sf a.txt link; ls -la --color=always\r", "echo $((6*7)) done\r", "printf 'a\\tb\\tc\\n'\r"}},
}

func TestRecord(t *testing.T) {
	if !*record {
		t.Skip("run with -record to record testdata/programs again")
	}
	dir := filepath.Join("testdata", "programs")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, rec := range recordings {
		out := rec.run(t)
		if err := os.WriteFile(filepath.Join(dir, rec.name+".pty"), out, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: %d bytes", rec.name, len(out))
	}
}

// run runs the recording's program in a pty and returns what it printed
// until the last key's pause (the program is killed then, so a full-screen
// one is recorded on its screen, not after it).
func (rec recording) run(t *testing.T) []byte {
	ptmx, tty, err := ptyio.Open(rec.cols, rec.rows)
	if err != nil {
		t.Fatal(err)
	}
	defer ptmx.Close()
	cmd := exec.Command("/bin/sh", "-c", rec.command)
	cmd.Dir = t.TempDir()
	cmd.Env = []string{"TERM=xterm-256color", "LANG=C.UTF-8", "HOME=" + cmd.Dir, "PATH=/usr/bin:/bin", "SHELL=/bin/sh"}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = tty, tty, tty
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	tty.Close()
	var out bytes.Buffer
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 4096)
		for {
			n, err := ptmx.Read(buf)
			out.Write(buf[:n])
			if err != nil {
				return
			}
		}
	}()
	for _, k := range append(rec.keys, "") {
		time.Sleep(700 * time.Millisecond)
		if _, err := ptmx.Write([]byte(k)); err != nil && len(rec.keys) > 0 {
			t.Logf("%s: typing %q: %v", rec.name, k, err)
		}
	}
	time.Sleep(700 * time.Millisecond)
	cmd.Process.Kill()
	cmd.Wait()
	ptmx.SetReadDeadline(time.Now().Add(time.Second))
	<-done
	if out.Len() == 0 || strings.Contains(out.String(), "not found") {
		t.Fatalf("%s printed %q", rec.name, out.String())
	}
	return out.Bytes()
}

// recorded returns the kept recordings by name.
func recorded(t *testing.T) map[string][]byte {
	out := map[string][]byte{}
	for _, rec := range recordings {
		b, err := os.ReadFile(filepath.Join("testdata", "programs", rec.name+".pty"))
		if err != nil {
			t.Fatalf("%v (make them with -record)", err)
		}
		out[rec.name] = b
	}
	return out
}

func (rec recording) String() string { return fmt.Sprintf("%s %dx%d", rec.name, rec.cols, rec.rows) }
