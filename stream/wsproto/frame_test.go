package wsproto

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

func TestAppendFrame(t *testing.T) {
	tests := []struct {
		name    string
		proto   Protocol
		ch      Channel
		payload string
		want    []byte
	}{
		{"binary stdin", V5, Stdin, "ls\n", []byte{0x00, 'l', 's', '\n'}},
		{"binary stdout newline", V4, Stdout, "\n", []byte{0x01, 0x0a}},
		{"binary ready frame", V5, Stdout, "", []byte{0x01}},
		{"unversioned", Unversioned, Stderr, "x", []byte{0x02, 'x'}},
		{"base64 stdin", V4Base64, Stdin, "foo\n", []byte("0Zm9vCg==")},
		{"base64 stdout newline", V1Base64, Stdout, "\n", []byte("1Cg==")},
		{"base64 ready frame", V4Base64, Stdout, "", []byte("1")},
		{"raw", Binary, 0, "GET /", []byte("GET /")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := tc.proto.AppendFrame(nil, tc.ch, []byte(tc.payload))
			if !bytes.Equal(got, tc.want) {
				t.Errorf("AppendFrame = %q, want %q", got, tc.want)
			}
			if n := tc.proto.EncodedLen(len(tc.payload)); n != len(tc.want) {
				t.Errorf("EncodedLen = %d, want %d", n, len(tc.want))
			}
		})
	}
}

func TestParseFrame(t *testing.T) {
	tests := []struct {
		name    string
		proto   Protocol
		msg     []byte
		want    Frame
		wantErr error
	}{
		{"binary stdin", V4, []byte{0x00, 'l', 's', '\n'}, Frame{Stdin, []byte("ls\n")}, nil},
		{"binary channel only", V4, []byte{0x00}, Frame{Stdin, []byte{}}, nil},
		{"resize", V5, []byte("\x04{\"Width\":80,\"Height\":24}\n"), Frame{Resize, []byte("{\"Width\":80,\"Height\":24}\n")}, nil},
		{"high channel kept for caller", V4, []byte{0x09, 'x'}, Frame{9, []byte("x")}, nil},
		{"v5 close stdin", V5, []byte{0xff, 0x00}, Frame{Close, []byte{0x00}}, nil},
		{"v5 close too short", V5, []byte{0xff}, Frame{}, ErrBadCloseSignal},
		{"v5 close too long", V5, []byte{0xff, 0x00, 0x00}, Frame{}, ErrBadCloseSignal},
		{"v4 ff is no close signal", V4, []byte{0xff, 0x00}, Frame{}, ErrUnknownChannel},
		{"v4 lone ff", V4, []byte{0xff}, Frame{}, ErrUnknownChannel},
		{"v1 ff", V1, []byte{0xff, 'x'}, Frame{}, ErrUnknownChannel},
		{"empty", V5, nil, Frame{}, ErrEmpty},
		{"base64 stdin", V4Base64, []byte("0Zm9vCg=="), Frame{Stdin, []byte("foo\n")}, nil},
		{"base64 empty payload", V4Base64, []byte("0"), Frame{Stdin, []byte{}}, nil},
		{"base64 channel 10", V4Base64, []byte(":eA=="), Frame{10, []byte("x")}, nil},
		{"base64 bad payload", V4Base64, []byte("0Zm9vCg"), Frame{}, ErrBadBase64},
		{"base64 bad channel", V1Base64, []byte("\x00Zm9v"), Frame{}, ErrBadChannel},
		{"base64 doc slip decodes to two newlines", V4Base64, []byte("0Zm9vCgo="), Frame{Stdin, []byte("foo\n\n")}, nil},
		{"raw", Binary, []byte{0xff, 0x00}, Frame{0, []byte{0xff, 0x00}}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.proto.ParseFrame(tc.msg)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("ParseFrame error = %v, want %v", err, tc.wantErr)
			}
			if err != nil {
				return
			}
			if got.Channel != tc.want.Channel || !bytes.Equal(got.Payload, tc.want.Payload) {
				t.Errorf("ParseFrame = %v %q, want %v %q", got.Channel, got.Payload, tc.want.Channel, tc.want.Payload)
			}
		})
	}
}

func TestNegotiate(t *testing.T) {
	tests := []struct {
		name    string
		offered []string
		want    string
		ok      bool
	}{
		{"v5 only", []string{"v5.channel.k8s.io"}, "v5.channel.k8s.io", true},
		{"client order wins", []string{"v4.channel.k8s.io", "v5.channel.k8s.io"}, "v4.channel.k8s.io", true},
		{"unknown skipped", []string{"tty", "base64.channel.k8s.io"}, "base64.channel.k8s.io", true},
		{"none offered", nil, "", true},
		{"bearer only", []string{BearerProtocolPrefix + "dG9r"}, "", true},
		{"bearer then v4", []string{BearerProtocolPrefix + "dG9r", "v4.channel.k8s.io"}, "v4.channel.k8s.io", true},
		{"only unknown", []string{"v6.channel.k8s.io", "tty"}, "", false},
		{"case matters", []string{"V5.CHANNEL.K8S.IO"}, "", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, ok := Negotiate(tc.offered, ExecProtocols)
			if ok != tc.ok || p.Name != tc.want {
				t.Errorf("Negotiate(%q) = %q, %v; want %q, %v", tc.offered, p.Name, ok, tc.want, tc.ok)
			}
		})
	}
	if p, ok := Negotiate([]string{"channel.k8s.io"}, PortForwardProtocols); ok {
		t.Errorf("port-forward accepted %q, the kubelet does not", p.Name)
	}
	if p, _ := Negotiate([]string{"binary"}, PortForwardProtocols); !p.Raw {
		t.Errorf("binary is not raw")
	}
}

