// Package record writes exec and attach sessions as asciicast v2 files,
// the format asciinema and asciinema-player play, and keeps them.
//
// A recording never slows its stream: events are encoded into a queue of
// bounded size that a goroutine of the recording's own writes to disk.
// When the disk falls that far behind, or a write fails, the recording is
// truncated (it keeps what it had, a faithful prefix, and says so in its
// metadata and its last event); a recording that is required then ends
// its session through the callback it was started with.
//
// Each recording is ID.cast, beside ID.json with its metadata, in the
// store's directory. Retention removes the oldest finished ones, by age
// and by the directory's total size.
package record

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.yaml.in/yaml/v3"
)

// Mode says whether a container's sessions are recorded.
type Mode string

const (
	Off      Mode = "off"
	On       Mode = "on"
	Required Mode = "required" // a session that cannot be recorded is refused or ended
)

// ParseMode reads a mode as the config spells it: a boolean, or
// "required".
func ParseMode(s string) (Mode, error) {
	switch strings.ToLower(s) {
	case "", "default":
		return "", nil
	case "true", "on", "yes":
		return On, nil
	case "false", "off", "no":
		return Off, nil
	case "required":
		return Required, nil
	}
	return "", fmt.Errorf("record: %q: want true, false or required", s)
}

// UnmarshalJSON takes true, false or "required" (YAML decodes through it).
func (m *Mode) UnmarshalJSON(b []byte) error {
	v, err := ParseMode(strings.Trim(string(b), `"`))
	if err == nil {
		*m = v
	}
	return err
}

// UnmarshalYAML takes the same, naming the line of a bad value.
func (m *Mode) UnmarshalYAML(n *yaml.Node) error {
	v, err := ParseMode(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	*m = v
	return nil
}

// Config is a store's.
type Config struct {
	Dir string
	// Input records what clients type ("i" events): off by default, as
	// it carries passwords.
	Input bool
	// Queue bounds each recording's events waiting for the disk, in
	// bytes; beyond it the recording is truncated.
	Queue int
	// MaxAge and MaxBytes bound what is kept (0: no bound); the oldest
	// finished recordings go first.
	MaxAge   time.Duration
	MaxBytes int64
}

// DefaultQueue is a recording's queue when the config names none: a few
// seconds of a flood at disk speed.
const DefaultQueue = 4 << 20

// Meta describes a recording: the API lists it.
type Meta struct {
	ID        string     `json:"id"`
	Session   string     `json:"session"`
	Kind      string     `json:"kind"`
	Container string     `json:"container"`
	Command   []string   `json:"command,omitempty"`
	TTY       bool       `json:"tty"`
	Input     bool       `json:"input"`
	StartedAt time.Time  `json:"startedAt"`
	EndedAt   *time.Time `json:"endedAt,omitempty"`
	Size      int64      `json:"size"`
	Active    bool       `json:"active"`
	Truncated bool       `json:"truncated,omitempty"`
	Reason    string     `json:"reason,omitempty"` // why it was truncated
	ExitCode  *int       `json:"exitCode,omitempty"`
}

// Counters are the metrics a store keeps: recordings being written, bytes
// written, failed writes, truncated recordings.
type Counters struct {
	Active                   prometheus.Gauge
	Bytes, Errors, Truncated prometheus.Counter
}

// Store keeps the recordings of one directory.
type Store struct {
	cfg Config
	m   Counters
	log *slog.Logger

	mu     sync.Mutex
	active map[string]*Recording
	wg     sync.WaitGroup
}

// ErrNotFound: no such recording. ErrActive: it is still being written.
var (
	ErrNotFound = errors.New("recording not found")
	ErrActive   = errors.New("recording still being written")
)

// Open opens (creating it) the store's directory. Recordings a crash left
// marked active are marked ended, truncated, with the size they reached.
func Open(cfg Config, m Counters, log *slog.Logger) (*Store, error) {
	if cfg.Queue <= 0 {
		cfg.Queue = DefaultQueue
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("recordings: %w", err)
	}
	s := &Store{cfg: cfg, m: m, log: log, active: map[string]*Recording{}}
	metas, err := s.metas()
	if err != nil {
		return nil, err
	}
	for _, md := range metas {
		if md.Active {
			md.Active, md.Truncated, md.Reason = false, true, "the gateway stopped while recording"
			if fi, err := os.Stat(s.castPath(md.ID)); err == nil {
				md.Size = fi.Size()
				t := fi.ModTime().UTC()
				md.EndedAt = &t
			}
			if err := s.writeMeta(md); err != nil {
				return nil, err
			}
		}
	}
	s.retain()
	return s, nil
}

// Dir is the store's directory.
func (s *Store) Dir() string { return s.cfg.Dir }

// Wait waits for every recording's writer to finish (after End).
func (s *Store) Wait() { s.wg.Wait() }

func (s *Store) castPath(id string) string { return filepath.Join(s.cfg.Dir, id+".cast") }
func (s *Store) metaPath(id string) string { return filepath.Join(s.cfg.Dir, id+".json") }

// validID: ids are the gateway's own session ids; anything else (a path)
// is not found.
func validID(id string) bool {
	return id != "" && len(id) <= 64 && strings.IndexFunc(id, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-')
	}) < 0
}

