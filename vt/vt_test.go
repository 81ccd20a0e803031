package vt

import (
	"fmt"
	"strings"
	"testing"
)

func feed(cols, rows int, out string) *Terminal {
	t := New(cols, rows, DefaultConfig())
	t.Write([]byte(out))
	return t
}

func rows(t *Terminal) string { return strings.Join(t.Text(), "|") }

func TestText(t *testing.T) {
	for _, c := range []struct {
		name, out, want string
		x, y            int
	}{
		{"plain", "ab\r\ncd", "ab|cd|", 2, 1},
		{"wrap", "abcdefg", "abcde|fg|", 2, 1},
		{"pending wrap", "abcde", "abcde||", 5, 0},
		{"pending wrap then CR", "abcde\rX", "Xbcde||", 1, 0},
		{"line feed keeps the column", "ab\ncd", "ab|  cd", 4, 1},
		{"scroll", "1\r\n2\r\n3\r\n4", "2|3|4", 1, 2},
		{"cursor moves", "\x1b[2;3Hx\x1b[Ay\x1b[5Dz", "z  y|  x|", 1, 0},
		{"erase line", "abcde\x1b[3G\x1b[K", "ab||", 2, 0},
		{"erase line left", "abcde\x1b[3G\x1b[1K", "   de||", 2, 0},
		{"erase display", "ab\r\ncd\x1b[2J", "||", 2, 1},
		{"insert chars", "abcde\x1b[2G\x1b[2@", "a  bc||", 1, 0},
		{"delete chars", "abcde\x1b[2G\x1b[2P", "ade||", 1, 0},
		{"erase chars", "abcde\x1b[2G\x1b[2X", "a  de||", 1, 0},
		{"insert line", "1\r\n2\r\n3\x1b[2H\x1b[L", "1||2", 0, 1},
		{"delete line", "1\r\n2\r\n3\x1b[1H\x1b[M", "2|3|", 0, 0},
		{"tabs", "a\tb", "a       b|", 9, 0},
		{"backspace", "abc\b\bX", "aXc||", 2, 0},
		{"scroll region", "\x1b[2;3r\x1b[3H3\n4\n5", "| 4|  5", 3, 2},
		{"reverse index", "\x1b[1Hx\x1bMy", " y|x|", 2, 0},
		{"repeat", "a\x1b[3b", "aaaa||", 4, 0},
		{"wide", "日本", "日本||", 4, 0},
		{"wide wraps whole", "abcd日", "abcd|日|", 2, 1},
		{"combining", "e\u0301x", "e\u0301x||", 2, 0},
		{"wide overwritten", "日\x1b[1Gx", "x||", 1, 0},
		{"wide tail overwritten", "日\x1b[2Gx", " x||", 2, 0},
		{"dec graphics", "\x1b(0lqk\x1b(Bq", "┌─┐q||", 4, 0},
		{"no autowrap", "\x1b[?7labcdefg", "abcdg||", 5, 0},
		{"utf8 split", "\xe6\x97", "||", 0, 0},
		{"invalid utf8 dropped", "a\xffb", "ab||", 2, 0},
		{"osc title", "\x1b]2;hello\x07x", "x||", 1, 0},
		{"dcs ignored", "\x1bPq#0;2;0;0;0\x1b\\x", "x||", 1, 0},
		{"C1 CSI", "ab\u009b1Gx", "xb||", 1, 0},
		{"alignment", "\x1b#8", "EEEEE|EEEEE|EEEEE", 0, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			term := feed(5, 3, c.out)
			if c.name == "tabs" || c.name == "line feed keeps the column" {
				term = feed(10, 2, c.out)
			}
			if got := rows(term); got != c.want {
				t.Errorf("rows %q, want %q", got, c.want)
			}
			if x, y, _ := term.Cursor(); x != c.x || y != c.y {
				t.Errorf("cursor %d,%d, want %d,%d", x, y, c.x, c.y)
			}
		})
	}
}

func TestUTF8AcrossWrites(t *testing.T) {
	term := New(10, 2, DefaultConfig())
	for _, b := range []byte("日本語") {
		term.Write([]byte{b})
	}
	if got := rows(term); got != "日本語|" {
		t.Fatalf("rows %q", got)
	}
}

