package stream

import (
	"io"
	"log/slog"
	"strconv"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"gateway/record"
)

// BenchmarkRecordedOutput: exec output, 16 MiB from a pipe, of NULs and
// of text, recorded (to a temporary directory) and not.
func BenchmarkRecordedOutput(b *testing.B) {
	for _, c := range []struct{ name, command string }{
		{"zeros", "head -c 16777216 /dev/zero"},
		{"text", "head -c 12582912 /dev/zero | base64 -w 76 | head -c 16777216"},
	} {
		for _, rec := range []bool{false, true} {
			b.Run(c.name+"/recorded="+strconv.FormatBool(rec), func(b *testing.B) {
				h := newHarness(b, func(c *Config) {
					if !rec {
						return
					}
					g := func(n string) prometheus.Gauge { return prometheus.NewGauge(prometheus.GaugeOpts{Name: n}) }
					ctr := func(n string) prometheus.Counter { return prometheus.NewCounter(prometheus.CounterOpts{Name: n}) }
					st, err := record.Open(record.Config{Dir: b.TempDir(), MaxBytes: 1 << 30},
						record.Counters{Active: g("a"), Bytes: ctr("b"), Errors: ctr("e"), Truncated: ctr("t")}, slog.New(slog.NewTextHandler(io.Discard, nil)))
					if err != nil {
						b.Fatal(err)
					}
					c.Record = RecordConfig{Store: st, Default: record.On}
				})
				size := 16 << 20
				q := execQuery("stdout", "sh", "-c", c.command)
				b.SetBytes(int64(size))
				b.ReportAllocs()
				for b.Loop() {
					ws, _, err := h.dial(b, q, nil, "v5.channel.k8s.io")
					if err != nil {
						b.Fatal(err)
					}
					if got := channelBytes(ws, 1); got != size {
						b.Fatalf("got %d bytes, want %d", got, size)
					}
					ws.Close()
				}
			})
		}
	}
}