// writeMeta replaces a recording's metadata file atomically.
func (s *Store) writeMeta(md Meta) error {
	b, err := json.Marshal(md)
	if err != nil {
		return err
	}
	tmp := s.metaPath(md.ID) + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, s.metaPath(md.ID))
}

// metas reads every recording's metadata, oldest first.
func (s *Store) metas() ([]Meta, error) {
	paths, err := filepath.Glob(filepath.Join(s.cfg.Dir, "*.json"))
	if err != nil {
		return nil, err
	}
	out := make([]Meta, 0, len(paths))
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			continue // removed meanwhile
		}
		var md Meta
		if json.Unmarshal(b, &md) != nil || !validID(md.ID) {
			continue
		}
		out = append(out, md)
	}
	slices.SortFunc(out, func(a, b Meta) int { return a.StartedAt.Compare(b.StartedAt) })
	return out, nil
}

// Filter selects recordings; empty fields select all.
type Filter struct {
	Container, Session string
	Since              time.Time
}

// List returns the recordings the filter selects, oldest first; active
// ones show the size written so far.
func (s *Store) List(f Filter) ([]Meta, error) {
	metas, err := s.metas()
	if err != nil {
		return nil, err
	}
	out := metas[:0]
	for _, md := range metas {
		if f.Container != "" && md.Container != f.Container || f.Session != "" && md.Session != f.Session ||
			!f.Since.IsZero() && md.StartedAt.Before(f.Since) {
			continue
		}
		out = append(out, s.current(md))
	}
	return out, nil
}

// current is md with a live recording's progress.
func (s *Store) current(md Meta) Meta {
	s.mu.Lock()
	r := s.active[md.ID]
	s.mu.Unlock()
	if r != nil {
		return r.Meta()
	}
	return md
}

// Get returns a recording's metadata.
func (s *Store) Get(id string) (Meta, error) {
	if !validID(id) {
		return Meta{}, ErrNotFound
	}
	b, err := os.ReadFile(s.metaPath(id))
	if err != nil {
		return Meta{}, ErrNotFound
	}
	var md Meta
	if err := json.Unmarshal(b, &md); err != nil {
		return Meta{}, err
	}
	return s.current(md), nil
}

// File opens a recording's .cast file, with its metadata.
func (s *Store) File(id string) (*os.File, Meta, error) {
	md, err := s.Get(id)
	if err != nil {
		return nil, Meta{}, err
	}
	f, err := os.Open(s.castPath(id))
	if err != nil {
		return nil, Meta{}, ErrNotFound
	}
	return f, md, nil
}

// Delete removes a finished recording.
func (s *Store) Delete(id string) error {
	md, err := s.Get(id)
	if err != nil {
		return err
	}
	if md.Active {
		return ErrActive
	}
	s.remove(id)
	return nil
}

func (s *Store) remove(id string) {
	os.Remove(s.castPath(id))
	os.Remove(s.metaPath(id))
}

