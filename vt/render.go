package vt

import (
	"strconv"
	"strings"
	"unicode/utf8"
)

// AppendRestore appends output that, written to a terminal of the same
// size, gives it this terminal's state: it resets the terminal (RIS), then
// draws the scrollback and the main screen, the alternate screen if it is
// active, and sets the scroll regions, saved cursors, tab stops, cursor,
// style, modes, character sets and title.
func (t *Terminal) AppendRestore(b []byte) []byte {
	defer t.thawed()()
	b = append(b, "\x1bc"...)
	m := t.main
	nh := t.hist.len()
	for i := range nh {
		lb, ref := t.hist.line(i)
		b = append(b, lb...)
		var nextWrapped, nextLead bool
		if i+1 < nh {
			_, next := t.hist.line(i + 1)
			nextWrapped, nextLead = next.wrapped, next.lead
		} else {
			nextWrapped, nextLead = m.lines[0].wrapped, t.leads(m.lines[0])
		}
		if !(ref.full && nextWrapped && nextLead) {
			b = append(b, "\r\n"...)
		}
	}
	for y, l := range m.lines {
		b = t.appendLine(b, l)
		if y+1 < t.rows {
			if next := m.lines[y+1]; !(t.full(l) && next.wrapped && t.leads(next)) {
				b = append(b, "\r\n"...)
			}
		}
	}
	b = t.appendScreenState(b, m)
	if t.scr == t.alt {
		b = append(b, "\x1b[?47h"...)
		for y, l := range t.alt.lines {
			if len(l.cells) > 0 {
				b = appendCUP(b, y, 0)
				b = t.appendLine(b, l)
			}
		}
		b = t.appendScreenState(b, t.alt)
	}
	return t.appendCursorAndModes(b)
}

// appendScreenState sets a screen's tab stops, scroll region and saved
// cursor, leaving the modes it used at their defaults.
func (t *Terminal) appendScreenState(b []byte, s *screen) []byte {
	if s.tabs != nil {
		b = append(b, "\x1b[3g"...)
		for x, on := range s.tabs[:min(len(s.tabs), t.cols)] {
			if on {
				b = appendCUP(b, 0, x)
				b = append(b, "\x1bH"...)
			}
		}
	}
	if s.top != 0 || s.bottom != t.rows-1 {
		b = appendRegion(b, s)
	}
	c := s.saved
	c.y = max(c.y-t.base(s), 0)
	if c != defaultCursor {
		b = appendCUP(b, c.y, min(c.x, t.cols-1))
		b = appendSGR(b, c.pen)
		if c.cs != 'B' { // the set in use is saved with the cursor
			b = append(b, 0x1B, '(', c.cs)
		}
		b = append(b, "\x1b7"...)
		if c.cs != 'B' {
			b = append(b, "\x1b(B"...)
		}
		b = append(b, "\x1b[m"...)
	}
	return b
}

// appendCursorAndModes places the cursor of the active screen (leaving a
// wrap pending where one is), then sets the modes, character sets, title
// and style.
func (t *Terminal) appendCursorAndModes(b []byte) []byte {
	s := t.scr
	top := 0
	if t.modes&modeOrigin != 0 {
		b = append(b, "\x1b[?6h"...)
		top = s.top
	}
	// The set in use may have come back with a DECRC, apart from the
	// invoked one: then so does it here, before the cursor is placed (so a
	// character printed for a pending wrap goes through that set).
	decrc := t.cs != t.charsets[t.gl] && t.cs == s.saved.cs
	if decrc {
		b = appendCharsets(b, t.charsets, t.gl)
		b = append(b, "\x1b8"...)
	}
	outside := top > 0 && (s.y < s.top || s.y > s.bottom)
	switch {
	case outside && s == t.main:
		// In origin mode the cursor is outside the region only after a
		// switch of screens, which carries it over: so here too.
		b = append(b, "\x1b[?47h"...)
		b = appendCUP(b, s.y, min(s.x, t.cols-1))
		b = append(b, "\x1b[?47l"...)
	case s.x >= t.cols && !outside:
		// A wrap is pending: print the last column's character again.
		l := s.lines[s.y]
		x := t.cols - 1
		if l.at(x).r == wideTail && l.at(x-1).isHead() {
			x--
		}
		c := l.at(x)
		b = appendCUP(b, s.y-top, x)
		if c.r > 0 {
			b = appendSGR(b, t.styles.get(c.s))
			b = t.appendChar(b, c)
		}
	default:
		b = appendCUP(b, s.y-top, min(s.x, t.cols-1))
	}
	for _, m := range [...]struct {
		mode modes
		seq  string
	}{{modeNoWrap, "\x1b[?7l"}, {modeInsert, "\x1b[4h"}, {modeNewline, "\x1b[20h"}, {modeAppCursor, "\x1b[?1h"},
		{modeAppKeypad, "\x1b="}, {modeHidden, "\x1b[?25l"}, {modeReverseWrap, "\x1b[?45h"},
		{modeFocus, "\x1b[?1004h"}, {modeBracketPaste, "\x1b[?2004h"}} {
		if t.modes&m.mode != 0 {
			b = append(b, m.seq...)
		}
	}
	for _, v := range []uint16{t.mouse, t.mouseE} {
		if v != 0 {
			b = append(b, "\x1b[?"...)
			b = strconv.AppendInt(b, int64(v), 10)
			b = append(b, 'h')
		}
	}
	if t.cursor != 0 {
		b = append(b, "\x1b["...)
		b = strconv.AppendInt(b, int64(t.cursor), 10)
		b = append(b, " q"...)
	}
	if !decrc {
		b = appendCharsets(b, t.charsets, t.gl)
	}
	if t.title != "" {
		b = append(b, "\x1b]2;"...)
		b = append(b, t.title...)
		b = append(b, '\a')
	}
	return appendSGR(b, t.pen)
}

