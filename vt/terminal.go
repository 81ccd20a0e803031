// Package vt keeps the state of a terminal fed a program's output: both
// screens, the lines scrolled off, the cursor, the styles and the modes
// full-screen programs set. It renders that state back as output that
// recreates it in a fresh terminal, which is what a client joining a
// running shell or vim needs: the screen as it is, not a replay of raw
// bytes. Where terminals differ it follows xterm.js, the gateway's web
// terminal.
//
// It is written for the gateway's output path: a line of plain text costs
// a copy into its cells, scrolling moves line pointers, and an idle screen
// holds only the columns written. The library terminal emulators measured
// for this were 100 times slower on plain output (see the README).
package vt

import (
	"unicode/utf8"
)

// Terminal is a terminal's state. It is not safe for concurrent use.
type Terminal struct {
	cols, rows int
	main, alt  *screen
	scr        *screen // the active screen
	hist       history
	// ybase counts the lines that scrolled into xterm.js's scrollback, up
	// to its size: a saved cursor's line is counted from the top of the
	// scrollback, so it moves up as lines scroll off.
	ybase int

	styles    styleTable
	graphemes []string // combined characters, see graphemeBase

	pen    style
	penIdx uint16 // pen's index
	ersIdx uint16 // the index of pen's erase style
	modes  modes
	mouse  uint16 // mouse tracking mode: 0, 9, 1000, 1002 or 1003
	mouseE uint16 // mouse encoding: 0, 1006 or 1016
	cursor uint8  // DECSCUSR style, 0 the default
	title  string

	// Character sets, as xterm.js 6 keeps them: the designated sets ('B'
	// US ASCII, '0' DEC graphics, 'A' UK), the one invoked (gl), and the
	// one in use (cs): that of gl, except after a DECRC, which brings
	// back the saved cursor's set alone.
	charsets [4]byte
	gl       uint8
	cs       byte

	p parser

	packed bool // Compact packed the lines
}

// modes are the modes a program sets that a restore must set again.
type modes uint16

const (
	modeAppCursor    modes = 1 << iota // DECCKM
	modeOrigin                         // DECOM
	modeNoWrap                         // DECAWM reset
	modeHidden                         // DECTCEM reset
	modeReverseWrap                    // xterm's reverse wraparound
	modeAppKeypad                      // DECKPAM / DECNKM
	modeFocus                          // focus events
	modeBracketPaste                   // bracketed paste
	modeInsert                         // IRM
	modeNewline                        // LNM
)

// Config bounds a terminal's memory.
type Config struct {
	// Scrollback is how many lines that scrolled off the main screen are
	// kept, and ScrollbackBytes about how many bytes they may take.
	Scrollback, ScrollbackBytes int
}

// DefaultConfig keeps 1000 lines (xterm.js's default) in at most 256 KiB.
func DefaultConfig() Config { return Config{Scrollback: 1000, ScrollbackBytes: 256 << 10} }

// New returns a terminal of the given size in its initial state.
func New(cols, rows int, cfg Config) *Terminal {
	cols, rows = max(cols, 2), max(rows, 1)
	t := &Terminal{cols: cols, rows: rows, hist: history{maxLines: cfg.Scrollback, maxBytes: cfg.ScrollbackBytes}}
	t.reset()
	return t
}

// reset is RIS: everything back to the initial state, the scrollback
// cleared.
func (t *Terminal) reset() {
	t.main, t.alt = newScreen(t.rows), newScreen(t.rows)
	t.scr = t.main
	t.hist.clear()
	t.ybase = 0
	t.styles = styleTable{}
	t.graphemes = nil
	t.pen, t.penIdx, t.ersIdx = style{}, 0, 0
	t.modes, t.mouse, t.mouseE, t.cursor = 0, 0, 0, 0
	t.charsets, t.gl, t.cs = usASCII, 0, 'B'
	t.p = parser{}
}

// Size returns the terminal's size.
func (t *Terminal) Size() (cols, rows int) { return t.cols, t.rows }