func TestAltScreen(t *testing.T) {
	term := feed(10, 3, "main\x1b[?1049h\x1b[Halt\x1b[2;2Hvim")
	if !term.AltScreen() || rows(term) != "alt| vim|" {
		t.Fatalf("alt screen: %v %q", term.AltScreen(), rows(term))
	}
	term.Write([]byte("\x1b[?1049l"))
	if term.AltScreen() || rows(term) != "main||" {
		t.Fatalf("main screen back: %v %q", term.AltScreen(), rows(term))
	}
	if x, y, _ := term.Cursor(); x != 4 || y != 0 {
		t.Fatalf("cursor restored to %d,%d, want 4,0", x, y)
	}
}

func TestHistoryBounded(t *testing.T) {
	term := New(20, 5, Config{Scrollback: 100, ScrollbackBytes: 1 << 20})
	for i := range 1000 {
		fmt.Fprintf(term, "line %d\r\n", i)
	}
	h := term.History()
	if len(h) != 100 || h[0] != "line 896" || h[99] != "line 995" {
		t.Fatalf("history: %d lines, %q … %q", len(h), h[0], h[len(h)-1])
	}
	small := New(20, 5, Config{Scrollback: 1000, ScrollbackBytes: 100})
	for i := range 1000 {
		fmt.Fprintf(small, "line %d\r\n", i)
	}
	if n := small.hist.len(); n < 10 || n > 13 || small.hist.bytes() > 100+8 {
		t.Fatalf("byte bound: %d lines in %d bytes", n, small.hist.bytes())
	}
}

func TestStyles(t *testing.T) {
	term := feed(10, 1, "\x1b[1;31ma\x1b[38;5;200mb\x1b[48;2;1;2;3mc\x1b[4:3;58:2::9:8:7md\x1b[0me")
	want := []style{
		{fg: color16 | 1, attrs: attrBold},
		{fg: color256 | 200, attrs: attrBold},
		{fg: color256 | 200, bg: colorRGB | 0x010203, attrs: attrBold},
		{fg: color256 | 200, bg: colorRGB | 0x010203, attrs: attrBold, underline: 3, ul: colorRGB | 0x090807},
		{},
	}
	for x, w := range want {
		if got := term.styles.get(term.main.lines[0].cells[x].s); got != w {
			t.Errorf("cell %d: style %+v, want %+v", x, got, w)
		}
	}
}

// snapshot is everything a restore must carry over, as text.
func snapshot(t *Terminal) string {
	var b strings.Builder
	dump := func(name string, s *screen) {
		if s == t.scr { // the main screen's cursor is the alternate one's when it comes back
			x := min(s.x, t.cols)
			if x == t.cols && s.lines[s.y].at(t.cols-1).r == blank {
				x-- // see restorable
			}
			fmt.Fprintf(&b, "cursor %d,%d ", x, s.y)
		}
		saved := s.saved
		saved.x = min(saved.x, t.cols-1) // restoring it ends a pending wrap anyway
		saved.y = max(saved.y-t.base(s), 0)
		fmt.Fprintf(&b, "%s region %d-%d saved %+v tabs %v\n", name, s.top, s.bottom, saved, s.tabs)
		for y, l := range s.lines {
			fmt.Fprintf(&b, "%2d %q", y, t.lineText(l))
			for x := range len(l.cells) {
				if c := l.cells[x]; c.r != wideTail && (c.r != blank || t.styles.get(c.s).bg != 0) {
					st := t.styles.get(c.s)
					if c.r == blank {
						st = st.eraseStyle()
					}
					if st != (style{}) {
						fmt.Fprintf(&b, " %d:%+v", x, st)
					}
				}
			}
			b.WriteByte('\n')
		}
	}
	dump("main", t.main)
	if t.AltScreen() {
		dump("alt", t.alt)
	}
	fmt.Fprintf(&b, "history %q\n", t.History())
	cs := string(t.cs)
	if t.cs != t.charsets[t.gl] && t.cs != t.scr.saved.cs {
		cs = "?" // a set in use that a restore cannot bring back (see appendCursorAndModes)
	}
	fmt.Fprintf(&b, "pen %+v modes %b mouse %d/%d cursor %d charsets %q/%d/%s title %q\n", t.pen, t.modes, t.mouse,
		t.mouseE, t.cursor, t.charsets[:], t.gl, cs, t.title)
	return b.String()
}

// restored feeds a fresh terminal the restore of t.
func restored(t *Terminal) *Terminal {
	r := New(t.cols, t.rows, Config{Scrollback: t.hist.maxLines, ScrollbackBytes: t.hist.maxBytes})
	r.Write([]byte("junk\x1b[?1049h\x1b[31mmore junk\x1b[5;6r"))
	r.Write(t.AppendRestore(nil))
	return r
}

