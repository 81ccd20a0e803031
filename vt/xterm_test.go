package vt

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"gateway/internal/tooltest"
)

// These tests hold the terminal state against xterm.js itself, the web
// page's terminal, in a headless Chromium: the recordings of real programs
// are fed to both, and every row's text, every cell's style, the cursor,
// the active screen, the scrollback and the modes must agree. Then
// xterm.js is fed the restore, and must end exactly where the original
// output left it.

// state is a terminal's state as both sides report it.
type state struct {
	Alt     bool     `json:"alt"`
	Cursor  [2]int   `json:"cursor"`
	Hidden  bool     `json:"hidden"`
	Rows    []string `json:"rows"`    // text, as translateToString(true)
	Cells   []string `json:"cells"`   // each row's styled cells
	History []string `json:"history"` // the main screen's scrollback text
	Modes   string   `json:"modes"`
}

// xtermPage loads xterm.js and defines dump(base64, cols, rows): a fresh
// terminal fed the bytes, its state as above.
const xtermPage = `<!doctype html><meta charset=utf-8><script src="/xterm.js"></script><script>
function flags(c) {
  let f = "";
  if (c.isBold()) f += "B"; if (c.isDim()) f += "D"; if (c.isItalic()) f += "I"; if (c.isUnderline()) f += "U";
  if (c.isBlink()) f += "K"; if (c.isInverse()) f += "R"; if (c.isInvisible()) f += "H"; if (c.isStrikethrough()) f += "S";
  if (c.isOverline()) f += "O";
  return f;
}
function pair(mode, v) { return mode === 0 ? "0/0" : mode + "/" + v; }
function cellsOf(line, cols) {
  const out = [];
  for (let x = 0; x < cols; x++) {
    const c = line.getCell(x);
    if (!c || c.getWidth() === 0) continue;
    const ch = c.getChars();
    const bg = pair(c.getBgColorMode(), c.getBgColor());
    if (ch === "") {
      if (bg !== "0/0") out.push(x + ":_bg=" + bg);
      continue;
    }
    const fg = pair(c.getFgColorMode(), c.getFgColor());
    const f = flags(c);
    if (fg !== "0/0" || bg !== "0/0" || f !== "") out.push(x + ":fg=" + fg + ",bg=" + bg + "," + f);
  }
  return out.join(" ");
}
function dump(b64, cols, rows) {
  const term = new Terminal({cols: cols, rows: rows, scrollback: 1000, allowProposedApi: true});
  const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
  return new Promise(done => term.write(bytes, () => { try {
    const b = term.buffer.active, m = term.modes;
    // (A lone mark at a pending wrap moves xterm.js's cursor a column past
    // the edge, where it acts as a pending wrap: read as one.)
    const st = {alt: b.type === "alternate", cursor: [Math.min(b.cursorX, cols), b.cursorY], hidden: term._core.coreService.isCursorHidden,
      rows: [], cells: [], history: []};
    for (let y = 0; y < rows; y++) {
      const line = b.getLine(b.baseY + y);
      st.rows.push(line.translateToString(true));
      st.cells.push(cellsOf(line, cols));
    }
    const n = term.buffer.normal;
    for (let y = 0; y < n.baseY; y++) st.history.push(n.getLine(y).translateToString(true));
    st.modes = [m.applicationCursorKeysMode, m.applicationKeypadMode, m.bracketedPasteMode, m.insertMode,
      m.mouseTrackingMode, m.originMode, m.reverseWraparoundMode, m.sendFocusMode, m.wraparoundMode].join(",");
    term.dispose();
    done(JSON.stringify(st));
  } catch (e) { done("error: " + e + " " + e.stack); } }));
}
</script>`

// xterm is a Chromium tab with xterm.js loaded.
type xterm struct {
	t   *testing.T
	ctx context.Context
}

