package kubernetes_test

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"

	tclient "trellis.dev/trellis/internal/client"
	"trellis.dev/trellis/internal/pki"
	"trellis.dev/trellis/internal/provider/kubernetes"
	"trellis.dev/trellis/internal/server"
	"trellis.dev/trellis/test/kube"
	"trellis.dev/trellis/test/plane"
	"trellis.dev/trellis/test/testsync"
)

// joinPlane is a control plane with a CA and cluster admission, over TLS
// on loopback.
type joinPlane struct{ *plane.Plane }

// newJoinPlane starts a joinPlane issuing certificates that live ttl.
func newJoinPlane(t *testing.T, ttl time.Duration) *joinPlane {
	t.Helper()
	return &joinPlane{plane.Start(t, server.Config{CertTTL: ttl, Heartbeat: time.Second})}
}

func (p *joinPlane) enroll(ctx context.Context, store tclient.IdentityStore, token, cluster string) (*tclient.Client, *pki.Identity, error) {
	return tclient.Enroll(ctx, tclient.Enrollment{Server: p.URL(), Roots: p.Roots, Store: store, JoinToken: token, Cluster: cluster})
}

// The controller keeps its cluster's identity in a Secret: the first start
// joins with the one-time token and writes the Secret; a restart, the
// token spent, comes up from the Secret; renewals update the Secret; and a
// Secret holding another cluster's certificate, or garbage, is refused with
// an error naming the Secret, never used and never joined over.
func TestIdentitySecret(t *testing.T) {
	c := kube.Start(t, kube.Options{})
	kc := c.Client(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := kc.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "trellis-system"}}); err != nil {
		t.Fatal(err)
	}
	p := newJoinPlane(t, 6*time.Second)
	store, err := kubernetes.NewSecretStore(c.Config, "trellis-system/trellis-identity")
	if err != nil {
		t.Fatal(err)
	}
	secret := func() *corev1.Secret {
		t.Helper()
		var s corev1.Secret
		if err := kc.Get(ctx, types.NamespacedName{Namespace: "trellis-system", Name: "trellis-identity"}, &s); err != nil {
			t.Fatal(err)
		}
		return &s
	}
	leafOf := func(idPEM []byte) *x509.Certificate {
		t.Helper()
		id, err := pki.NewIdentity(idPEM, idPEM)
		if err != nil {
			t.Fatal(err)
		}
		return id.Certificate().Leaf
	}

	// First start: joins and writes the Secret.
	token := p.JoinToken(t, "east")
	cp, id, err := p.enroll(ctx, store, token, "east")
	if err != nil {
		t.Fatalf("first start: %v", err)
	}
	if id.Cluster() != "east" {
		t.Fatalf("joined as %q", id.Cluster())
	}
	if _, err := cp.Clusters(ctx); err != nil {
		t.Errorf("the joined identity does not authenticate: %v", err)
	}
	s := secret()
	if leafOf(s.Data[kubernetes.SecretIdentityKey]).SerialNumber.Cmp(id.Certificate().Leaf.SerialNumber) != 0 || len(s.Data[kubernetes.SecretClusterCAKey]) == 0 {
		t.Fatalf("the Secret does not hold the certificate joined: %v", s.Data)
	}

	// A restart with the token already spent comes up from the Secret.
	cp2, id2, err := p.enroll(ctx, store, token, "east")
	if err != nil {
		t.Fatalf("restart from the Secret: %v", err)
	}
	if id2.Certificate().Leaf.SerialNumber.Cmp(id.Certificate().Leaf.SerialNumber) != 0 {
		t.Error("the restart did not use the Secret's certificate")
	}
	if _, err := cp2.Clusters(ctx); err != nil {
		t.Errorf("the identity from the Secret does not authenticate: %v", err)
	}

	// Renewal (at two thirds of the 6 s life) updates the Secret; a start
	// after that, without a token, uses the renewed certificate.
	renewCtx, stopRenewing := context.WithCancel(ctx)
	go tclient.KeepRenewed(renewCtx, cp2, id2, store, slog.New(slog.DiscardHandler))
	first := leafOf(s.Data[kubernetes.SecretIdentityKey])
	if _, _, err := p.enroll(ctx, tclient.DirStore(t.TempDir()), token, "east"); err == nil {
		t.Fatal("the join token worked twice")
	}
	testsync.Eventually(t, 15*time.Second, "a renewed certificate in the Secret", func() error {
		got := leafOf(secret().Data[kubernetes.SecretIdentityKey])
		if !got.NotAfter.After(first.NotAfter) {
			return errors.New("still the joined certificate")
		}
		return nil
	})
	stopRenewing()
	cp3, id3, err := p.enroll(ctx, store, "", "east")
	if err != nil {
		t.Fatalf("start after renewal: %v", err)
	}
	if !id3.Expires().After(first.NotAfter) {
		t.Error("the start after renewal did not use the renewed certificate")
	}
	if _, err := cp3.Clusters(ctx); err != nil {
		t.Errorf("the renewed identity does not authenticate: %v", err)
	}

	// Another cluster's certificate in the Secret: refused, even with a
	// good token of east's at hand.
	west := tclient.DirStore(t.TempDir())
	if _, _, err := p.enroll(ctx, west, p.JoinToken(t, "west"), "west"); err != nil {
		t.Fatal(err)
	}
	westID, westCA, err := west.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	put := func(idPEM, caPEM []byte) {
		t.Helper()
		s := secret()
		s.Data = map[string][]byte{kubernetes.SecretIdentityKey: idPEM, kubernetes.SecretClusterCAKey: caPEM}
		if err := kc.Update(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	put(westID, westCA)
	eastToken := p.JoinToken(t, "east")
	if _, _, err := p.enroll(ctx, store, eastToken, "east"); err == nil ||
		!strings.Contains(err.Error(), "Secret trellis-system/trellis-identity") || !strings.Contains(err.Error(), `names cluster "west", not "east"`) {
		t.Errorf("west's certificate in east's Secret: %v, want a refusal naming the Secret and both clusters", err)
	}
	// Garbage: refused the same way.
	put([]byte("-----BEGIN CERTIFICATE-----\nZ2FyYmFnZQ==\n-----END CERTIFICATE-----\n"), westCA)
	if _, _, err := p.enroll(ctx, store, eastToken, "east"); err == nil || !strings.Contains(err.Error(), "Secret trellis-system/trellis-identity") {
		t.Errorf("garbage in the Secret: %v, want a refusal naming the Secret", err)
	}
	// A certificate of east's with a CA it does not chain to: refused.
	otherCA, err := pki.NewCA(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	put(joinedInDir(t, ctx, p, "east"), otherCA.CertPEM())
	if _, _, err := p.enroll(ctx, store, eastToken, "east"); err == nil || !strings.Contains(err.Error(), "does not chain") {
		t.Errorf("east's certificate with another CA: %v, want a refusal", err)
	}
	// Neither refusal spent the token: it still joins once the Secret is
	// removed.
	if err := kc.Delete(ctx, secret()); err != nil {
		t.Fatal(err)
	}
	if _, id, err := p.enroll(ctx, store, eastToken, "east"); err != nil || id.Cluster() != "east" {
		t.Fatalf("join after removing the bad Secret: %v", err)
	}
	if got, err := pki.ClusterOf(leafOf(secret().Data[kubernetes.SecretIdentityKey])); err != nil || got != "east" {
		t.Errorf("the Secret written again names %q (%v), want east", got, err)
	}

	// Two replicas starting at once with one token: one joins, the other
	// takes up what the first keeps.
	if err := kc.Delete(ctx, secret()); err != nil {
		t.Fatal(err)
	}
	raceToken := p.JoinToken(t, "east")
	errs := make(chan error, 2)
	for range 2 {
		go func() { _, _, err := p.enroll(ctx, store, raceToken, "east"); errs <- err }()
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Errorf("a replica starting with the same token: %v", err)
		}
	}
}

// joinedInDir joins cluster with a fresh token into a directory and returns
// the identity PEM kept there.
func joinedInDir(t *testing.T, ctx context.Context, p *joinPlane, cluster string) []byte {
	t.Helper()
	dir := tclient.DirStore(t.TempDir())
	if _, _, err := p.enroll(ctx, dir, p.JoinToken(t, cluster), cluster); err != nil {
		t.Fatal(err)
	}
	idPEM, _, err := dir.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return idPEM
}

// The member-cluster manifests (config/multicluster, and the chart with
// member.enabled, through `helm install`) apply to a real apiserver, agree
// among themselves on the identity Secret (the Secret the controller keeps
// is the one the proxies mount, under the file names --identity-dir reads),
// and give the controller's ServiceAccount what it needs to join into that
// Secret and renew it, and no more: it may not update another Secret.
func TestMemberManifests(t *testing.T) {
	t.Run("kustomize", func(t *testing.T) {
		c := kube.Start(t, kube.Options{})
		objs := readKustomization(t, memberManifestsDir)
		applyObjects(t, c.Client(t), memberManifestsDir, objs)
		testMemberManifests(t, c, objs)
	})
	t.Run("helm", func(t *testing.T) {
		c := kube.Start(t, kube.Options{})
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: releaseNamespace}}
		if err := c.Client(t).Create(context.Background(), ns); err != nil {
			t.Fatal(err)
		}
		testMemberManifests(t, c, helmInstall(t, c, memberValues(t)))
	})
}

