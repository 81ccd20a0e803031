package api

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"net/http"
	"net/url"
	"strings"

	"gateway/audit"
	"gateway/internal/reqerr"
	"gateway/stream"
	"gateway/stream/wsproto"
)

// CookieName is the cookie that POST /login sets for the web page.
const CookieName = "gateway_token"

// credential finds the token a request carries: the Authorization header,
// the bearer subprotocol of browser WebSockets, or the login cookie.
// fromCookie reports that only the cookie carried it.
func credential(r *http.Request) (token string, fromCookie bool) {
	if h := r.Header.Get("Authorization"); h != "" {
		// The scheme is case-insensitive (RFC 7235).
		if scheme, t, ok := strings.Cut(strings.TrimSpace(h), " "); ok && strings.EqualFold(scheme, "Bearer") {
			return strings.TrimSpace(t), false
		}
		return "", false
	}
	for _, p := range wsproto.Offered(r.Header) {
		if enc, ok := strings.CutPrefix(p, wsproto.BearerProtocolPrefix); ok {
			b, err := base64.RawURLEncoding.DecodeString(enc)
			if err != nil {
				return "", false
			}
			return string(b), false
		}
	}
	if c, err := r.Cookie(CookieName); err == nil {
		return c.Value, true
	}
	return "", false
}

// validToken compares in constant time, whatever the lengths.
func (a *API) validToken(token string) bool {
	if token == "" {
		return false
	}
	got := sha256.Sum256([]byte(token))
	return subtle.ConstantTimeCompare(got[:], a.tokenHash[:]) == 1
}

// authenticated wraps h with the token check. A request authenticated by
// its cookie alone must also come from an allowed origin when it says where
// it comes from (cross-site requests carry no SameSite=Strict cookie
// anyway; this is a second lock).
func (a *API) authenticated(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		token, fromCookie := credential(r)
		if !a.validToken(token) {
			a.refuse(w, r, token)
			return
		}
		if fromCookie && !a.originAllowed(r) {
			a.writeError(w, r, reqerr.New(reqerr.ErrForbidden, "origin %q may not use this session", r.Header.Get("Origin")))
			return
		}
		how := audit.AuthBearer
		if fromCookie {
			how = audit.AuthCookie
		}
		h(w, r.WithContext(audit.WithAuth(r.Context(), how)))
	}
}

// byURL marks requests that a single-use stream URL authorizes.
func byURL(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		h(w, r.WithContext(audit.WithAuth(r.Context(), audit.AuthURL)))
	}
}

// refuse answers a request whose token is not the gateway's: 403 for a
// share link's (it opens one route only; among replicas, one that does
// not hold the share knows it by its shape), else 401.
func (a *API) refuse(w http.ResponseWriter, r *http.Request, token string) {
	switch _, share := a.streams.CheckShare(token); {
	case share || stream.IsShareToken(token):
		a.writeError(w, r, reqerr.New(reqerr.ErrForbidden, "a share link lets its bearer join its session, and nothing else"))
	case token != "":
		a.writeError(w, r, reqerr.New(reqerr.ErrUnauthorized, "the token is not valid"))
	default:
		a.writeError(w, r, reqerr.New(reqerr.ErrUnauthorized, "a valid bearer token is required: send Authorization: Bearer <token>"))
	}
}

// grantKey carries a share link's Grant in a request's context.
type grantKey struct{}

// authOrShare is authenticated, but a share link's token passes too, with
// its Grant in the context: the route must hold it to its session.
func (a *API) authOrShare(h http.HandlerFunc) http.HandlerFunc {
	authed := a.authenticated(h)
	return func(w http.ResponseWriter, r *http.Request) {
		token, _ := credential(r)
		if a.validToken(token) {
			authed(w, r)
			return
		}
		g, ok := a.streams.CheckShare(token)
		if !ok {
			a.refuse(w, r, token)
			return
		}
		h(w, r.WithContext(audit.WithAuth(context.WithValue(r.Context(), grantKey{}, &g), audit.AuthShare)))
	}
}

// grant is the share link that let a request in, or nil.
func grant(r *http.Request) *stream.Grant {
	g, _ := r.Context().Value(grantKey{}).(*stream.Grant)
	return g
}

// originAllowed reports whether the request's Origin, if any, is the
// gateway's own or an allowed one: the one Origin check, for streams, the
// login cookie and the login itself.
func (a *API) originAllowed(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	if u, err := url.Parse(origin); err == nil && strings.EqualFold(u.Host, r.Host) {
		return true
	}
	for _, o := range a.cfg.AllowedOrigins {
		if o == "*" || strings.EqualFold(strings.TrimSuffix(o, "/"), origin) {
			return true
		}
	}
	return false
}

// login sets the cookie for a valid token: body {"token":"..."}.
func (a *API) login(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Token string `json:"token"`
	}
	if err := decodeJSON(w, r, &body, 4<<10); err != nil {
		a.writeError(w, r, err)
		return
	}
	if !a.validToken(body.Token) {
		a.audit.Record(audit.Event{Event: audit.LoginFailed, Remote: r.RemoteAddr, UserAgent: r.UserAgent(), Reason: "the token is not valid"})
		a.writeError(w, r, reqerr.New(reqerr.ErrUnauthorized, "the token is not valid"))
		return
	}
	if !a.originAllowed(r) {
		a.audit.Record(audit.Event{Event: audit.LoginFailed, Remote: r.RemoteAddr, UserAgent: r.UserAgent(), Reason: "origin " + r.Header.Get("Origin")})
		a.writeError(w, r, reqerr.New(reqerr.ErrForbidden, "origin %q may not log in", r.Header.Get("Origin")))
		return
	}
	a.audit.Record(audit.Event{Event: audit.Login, Remote: r.RemoteAddr, UserAgent: r.UserAgent(), Auth: audit.AuthCookie})
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: body.Token, Path: "/", HttpOnly: true,
		Secure: a.cfg.SecureCookie, SameSite: http.SameSiteStrictMode})
	w.WriteHeader(http.StatusNoContent)
}

// logout clears the cookie.
func (a *API) logout(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: "", Path: "/", MaxAge: -1, HttpOnly: true,
		Secure: a.cfg.SecureCookie, SameSite: http.SameSiteStrictMode})
	w.WriteHeader(http.StatusNoContent)
}