func newXterm(t *testing.T) *xterm {
	t.Helper()
	lib, err := os.ReadFile(filepath.Join("..", "web", "node_modules", "@xterm", "xterm", "lib", "xterm.js"))
	if err != nil {
		tooltest.SkipOrFail(t, "xterm.js is not installed: run make web ("+err.Error()+")")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		w.Write([]byte(xtermPage))
	})
	mux.HandleFunc("/xterm.js", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/javascript")
		w.Write(lib)
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	ctx := tooltest.StartChromium(t, 1024, 768)
	x := &xterm{t: t, ctx: ctx}
	x.run(chromedp.Navigate("http://" + ln.Addr().String() + "/"))
	return x
}

func (x *xterm) run(actions ...chromedp.Action[chromedp.Void]) {
	x.t.Helper()
	ctx, cancel := context.WithTimeout(x.ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		x.t.Fatal(err)
	}
}

// dump feeds a fresh xterm.js terminal the bytes and returns its state.
func (x *xterm) dump(out []byte, cols, rows int) state {
	x.t.Helper()
	st, err := x.tryDump(out, cols, rows, 30*time.Second)
	if err != nil {
		x.t.Fatal(err)
	}
	return st
}

func (x *xterm) tryDump(out []byte, cols, rows int, timeout time.Duration) (state, error) {
	ctx, cancel := context.WithTimeout(x.ctx, timeout)
	defer cancel()
	js := fmt.Sprintf("dump(%q, %d, %d)", base64.StdEncoding.EncodeToString(out), cols, rows)
	res, err := chromedp.Run(ctx, chromedp.Evaluate[string](js, chromedp.EvalAwaitPromise))
	if err != nil {
		return state{}, fmt.Errorf("xterm.js (%dx%d) fed %q: %w", cols, rows, out, err)
	}
	var st state
	if err := json.Unmarshal([]byte(res), &st); err != nil {
		return state{}, fmt.Errorf("xterm.js (%dx%d) fed %q: %s", cols, rows, out, res)
	}
	return st, nil
}

// stateOf reports a Terminal's state in the form xterm.js's is read.
func stateOf(t *Terminal) state {
	s := t.scr
	st := state{Alt: t.AltScreen(), Cursor: [2]int{min(s.x, t.cols), s.y}, Hidden: t.modes&modeHidden != 0,
		Rows: t.Text(), History: t.History()}
	for _, l := range s.lines {
		var cells []string
		for x := 0; x < t.cols; x++ {
			c := l.at(x)
			if c.r == wideTail || c.r > 0 && c.r < graphemeBase && width(c.r) == 0 { // xterm.js gives these no width
				continue
			}
			sty := t.styles.get(c.s)
			bg := colorPair(sty.bg)
			if c.r == blank {
				if bg != "0/0" {
					cells = append(cells, fmt.Sprintf("%d:_bg=%s", x, bg))
				}
				continue
			}
			fg, f := colorPair(sty.fg), styleFlags(sty)
			if fg != "0/0" || bg != "0/0" || f != "" {
				cells = append(cells, fmt.Sprintf("%d:fg=%s,bg=%s,%s", x, fg, bg, f))
			}
		}
		st.Cells = append(st.Cells, strings.Join(cells, " "))
	}
	mouse := map[uint16]string{0: "none", 9: "x10", 1000: "vt200", 1002: "drag", 1003: "any"}[t.mouse]
	m := t.modes
	st.Modes = fmt.Sprintf("%v,%v,%v,%v,%s,%v,%v,%v,%v", m&modeAppCursor != 0, m&modeAppKeypad != 0, m&modeBracketPaste != 0,
		m&modeInsert != 0, mouse, m&modeOrigin != 0, m&modeReverseWrap != 0, m&modeFocus != 0, m&modeNoWrap == 0)
	return st
}

func colorPair(c color) string {
	return fmt.Sprintf("%d/%d", uint32(c&colorKind), uint32(c&^colorKind))
}

func styleFlags(s style) string {
	var f strings.Builder
	for _, a := range []struct {
		on bool
		c  byte
	}{{s.attrs&attrBold != 0, 'B'}, {s.attrs&attrDim != 0, 'D'}, {s.attrs&attrItalic != 0, 'I'}, {s.underline != 0, 'U'},
		{s.attrs&attrBlink != 0, 'K'}, {s.attrs&attrInverse != 0, 'R'}, {s.attrs&attrInvisible != 0, 'H'},
		{s.attrs&attrStrike != 0, 'S'}, {s.attrs&attrOverline != 0, 'O'}} {
		if a.on {
			f.WriteByte(a.c)
		}
	}
	return f.String()
}

