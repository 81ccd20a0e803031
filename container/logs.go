package container

import (
	"errors"
	"fmt"
	"time"
)

// Logs: the container's output as kubectl logs reads it, from the
// scrollback: the current run's (or, with Previous, the run's before the
// last restart), each line with the time it was published.

// timeMark says that the output from offset off on was published at t.
type timeMark struct {
	off int64
	t   time.Time
}

// Marks are kept at most every markGrain, and at most maxMarks of them
// (then every other one goes): the times of lines are that coarse.
const (
	markGrain = 10 * time.Millisecond
	maxMarks  = 1 << 16
)

// mark records the time of the output from off on. o.mu is held.
func (o *output) mark(off int64, t time.Time) {
	if n := len(o.marks); n > 0 && t.Sub(o.marks[n-1].t) < markGrain {
		return
	}
	start := o.total - int64(o.scroll.size)
	i := 0
	for i+1 < len(o.marks) && o.marks[i+1].off <= start {
		i++ // marks of dropped output, but the one the kept output starts in
	}
	o.marks = append(o.marks[:0], o.marks[i:]...)
	if len(o.marks) >= maxMarks {
		thin := o.marks[:0]
		for j, m := range o.marks {
			if j%2 == 0 {
				thin = append(thin, m)
			}
		}
		o.marks = thin
	}
	o.marks = append(o.marks, timeMark{off: off, t: t})
}

// LogLine is one line of output (with its newline, unless the run has not
// finished it) and when it was published.
type LogLine struct {
	Time time.Time
	Data []byte
}

// ErrNoPrevious: the run before the last restart is not kept (or there was
// none).
var ErrNoPrevious = errors.New("no previous run")

// Logs returns the lines of the current run kept in the scrollback (of the
// previous run, with previous), oldest first. With follow, it also
// subscribes, in the same step, to the output that comes after them: the
// caller reads the attachment (whose Replay is empty) and detaches it.
func (c *Container) Logs(previous, follow bool) ([]LogLine, *Attachment, error) {
	o := c.out
	o.mu.Lock()
	defer o.mu.Unlock()
	start, end := o.runs[1], o.total
	if previous {
		start, end = o.runs[0], o.runs[1]
		if start < 0 {
			return nil, nil, fmt.Errorf("%w: container %q has not restarted", ErrNoPrevious, c.spec.ID)
		}
		follow = false
	}
	kept := o.total - int64(o.scroll.size)
	cut := start < kept
	if cut {
		if previous && end <= kept {
			return nil, nil, fmt.Errorf("%w: the output of container %q's previous run is no longer kept (scrollback %d bytes)",
				ErrNoPrevious, c.spec.ID, o.scroll.limit)
		}
		start = max(start, kept)
	}
	lines := o.lines(start, end, kept)
	if cut && len(lines) > 1 {
		lines = lines[1:] // the rest of a line whose start was dropped
	}
	var att *Attachment
	if follow {
		ch := make(chan Chunk, attachQueueLen)
		att = &Attachment{C: ch, c: ch, o: o, gone: make(chan struct{}), Offset: o.total}
		if o.ended != nil {
			att.exitCode = o.ended
			close(ch)
		} else {
			o.watchers[att] = struct{}{}
		}
	}
	return lines, att, nil
}

// lines cuts the kept output between offsets start and end into lines
// with their times. kept is the offset of the first kept byte. o.mu is
// held.
func (o *output) lines(start, end, kept int64) []LogLine {
	var out []LogLine
	var cur []byte
	var curTime time.Time
	mi := 0
	off := kept
	for _, b := range o.scroll.blocks {
		for _, c := range b.data {
			if off >= start && off < end {
				if len(cur) == 0 {
					for mi+1 < len(o.marks) && o.marks[mi+1].off <= off {
						mi++
					}
					if mi < len(o.marks) {
						curTime = o.marks[mi].t
					}
				}
				cur = append(cur, c)
				if c == '\n' {
					out = append(out, LogLine{Time: curTime, Data: cur})
					cur = nil
				}
			}
			off++
		}
	}
	if len(cur) > 0 {
		out = append(out, LogLine{Time: curTime, Data: cur})
	}
	return out
}