// appendCharsets designates the character sets and invokes one, from the
// initial state (US ASCII everywhere, G0 invoked).
func appendCharsets(b []byte, sets [4]byte, gl uint8) []byte {
	for i, cs := range sets {
		if cs != 'B' {
			b = append(b, 0x1B, "()*+"[i], cs)
		}
	}
	switch gl {
	case 1:
		b = append(b, 0x0E)
	case 2:
		b = append(b, "\x1bn"...)
	case 3:
		b = append(b, "\x1bo"...)
	}
	return b
}

func appendCUP(b []byte, y, x int) []byte {
	b = append(b, "\x1b["...)
	b = strconv.AppendInt(b, int64(y+1), 10)
	b = append(b, ';')
	b = strconv.AppendInt(b, int64(x+1), 10)
	return append(b, 'H')
}

func appendRegion(b []byte, s *screen) []byte {
	b = append(b, "\x1b["...)
	b = strconv.AppendInt(b, int64(s.top+1), 10)
	b = append(b, ';')
	b = strconv.AppendInt(b, int64(s.bottom+1), 10)
	return append(b, 'r')
}

func appendCSI(b []byte, n int, final byte) []byte {
	b = append(b, "\x1b["...)
	b = strconv.AppendInt(b, int64(n), 10)
	return append(b, final)
}

// leads reports whether a line starts with a character, so that a soft
// wrap into it can be redrawn by printing.
func (t *Terminal) leads(l *line) bool {
	if len(l.cells) == 0 || !t.drawable(l, 0) {
		return false
	}
	rs := t.runes(l.cells[0])
	return len(rs) > 0 && width(rs[0]) > 0
}

// full reports whether a line's last column holds a character.
func (t *Terminal) full(l *line) bool {
	return len(l.cells) >= t.cols && l.cells[t.cols-1].r != blank
}

// appendLine appends the bytes that draw a line from its first column,
// starting and ending in the default style: characters with SGR where the
// style changes, blank runs skipped (CUF) or erased in their background
// (ECH), so that blank cells stay blank and not spaces.
func (t *Terminal) appendLine(b []byte, l *line) []byte {
	cur, curSt := 0, style{} // the style in effect, and its index (-1 when it has none)
	n := len(l.cells)
	for x := 0; x < n; {
		c := l.cells[x]
		if int(c.s) == cur {
			// The common case: a run of ASCII in the style in effect.
			for c.r >= 0x20 && c.r < 0x7F {
				b = append(b, byte(c.r))
				if x++; x == n {
					break
				}
				if c = l.cells[x]; int(c.s) != cur {
					break
				}
			}
			if x == n {
				break
			}
		}
		if !t.drawable(l, x) {
			// A blank run, in one background. A second half left without
			// its character (xterm.js leaves them) is drawn as a default
			// blank: xterm.js shows it as a space with no style.
			blankStyle := func(c cell) uint16 {
				if c.r == wideTail {
					return 0
				}
				return c.s
			}
			st := blankStyle(c)
			j := x + 1
			for j < n && !t.drawable(l, j) && blankStyle(l.cells[j]) == st {
				j++
			}
			if bg := t.styles.get(st).eraseStyle(); bg != (style{}) {
				if bg != curSt {
					b = appendSGR(b, bg)
					cur, curSt = -1, bg
					if i, ok := t.styles.index[bg]; ok {
						cur = int(i)
					}
				}
				b = appendCSI(b, j-x, 'X')
			}
			if j < n {
				b = appendCSI(b, j-x, 'C')
			}
			x = j
			continue
		}
		if int(c.s) != cur || width(c.r&^wideHead) == 0 {
			// An SGR also keeps a lone mark from joining the character before.
			curSt = t.styles.get(c.s)
			b = appendSGR(b, curSt)
			cur = int(c.s)
		}
		b = t.appendChar(b, c)
		x++
		if c.isHead() {
			x++
		}
	}
	if curSt != (style{}) {
		b = append(b, "\x1b[m"...)
	}
	return b
}