// retain removes finished recordings older than MaxAge, then the oldest
// until the rest fit in MaxBytes.
func (s *Store) retain() {
	if s.cfg.MaxAge <= 0 && s.cfg.MaxBytes <= 0 {
		return
	}
	metas, err := s.metas()
	if err != nil {
		return
	}
	var total int64
	for _, md := range metas {
		total += md.Size
	}
	for _, md := range metas {
		if md.Active {
			continue
		}
		old := s.cfg.MaxAge > 0 && md.EndedAt != nil && time.Since(*md.EndedAt) > s.cfg.MaxAge
		if old || s.cfg.MaxBytes > 0 && total > s.cfg.MaxBytes {
			s.remove(md.ID)
			total -= md.Size
			s.log.Info("recording removed", "recording", md.ID, "size", md.Size, "why", map[bool]string{true: "age", false: "size"}[old])
		}
	}
}

// Header is what a recording's asciicast header says.
type Header struct {
	Width, Height int
	Command       []string
	Env           map[string]string // TERM, SHELL
}

// Start begins the recording of a session. onFail, when not nil, is
// called once if the recording is truncated (a required one ends its
// session there).
func (s *Store) Start(md Meta, h Header, onFail func(error)) (*Recording, error) {
	if !validID(md.ID) {
		return nil, fmt.Errorf("recording id %q", md.ID)
	}
	f, err := os.OpenFile(s.castPath(md.ID), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("recording: %w", err)
	}
	md.Active, md.Input = true, s.cfg.Input
	r := &Recording{s: s, f: f, md: md, start: time.Now(), onFail: onFail, wake: make(chan struct{}, 1), done: make(chan struct{})}
	if err := s.writeMeta(md); err != nil {
		f.Close()
		os.Remove(s.castPath(md.ID))
		return nil, fmt.Errorf("recording: %w", err)
	}
	r.size = [2]int{max(h.Width, 1), max(h.Height, 1)}
	hdr := map[string]any{"version": 2, "width": r.size[0], "height": r.size[1],
		"timestamp": md.StartedAt.Unix(), "title": md.Session}
	if len(h.Command) > 0 {
		hdr["command"] = strings.Join(h.Command, " ")
	}
	if len(h.Env) > 0 {
		hdr["env"] = h.Env
	}
	b, _ := json.Marshal(hdr)
	r.append('h', append(b, '\n'), false)
	s.mu.Lock()
	s.active[md.ID] = r
	s.mu.Unlock()
	s.m.Active.Inc()
	s.wg.Go(r.write)
	return r, nil
}

// Recording is one session's recording. Its methods may be called from
// several goroutines; none blocks on the disk.
type Recording struct {
	s      *Store
	f      *os.File
	start  time.Time
	onFail func(error)
	wake   chan struct{} // the writer has work
	done   chan struct{} // the writer has finished

	mu      sync.Mutex
	md      Meta
	queue   [][]byte // encoded events waiting for the writer, in pooled blocks
	queued  int      // their bytes
	tails   [2][]byte
	ended   bool
	failErr error // why it was truncated
	diskErr bool  // a write failed: nothing more is written
	written int64
	size    [2]int // the terminal's, as recorded last
}

// Meta returns the recording's metadata as it is now.
func (r *Recording) Meta() Meta {
	r.mu.Lock()
	defer r.mu.Unlock()
	md := r.md
	md.Size = r.written
	return md
}

// ID is the recording's id.
func (r *Recording) ID() string { return r.md.ID }

// Output records output for the client.
func (r *Recording) Output(p []byte) { r.event('o', 0, p) }

// Input records what a client typed, when the store records input.
func (r *Recording) Input(p []byte) {
	if r.md.Input {
		r.event('i', 1, p)
	}
}

// Resize records a terminal size, unless it is the size already (an
// attacher learns of its own resizes twice: as it sends them and as the
// pty takes them).
func (r *Recording) Resize(cols, rows int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.size == [2]int{cols, rows} {
		return
	}
	r.size = [2]int{cols, rows}
	r.append('r', []byte(strconv.Itoa(cols)+"x"+strconv.Itoa(rows)), false)
}

// event appends an output or input event: UTF-8 cut at the end of p waits
// for the rest in the next one (asciicast carries text).
func (r *Recording) event(kind byte, tail int, p []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ended || r.failErr != nil {
		return
	}
	if t := r.tails[tail]; len(t) > 0 {
		p = append(t, p...) // a fresh slice: tails are at most 3 bytes
		r.tails[tail] = nil
	}
	if cut := incompleteTail(p); cut > 0 {
		r.tails[tail] = append([]byte(nil), p[len(p)-cut:]...)
		p = p[:len(p)-cut]
	}
	if len(p) > 0 {
		r.append(kind, p, true)
	}
}

