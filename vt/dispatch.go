package vt

// escDispatch runs an escape sequence (ESC, intermediates, final).
func (t *Terminal) escDispatch(final byte) {
	t.p.join = 0
	p := &t.p
	if p.ninter > 0 {
		switch inter := p.inter[0]; {
		case p.ninter > 1:
		case inter == '#' && final == '8':
			t.alignment()
		case inter == '%' && (final == '@' || final == 'G'):
			t.setGL(0)
			t.designate(0, 'B')
		case inter >= '(' && inter <= '+' || inter >= '-' && inter <= '.':
			g := map[byte]int{'(': 0, ')': 1, '*': 2, '+': 3, '-': 1, '.': 2}[inter]
			t.designate(g, charset(final))
		}
		return
	}
	switch final {
	case '7':
		t.saveCursor()
	case '8':
		t.restoreCursor()
	case 'D':
		t.index()
	case 'E':
		t.scr.x = 0
		t.index()
	case 'H':
		t.setTab()
	case 'M':
		t.reverseIndex()
	case 'c':
		t.reset()
	case '=':
		t.modes |= modeAppKeypad
	case '>':
		t.modes &^= modeAppKeypad
	case 'n', '}':
		t.setGL(2)
	case 'o', '|':
		t.setGL(3)
	case '~':
		t.setGL(1)
	}
}

// charset is the set a designation's final byte names: the ones that
// change what is shown are kept, the national sets read as US ASCII.
func charset(final byte) byte {
	switch final {
	case '0', 'A':
		return final
	}
	return 'B'
}

// csiDispatch runs a control sequence.
func (t *Terminal) csiDispatch(final byte) {
	join := t.p.join
	t.p.join = 0
	p := &t.p
	ps := &p.params
	s := t.scr
	var inter byte
	if p.ninter == 1 {
		inter = p.inter[0]
	} else if p.ninter > 1 {
		return
	}
	switch p.prefix {
	case '?':
		switch {
		case inter != 0:
		case final == 'h' || final == 'l':
			for i := 0; i < ps.n; i++ {
				if !ps.sub[i] {
					t.privateMode(int(ps.v[i]), final == 'h')
				}
			}
		case final == 'J':
			t.eraseDisplay(ps.arg(0, 0))
		case final == 'K':
			t.eraseLine(ps.arg(0, 0))
		}
		return
	case 0:
	default:
		return // '>', '<', '=': queries and keyboard protocols
	}
	switch inter {
	case 0:
	case ' ':
		if final == 'q' { // DECSCUSR
			if v := ps.arg(0, 0); v <= 6 {
				t.cursor = uint8(v)
			}
		}
		return
	case '!':
		if final == 'p' {
			t.softReset()
		}
		return
	default:
		return
	}
	n := ps.arg(0, 1)
	switch final {
	case '@':
		t.restrict()
		s.lines[s.y].insert(s.x, n, t.cols, cell{s: t.ersIdx})
	case 'A':
		t.cursorUp(n)
	case 'B':
		t.cursorDown(n)
	case 'C', 'a':
		t.moveBy(n, 0)
	case 'D':
		t.moveBy(-n, 0)
	case 'E':
		t.cursorDown(n)
		s.x = 0
	case 'F':
		t.cursorUp(n)
		s.x = 0
	case 'G', '`':
		t.moveTo(n-1, s.y) // in origin mode this moves down by the region's top, as in xterm.js
	case 'H', 'f':
		t.moveTo(ps.arg(1, 1)-1, n-1)
	case 'I':
		if s.x < t.cols {
			for range min(n, t.cols) {
				s.x = s.nextTab(t.cols)
			}
		}
	case 'J':
		t.eraseDisplay(ps.arg(0, 0))
	case 'K':
		t.eraseLine(ps.arg(0, 0))
	case 'L', 'M':
		t.restrict()
		if s.y < s.top || s.y > s.bottom {
			return
		}
		top := s.top
		s.top = s.y
		if final == 'L' {
			t.scrollDown(n, t.ersIdx)
		} else {
			t.scrollUp(n, false, false)
		}
		s.top = top
		s.x = 0
	case 'P':
		t.restrict()
		s.lines[s.y].remove(s.x, n, t.cols, cell{s: t.ersIdx})
	case 'S':
		t.scrollUp(n, false, false)
	case 'T':
		t.scrollDown(n, 0)
	case 'X':
		t.restrict()
		s.lines[s.y].erase(s.x, min(s.x+n, t.cols), cell{s: t.ersIdx})
	case 'Z':
		if s.x < t.cols {
			for range min(n, t.cols) {
				s.x = s.prevTab(t.cols)
			}
		}
	case 'b':
		t.repeat(n, int(join))
		t.p.join = 0
	case 'd':
		t.moveTo(s.x, n-1)
	case 'e':
		t.moveBy(0, n)
	case 'g':
		switch ps.arg(0, 0) {
		case 0:
			if s.x < t.cols {
				s.ownTabs(t.cols)
				s.tabs[s.x] = false
			}
		case 3:
			s.tabs = make([]bool, t.cols)
		}
	case 'h', 'l':
		for i := 0; i < ps.n; i++ {
			if ps.sub[i] {
				continue
			}
			var m modes
			switch ps.v[i] {
			case 4:
				m = modeInsert
			case 20:
				m = modeNewline
			}
			t.setMode(m, final == 'h')
		}
	case 'm':
		pen := t.pen
		pen.sgr(ps)
		t.setPen(pen)
	case 'r':
		top := ps.arg(0, 1)
		bottom := ps.arg(1, 0)
		if ps.count() < 2 || bottom > t.rows || bottom == 0 {
			bottom = t.rows
		}
		if bottom > top {
			s.top, s.bottom = top-1, bottom-1
			t.moveTo(0, 0)
		}
	case 's':
		t.saveCursor()
	case 'u':
		t.restoreCursor()
	}
}

