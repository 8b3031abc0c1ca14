package client

import (
	"context"
	"net/http"
	"net/url"
	"time"

	"trellis.dev/trellis/internal/api"
)

// AddCluster admits a cluster and returns its one-time join token
// (administrators only).
func (c *Client) AddCluster(ctx context.Context, name string, tokenTTL time.Duration) (api.AddClusterResult, error) {
	var res api.AddClusterResult
	err := c.do(ctx, http.MethodPost, "/v1/clusters", nil, api.AddClusterRequest{Name: name, TokenTTLSeconds: int64(tokenTTL / time.Second)}, &res)
	return res, err
}

// RemoveCluster revokes a cluster and deletes what it owns
// (administrators only).
func (c *Client) RemoveCluster(ctx context.Context, name string) (api.RemoveClusterResult, error) {
	var res api.RemoveClusterResult
	err := c.do(ctx, http.MethodDelete, "/v1/clusters/"+url.PathEscape(name), nil, nil, &res)
	return res, err
}

// Clusters lists the admitted clusters, each with its lease, peers and
// last sync.
func (c *Client) Clusters(ctx context.Context) ([]api.Cluster, error) {
	var out []api.Cluster
	err := c.do(ctx, http.MethodGet, "/v1/clusters", nil, nil, &out)
	return out, err
}

// Join exchanges a join token and a certificate request (PEM) for a
// cluster certificate. The client needs no other credentials for it.
func (c *Client) Join(ctx context.Context, token string, csrPEM []byte) (api.JoinResult, error) {
	var res api.JoinResult
	err := c.do(ctx, http.MethodPost, "/v1/join", nil, api.JoinRequest{Token: token, CSR: string(csrPEM)}, &res)
	return res, err
}

// Renew asks for a new certificate for the key of csrPEM, authenticated by
// the client certificate the client's transport presents. It fits
// pki.RenewFunc.
func (c *Client) Renew(ctx context.Context, csrPEM []byte) ([]byte, error) {
	var res api.JoinResult
	if err := c.do(ctx, http.MethodPost, "/v1/renew", nil, api.RenewRequest{CSR: string(csrPEM)}, &res); err != nil {
		return nil, err
	}
	return []byte(res.Certificate), nil
}

// AdmitCluster admits a cluster as req says (administrators only):
// AddCluster with every option of the request, such as the namespaces the
// cluster may export from.
func (c *Client) AdmitCluster(ctx context.Context, req api.AddClusterRequest) (api.AddClusterResult, error) {
	var res api.AddClusterResult
	err := c.do(ctx, http.MethodPost, "/v1/clusters", nil, req, &res)
	return res, err
}

// SetCluster changes an admitted cluster, such as the namespaces it may
// export from (administrators only).
func (c *Client) SetCluster(ctx context.Context, name string, req api.SetClusterRequest) (api.Cluster, error) {
	var res api.Cluster
	err := c.do(ctx, http.MethodPatch, "/v1/clusters/"+url.PathEscape(name), nil, req, &res)
	return res, err
}
