package vt

import "strconv"

// color is a colour as a cell holds it: the kind in the top byte (default,
// one of the 16 ANSI colours as SGR 30–37/90–97 name them, the 256-colour
// palette, or RGB), the value below. The 16 and the 256 forms of the same
// colour stay apart, as in xterm.js.
type color uint32

const (
	colorDefault color = 0
	color16      color = 1 << 24
	color256     color = 2 << 24
	colorRGB     color = 3 << 24
	colorKind    color = 0xFF << 24
)

// Attribute bits of a style.
const (
	attrBold uint16 = 1 << iota
	attrDim
	attrItalic
	attrBlink
	attrInverse
	attrInvisible
	attrStrike
	attrOverline
)

// style is what SGR sets: colours and attributes.
type style struct {
	fg, bg, ul color // ul: the underline colour
	attrs      uint16
	underline  uint8 // 0 none, 1 single, 2 double, 3 curly, 4 dotted, 5 dashed
}

// eraseStyle is the style erased cells take: the background alone, as
// xterm.js erases (background colour erase).
func (s style) eraseStyle() style { return style{bg: s.bg} }

// styleTable interns the styles cells use: a cell holds a 16-bit index.
// Index 0 is the default style.
type styleTable struct {
	list  []style
	index map[style]uint16
}

// maxStyles bounds the table; when it is full, styles no cell uses are
// dropped (see Terminal.compactStyles).
const maxStyles = 1 << 16

func (t *styleTable) intern(s style) (uint16, bool) {
	if s == (style{}) {
		return 0, true
	}
	if i, ok := t.index[s]; ok {
		return i, true
	}
	if t.list == nil {
		t.list = []style{{}}
		t.index = map[style]uint16{}
	}
	if len(t.list) >= maxStyles {
		return 0, false
	}
	i := uint16(len(t.list))
	t.list = append(t.list, s)
	t.index[s] = i
	return i, true
}

func (t *styleTable) get(i uint16) style {
	if int(i) < len(t.list) {
		return t.list[i]
	}
	return style{}
}

// sgr applies the parameters of an SGR sequence to s, as xterm.js reads
// them (subparameters after colons included).
func (s *style) sgr(ps *params) {
	if ps.n == 0 {
		*s = style{}
		return
	}
	for i := 0; i < ps.n; i++ {
		if ps.sub[i] {
			continue // a subparameter of an attribute before it
		}
		switch p := ps.v[i]; {
		case p == 0:
			*s = style{}
		case p == 1:
			s.attrs |= attrBold
		case p == 2:
			s.attrs |= attrDim
		case p == 3:
			s.attrs |= attrItalic
		case p == 4:
			u := uint8(1)
			if i+1 < ps.n && ps.sub[i+1] {
				if v := ps.v[i+1]; v >= 0 && v <= 5 {
					u = uint8(v)
				}
			}
			s.underline = u
		case p == 5:
			s.attrs |= attrBlink
		case p == 7:
			s.attrs |= attrInverse
		case p == 8:
			s.attrs |= attrInvisible
		case p == 9:
			s.attrs |= attrStrike
		case p == 21:
			s.underline = 2
		case p == 22:
			s.attrs &^= attrBold | attrDim
		case p == 23:
			s.attrs &^= attrItalic
		case p == 24:
			s.underline = 0
		case p == 25:
			s.attrs &^= attrBlink
		case p == 27:
			s.attrs &^= attrInverse
		case p == 28:
			s.attrs &^= attrInvisible
		case p == 29:
			s.attrs &^= attrStrike
		case p >= 30 && p <= 37:
			s.fg = color16 | color(p-30)
		case p == 39:
			s.fg = colorDefault
		case p >= 40 && p <= 47:
			s.bg = color16 | color(p-40)
		case p == 49:
			s.bg = colorDefault
		case p == 53:
			s.attrs |= attrOverline
		case p == 55:
			s.attrs &^= attrOverline
		case p == 59:
			s.ul = colorDefault
		case p >= 90 && p <= 97:
			s.fg = color16 | color(p-90+8)
		case p >= 100 && p <= 107:
			s.bg = color16 | color(p-100+8)
		case p == 38 || p == 48 || p == 58:
			c, ok, skip := extendedColor(ps, i)
			i += skip
			if !ok {
				continue
			}
			switch p {
			case 38:
				s.fg = c
			case 48:
				s.bg = c
			default:
				s.ul = c
			}
		}
	}
}