// Write feeds the terminal a program's output. It never fails.
func (t *Terminal) Write(p []byte) (int, error) {
	t.unpack()
	n := len(p)
	for len(p) > 0 {
		if t.p.state == stGround && t.p.need == 0 {
			i := 0
			for i < len(p) && p[i] >= 0x20 && p[i] < 0x7F {
				i++
			}
			if i > 0 {
				t.printASCII(p[:i])
				p = p[i:]
				continue
			}
			// A run of NULs (head -c N /dev/zero) does what one does.
			for i < len(p) && p[i] == 0 {
				i++
			}
			if i > 1 {
				t.advance(0)
				p = p[i:]
				continue
			}
		}
		b := p[0]
		p = p[1:]
		if b < 0x80 && t.p.need == 0 {
			t.advance(rune(b))
			continue
		}
		if r, ok := t.p.decode(b); ok {
			t.advance(r)
		} else if b < 0x80 { // it cut a sequence short: it counts by itself
			t.advance(rune(b))
		}
	}
	if t.p.run {
		t.endRun()
	}
	return n, nil
}

// advance runs one code point through the parser.
func (t *Terminal) advance(r rune) {
	p := &t.p
	if p.run && (r < 0x20 || r >= 0x7F && r <= 0x9F) {
		t.endRun()
	}
	// Wherever the parser is: CAN and SUB abort a sequence, ESC starts
	// one, and the C1 controls act.
	switch {
	case r == 0x1B:
		t.endString()
		p.state, p.ninter = stEscape, 0
		return
	case r == 0x18 || r == 0x1A:
		t.endString()
		p.state = stGround
		return
	case r >= 0x80 && r <= 0x9F:
		if r == 0x9C { // ST
			t.endString()
			p.state = stGround
			return
		}
		if p.state == stOSC || p.state == stString {
			t.endString()
		}
		t.c1(r)
		return
	}
	switch p.state {
	case stGround:
		switch {
		case r < 0x20:
			t.execute(r)
		case r == 0x7F:
		default:
			t.print(r)
		}
	case stEscape, stEscInter:
		switch {
		case r < 0x20:
			t.execute(r)
		case r < 0x30:
			p.collect(byte(r))
			p.state = stEscInter
		case r < 0x7F:
			p.state = stGround
			if p.ninter == 0 {
				switch r {
				case '[':
					p.startCSI()
					return
				case ']':
					p.state, p.osc = stOSC, p.osc[:0]
					return
				case 'P', 'X', '^', '_':
					p.state = stString
					return
				}
			}
			t.escDispatch(byte(r))
		}
	case stCSI, stCSIInter, stCSIIgnore:
		switch {
		case r < 0x20:
			t.execute(r)
		case r == 0x7F:
		case p.state == stCSIIgnore:
			if r >= 0x40 && r < 0x7F {
				p.state = stGround
			}
		case r >= '0' && r <= '9' && p.state == stCSI:
			p.digit(int32(r - '0'))
		case (r == ';' || r == ':') && p.state == stCSI:
			p.next(r == ':')
		case r >= '<' && r <= '?' && p.state == stCSI:
			if p.prefix != 0 || p.seen {
				p.state = stCSIIgnore
			} else {
				p.prefix = byte(r)
			}
		case r >= 0x20 && r < 0x30:
			p.collect(byte(r))
			p.state = stCSIInter
		case r >= 0x40 && r < 0x7F:
			p.state = stGround
			t.csiDispatch(byte(r))
		default: // a parameter byte after an intermediate, or non-ASCII
			p.state = stCSIIgnore
		}
	case stOSC:
		switch {
		case r == 0x07:
			t.endString()
			p.state = stGround
		case r < 0x20:
		default:
			if len(p.osc) < maxOSC {
				p.osc = utf8.AppendRune(p.osc, r)
			}
		}
	case stString:
		// DCS, SOS, PM and APC strings are consumed and ignored.
	}
}

// endString finishes an OSC string being read (BEL, ST, ESC or CAN end it).
func (t *Terminal) endString() {
	if t.p.state == stString {
		t.p.join = 0
	}
	if t.p.state != stOSC {
		return
	}
	t.p.state, t.p.join = stGround, 0
	cmd, text, ok := cutOSC(t.p.osc)
	if ok && (cmd == 0 || cmd == 2) {
		t.title = text
	}
}

func cutOSC(b []byte) (int, string, bool) {
	n, i := 0, 0
	for ; i < len(b) && b[i] >= '0' && b[i] <= '9' && i < 6; i++ {
		n = n*10 + int(b[i]-'0')
	}
	if i == 0 || i >= len(b) || b[i] != ';' {
		return 0, "", false
	}
	return n, string(b[i+1:]), true
}