// cursorUp is CUU: up n lines, stopping at the region's top from inside
// it.
func (t *Terminal) cursorUp(n int) {
	if d := t.scr.y - t.scr.top; d >= 0 {
		n = min(d, n)
	}
	t.moveBy(0, -n)
}

// cursorDown is CUD: down n lines, stopping at the region's bottom from
// inside it.
func (t *Terminal) cursorDown(n int) {
	if d := t.scr.bottom - t.scr.y; d >= 0 {
		n = min(d, n)
	}
	t.moveBy(0, n)
}

func (t *Terminal) setMode(m modes, on bool) {
	if on {
		t.modes |= m
	} else {
		t.modes &^= m
	}
}

// privateMode sets or resets a DEC private mode.
func (t *Terminal) privateMode(mode int, on bool) {
	switch mode {
	case 1:
		t.setMode(modeAppCursor, on)
	case 2:
		if on {
			for g := range t.charsets {
				t.designate(g, 'B')
			}
		}
	case 6:
		t.setMode(modeOrigin, on)
		t.moveTo(0, 0)
	case 7:
		t.setMode(modeNoWrap, !on)
	case 25:
		t.setMode(modeHidden, !on)
	case 45:
		t.setMode(modeReverseWrap, on)
	case 66:
		t.setMode(modeAppKeypad, on)
	case 9, 1000, 1002, 1003:
		if on {
			t.mouse = uint16(mode)
		} else {
			t.mouse = 0
		}
	case 1004:
		t.setMode(modeFocus, on)
	case 1006, 1016:
		if on {
			t.mouseE = uint16(mode)
		} else {
			t.mouseE = 0
		}
	case 2004:
		t.setMode(modeBracketPaste, on)
	case 1048:
		if on {
			t.saveCursor()
		} else {
			t.restoreCursor()
		}
	case 47, 1047, 1049:
		if on {
			if mode == 1049 {
				t.saveCursor()
			}
			t.enterAlt()
		} else {
			t.leaveAlt()
			if mode == 1049 {
				t.restoreCursor()
			}
		}
	}
}

// enterAlt switches to the alternate screen, cleared in the erase style,
// with the main screen's cursor position.
func (t *Terminal) enterAlt() {
	if t.scr == t.alt {
		return
	}
	a := t.alt
	for _, l := range a.lines {
		l.reset(t.cols, cell{s: t.ersIdx})
	}
	a.x, a.y = t.main.x, t.main.y
	t.scr = a
}

// leaveAlt goes back to the main screen, which takes the alternate one's
// cursor position; the alternate screen is cleared.
func (t *Terminal) leaveAlt() {
	if t.scr != t.alt {
		return
	}
	a := t.alt
	t.main.x, t.main.y = a.x, a.y
	for _, l := range a.lines {
		l.reset(t.cols, cell{})
	}
	*a = screen{lines: a.lines, bottom: t.rows - 1, saved: a.saved}
	t.scr = t.main
}