// restoreCases are outputs that exercise each part of the state, at 40x10.
var restoreCases = map[string]string{
	"plain":         "hello\r\nworld",
	"history":       strings.Repeat("a line of text\r\n", 40) + "prompt$ ",
	"pending wrap":  "0123456789abcdefghij0123456789abcdefghij",
	"soft wrap":     strings.Repeat("wrapping text ", 20),
	"styles":        "\x1b[1;31mred\x1b[0m \x1b[44m  blue bg  \x1b[0m\x1b[48;5;22m\x1b[K\x1b[m\r\nnext",
	"erased bg":     "\x1b[41m\x1b[2J\x1b[m\x1b[3;4Hx",
	"alt screen":    "shell$ vim\r\n\x1b[?1049h\x1b[1;5r\x1b[H~\r\n~\r\n\x1b[7m-- INSERT --\x1b[m\x1b[2;3H",
	"alt 47":        "before\x1b[?47hin alt\x1b[?25l",
	"saved cursor":  "\x1b[3;7H\x1b[1;32m\x1b7\x1b[m\x1b[H",
	"origin":        "\x1b[3;8r\x1b[?6h\x1b[2;2Hx",
	"modes":         "\x1b[?1h\x1b=\x1b[?2004h\x1b[?1000h\x1b[?1006h\x1b[?1004h\x1b[5 q\x1b[4h\x1b]0;title\x07",
	"charset":       "\x1b(0lqqk\x1b)A\x0e",
	"wide":          "日本語テキスト and more 日本語テキスト\r\n\x1b[1;39H日",
	"combining":     "cafe\u0301 nai\u0308ve",
	"tabs":          "\x1b[3g\x1b[5G\x1bH\x1b[13G\x1bH\r\ta\tb",
	"no wrap":       "\x1b[?7l" + strings.Repeat("x", 50),
	"region scroll": "\x1b[2;4r\x1b[4H1\n2\n3\n4\n5",
	"blank lines":   "\r\n\r\n\r\n  x\r\n\r\n",
}

func TestRestore(t *testing.T) {
	for name, out := range restoreCases {
		t.Run(name, func(t *testing.T) {
			term := feed(40, 10, out)
			want := snapshot(term)
			if got := snapshot(restored(term)); got != want {
				t.Errorf("restored state differs\n got: %s\nwant: %s", got, want)
			}
		})
	}
}

func TestResize(t *testing.T) {
	term := feed(10, 4, "1\r\n2\r\n3\r\n4 abcdefgh")
	term.Resize(5, 2)
	if got := rows(term); got != "3|4 abc" {
		t.Fatalf("rows after shrinking: %q", got)
	}
	if h := term.History(); len(h) != 2 || h[1] != "2" {
		t.Fatalf("history after shrinking: %q", h)
	}
	term.Resize(8, 3)
	if got := rows(term); got != "3|4 abc|" {
		t.Fatalf("rows after growing: %q", got)
	}
	if got := snapshot(restored(term)); got != snapshot(term) {
		t.Fatalf("restore after resize differs:\n%s\n%s", got, snapshot(term))
	}
}

// TestCompact: an idle screen of text packs to about a byte a column, and
// unpacks to the same cells, styles and wide characters.
func TestCompact(t *testing.T) {
	out := strings.Repeat("x", 200*100) + "\x1b[31;1mred\x1b[0m 日本 e\u0301\x1b[5;3H\x1b[44m  \x1b[0m"
	term, twin := feed(200, 50, out), feed(200, 50, out)
	term.Compact()
	packed := 0
	for _, l := range term.main.lines {
		if l.cells != nil {
			t.Fatal("a compact line keeps its cells")
		}
		packed += len(l.packed)
	}
	if packed > 200*50+300 {
		t.Errorf("the screen packs to %d bytes", packed)
	}
	if got, want := rows(term), rows(twin); got != want || !term.packed {
		t.Fatalf("Text of the compact screen differs (compact: %v):\n%s\nwant\n%s", term.packed, got, want)
	}
	term.Write([]byte("!"))
	twin.Write([]byte("!"))
	if got, want := snapshot(term), snapshot(twin); got != want {
		t.Fatalf("after a write\n got: %s\nwant: %s", got, want)
	}
}