// execute runs a C0 control.
func (t *Terminal) execute(r rune) {
	t.p.join = 0
	s := t.scr
	switch r {
	case '\b':
		t.restrict()
		if s.x > 0 {
			s.x--
		}
	case '\t':
		if s.x < t.cols {
			s.x = s.nextTab(t.cols)
		}
	case '\n', '\v', '\f':
		if t.modes&modeNewline != 0 {
			s.x = 0
		}
		t.lineFeed()
	case '\r':
		s.x = 0
	case 0x0E: // SO
		t.setGL(1)
	case 0x0F: // SI
		t.setGL(0)
	}
}

// c1 runs a C1 control (as a code point: what a UTF-8 stream can carry).
func (t *Terminal) c1(r rune) {
	t.p.join = 0
	switch r {
	case 0x84: // IND
		t.index()
	case 0x85: // NEL
		t.scr.x = 0
		t.index()
	case 0x88: // HTS
		t.setTab()
	case 0x90, 0x98, 0x9E, 0x9F: // DCS, SOS, PM, APC
		t.p.state = stString
	case 0x9B: // CSI
		t.p.startCSI()
	case 0x9D: // OSC
		t.p.state, t.p.osc = stOSC, t.p.osc[:0]
	default:
		t.p.state = stGround
	}
}

// lineFeed moves down a line, scrolling at the bottom of the region; an
// explicit line feed onto an existing line ends its soft wrap.
func (t *Terminal) lineFeed() {
	s := t.scr
	s.y++
	switch {
	case s.y == s.bottom+1:
		s.y--
		t.scrollUp(1, false, true)
	case s.y >= t.rows:
		s.y = t.rows - 1
	default:
		s.lines[s.y].wrapped = false
	}
	if s.x >= t.cols {
		s.x--
	}
}

// index is IND: a line feed that also leaves a pending wrap.
func (t *Terminal) index() {
	t.restrict()
	s := t.scr
	s.y++
	if s.y == s.bottom+1 {
		s.y--
		t.scrollUp(1, false, true)
	} else if s.y >= t.rows {
		s.y = t.rows - 1
	}
	t.restrict()
}

// reverseIndex is RI: up a line, scrolling down at the top of the region.
func (t *Terminal) reverseIndex() {
	t.restrict()
	s := t.scr
	if s.y == s.top {
		t.scrollDown(1, t.ersIdx)
	} else {
		s.y--
		t.restrict()
	}
}

// scrollUp scrolls the region up n lines; the new lines at the bottom are
// blank in the erase style and marked wrapped when a wrap made them. With
// toHistory, lines leaving the top of the main screen go to the history.
func (t *Terminal) scrollUp(n int, wrapped, toHistory bool) {
	s := t.scr
	top, bot := s.top, s.bottom
	n = min(n, bot-top+1)
	fill := cell{s: t.ersIdx}
	for range n {
		first := s.lines[top]
		if toHistory && s == t.main && top == 0 {
			t.pushHistory(first)
		}
		copy(s.lines[top:bot], s.lines[top+1:bot+1])
		first.reset(t.cols, fill)
		first.wrapped = wrapped
		s.lines[bot] = first
	}
}

// scrollDown scrolls the region down n lines, with blank lines of style
// fill at the top.
func (t *Terminal) scrollDown(n int, fill uint16) {
	s := t.scr
	top, bot := s.top, s.bottom
	n = min(n, bot-top+1)
	for range n {
		last := s.lines[bot]
		copy(s.lines[top+1:bot+1], s.lines[top:bot])
		last.reset(t.cols, cell{s: fill})
		s.lines[top] = last
	}
}

// pushHistory keeps a line that scrolls off the main screen.
func (t *Terminal) pushHistory(l *line) {
	if t.hist.maxLines <= 0 {
		return
	}
	t.ybase = min(t.ybase+1, t.hist.maxLines)
	var buf [512]byte
	t.hist.push(t.appendLine(buf[:0], l), histRef{wrapped: l.wrapped, full: t.full(l), lead: t.leads(l)})
}

// restrict puts the cursor back inside the screen (or the region, in
// origin mode), ending a pending wrap.
func (t *Terminal) restrict() {
	s := t.scr
	s.x = max(min(s.x, t.cols-1), 0)
	if t.modes&modeOrigin != 0 {
		s.y = max(min(s.y, s.bottom), s.top)
	} else {
		s.y = max(min(s.y, t.rows-1), 0)
	}
}