// testMemberManifests is TestMemberManifests for the objects installed in c.
func testMemberManifests(t *testing.T, c *kube.Cluster, objs []*unstructured.Unstructured) {
	kc := c.Client(t)
	ctx := context.Background()

	containerOf := func(deployment string) (map[string]any, map[string]any) {
		t.Helper()
		for _, o := range objs {
			if o.GetKind() == "Deployment" && o.GetName() == deployment {
				cs, _, _ := unstructured.NestedSlice(o.Object, "spec", "template", "spec", "containers")
				spec, _, _ := unstructured.NestedMap(o.Object, "spec", "template", "spec")
				if len(cs) != 1 {
					t.Fatalf("%s: %d containers", deployment, len(cs))
				}
				return cs[0].(map[string]any), spec
			}
		}
		t.Fatalf("no Deployment %s installed", deployment)
		return nil, nil
	}
	flag := func(c map[string]any, name string) (string, bool) {
		args, _, _ := unstructured.NestedStringSlice(c, "args")
		for _, a := range args {
			if a == name {
				return "", true
			}
			if v, ok := strings.CutPrefix(a, name+"="); ok {
				return v, true
			}
		}
		return "", false
	}
	ctrl, _ := containerOf("trellis-controller")
	ref, ok := flag(ctrl, "--identity-secret")
	ns, name, _ := strings.Cut(ref, "/")
	if !ok || ns != "trellis-system" || name == "" {
		t.Fatalf("the controller's --identity-secret is %q", ref)
	}
	if _, ok := flag(ctrl, "--join-token-file"); !ok {
		t.Error("the controller has no --join-token-file")
	}
	px, pxSpec := containerOf("trellis-proxy")
	dir, _ := flag(px, "--identity-dir")
	if _, ro := flag(px, "--identity-read-only"); !ro || dir == "" {
		t.Errorf("the proxy's identity: --identity-dir %q, read-only %v", dir, ro)
	}
	mounted := false
	mounts, _, _ := unstructured.NestedSlice(px, "volumeMounts")
	vols, _, _ := unstructured.NestedSlice(pxSpec, "volumes")
	for _, m := range mounts {
		m := m.(map[string]any)
		if m["mountPath"] != dir {
			continue
		}
		if m["readOnly"] != true {
			t.Errorf("the proxy's identity mount is not read-only: %v", m)
		}
		for _, v := range vols {
			v := v.(map[string]any)
			if v["name"] != m["name"] {
				continue
			}
			secretName, _, _ := unstructured.NestedString(v, "secret", "secretName")
			items, _, _ := unstructured.NestedSlice(v, "secret", "items")
			var paths []string
			for _, it := range items {
				it := it.(map[string]any)
				if it["key"] != it["path"] {
					t.Errorf("identity item %v: the file must be named as the key", it)
				}
				paths = append(paths, fmt.Sprint(it["path"]))
			}
			slices.Sort(paths)
			mounted = secretName == name && slices.Equal(paths, []string{kubernetes.SecretClusterCAKey, kubernetes.SecretIdentityKey})
		}
	}
	if !mounted {
		t.Errorf("the proxy does not mount Secret %s's %s and %s at %s", name, kubernetes.SecretIdentityKey, kubernetes.SecretClusterCAKey, dir)
	}

	// As the controller's ServiceAccount, with the RBAC applied: join into
	// the Secret, start again from it, renew into it.
	sa := serviceAccountConfig(t, c, kc, controllerAccount(t, objs))
	store, err := kubernetes.NewSecretStore(sa, ref)
	if err != nil {
		t.Fatal(err)
	}
	p := newJoinPlane(t, 6*time.Second)
	cp, id, err := p.enroll(ctx, store, p.JoinToken(t, "east"), "east")
	if err != nil {
		t.Fatalf("joining into %s as the controller's ServiceAccount: %v", ref, err)
	}
	if _, _, err := p.enroll(ctx, store, "", "east"); err != nil {
		t.Fatalf("starting from %s as the controller's ServiceAccount: %v", ref, err)
	}
	renewCtx, stop := context.WithCancel(ctx)
	defer stop()
	var renewLog testsync.Buffer
	go tclient.KeepRenewed(renewCtx, cp, id, store, slog.New(slog.NewTextHandler(&renewLog, nil)))
	testsync.WaitFor(t, 15*time.Second, "a renewal kept in "+ref, func() bool { return strings.Contains(renewLog.String(), "cluster certificate renewed") })
	if strings.Contains(renewLog.String(), "not renewed") {
		t.Errorf("renewal failed under the manifests' RBAC:\n%s", renewLog.String())
	}
	other := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "trellis-system", Name: "someone-elses"}}
	if err := kc.Create(ctx, other); err != nil {
		t.Fatal(err)
	}
	if err := mustStore(t, sa, "trellis-system/someone-elses").Save(ctx, []byte("x"), nil); err == nil || !strings.Contains(err.Error(), "forbidden") {
		t.Errorf("the controller's ServiceAccount updated another Secret: %v", err)
	}
}

func mustStore(t *testing.T, cfg *rest.Config, ref string) *kubernetes.SecretStore {
	t.Helper()
	s, err := kubernetes.NewSecretStore(cfg, ref)
	if err != nil {
		t.Fatal(err)
	}
	return s
}
