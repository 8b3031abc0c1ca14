package proxy

import (
	"context"
	"io"
	"net/http"

	"trellis.dev/trellis/internal/proxy/router"
)

// mirror sends a copy of r, as it stands now, to one target of g in the
// background and discards the response. The copy carries the body only when
// it was buffered whole; a request whose body was too large to buffer, an
// upgrade, a target outside this cluster, or a full mirror budget means no
// copy is sent.
func (p *Proxy) mirror(r *http.Request, body *replayBody, g *router.Group) {
	if body == nil || !body.ok || r.Header.Get("Upgrade") != "" {
		p.log.Debug("request not mirrored: body not buffered or an upgrade", "group", g.Name, "path", r.URL.Path)
		return
	}
	t := g.Pick()
	if t == nil || t.Cluster != p.cluster {
		return
	}
	select {
	case p.mirrors <- struct{}{}:
	default:
		p.log.Debug("request not mirrored: too many mirrors in flight", "group", g.Name)
		return
	}
	ctx, cancel := context.WithTimeout(context.WithValue(context.Background(), targetKey{}, t), mirrorTimeout)
	out := r.Clone(ctx)
	out.RequestURI = ""
	out.URL.Scheme, out.URL.Host = targetScheme(t), t.Addr
	out.Body, out.GetBody = body.reader(), nil
	out.ContentLength = int64(len(body.data))
	out.TransferEncoding = nil
	out.Close = false
	setForwardedHeaders(r, out.Header, exchangeOf(r))
	go func() {
		defer func() { <-p.mirrors }()
		defer cancel()
		resp, err := p.transport.RoundTrip(out)
		if err != nil {
			p.log.Debug("mirrored request failed", "target", t.Addr, "err", err)
			return
		}
		io.Copy(io.Discard, io.LimitReader(resp.Body, maxDrain))
		resp.Body.Close()
	}()
}