// moveTo puts the cursor at x, y (relative to the region in origin mode).
func (t *Terminal) moveTo(x, y int) {
	s := t.scr
	if t.modes&modeOrigin != 0 {
		y += s.top
	}
	s.x, s.y = x, y
	t.restrict()
}

// moveBy moves the cursor relatively, from inside the screen (in origin
// mode it also moves down by the region's top, as in xterm.js).
func (t *Terminal) moveBy(dx, dy int) {
	t.restrict()
	t.moveTo(t.scr.x+dx, t.scr.y+dy)
}

func (t *Terminal) setTab() {
	s := t.scr
	if s.x < t.cols {
		s.ownTabs(t.cols)
		s.tabs[s.x] = true
	}
}

// setPen changes the current style and the indexes cells take.
func (t *Terminal) setPen(s style) {
	t.pen = s
	t.penIdx = t.intern(s)
	t.ersIdx = t.intern(s.eraseStyle())
}

// intern returns a style's index, making room in a full table.
func (t *Terminal) intern(s style) uint16 {
	if i, ok := t.styles.intern(s); ok {
		return i
	}
	t.compactStyles()
	i, _ := t.styles.intern(s)
	return i
}

// compactStyles rebuilds the style table with only the styles cells use,
// and renumbers the cells; if every style is in use, new ones fall back to
// the default until some are freed.
func (t *Terminal) compactStyles() {
	old := t.styles
	t.styles = styleTable{}
	remap := make(map[uint16]uint16)
	for _, s := range []*screen{t.main, t.alt} {
		for _, l := range s.lines {
			for i, c := range l.cells {
				n, ok := remap[c.s]
				if !ok {
					n, _ = t.styles.intern(old.get(c.s))
					remap[c.s] = n
				}
				l.cells[i].s = n
			}
		}
	}
	t.penIdx, _ = t.styles.intern(t.pen)
	t.ersIdx, _ = t.styles.intern(t.pen.eraseStyle())
}

// print writes one character at the cursor, as xterm.js does: wrapping
// (or not) at the right margin, joining combining marks to the character
// before, and keeping wide characters whole.
func (t *Terminal) print(r rune) {
	if r < 0x7F {
		r = t.translate(r)
	}
	if !t.p.run {
		t.startRun()
	}
	s := t.scr
	w := width(r)
	join, old := false, 0
	if w == 0 && t.p.join > 0 {
		join, old, w = true, int(t.p.join), int(t.p.join)
	}
	t.p.join = uint8(w)
	if w == 0 && s.x == t.cols {
		// xterm.js writes a lone mark at a pending wrap past the last
		// column, where it is lost, and moves on: the next one wraps.
		s.x++
		return
	}
	if s.x+w-old > t.cols {
		if t.modes&modeNoWrap == 0 {
			oldRow, oldCol := s.lines[s.y], s.x-old
			s.x = old
			t.wrapDown()
			row := s.lines[s.y]
			for i := range old { // a combining mark widened the last character: it moves down
				row.set(i, oldRow.at(oldCol+i))
			}
			for x := oldCol; x < t.cols; x++ {
				oldRow.set(x, cell{s: t.penIdx})
			}
		} else {
			s.x = t.cols - 1
			if w == 2 {
				return
			}
		}
	}
	row := s.lines[s.y]
	if join && s.x > 0 {
		x := s.x - 1
		if row.at(x).r == wideTail {
			x--
		}
		if x >= 0 {
			row.set(x, t.combine(row.at(x), r))
		}
		return
	}
	if t.modes&modeInsert != 0 {
		row.insert(s.x, w-old, t.cols, cell{s: t.penIdx})
	}
	c := cell{r: r, s: t.penIdx}
	if w == 2 {
		c.r |= wideHead
	}
	row.set(s.x, c)
	s.x++
	if w == 2 {
		row.set(s.x, cell{r: wideTail, s: t.penIdx})
		s.x++
	}
}

// startRun and endRun bracket a run of printed characters, as xterm.js's
// print handler sees one (it ends at a control, an escape, or the end of a
// write): a run that starts on the second half of a wide character blanks
// its first half, and one that ends on a first half's second half blanks
// that.
func (t *Terminal) startRun() {
	t.p.run = true
	s := t.scr
	if s.x > 0 {
		if row := s.lines[s.y]; row.at(s.x - 1).isHead() {
			row.set(s.x-1, cell{s: t.penIdx})
		}
	}
}