// extendedColor reads the colour of SGR 38, 48 or 58 at ps.v[i]: 5;N or
// 2;R;G;B after semicolons, or :5:N or :2:CS:R:G:B as subparameters (the
// colour space id is skipped, as xterm.js does). skip is how many
// semicolon-separated parameters it used after i; ok is false for a mode
// other than 2 and 5.
func extendedColor(ps *params, i int) (c color, ok bool, skip int) {
	vals := make([]int32, 0, 8)
	if i+1 < ps.n && ps.sub[i+1] {
		for j := i + 1; j < ps.n && ps.sub[j]; j++ {
			vals = append(vals, ps.v[j])
		}
		if len(vals) > 0 && vals[0] == 2 { // 2:CS:R:G:B
			if len(vals) > 1 {
				vals = append(vals[:1], vals[2:]...)
			} else {
				vals = vals[:1]
			}
		}
	} else {
		// How many parameters xterm.js takes: the mode and the values.
		want := 0
		if i+1 < ps.n {
			switch ps.v[i+1] {
			case 5:
				want = 2
			case 0:
				want = 5
			default:
				want = 4
			}
		}
		for j := i + 1; j < ps.n && len(vals) < want; j++ {
			vals = append(vals, ps.v[j])
			skip++
		}
	}
	at := func(k int) int32 {
		if k < len(vals) && vals[k] > 0 {
			return vals[k]
		}
		return 0
	}
	switch at(0) {
	case 5:
		return color256 | color(at(1)&0xFF), true, skip
	case 2:
		return colorRGB | color(at(1)&0xFF)<<16 | color(at(2)&0xFF)<<8 | color(at(3)&0xFF), true, skip
	}
	return 0, false, skip
}

// appendSGR appends the SGR sequence that sets s from any state.
func appendSGR(b []byte, s style) []byte {
	if s == (style{}) {
		return append(b, "\x1b[m"...)
	}
	b = append(b, "\x1b[0"...)
	for _, a := range [...]struct {
		bit  uint16
		code string
	}{{attrBold, ";1"}, {attrDim, ";2"}, {attrItalic, ";3"}, {attrBlink, ";5"}, {attrInverse, ";7"},
		{attrInvisible, ";8"}, {attrStrike, ";9"}, {attrOverline, ";53"}} {
		if s.attrs&a.bit != 0 {
			b = append(b, a.code...)
		}
	}
	switch s.underline {
	case 0:
	case 1:
		b = append(b, ";4"...)
	default:
		b = append(b, ";4:"...)
		b = strconv.AppendInt(b, int64(s.underline), 10)
	}
	b = appendColor(b, s.fg, 30, 90, "38")
	b = appendColor(b, s.bg, 40, 100, "48")
	b = appendColor(b, s.ul, 0, 0, "58")
	return append(b, 'm')
}

func appendColor(b []byte, c color, base, bright int, ext string) []byte {
	v := int64(c &^ colorKind)
	switch c & colorKind {
	case color16:
		if base == 0 { // no 16-colour form: use the palette
			return strconv.AppendInt(append(b, ";"+ext+";5;"...), v, 10)
		}
		if v < 8 {
			return strconv.AppendInt(append(b, ';'), int64(base)+v, 10)
		}
		return strconv.AppendInt(append(b, ';'), int64(bright)+v-8, 10)
	case color256:
		return strconv.AppendInt(append(b, ";"+ext+";5;"...), v, 10)
	case colorRGB:
		b = append(b, ";"+ext+";2;"...)
		b = strconv.AppendInt(b, v>>16&0xFF, 10)
		b = append(b, ';')
		b = strconv.AppendInt(b, v>>8&0xFF, 10)
		b = append(b, ';')
		return strconv.AppendInt(b, v&0xFF, 10)
	}
	return b
}