// drawable reports whether the cell at x is a character to draw (not a
// blank, nor half of a broken wide character).
func (t *Terminal) drawable(l *line, x int) bool {
	c := l.cells[x]
	switch {
	case c.r == blank || c.r == wideTail:
		return false
	case c.isHead():
		// Its second half may have been blanked (xterm.js does, at the end
		// of a run): it still shows whole, unless it would not fit.
		return x+1 < t.cols
	}
	return true
}

func (t *Terminal) appendChar(b []byte, c cell) []byte {
	base := c.r &^ wideHead
	if base >= graphemeBase {
		if i := int(base - graphemeBase); i < len(t.graphemes) {
			return append(b, t.graphemes[i]...)
		}
		return append(b, ' ')
	}
	return utf8.AppendRune(b, base)
}

// Text returns the rows of the active screen as text, each without its
// trailing blank cells (blanks inside show as spaces), as xterm.js's
// translateToString(true) gives them.
func (t *Terminal) Text() []string {
	defer t.thawed()()
	out := make([]string, t.rows)
	for y, l := range t.scr.lines {
		out[y] = t.lineText(l)
	}
	return out
}

// History returns the text of the lines kept above the main screen,
// oldest first.
func (t *Terminal) History() []string {
	out := make([]string, t.hist.len())
	for i := range out {
		lb, _ := t.hist.line(i)
		scratch := New(t.cols, 1, Config{})
		scratch.Write(lb)
		out[i] = scratch.lineText(scratch.main.lines[0])
	}
	return out
}

func (t *Terminal) lineText(l *line) string {
	var sb strings.Builder
	// The text ends with the last character's width, as xterm.js trims it:
	// a lone combining mark (no width of its own) at the end is left out.
	end := 0
	for i := len(l.cells) - 1; i >= 0; i-- {
		if c := l.cells[i]; c.r != blank && c.r != wideTail {
			switch {
			case c.isHead():
				end = i + 2
			case c.r < graphemeBase && width(c.r) == 0: // a lone mark: xterm.js gives it no width
				end = i
			default:
				end = i + 1
			}
			break
		}
	}
	for x := 0; x < end; x++ {
		c := l.cells[x]
		switch {
		case c.r == blank, c.r == wideTail && !l.at(x-1).isHead():
			sb.WriteByte(' ')
		case c.r == wideTail:
		default:
			sb.Write(t.appendChar(nil, c))
			if c.isHead() {
				x++ // it covers the next column, whatever that holds
			}
		}
	}
	return sb.String()
}

// Cursor returns the cursor position on the active screen (x == cols while
// a wrap is pending) and whether it is visible.
func (t *Terminal) Cursor() (x, y int, visible bool) {
	return t.scr.x, t.scr.y, t.modes&modeHidden == 0
}

// AltScreen reports whether the alternate screen is active.
func (t *Terminal) AltScreen() bool { return t.scr == t.alt }

// Title is the window title the program set.
func (t *Terminal) Title() string { return t.title }

// Resize changes the size. Lines are cut or padded, not reflowed (the
// program redraws on the SIGWINCH that comes with a resize); when the
// screen shrinks, the lines below the cursor go first, then the top ones
// scroll off, as in xterm.js. The scroll regions are reset.
func (t *Terminal) Resize(cols, rows int) {
	cols, rows = max(cols, 2), max(rows, 1)
	if cols == t.cols && rows == t.rows {
		return
	}
	t.unpack()
	for _, s := range []*screen{t.main, t.alt} {
		for len(s.lines) > rows {
			if s.y < len(s.lines)-1 {
				s.lines = s.lines[:len(s.lines)-1]
				continue
			}
			if s == t.main {
				t.pushHistory(s.lines[0])
			}
			s.lines = s.lines[1:]
			s.y--
			s.saved.y--
		}
		for len(s.lines) < rows {
			s.lines = append(s.lines, &line{})
		}
		for _, l := range s.lines {
			if len(l.cells) > cols {
				l.cells = l.cells[:cols]
				if l.at(cols - 1).isHead() {
					l.cells[cols-1] = cell{s: l.cells[cols-1].s}
				}
				l.trim()
			}
		}
		if s.tabs != nil {
			tabs := make([]bool, cols)
			copy(tabs, s.tabs)
			for x := (len(s.tabs) + 7) / 8 * 8; x < cols; x += 8 {
				tabs[x] = true
			}
			s.tabs = tabs
		}
		s.top, s.bottom = 0, rows-1
		s.x, s.y = min(s.x, cols-1), max(min(s.y, rows-1), 0)
		s.saved.x, s.saved.y = min(s.saved.x, cols-1), max(min(s.saved.y, rows-1), 0)
	}
	t.cols, t.rows = cols, rows
}
