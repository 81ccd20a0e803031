package session

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Errors of the Store.
var (
	// ErrTokenNotFound: unknown, used or expired token.
	ErrTokenNotFound = errors.New("stream token not found")
	// ErrTooManyPending: the store is full of unused tokens.
	ErrTooManyPending = errors.New("too many pending stream requests")
)

// TokenNotFoundError is ErrTokenNotFound naming no token: the token itself
// is a secret and stays out of error messages and logs.
type TokenNotFoundError struct{}

func (TokenNotFoundError) Error() string              { return "stream URL not found, used or expired" }
func (TokenNotFoundError) Is(target error) bool       { return target == ErrTokenNotFound }
func (TokenNotFoundError) Resource() (string, string) { return "streams", "" }

// Store keeps stream requests under single-use tokens, like the CRI
// streaming server's request cache: a token is random (128 bits), works
// once, expires after a TTL, and the number pending is bounded. It is safe
// for concurrent use and starts no goroutines: expired entries are swept on
// insert.
type Store struct {
	ttl        time.Duration
	maxPending int
	now        func() time.Time

	mu      sync.Mutex
	pending map[string]storeEntry
}

type storeEntry struct {
	req     any
	expires time.Time
}

// The store's defaults: a token lives 30 s, and at most 1000 wait.
const (
	DefaultTokenTTL   = 30 * time.Second
	DefaultMaxPending = 1000
)

// NewStore returns a store. A nil now means time.Now.
func NewStore(ttl time.Duration, maxPending int, now func() time.Time) *Store {
	if now == nil {
		now = time.Now
	}
	return &Store{ttl: ttl, maxPending: maxPending, now: now, pending: make(map[string]storeEntry)}
}

// Put stores req and returns its token and expiry time.
func (s *Store) Put(req any) (token string, expires time.Time, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	for t, e := range s.pending {
		if !now.Before(e.expires) {
			delete(s.pending, t)
		}
	}
	if len(s.pending) >= s.maxPending {
		return "", time.Time{}, fmt.Errorf("%w: %d unused", ErrTooManyPending, len(s.pending))
	}
	for {
		token = newToken()
		if _, taken := s.pending[token]; !taken {
			break
		}
	}
	expires = now.Add(s.ttl)
	s.pending[token] = storeEntry{req: req, expires: expires}
	return token, expires, nil
}

// Consume removes the token and returns its request. An unknown, used or
// expired token is TokenNotFoundError. check, when not nil, may refuse
// the request first: its error is returned, and the token kept.
func (s *Store) Consume(token string, check func(req any) error) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.pending[token]
	if !ok {
		return nil, TokenNotFoundError{}
	}
	if !s.now().Before(e.expires) {
		delete(s.pending, token)
		return nil, TokenNotFoundError{}
	}
	if check != nil {
		if err := check(e.req); err != nil {
			return nil, err
		}
	}
	delete(s.pending, token)
	return e.req, nil
}

func newToken() string {
	var b [16]byte
	rand.Read(b[:]) // never fails (crypto/rand)
	return base64.RawURLEncoding.EncodeToString(b[:])
}
