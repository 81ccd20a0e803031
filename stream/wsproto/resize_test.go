package wsproto

import (
	"errors"
	"slices"
	"testing"
)

func TestResizeDecoder(t *testing.T) {
	tests := []struct {
		name    string
		chunks  []string
		want    []TerminalSize
		wantErr error
	}{
		{"client-go form", []string{"{\"Width\":80,\"Height\":24}\n"}, []TerminalSize{{80, 24}}, nil},
		{"lower case", []string{`{"width":100,"height":30}`}, []TerminalSize{{100, 30}}, nil},
		{"two in one message", []string{"{\"Width\":1,\"Height\":2}\n{\"Width\":3,\"Height\":4}\n"}, []TerminalSize{{1, 2}, {3, 4}}, nil},
		{"split across messages", []string{`{"Wid`, `th":120,`, `"Height":40}`}, []TerminalSize{{120, 40}}, nil},
		{"unknown fields ignored", []string{`{"Width":5,"Height":6,"X":1}`}, []TerminalSize{{5, 6}}, nil},
		{"whitespace only", []string{" \n\t"}, nil, nil},
		{"garbage", []string{"not json"}, nil, ErrBadResize},
		{"garbage after a size", []string{`{"Width":1,"Height":2}]`}, []TerminalSize{{1, 2}}, ErrBadResize},
		{"negative", []string{`{"Width":-1,"Height":2}`}, nil, ErrBadResize},
		{"over uint16", []string{`{"Width":70000,"Height":2}`}, nil, ErrBadResize},
		{"dead after error", []string{"x", `{"Width":1,"Height":2}`}, nil, ErrBadResize},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var d ResizeDecoder
			var got []TerminalSize
			var err error
			for _, c := range tc.chunks {
				if err = d.Decode([]byte(c), func(s TerminalSize) { got = append(got, s) }); err != nil {
					break
				}
			}
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("error = %v, want %v", err, tc.wantErr)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("sizes = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestResizeDecoderBoundsPending(t *testing.T) {
	var d ResizeDecoder
	chunk := []byte(`{"Width":    ` + string(make([]byte, 0)))
	err := d.Decode(chunk, func(TerminalSize) {})
	for i := 0; err == nil && i < 2000; i++ {
		err = d.Decode([]byte("          "), func(TerminalSize) {})
	}
	if !errors.Is(err, ErrBadResize) {
		t.Fatalf("an endless object was not refused: %v", err)
	}
}

func TestTerminalSizeValidate(t *testing.T) {
	for _, tc := range []struct {
		s  TerminalSize
		ok bool
	}{{TerminalSize{80, 24}, true}, {TerminalSize{1, 1}, true}, {TerminalSize{0, 24}, false}, {TerminalSize{80, 0}, false}, {TerminalSize{5000, 24}, false}} {
		if err := tc.s.Validate(); (err == nil) != tc.ok {
			t.Errorf("%v.Validate() = %v", tc.s, err)
		}
	}
}

// FuzzResizeDecoder feeds arbitrary bytes, split at an arbitrary point. The
// decoder must not panic, must fail only with ErrBadResize, must not keep
// more than its bound, and must decode the same sizes however the stream is
// split, until its first error.
func FuzzResizeDecoder(f *testing.F) {
	f.Add([]byte("{\"Width\":80,\"Height\":24}\n{\"Width\":3,\"Height\":4}"), 7)
	f.Add([]byte("garbage"), 2)
	f.Add([]byte(`{"width":1}{"height":2}`), 11)
	f.Fuzz(func(t *testing.T, data []byte, split int) {
		var whole, parts ResizeDecoder
		var a, b []TerminalSize
		errWhole := whole.Decode(data, func(s TerminalSize) { a = append(a, s) })
		if errWhole != nil && !errors.Is(errWhole, ErrBadResize) {
			t.Fatalf("undeclared error %v", errWhole)
		}
		if split < 0 {
			split = -split
		}
		split %= len(data) + 1
		errParts := parts.Decode(data[:split], func(s TerminalSize) { b = append(b, s) })
		if errParts == nil {
			errParts = parts.Decode(data[split:], func(s TerminalSize) { b = append(b, s) })
		}
		if len(parts.pending) > maxResizePending+len(data) {
			t.Fatalf("pending grew to %d", len(parts.pending))
		}
		if errWhole == nil && errParts == nil && !slices.Equal(a, b) {
			t.Fatalf("split at %d: %v != %v", split, a, b)
		}
	})
}

// Simple reads the common form and leaves everything else to Decode.
func TestResizeSimple(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want *TerminalSize
	}{
		{`{"Width":80,"Height":24}`, &TerminalSize{80, 24}},
		{"{\"Width\":65535,\"Height\":0}\n", &TerminalSize{65535, 0}},
		{`{"Width":65536,"Height":24}`, nil},
		{`{"Width":080,"Height":24}`, nil},
		{`{"Height":24,"Width":80}`, nil},
		{`{"width":80,"height":24}`, nil},
		{`{"Width": 80,"Height":24}`, nil},
		{`{"Width":80,"Height":24}{`, nil},
		{`{"Width":-1,"Height":24}`, nil},
		{`{"Width":,"Height":24}`, nil},
	} {
		var d ResizeDecoder
		got, ok := d.Simple([]byte(tc.in))
		if ok != (tc.want != nil) || (ok && got != *tc.want) {
			t.Errorf("Simple(%q) = %v, %v; want %v", tc.in, got, ok, tc.want)
		}
	}
	var d ResizeDecoder
	_ = d.Decode([]byte(`{"Width":1,`), func(TerminalSize) {})
	if _, ok := d.Simple([]byte(`{"Width":80,"Height":24}`)); ok {
		t.Error("Simple took a message while an object was pending")
	}
}

// FuzzResizeSimple: whatever Simple accepts, Decode reads as the same one
// size.
func FuzzResizeSimple(f *testing.F) {
	f.Add([]byte(`{"Width":80,"Height":24}`))
	f.Add([]byte("{\"Width\":0,\"Height\":65535}\n"))
	f.Add([]byte(`{"Width":00,"Height":1}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var d ResizeDecoder
		a, ok := d.Simple(data)
		if !ok {
			return
		}
		var b []TerminalSize
		err := d.Decode(data, func(s TerminalSize) { b = append(b, s) })
		if err != nil || len(b) != 1 || b[0] != a {
			t.Fatalf("Simple(%q) read %v; Decode %v, %v", data, a, b, err)
		}
	})
}
