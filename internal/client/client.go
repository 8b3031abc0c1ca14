// Package client calls the control plane's HTTP API (package api describes
// it). Providers use Apply to publish what they translated; proxies use
// Follow to receive a consistent model.Snapshot per configuration revision,
// surviving control-plane outages by reconnecting and resuming. Components
// of a joined cluster authenticate with its certificate: Enroll joins or
// loads it from an IdentityStore (a directory, or a Kubernetes Secret the
// provider implements), KeepRenewed renews into the store, and
// FollowIdentity takes up what another component renewed into one it may
// only read.
//
// It must not interpret the model beyond assembling snapshots: compiling
// them is the proxy's job.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"sync/atomic"

	"trellis.dev/trellis/internal/api"
	"trellis.dev/trellis/internal/model"
)

// Client talks to a control plane: one server, or several servers of one
// control plane (on one etcd store), of which it uses one at a time and
// moves to the next when a call cannot reach it.
type Client struct {
	bases []*url.URL
	// cur indexes the server in use.
	cur   atomic.Int32
	token string
	http  *http.Client
	log   *slog.Logger
}

// Options configure a Client. The zero value works.
type Options struct {
	// HTTPClient defaults to a client with no overall timeout (watches are
	// long-lived); calls are bounded by their contexts.
	HTTPClient *http.Client
	Logger     *slog.Logger
}

// New returns a client for the server at baseURL authenticating with token.
// baseURL may list several servers of one control plane, separated by
// commas ("https://a:7070,https://b:7070"): the client starts with the
// first and moves on whenever a server cannot be reached. Every call the
// API has is safe to repeat on another server (writes name the state they
// want, with the revisions they expect), so a call that failed to connect
// is retried there at once.
func New(baseURL, token string, opts Options) (*Client, error) {
	c := &Client{token: token, http: opts.HTTPClient, log: opts.Logger}
	for raw := range strings.SplitSeq(baseURL, ",") {
		raw = strings.TrimSpace(raw)
		u, err := url.Parse(raw)
		if err != nil {
			return nil, fmt.Errorf("server address %q: %w", raw, err)
		}
		if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
			return nil, fmt.Errorf("server address %q: want http(s)://host:port", raw)
		}
		c.bases = append(c.bases, u)
	}
	if c.http == nil {
		c.http = &http.Client{}
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	return c, nil
}

// server is the index of the server in use.
func (c *Client) server() int { return int(c.cur.Load()) }

// failover moves from server i, which failed, to the next, unless another
// call moved already. It reports whether there is another server to try.
func (c *Client) failover(i int, err error) bool {
	if len(c.bases) == 1 {
		return false
	}
	next := (i + 1) % len(c.bases)
	if c.cur.CompareAndSwap(int32(i), int32(next)) {
		c.log.Warn("control-plane server unreachable; trying the next", "server", c.bases[i].Host, "next", c.bases[next].Host, "err", err)
	}
	return true
}

// APIError is a non-2xx answer from the server.
type APIError struct {
	Status int
	// Body is what the server said, including the invalid fields of a 422.
	Body api.Error
}

func (e *APIError) Error() string {
	return fmt.Sprintf("server: %d %s: %s", e.Status, http.StatusText(e.Status), e.Body.Message)
}

// IsNotFound reports whether err is the server's 404.
func IsNotFound(err error) bool {
	var ae *APIError
	return errors.As(err, &ae) && ae.Status == http.StatusNotFound
}

// IsConflict reports whether err is the server's 409 (a stale revision).
func IsConflict(err error) bool {
	var ae *APIError
	return errors.As(err, &ae) && ae.Status == http.StatusConflict
}

// url is path on server i.
func (c *Client) url(i int, path string, query url.Values) string {
	u := *c.bases[i]
	u.Path = strings.TrimSuffix(u.Path, "/") + path
	u.RawQuery = query.Encode()
	return u.String()
}

