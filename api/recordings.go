package api

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"gateway/internal/reqerr"
	"gateway/record"
	"gateway/stream/wsproto"
)

// castType is the media type of asciicast files.
const castType = "application/x-asciicast"

// recordings is the store, or the error of a gateway that has none.
func (a *API) recordings() (*record.Store, error) {
	if a.records == nil {
		return nil, reqerr.New(reqerr.ErrNotFound, "this gateway keeps no recordings")
	}
	return a.records, nil
}

func (a *API) listRecordings(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := record.Filter{Container: q.Get("container"), Session: q.Get("session")}
	if s := q.Get("since"); s != "" {
		t, err := time.Parse(time.RFC3339, s)
		if err != nil {
			a.writeError(w, r, reqerr.New(reqerr.ErrBadRequest, "since %q: want a time such as 2026-12-01T10:00:00Z", s))
			return
		}
		f.Since = t
	}
	items := []record.Meta{}
	if a.records != nil {
		var err error
		if items, err = a.records.List(f); err != nil {
			a.writeError(w, r, err)
			return
		}
	}
	writeJSON(w, http.StatusOK, newList(items))
}

// getRecording serves the .cast file. With follow=1 it is a stream of
// server-sent events, one asciicast line each (what asciinema-player's
// eventsource driver plays), followed as the recording grows, then a
// "done" event once it has ended.
func (a *API) getRecording(w http.ResponseWriter, r *http.Request) {
	store, err := a.recordings()
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	id := r.PathValue("id")
	f, _, err := store.File(id)
	if err != nil {
		a.writeError(w, r, recordingError(id, err))
		return
	}
	defer f.Close()
	w.Header().Set("Cache-Control", "no-store")
	if !wsproto.ParseBool(r.URL.Query()["follow"]) {
		w.Header().Set("Content-Type", castType)
		http.ServeContent(w, r, id+".cast", time.Time{}, f)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	a.follow(w, r, f, func() bool {
		md, err := store.Get(id)
		return err == nil && md.Active
	})
}

// follow sends f's lines as events as f grows, while active holds; then
// the rest, and "done". It stops when the gateway drains.
func (a *API) follow(w http.ResponseWriter, r *http.Request, f *os.File, active func() bool) {
	fl, _ := w.(http.Flusher)
	dl := a.newWriteDeadline(http.NewResponseController(w))
	defer dl.stop()
	rd := bufio.NewReaderSize(f, 64<<10)
	var partial []byte
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		going := active() // asked before reading: what it wrote before ending is read below
		dl.extend()
		for {
			line, err := rd.ReadSlice('\n')
			partial = append(partial, line...)
			if err == bufio.ErrBufferFull {
				continue
			}
			if err != nil { // io.EOF: the rest of the line is not written yet
				break
			}
			if _, err := fmt.Fprintf(w, "data: %s\n\n", bytes.TrimSuffix(partial, []byte("\n"))); err != nil {
				return
			}
			partial = partial[:0]
		}
		if fl != nil {
			fl.Flush()
		}
		if !going {
			io.WriteString(w, "event: done\ndata: ended\n\n")
			return
		}
		select {
		case <-r.Context().Done():
			return
		case <-a.drainCtx.Done():
			return
		case <-tick.C:
		}
	}
}

func (a *API) deleteRecording(w http.ResponseWriter, r *http.Request) {
	store, err := a.recordings()
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	id := r.PathValue("id")
	if err := store.Delete(id); err != nil {
		a.writeError(w, r, recordingError(id, err))
		return
	}
	a.log.Info("recording removed", "recording", id)
	w.WriteHeader(http.StatusNoContent)
}

func recordingError(id string, err error) error {
	switch {
	case errors.Is(err, record.ErrNotFound):
		return reqerr.New(reqerr.ErrNotFound, "recording %q not found", id)
	case errors.Is(err, record.ErrActive):
		return reqerr.New(reqerr.ErrConflict, "recording %q is still being written: end its session first", id)
	}
	return err
}
