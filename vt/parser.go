package vt

// Parser states (a reduced form of the DEC/ECMA-48 state machine that
// xterm.js implements).
const (
	stGround = iota
	stEscape
	stEscInter
	stCSI // entry and parameters
	stCSIInter
	stCSIIgnore
	stOSC
	stString // DCS, SOS, PM, APC: ignored to their end
)

// Bounds on what a sequence may hold.
const (
	maxParams = 32
	maxOSC    = 4096
	maxValue  = 1<<31 - 1
)

// params are a CSI sequence's parameters, in order, subparameters (after
// a colon) marked. An empty sequence has one parameter, 0.
type params struct {
	v   [maxParams]int32
	sub [maxParams]bool
	n   int
}

// arg returns the i-th parameter that is not a subparameter, or def when
// it is absent or 0.
func (ps *params) arg(i, def int) int {
	for j := 0; j < ps.n; j++ {
		if ps.sub[j] {
			continue
		}
		if i == 0 {
			if ps.v[j] == 0 {
				return def
			}
			return int(ps.v[j])
		}
		i--
	}
	return def
}

// count is the number of parameters that are not subparameters.
func (ps *params) count() int {
	n := 0
	for j := 0; j < ps.n; j++ {
		if !ps.sub[j] {
			n++
		}
	}
	return n
}

// parser is the state between bytes: the sequence being read, and a
// UTF-8 character cut by the end of a write.
type parser struct {
	state  uint8
	params params
	seen   bool // a parameter byte was read
	prefix byte // '<', '=', '>' or '?' before the parameters
	inter  [2]byte
	ninter int
	osc    []byte

	// UTF-8 decoding.
	need int  // continuation bytes still expected
	cp   rune // the code point so far
	min  rune // the smallest code point its length may encode

	join uint8 // the width of the character just printed; 0 when something else came after it
	run  bool  // in a run of printed characters (see Terminal.startRun)
}

func (p *parser) startCSI() {
	p.state = stCSI
	p.params.n, p.params.v[0], p.params.sub[0] = 1, 0, false
	p.seen, p.prefix, p.ninter = false, 0, 0
}

func (p *parser) digit(d int32) {
	p.seen = true
	v := &p.params.v[p.params.n-1]
	if *v <= (maxValue-d)/10 {
		*v = *v*10 + d
	} else {
		*v = maxValue
	}
}

func (p *parser) next(sub bool) {
	p.seen = true
	if p.params.n < maxParams {
		p.params.v[p.params.n], p.params.sub[p.params.n] = 0, sub
		p.params.n++
	}
}

func (p *parser) collect(b byte) {
	if p.ninter < len(p.inter) {
		p.inter[p.ninter] = b
	}
	p.ninter++
}

// decode takes one byte of a UTF-8 sequence: ok with the character when it
// completes one. Invalid bytes are dropped, as xterm.js drops them; an
// ASCII byte that cuts a sequence short is not consumed (ok false), and
// the caller handles it by itself.
func (p *parser) decode(b byte) (rune, bool) {
	if b&0xC0 == 0x80 { // continuation
		if p.need == 0 {
			return 0, false
		}
		p.cp = p.cp<<6 | rune(b&0x3F)
		p.need--
		if p.need > 0 {
			return 0, false
		}
		r := p.cp
		if r < p.min || r > 0x10FFFF || r >= 0xD800 && r <= 0xDFFF || r == 0xFEFF {
			return 0, false
		}
		return r, true
	}
	p.need = 0
	switch {
	case b < 0x80:
		return 0, false
	case b&0xE0 == 0xC0:
		p.need, p.cp, p.min = 1, rune(b&0x1F), 0x80
	case b&0xF0 == 0xE0:
		p.need, p.cp, p.min = 2, rune(b&0x0F), 0x800
	case b&0xF8 == 0xF0:
		p.need, p.cp, p.min = 3, rune(b&0x07), 0x10000
	}
	return 0, false
}
