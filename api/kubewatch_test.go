package api

import (
	"fmt"
	"log/slog"
	"testing"

	"gateway/container"
	"gateway/sandbox"
)

// BenchmarkSyncPods: bringing 100 pods up to date for a list or a
// watcher, when nothing changed since the last read (every watcher but
// the first after a change) and when a sandbox came or went.
func BenchmarkSyncPods(b *testing.B) {
	sandboxes := sandbox.NewRegistry()
	for i := range 99 {
		if _, err := sandboxes.Create(sandbox.Spec{ID: fmt.Sprintf("s%d", i)}); err != nil {
			b.Fatal(err)
		}
	}
	a := New(Config{}, slog.New(slog.DiscardHandler), Deps{Sandboxes: sandboxes, Runtime: container.New(container.Config{}, sandboxes)})
	b.Run("unchanged", func(b *testing.B) {
		a.syncPods()
		for b.Loop() {
			if pods, _ := a.syncPods(); len(pods) != 100 {
				b.Fatal(len(pods))
			}
		}
	})
	b.Run("changed", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			if i%2 == 0 {
				sandboxes.Create(sandbox.Spec{ID: "x"})
			} else {
				sandboxes.Remove("x")
			}
			a.syncPods()
		}
	})
}
