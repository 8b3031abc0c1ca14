package controlplane

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"

	"golang.org/x/sync/errgroup"

	"trellis.dev/trellis/internal/lattice"
	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/internal/server"
)

// LoadLatticeCredentials reads the VPC Lattice API's access keys: one
// "ACCESS_KEY SECRET OWNER" per line, '#' comments. OWNER is the cluster
// that objects made with the key belong to.
func LoadLatticeCredentials(file string) (map[string]lattice.Credential, error) {
	if file == "" {
		return nil, errors.New("--lattice-credentials-file is required with --lattice-listen")
	}
	out := map[string]lattice.Credential{}
	err := readFieldLines(file, "--lattice-credentials-file", func(n int, fields []string) error {
		switch {
		case len(fields) != 3:
			return fmt.Errorf("%s:%d: want 'ACCESS_KEY SECRET OWNER'", file, n)
		case !model.ValidClusterName(fields[2]):
			return fmt.Errorf("%s:%d: owner %q is not a valid cluster name", file, n, fields[2])
		}
		if _, dup := out[fields[0]]; dup {
			return fmt.Errorf("%s:%d: access key %s is listed twice", file, n, fields[0])
		}
		out[fields[0]] = lattice.Credential{Secret: fields[1], Owner: fields[2]}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no access keys", file)
	}
	return out, nil
}

// LatticeOptions configure the VPC Lattice API beside the control plane's.
type LatticeOptions struct {
	// Addr is where it listens (plain HTTP: requests are signed); empty
	// serves none.
	Addr            string
	CredentialsFile string
	Logger          *slog.Logger
}

// ServeWithLattice serves the API on ln and, when o.Addr is set, the VPC
// Lattice API over the same server on o.Addr, until ctx ends or either
// fails. listening is called with the Lattice API's URL once it listens.
func ServeWithLattice(ctx context.Context, ln net.Listener, srv *server.Server, o LatticeOptions, listening func(url string)) error {
	if o.Addr == "" {
		return Serve(ctx, ln, srv)
	}
	creds, err := LoadLatticeCredentials(o.CredentialsFile)
	if err != nil {
		ln.Close()
		return err
	}
	lln, err := net.Listen("tcp", o.Addr)
	if err != nil {
		ln.Close()
		return fmt.Errorf("--lattice-listen: %w", err)
	}
	listening("http://" + lln.Addr().String())
	h := lattice.New(lattice.Config{Server: srv, Credentials: creds, Logger: o.Logger})
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return Serve(gctx, ln, srv) })
	g.Go(func() error { return Serve(gctx, lln, h) })
	return g.Wait()
}
