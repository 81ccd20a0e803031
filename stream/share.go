package stream

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"strings"
	"time"

	"gateway/audit"
	"gateway/internal/reqerr"
)

// Share links: a token that lets its bearer join one shared exec, to watch
// it (view: input and resizes dropped) or to use it (interactive), and
// nothing else, until it expires or is revoked; either cuts the clients it
// let in (close 4003). A token is the share's id and a 128-bit secret; the
// gateway keeps only the secret's SHA-256, compares it in constant time,
// and never logs either.

// Share modes.
const (
	ShareView        = "view"
	ShareInteractive = "interactive"
)

// DefaultShareTTL is a share's life when the request names none.
const DefaultShareTTL = time.Hour

type share struct {
	id      string
	secret  [sha256.Size]byte // the SHA-256 of the token's secret
	mode    string
	expires time.Time
	sh      *shared
	timer   *time.Timer // revokes it when it expires
}

// ShareInfo is a share as the API shows it: never its token.
type ShareInfo struct {
	ID        string    `json:"id"`
	Mode      string    `json:"mode"`
	ExpiresAt time.Time `json:"expiresAt"`
	Viewers   int       `json:"viewers"`
}

// Grant is what a share token lets its bearer do: join Session, through
// Share, view-only or not.
type Grant struct {
	Session, Share string
	ViewOnly       bool
}

var shareEncoding = base64.RawURLEncoding

// CreateShare makes a share link for a shared exec (view when mode is
// empty) and returns it with its token, which is shown this once.
func (s *Server) CreateShare(sessionID, mode string, ttl time.Duration) (ShareInfo, string, error) {
	if mode == "" {
		mode = ShareView // the least it can grant
	}
	switch {
	case mode != ShareView && mode != ShareInteractive:
		return ShareInfo{}, "", badRequest("mode %q: want %q or %q", mode, ShareView, ShareInteractive)
	case ttl < 0 || ttl > s.cfg.MaxShareTTL:
		return ShareInfo{}, "", badRequest("ttlSeconds: want 1 to %d", int(s.cfg.MaxShareTTL.Seconds()))
	case ttl == 0:
		ttl = min(DefaultShareTTL, s.cfg.MaxShareTTL)
	}
	sh, err := s.sharedSession(sessionID)
	if err != nil {
		return ShareInfo{}, "", err
	}
	var id [8]byte
	var secret [16]byte
	rand.Read(id[:]) // never fails (crypto/rand)
	rand.Read(secret[:])
	sr := &share{id: hex.EncodeToString(id[:]), mode: mode, expires: time.Now().Add(ttl), sh: sh}
	token := sr.id + "." + shareEncoding.EncodeToString(secret[:])
	sr.secret = sha256.Sum256([]byte(token[len(sr.id)+1:]))

	sh.mu.Lock()
	if sh.done || sh.cause != nil {
		sh.mu.Unlock()
		return ShareInfo{}, "", reqerr.New(reqerr.ErrConflict, "session %q has ended", sessionID)
	}
	if len(sh.shares) >= s.cfg.MaxShares {
		sh.mu.Unlock()
		return ShareInfo{}, "", reqerr.New(reqerr.ErrTooMany, "session %q has %d share links, the most it may: revoke one first", sessionID, len(sh.shares))
	}
	sh.shares[sr.id] = sr
	sr.timer = time.AfterFunc(ttl, func() { s.revoke(sr, "expired") })
	sh.mu.Unlock()
	s.sharedMu.Lock()
	s.shares[sr.id] = sr
	s.sharedMu.Unlock()
	s.metrics.Shares.Inc()
	sh.log.Info("share link created", "share", sr.id, "mode", mode, "expires", sr.expires.UTC().Format(time.RFC3339))
	return sr.info(0), token, nil
}

