package notify

import "testing"

func TestSignal(t *testing.T) {
	var s Signal
	s.Notify() // no one waits: nothing to close
	if s.Gen() != 1 {
		t.Fatalf("Gen %d after one Notify", s.Gen())
	}
	c1 := s.C()
	if c2 := s.C(); c2 != c1 {
		t.Fatal("two waiters before a change got different channels")
	}
	select {
	case <-c1:
		t.Fatal("closed before any change")
	default:
	}
	s.Notify()
	select {
	case <-c1:
	default:
		t.Fatal("not closed by the change")
	}
	if s.Gen() != 2 {
		t.Fatalf("Gen %d after two", s.Gen())
	}
	c3 := s.C()
	if c3 == c1 {
		t.Fatal("a waiter after the change got the closed channel")
	}
	select {
	case <-c3:
		t.Fatal("the next channel is closed already")
	default:
	}
}