// append queues one event, as it came: the writer encodes it, off the
// stream's path. r.mu is held.
func (r *Recording) append(kind byte, data []byte, text bool) {
	if r.ended || r.failErr != nil {
		return
	}
	r.queueEvent(kind, data, text)
}

// queueEvent queues an event whatever the state; r.mu is held.
func (r *Recording) queueEvent(kind byte, data []byte, text bool) {
	// An event's record: its kind (upper case: text), its time, its
	// length, its bytes.
	if r.queued+len(data)+13 > r.s.cfg.Queue && kind != 'M' && kind != 'm' {
		r.fail(errors.New("the disk fell behind: the recording's queue is full"))
		return
	}
	var hdr [13]byte
	hdr[0] = kind
	if text {
		hdr[0] = kind - 'a' + 'A'
	}
	binary.LittleEndian.PutUint64(hdr[1:], math.Float64bits(time.Since(r.start).Seconds()))
	binary.LittleEndian.PutUint32(hdr[9:], uint32(len(data)))
	r.enqueue(hdr[:])
	r.enqueue(data)
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Events are copied into blocks that the writer gives back once written:
// a quiet recording holds none, and a flood reuses the same few rather
// than growing one buffer. The free blocks are a bounded list of the
// process's (8 MiB at most), not a sync.Pool: a flood allocates fast
// enough that each collection would empty a pool.
const blockSize = 64 << 10

var freeBlocks = make(chan []byte, 128)

func getBlock() []byte {
	select {
	case b := <-freeBlocks:
		return b
	default:
		return make([]byte, 0, blockSize)
	}
}

func putBlock(b []byte) {
	select {
	case freeBlocks <- b[:0]:
	default:
	}
}

// enqueue copies b into the queue's blocks; r.mu is held.
func (r *Recording) enqueue(b []byte) {
	r.queued += len(b)
	for len(b) > 0 {
		n := len(r.queue)
		if n == 0 || len(r.queue[n-1]) == cap(r.queue[n-1]) {
			r.queue = append(r.queue, getBlock())
			n++
		}
		last := r.queue[n-1]
		k := copy(last[len(last):cap(last)], b)
		r.queue[n-1], b = last[:len(last)+k], b[k:]
	}
}

// fail truncates the recording; r.mu is held.
func (r *Recording) fail(err error) {
	if r.failErr != nil {
		return
	}
	r.failErr = err
	r.md.Truncated, r.md.Reason = true, err.Error()
	r.s.m.Truncated.Inc()
	r.s.log.Warn("recording truncated", "recording", r.md.ID, "session", r.md.Session, "error", err)
	if r.onFail != nil {
		go r.onFail(err)
	}
}

// Truncated reports why the recording was cut short, or nil.
func (r *Recording) Truncated() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.failErr
}

// End records the end (an exit status marker when the process exited),
// then the writer flushes, syncs and closes the file. Ending twice is
// harmless.
func (r *Recording) End(exitCode *int) {
	r.mu.Lock()
	if r.ended {
		r.mu.Unlock()
		return
	}
	for i, t := range r.tails { // cut UTF-8 at the very end: as it is
		if len(t) > 0 {
			r.append("oi"[i], t, true)
		}
	}
	switch {
	case r.failErr != nil:
		// What was queued before is written; the last event says why the
		// rest is not there.
		r.queueEvent('m', []byte("truncated: "+r.failErr.Error()), false)
	case exitCode != nil:
		r.append('m', []byte("exit "+strconv.Itoa(*exitCode)), false)
		c := *exitCode
		r.md.ExitCode = &c
	default:
		r.append('m', []byte("ended"), false)
	}
	r.ended = true
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
	<-r.done
}