func (t *Terminal) endRun() {
	t.p.run = false
	s := t.scr
	if s.x < t.cols {
		if row := s.lines[s.y]; row.at(s.x).r == wideTail {
			row.set(s.x, cell{s: t.penIdx})
		}
	}
}

// wrapDown moves to the next line for an autowrap: scrolling at the bottom
// of the region, the new line marked as continuing the one before.
func (t *Terminal) wrapDown() {
	s := t.scr
	s.y++
	if s.y == s.bottom+1 {
		s.y--
		t.scrollUp(1, true, true)
		return
	}
	if s.y >= t.rows {
		s.y = t.rows - 1
	}
	s.lines[s.y].wrapped = true
}

// printASCII writes a run of printable ASCII: the common case, written
// straight into the cells a line at a time.
func (t *Terminal) printASCII(b []byte) {
	if t.modes&(modeInsert|modeNoWrap) != 0 || t.cs != 'B' {
		for _, c := range b {
			t.print(rune(c))
		}
		return
	}
	if !t.p.run {
		t.startRun()
	}
	s := t.scr
	for len(b) > 0 {
		if s.x >= t.cols {
			s.x = 0
			t.wrapDown()
		}
		row := s.lines[s.y]
		n := min(len(b), t.cols-s.x)
		row.grow(s.x + n)
		cells := row.cells[s.x : s.x+n]
		for i, c := range b[:n] {
			cells[i] = cell{r: rune(c), s: t.penIdx}
		}
		s.x += n
		b = b[n:]
	}
	t.p.join = 1
}

// combine adds a combining mark to a cell's character.
func (t *Terminal) combine(c cell, mark rune) cell {
	head := c.r & wideHead
	base := c.r &^ wideHead
	var s string
	switch {
	case base >= graphemeBase && int(base-graphemeBase) < len(t.graphemes):
		s = t.graphemes[base-graphemeBase]
	case base > 0:
		s = string(base)
	}
	// On a blank cell the mark stands alone, as in xterm.js.
	if len(s) >= maxGrapheme {
		return c
	}
	s += string(mark)
	if len(t.graphemes) >= maxGraphemes {
		t.compactGraphemes()
		if len(t.graphemes) >= maxGraphemes {
			return c // every entry in use: the mark is dropped
		}
	}
	t.graphemes = append(t.graphemes, s)
	c.r = graphemeBase + rune(len(t.graphemes)-1) | head
	return c
}

// Bounds on combined characters: their length, and how many the table
// holds before it is compacted.
const (
	maxGrapheme  = 32
	maxGraphemes = 4096
)

// compactGraphemes keeps only the combined characters cells still use.
func (t *Terminal) compactGraphemes() {
	old := t.graphemes
	t.graphemes = nil
	remap := map[rune]rune{}
	for _, s := range []*screen{t.main, t.alt} {
		for _, l := range s.lines {
			for i, c := range l.cells {
				base := c.r &^ wideHead
				if c.r <= 0 || base < graphemeBase {
					continue
				}
				n, ok := remap[base]
				if !ok {
					n = graphemeBase + rune(len(t.graphemes))
					t.graphemes = append(t.graphemes, old[base-graphemeBase])
					remap[base] = n
				}
				l.cells[i].r = n | c.r&wideHead
			}
		}
	}
}

// setGL invokes a designated set.
func (t *Terminal) setGL(g uint8) {
	t.gl, t.cs = g, t.charsets[g]
}

// designate sets a G set; it is in use at once when it is the invoked one.
func (t *Terminal) designate(g int, cs byte) {
	t.charsets[g] = cs
	if int(t.gl) == g {
		t.cs = cs
	}
}

// translate maps a character through the character set in use.
func (t *Terminal) translate(r rune) rune {
	switch t.cs {
	case '0':
		if r >= 0x60 && r <= 0x7E {
			return decGraphics[r-0x60]
		}
	case 'A':
		if r == '#' {
			return '£'
		}
	}
	return r
}

// decGraphics is the DEC special graphics set for 0x60–0x7E: the line
// drawing characters curses uses.
var decGraphics = [...]rune{
	'◆', '▒', '␉', '␌', '␍', '␊', '°', '±', '␤', '␋', '┘', '┐', '┌', '└', '┼',
	'⎺', '⎻', '─', '⎼', '⎽', '├', '┤', '┴', '┬', '│', '≤', '≥', 'π', '≠', '£', '·',
}