func TestOffered(t *testing.T) {
	h := http.Header{}
	h.Add("Sec-WebSocket-Protocol", "v5.channel.k8s.io, v4.channel.k8s.io")
	h.Add("Sec-WebSocket-Protocol", " base64.channel.k8s.io ,,")
	want := []string{"v5.channel.k8s.io", "v4.channel.k8s.io", "base64.channel.k8s.io"}
	if got := Offered(h); !slices.Equal(got, want) {
		t.Errorf("Offered = %q, want %q", got, want)
	}
}

func TestChannelString(t *testing.T) {
	for ch, want := range map[Channel]string{Stdin: "stdin", Resize: "resize", Close: "close", 7: "channel 7", 200: "channel 200"} {
		if got := ch.String(); got != want {
			t.Errorf("%d.String() = %q, want %q", ch, got, want)
		}
	}
}

// TestStandardLibraryOnly keeps this package a leaf: it must build from the
// standard library alone, like the framing packages of its model codebases.
func TestStandardLibraryOnly(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for dep := range strings.FieldsSeq(string(out)) {
		if dep != "gateway/stream/wsproto" {
			t.Errorf("wsproto depends on %s; it must use the standard library only", dep)
		}
	}
}

// FuzzParseFrame checks that any message either fails with one of the
// declared errors or decodes to a frame that encodes back to the message.
func FuzzParseFrame(f *testing.F) {
	for _, seed := range [][]byte{
		{0x00, 'l', 's', '\n'}, {0x01}, {0xff, 0x00}, {0xff}, []byte("0Zm9vCg=="), []byte("1"), []byte("0Zm9vCg"), {},
	} {
		for i := range 4 {
			f.Add(byte(i), seed)
		}
	}
	protos := []Protocol{V5, V4, V4Base64, V1, V1Base64}
	f.Fuzz(func(t *testing.T, which byte, msg []byte) {
		p := protos[int(which)%len(protos)]
		fr, err := p.ParseFrame(msg)
		if err != nil {
			for _, e := range []error{ErrEmpty, ErrBadBase64, ErrBadChannel, ErrBadCloseSignal, ErrUnknownChannel} {
				if errors.Is(err, e) {
					return
				}
			}
			t.Fatalf("undeclared error %v", err)
		}
		if fr.Channel == Close && (!p.CloseSignal || len(fr.Payload) != 1) {
			t.Fatalf("%s: a close frame %x from %x", p.Name, fr.Payload, msg)
		}
		again := p.AppendFrame(nil, fr.Channel, fr.Payload)
		if p.Base64 {
			// Base64 decoding is lenient about nothing but line breaks;
			// re-encoding must give back a frame that decodes the same.
			fr2, err := p.ParseFrame(again)
			if err != nil || fr2.Channel != fr.Channel || !bytes.Equal(fr2.Payload, fr.Payload) {
				t.Fatalf("round trip: %q -> %v %q -> %q", msg, fr.Channel, fr.Payload, again)
			}
			return
		}
		if !bytes.Equal(again, msg) {
			t.Fatalf("round trip: %x -> %x", msg, again)
		}
	})
}

// FuzzRoundTrip checks decode(encode(x)) == x for every protocol.
func FuzzRoundTrip(f *testing.F) {
	f.Add(byte(0), byte(1), []byte("hello"))
	f.Add(byte(2), byte(4), []byte(`{"Width":80,"Height":24}`))
	f.Add(byte(1), byte(3), []byte{})
	protos := []Protocol{V5, V4, V4Base64, V1, V1Base64}
	f.Fuzz(func(t *testing.T, which, ch byte, payload []byte) {
		p := protos[int(which)%len(protos)]
		ch %= 10 // base64 channels are digits
		msg := p.AppendFrame(nil, Channel(ch), payload)
		fr, err := p.ParseFrame(msg)
		if p.CloseSignal && ch == byte(Close) {
			return
		}
		if err != nil || fr.Channel != Channel(ch) || !bytes.Equal(fr.Payload, payload) {
			t.Fatalf("%s: %d %x -> %x -> %v %d %x", p.Name, ch, payload, msg, err, fr.Channel, fr.Payload)
		}
	})
}

func BenchmarkAppendFrame(b *testing.B) {
	for _, size := range []int{16, 4 << 10, 32 << 10} {
		payload := bytes.Repeat([]byte{'x'}, size)
		for _, p := range []Protocol{V5, V4Base64} {
			b.Run(fmt.Sprintf("%s/%d", p.Name, size), func(b *testing.B) {
				buf := make([]byte, 0, p.EncodedLen(size))
				b.SetBytes(int64(size))
				b.ReportAllocs()
				for b.Loop() {
					buf = p.AppendFrame(buf[:0], Stdout, payload)
				}
			})
		}
	}
}

func BenchmarkParseFrame(b *testing.B) {
	for _, size := range []int{16, 4 << 10, 32 << 10} {
		payload := bytes.Repeat([]byte{'x'}, size)
		for _, p := range []Protocol{V5, V4Base64} {
			msg := p.AppendFrame(nil, Stdin, payload)
			b.Run(fmt.Sprintf("%s/%d", p.Name, size), func(b *testing.B) {
				b.SetBytes(int64(size))
				b.ReportAllocs()
				for b.Loop() {
					if _, err := p.ParseFrame(msg); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