// do sends a request with an optional JSON body and decodes a JSON answer
// into out (when non-nil). A request that cannot reach its server goes to
// each other server once.
func (c *Client) do(ctx context.Context, method, path string, query url.Values, in, out any) error {
	var b []byte
	if raw, ok := in.(encoded); ok {
		b = raw
	} else if in != nil {
		var err error
		if b, err = json.Marshal(in); err != nil {
			return err
		}
	}
	var (
		resp *http.Response
		err  error
	)
	for range c.bases {
		i := c.server()
		var req *http.Request
		if req, err = http.NewRequestWithContext(ctx, method, c.url(i, path, query), bytes.NewReader(b)); err != nil {
			return err
		}
		if c.token != "" {
			req.Header.Set("Authorization", "Bearer "+c.token)
		}
		if in != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		if resp, err = c.http.Do(req); err == nil || ctx.Err() != nil || !c.failover(i, err) {
			break
		}
	}
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return decodeError(resp)
	}
	if out == nil {
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("%s %s: decoding answer: %w", method, path, err)
	}
	return nil
}

func decodeError(resp *http.Response) error {
	ae := &APIError{Status: resp.StatusCode}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err := json.Unmarshal(b, &ae.Body); err != nil || ae.Body.Message == "" {
		ae.Body.Message = strings.TrimSpace(string(b))
	}
	return ae
}

func objectPath(obj model.Object) string {
	return "/v1/" + string(obj.ObjectKind()) + "/" + url.PathEscape(obj.ObjectMeta().Name)
}

// Get reads the object of obj's kind and name into obj.
func (c *Client) Get(ctx context.Context, obj model.Object) error {
	return c.do(ctx, http.MethodGet, objectPath(obj), nil, nil, obj)
}

// Put creates or updates obj; when obj's revision is set the write succeeds
// only if the stored object is still at that revision. On success obj holds
// what was stored, including its new revision.
func (c *Client) Put(ctx context.Context, obj model.Object) error {
	return c.do(ctx, http.MethodPut, objectPath(obj), nil, obj, obj)
}

// Delete deletes obj, conditionally on its revision when set.
func (c *Client) Delete(ctx context.Context, obj model.Object) error {
	q := url.Values{}
	if rev := obj.ObjectMeta().Revision; rev != 0 {
		q.Set("revision", fmt.Sprint(rev))
	}
	return c.do(ctx, http.MethodDelete, objectPath(obj), q, nil, nil)
}

// List returns every object of kind k and the revision of the read.
func (c *Client) List(ctx context.Context, k model.Kind) ([]model.Object, int64, error) {
	var l api.List
	if err := c.do(ctx, http.MethodGet, "/v1/"+string(k), nil, nil, &l); err != nil {
		return nil, 0, err
	}
	out := make([]model.Object, 0, len(l.Items))
	for _, raw := range l.Items {
		obj, err := model.New(k)
		if err != nil {
			return nil, 0, err
		}
		if err := json.Unmarshal(raw, obj); err != nil {
			return nil, 0, fmt.Errorf("decoding %s: %w", k, err)
		}
		out = append(out, obj)
	}
	return out, l.Revision, nil
}

// Apply makes the set of objects the caller's cluster owns exactly objs, in
// one transaction.
func (c *Client) Apply(ctx context.Context, objs *model.Objects) (api.ApplyResult, error) {
	var res api.ApplyResult
	body, err := objs.AppendJSON([]byte(`{"objects":`))
	if err != nil {
		return res, err
	}
	err = c.do(ctx, http.MethodPost, "/v1/apply", nil, encoded(append(body, '}')), &res)
	return res, err
}

// Txn puts and deletes some of the caller's objects in one transaction (see
// api.TxnRequest).
func (c *Client) Txn(ctx context.Context, req *api.TxnRequest) (api.TxnResult, error) {
	var res api.TxnResult
	body, err := txnBody(req)
	if err != nil {
		return res, err
	}
	err = c.do(ctx, http.MethodPost, "/v1/txn", nil, body, &res)
	return res, err
}

// encoded is a request body in JSON already, which do sends as it is.
type encoded []byte

// txnBody is req as json.Marshal writes it, its puts marshalled one object
// at a time (model.Objects.AppendJSON says why).
func txnBody(req *api.TxnRequest) (encoded, error) {
	b := []byte{'{'}
	if !reflect.ValueOf(req.Puts).IsZero() {
		var err error
		if b, err = req.Puts.AppendJSON(append(b, `"puts":`...)); err != nil {
			return nil, err
		}
	}
	if len(req.Deletes) > 0 {
		if len(b) > 1 {
			b = append(b, ',')
		}
		d, err := json.Marshal(req.Deletes)
		if err != nil {
			return nil, err
		}
		b = append(append(b, `"deletes":`...), d...)
	}
	return append(b, '}'), nil
}