// eraseDisplay is ED.
func (t *Terminal) eraseDisplay(mode int) {
	s := t.scr
	s.x = max(min(s.x, t.cols), 0)
	t.restrictY()
	fill := cell{s: t.ersIdx}
	switch mode {
	case 0:
		l := s.lines[s.y]
		l.erase(s.x, t.cols, fill)
		if s.x == 0 {
			l.wrapped = false
		}
		for y := s.y + 1; y < t.rows; y++ {
			s.lines[y].reset(t.cols, fill)
		}
	case 1:
		l := s.lines[s.y]
		l.erase(0, min(s.x+1, t.cols), fill)
		l.wrapped = false
		if s.x+1 >= t.cols && s.y+1 < t.rows {
			s.lines[s.y+1].wrapped = false
		}
		for y := 0; y < s.y; y++ {
			s.lines[y].reset(t.cols, fill)
		}
	case 2:
		for _, l := range s.lines {
			l.reset(t.cols, fill)
		}
	case 3:
		if s == t.main {
			t.hist.clear()
			t.ybase = 0
		}
	}
}

// eraseLine is EL.
func (t *Terminal) eraseLine(mode int) {
	s := t.scr
	s.x = max(min(s.x, t.cols), 0)
	t.restrictY()
	l := s.lines[s.y]
	fill := cell{s: t.ersIdx}
	switch mode {
	case 0:
		l.erase(s.x, t.cols, fill)
		if s.x == 0 {
			l.wrapped = false
		}
	case 1:
		l.erase(0, min(s.x+1, t.cols), fill)
	case 2:
		l.erase(0, t.cols, fill)
		l.wrapped = false
	}
}

func (t *Terminal) restrictY() {
	s := t.scr
	if t.modes&modeOrigin != 0 {
		s.y = max(min(s.y, s.bottom), s.top)
	} else {
		s.y = max(min(s.y, t.rows-1), 0)
	}
}

// repeat is REP: the character before the cursor, n more times.
func (t *Terminal) repeat(n, w int) {
	s := t.scr
	if w == 0 || s.x-w < 0 {
		return
	}
	c := s.lines[s.y].at(s.x - w)
	if c.r <= 0 {
		return
	}
	rs := t.runes(c)
	n = min(n, t.cols*t.rows)
	for range n {
		for _, r := range rs {
			t.print(r)
		}
	}
}

// runes returns a cell's characters.
func (t *Terminal) runes(c cell) []rune {
	base := c.r &^ wideHead
	if base >= graphemeBase {
		if i := int(base - graphemeBase); i < len(t.graphemes) {
			return []rune(t.graphemes[i])
		}
		return nil
	}
	return []rune{base}
}

// saveCursor is DECSC.
func (t *Terminal) saveCursor() {
	s := t.scr
	s.saved = cursor{x: s.x, y: s.y + t.base(s), pen: t.pen, cs: t.cs}
}

// restoreCursor is DECRC.
func (t *Terminal) restoreCursor() {
	s := t.scr
	c := s.saved
	s.x, s.y = c.x, max(c.y-t.base(s), 0)
	// xterm.js keeps the underline's shape and colour out of the saved
	// cursor: they stay as they are.
	pen := c.pen
	if pen.underline != 0 && t.pen.underline != 0 {
		pen.underline = t.pen.underline
	}
	pen.ul = t.pen.ul
	t.setPen(pen)
	t.cs = c.cs
	t.restrict()
}

// base is where a screen's first line is counted from for a saved cursor.
func (t *Terminal) base(s *screen) int {
	if s == t.main {
		return t.ybase
	}
	return 0
}

// softReset is DECSTR.
func (t *Terminal) softReset() {
	s := t.scr
	t.modes &^= modeHidden | modeOrigin | modeNoWrap | modeAppCursor | modeAppKeypad | modeBracketPaste |
		modeReverseWrap | modeFocus | modeInsert
	t.cursor = 0
	s.top, s.bottom = 0, t.rows-1
	t.setPen(style{})
	t.charsets, t.gl, t.cs = usASCII, 0, 'B'
	s.saved = defaultCursor
	s.saved.y = t.base(s)
}

// alignment is DECALN: the screen filled with E. In origin mode xterm.js
// fills the main screen from the region's top down only (and, counting
// rows round its alternate screen's ring, all of that one).
func (t *Terminal) alignment() {
	t.moveTo(0, 0)
	c := cell{r: 'E', s: t.penIdx}
	lines := t.scr.lines
	if t.scr == t.main {
		lines = lines[t.scr.y:]
	}
	for _, l := range lines {
		l.cells = l.cells[:0]
		l.fill(0, t.cols, c)
		l.wrapped = false
	}
	t.moveTo(0, 0)
}
