package kubernetes

import (
	"context"
	"fmt"
	"io/fs"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// The keys of an identity Secret: the same names as the files of an
// identity directory, so that a proxy mounting the Secret reads it as one
// (--identity-dir).
const (
	SecretIdentityKey  = "identity.pem"
	SecretClusterCAKey = "cluster-ca.pem"
)

// SecretStore keeps a cluster's identity (certificate and key, and the
// control plane's CA) in a Kubernetes Secret, so that it outlives the pods
// that use it: the controller joins once with the one-time token and writes
// the Secret, later starts (restarts, other replicas) read it, renewals
// update it, and proxies mount it read-only. It implements
// client.IdentityStore.
type SecretStore struct {
	c   client.Client
	key types.NamespacedName
}

// NewSecretStore returns the store of the Secret "namespace/name" (ref),
// reached with cfg.
func NewSecretStore(cfg *rest.Config, ref string) (*SecretStore, error) {
	ns, name, ok := strings.Cut(ref, "/")
	if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
		return nil, fmt.Errorf("identity Secret %q: want NAMESPACE/NAME", ref)
	}
	c, err := client.New(cfg, client.Options{Scheme: clientgoscheme.Scheme})
	if err != nil {
		return nil, fmt.Errorf("identity Secret %s: %w", ref, err)
	}
	return &SecretStore{c: c, key: types.NamespacedName{Namespace: ns, Name: name}}, nil
}

func (s *SecretStore) String() string { return "Secret " + s.key.String() }

// Load reads the Secret's identity.pem and cluster-ca.pem. A Secret that
// is missing, or that exists with no data at all (created empty ahead of
// the controller), holds no identity (fs.ErrNotExist); one with data but
// without identity.pem is an error.
func (s *SecretStore) Load(ctx context.Context) (identityPEM, caPEM []byte, err error) {
	var sec corev1.Secret
	if err := s.c.Get(ctx, s.key, &sec); apierrors.IsNotFound(err) {
		return nil, nil, fmt.Errorf("%s: %w", s, fs.ErrNotExist)
	} else if err != nil {
		return nil, nil, err
	}
	if len(sec.Data) == 0 {
		return nil, nil, fmt.Errorf("%s is empty: %w", s, fs.ErrNotExist)
	}
	identityPEM, ok := sec.Data[SecretIdentityKey]
	if !ok {
		return nil, nil, fmt.Errorf("no key %s in it", SecretIdentityKey)
	}
	return identityPEM, sec.Data[SecretClusterCAKey], nil
}

// Save writes identity.pem, and cluster-ca.pem unless caPEM is nil,
// creating the Secret if need be; the Secret's other keys stay.
func (s *SecretStore) Save(ctx context.Context, identityPEM, caPEM []byte) error {
	for attempt := 0; ; attempt++ {
		var sec corev1.Secret
		err := s.c.Get(ctx, s.key, &sec)
		switch {
		case apierrors.IsNotFound(err):
			sec = corev1.Secret{
				ObjectMeta: metav1.ObjectMeta{Namespace: s.key.Namespace, Name: s.key.Name,
					Labels: map[string]string{"app.kubernetes.io/managed-by": "trellis-controller"}},
				Type: corev1.SecretTypeOpaque,
				Data: map[string][]byte{SecretIdentityKey: identityPEM},
			}
			if caPEM != nil {
				sec.Data[SecretClusterCAKey] = caPEM
			}
			err = s.c.Create(ctx, &sec)
		case err == nil:
			if sec.Data == nil {
				sec.Data = map[string][]byte{}
			}
			sec.Data[SecretIdentityKey] = identityPEM
			if caPEM != nil {
				sec.Data[SecretClusterCAKey] = caPEM
			}
			err = s.c.Update(ctx, &sec)
		}
		if err == nil {
			return nil
		}
		// Another replica wrote it in between: write over its version
		// (each holds a valid certificate of the cluster).
		if (apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err)) && attempt < 3 {
			continue
		}
		return fmt.Errorf("writing %s: %w", s, err)
	}
}