// sharedSession returns a live shared exec.
func (s *Server) sharedSession(id string) (*shared, error) {
	sess, err := s.sessions.Get(id)
	if err != nil {
		return nil, err
	}
	s.sharedMu.Lock()
	sh := s.shared[id]
	s.sharedMu.Unlock()
	if sh == nil {
		if !sess.Live() {
			return nil, reqerr.New(reqerr.ErrConflict, "session %q has ended", id)
		}
		return nil, reqerr.New(reqerr.ErrConflict, "session %q is not shared: only an exec opened with detach can be joined", id)
	}
	return sh, nil
}

// Shares lists a shared exec's share links.
func (s *Server) Shares(sessionID string) ([]ShareInfo, error) {
	sh, err := s.sharedSession(sessionID)
	if err != nil {
		return nil, err
	}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	out := []ShareInfo{}
	for _, sr := range sh.shares {
		out = append(out, sr.info(sh.admitted(sr.id)))
	}
	return out, nil
}

// RevokeShare revokes a share link and cuts the clients it let in.
func (s *Server) RevokeShare(sessionID, shareID string) error {
	sh, err := s.sharedSession(sessionID)
	if err != nil {
		return err
	}
	sh.mu.Lock()
	sr := sh.shares[shareID]
	sh.mu.Unlock()
	if sr == nil {
		return reqerr.New(reqerr.ErrNotFound, "session %q has no share %q", sessionID, shareID)
	}
	s.revoke(sr, "revoked")
	return nil
}

// revoke ends a share (revoked or expired): no new client, and the ones
// it let in are cut.
func (s *Server) revoke(sr *share, why string) {
	sh := sr.sh
	sh.mu.Lock()
	if sh.shares[sr.id] != sr {
		sh.mu.Unlock()
		return // ended already
	}
	delete(sh.shares, sr.id)
	var cut []*client
	for c := range sh.viewers {
		if c.share == sr.id {
			cut = append(cut, c)
		}
	}
	sr.drop()
	sh.mu.Unlock()
	s.sharedMu.Lock()
	delete(s.shares, sr.id)
	s.sharedMu.Unlock()
	sh.log.Info("share link "+why, "share", sr.id, "clients_cut", len(cut))
	s.cfg.Audit.Record(audit.Event{Event: audit.ShareRevoke, Session: sh.sess.ID, Share: sr.id, Reason: why})
	for _, c := range cut {
		c.t.Close(errShareRevoked)
	}
}

// drop stops the share's timer and counts it gone. sh.mu is held.
func (sr *share) drop() {
	sr.timer.Stop()
	sr.sh.srv.metrics.Shares.Dec()
}

// admitted counts the clients a share let in. sh.mu is held.
func (sh *shared) admitted(shareID string) int {
	n := 0
	for c := range sh.viewers {
		if c.share == shareID {
			n++
		}
	}
	return n
}

func (sr *share) info(viewers int) ShareInfo {
	return ShareInfo{ID: sr.id, Mode: sr.mode, ExpiresAt: sr.expires.UTC().Truncate(time.Second), Viewers: viewers}
}

// IsShareToken reports whether token has a share token's shape (its id,
// a dot, its secret), valid or not: among replicas, one that does not
// hold the share still knows the kind of token it was sent.
func IsShareToken(token string) bool {
	id, secret, ok := strings.Cut(token, ".")
	if !ok || len(id) != 16 || shareEncoding.DecodedLen(len(secret)) != 16 {
		return false
	}
	_, err := hex.DecodeString(id)
	return err == nil
}

// CheckShare reports what a share token grants, if it is one that is
// valid now.
func (s *Server) CheckShare(token string) (Grant, bool) {
	id, secret, ok := strings.Cut(token, ".")
	if !ok || len(id) != 16 {
		return Grant{}, false
	}
	s.sharedMu.Lock()
	sr := s.shares[id]
	s.sharedMu.Unlock()
	if sr == nil {
		return Grant{}, false
	}
	sum := sha256.Sum256([]byte(secret))
	if subtle.ConstantTimeCompare(sum[:], sr.secret[:]) != 1 || !time.Now().Before(sr.expires) {
		return Grant{}, false
	}
	return Grant{Session: sr.sh.sess.ID, Share: sr.id, ViewOnly: sr.mode == ShareView}, true
}
