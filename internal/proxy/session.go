package proxy

import (
	"net/http"

	"trellis.dev/trellis/internal/proxy/router"
)

// sessionValue returns the session token r carries for s: its cookie or
// header named s.Name, or "".
func sessionValue(r *http.Request, s *router.Session) string {
	if !s.Cookie {
		return r.Header.Get(s.Name)
	}
	c, err := r.Cookie(s.Name)
	if err != nil {
		return ""
	}
	return c.Value
}

// setSession hands the client the token of a new session: a cookie (for the
// whole host, HttpOnly; a Max-Age only when permanent), or a response header
// the client sends back.
func setSession(h http.Header, s *router.Session, token string) {
	if !s.Cookie {
		h.Set(s.Name, token)
		return
	}
	c := &http.Cookie{Name: s.Name, Value: token, Path: "/", HttpOnly: true}
	if s.Permanent {
		c.MaxAge = int(s.AbsoluteTimeout.Seconds())
		if c.MaxAge < 1 {
			c.MaxAge = 1
		}
	}
	v := c.String()
	if v == "" {
		return
	}
	h.Add("Set-Cookie", v)
}