// write is the recording's writer: it takes the queued blocks, encodes
// their events and writes them, until the end.
func (r *Recording) write() {
	defer close(r.done)
	var (
		batch [][]byte
		q     eventReader
		out   []byte
	)
	flush := func() {
		r.mu.Lock()
		stop := r.diskErr
		r.mu.Unlock()
		if len(out) == 0 || stop {
			out = out[:0]
			return
		}
		n, err := r.f.Write(out)
		r.mu.Lock()
		r.written += int64(n)
		if err != nil {
			r.diskErr = true
			r.s.m.Errors.Inc()
			r.fail(fmt.Errorf("writing the recording: %w", err))
		}
		r.mu.Unlock()
		r.s.m.Bytes.Add(float64(n))
		out = out[:0]
	}
	for {
		<-r.wake
		r.mu.Lock()
		batch, r.queue, r.queued = r.queue, batch[:0], 0
		ended := r.ended
		r.mu.Unlock()
		q.reset(batch)
		for {
			kind, t, data, ok := q.next()
			if !ok {
				break
			}
			out = encodeEvent(out, kind, t, data)
			if len(out) >= 256<<10 {
				flush()
			}
		}
		flush()
		for i, b := range batch {
			putBlock(b)
			batch[i] = nil
		}
		if cap(out) > 1<<20 {
			out = nil // a flood's: not kept for a quiet session
		}
		if ended {
			r.finish()
			return
		}
	}
}

// encodeEvent appends an event's asciicast line.
func encodeEvent(b []byte, kind byte, t float64, data []byte) []byte {
	if kind == 'h' { // the header line, as it is
		return append(b, data...)
	}
	text := kind >= 'A' && kind <= 'Z'
	if text {
		kind = kind - 'A' + 'a'
	}
	b = append(b, '[')
	b = strconv.AppendFloat(b, t, 'f', 6, 64)
	b = append(b, `, "`...)
	b = append(b, kind)
	b = append(b, `", `...)
	if text {
		b = appendJSONString(b, data)
	} else {
		b = strconv.AppendQuote(b, string(data))
	}
	return append(b, "]\n"...)
}

// eventReader reads the event records of a batch of blocks (a record may
// span blocks).
type eventReader struct {
	blocks [][]byte
	own    [][]byte // blocks' backing array
	tmp    []byte
}

// reset starts on a batch; the reader consumes its own copy of the
// blocks' headers, so that the batch keeps the whole blocks to give back.
func (q *eventReader) reset(b [][]byte) { q.own = append(q.own[:0], b...); q.blocks = q.own }

// take returns the next n bytes, valid until the next call.
func (q *eventReader) take(n int) ([]byte, bool) {
	if n == 0 {
		return nil, true
	}
	for len(q.blocks) > 0 && len(q.blocks[0]) == 0 {
		q.blocks = q.blocks[1:]
	}
	if len(q.blocks) == 0 {
		return nil, false
	}
	if b := q.blocks[0]; len(b) >= n {
		q.blocks[0] = b[n:]
		return b[:n], true
	}
	q.tmp = q.tmp[:0]
	for len(q.tmp) < n && len(q.blocks) > 0 {
		b := q.blocks[0]
		k := min(n-len(q.tmp), len(b))
		q.tmp = append(q.tmp, b[:k]...)
		q.blocks[0] = b[k:]
		if len(q.blocks[0]) == 0 {
			q.blocks = q.blocks[1:]
		}
	}
	return q.tmp, len(q.tmp) == n
}

func (q *eventReader) next() (kind byte, t float64, data []byte, ok bool) {
	hdr, ok := q.take(13)
	if !ok {
		return 0, 0, nil, false
	}
	kind = hdr[0]
	t = math.Float64frombits(binary.LittleEndian.Uint64(hdr[1:]))
	n := int(binary.LittleEndian.Uint32(hdr[9:]))
	data, ok = q.take(n)
	return kind, t, data, ok
}

// finish syncs and closes the file and writes the final metadata.
func (r *Recording) finish() {
	if err := r.f.Sync(); err != nil {
		r.s.m.Errors.Inc()
	}
	r.f.Close()
	r.mu.Lock()
	now := time.Now().UTC()
	r.md.Active, r.md.EndedAt, r.md.Size = false, &now, r.written
	md := r.md
	r.mu.Unlock()
	if err := r.s.writeMeta(md); err != nil {
		r.s.log.Warn("recording metadata", "recording", md.ID, "error", err)
	}
	r.s.mu.Lock()
	delete(r.s.active, md.ID)
	r.s.mu.Unlock()
	r.s.m.Active.Dec()
	r.s.retain()
}