// diffStates reports where two states differ, row by row.
func diffStates(got, want state) string {
	var b strings.Builder
	if got.Alt != want.Alt || got.Cursor != want.Cursor || got.Hidden != want.Hidden || got.Modes != want.Modes {
		fmt.Fprintf(&b, "alt %v cursor %v hidden %v modes %s; want alt %v cursor %v hidden %v modes %s\n",
			got.Alt, got.Cursor, got.Hidden, got.Modes, want.Alt, want.Cursor, want.Hidden, want.Modes)
	}
	shown := 0
	for y := range max(len(got.Rows), len(want.Rows)) {
		if shown == 5 {
			b.WriteString("…\n")
			break
		}
		if g, w := at(got.Rows, y), at(want.Rows, y); g != w {
			fmt.Fprintf(&b, "row %d: %q\n   want %q\n", y, g, w)
			shown++
		}
		if g, w := at(got.Cells, y), at(want.Cells, y); g != w {
			i := 0 // show them from a little before where they part
			for i < min(len(g), len(w)) && g[i] == w[i] {
				i++
			}
			i = max(i-40, 0)
			fmt.Fprintf(&b, "row %d cells: …%.300s\n         want …%.300s\n", y, g[min(i, len(g)):], w[min(i, len(w)):])
			shown++
		}
	}
	if g, w := strings.Join(got.History, "\n"), strings.Join(want.History, "\n"); g != w {
		fmt.Fprintf(&b, "history: %d lines %q\n    want %d lines %q\n", len(got.History), got.History, len(want.History), want.History)
	}
	return b.String()
}

// restorable is what a restore can give of a state: a wrap pending over
// an empty last column comes back as the cursor on that column (printing
// is the only way to leave a wrap pending, and it fills the column).
// (Nor can a combining mark put on an empty cell come back as it was:
// randomOutput's checks skip those.)
//
// A wide character whose second half xterm.js blanked (at the end of a
// run) comes back whole: the blank's background is lost.
func restorable(t *Terminal, st state) state {
	s := t.scr
	if s.x >= t.cols && s.lines[s.y].at(t.cols-1).r == blank {
		st.Cursor[0] = t.cols - 1
	}
	st.Cells = append([]string(nil), st.Cells...)
	for y, l := range s.lines {
		for x := range l.cells {
			if l.cells[x].isHead() && l.at(x+1).r == blank && y < len(st.Cells) {
				var keep []string
				for _, tok := range strings.Fields(st.Cells[y]) {
					if !strings.HasPrefix(tok, fmt.Sprintf("%d:_bg=", x+1)) {
						keep = append(keep, tok)
					}
				}
				st.Cells[y] = strings.Join(keep, " ")
			}
		}
	}
	return st
}

func at(s []string, i int) string {
	if i < len(s) {
		return s[i]
	}
	return "<none>"
}

func TestAgainstXterm(t *testing.T) {
	x := newXterm(t)
	cases := recorded(t)
	type run struct {
		name       string
		cols, rows int
		out        []byte
	}
	var runs []run
	for _, rec := range recordings {
		runs = append(runs, run{rec.name, int(rec.cols), int(rec.rows), cases[rec.name]})
	}
	for name, out := range restoreCases {
		runs = append(runs, run{"synthetic/" + name, 40, 10, []byte(out)})
	}
	for _, r := range runs {
		t.Run(r.name, func(t *testing.T) {
			cols, rows, out := r.cols, r.rows, r.out
			want := x.dump(out, cols, rows)
			term := New(cols, rows, DefaultConfig())
			term.Write(out)
			if d := diffStates(stateOf(term), want); d != "" {
				t.Errorf("the terminal state differs from xterm.js's:\n%s", d)
			}
			if d := diffStates(x.dump(term.AppendRestore(nil), cols, rows), restorable(term, want)); d != "" {
				t.Errorf("xterm.js fed the restore differs from xterm.js fed the output:\n%s", d)
			}
		})
	}
}
