package translate

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"trellis.dev/trellis/internal/model"
)

// certificateEntry is the model certificate made of one Secret.
type certificateEntry struct {
	secret types.NamespacedName
	// cert is nil when the Secret does not hold a usable certificate;
	// invalid says why.
	cert    *model.Certificate
	invalid string
}

// certificates resolves an HTTPS listener's certificateRefs (field p of the
// Gateway gw) to model certificate names. A ref that cannot be used is a
// problem with reason RefNotPermitted (another namespace, no
// ReferenceGrant) or InvalidCertificateRef (not a Secret, missing, or not a
// valid kubernetes.io/tls Secret); the listener is then not served, so that
// no client is handed a certificate other than the ones asked for.
func (t *translator) certificates(gw *gatewayv1.Gateway, src model.SourceRef, p string, refs []gatewayv1.SecretObjectReference) (names []string, problems []Problem) {
	bad := func(field string, reason gatewayv1.ListenerConditionReason, format string, args ...any) {
		problems = append(problems, t.problem(src, field, string(reason), format, args...))
	}
	if len(refs) == 0 {
		bad(p, gatewayv1.ListenerReasonInvalidCertificateRef, "an HTTPS listener needs at least one certificateRef")
	}
	for i, r := range refs {
		field := fmt.Sprintf("%s[%d]", p, i)
		if g, k := normalGroup(deref(r.Group, "")), deref(r.Kind, "Secret"); g != "" || k != "Secret" {
			bad(field, gatewayv1.ListenerReasonInvalidCertificateRef, "certificate kind %s is not supported; only Secret is", groupKind(g, k))
			continue
		}
		key := types.NamespacedName{Namespace: string(deref(r.Namespace, gatewayv1.Namespace(gw.Namespace))), Name: string(r.Name)}
		if key.Namespace != gw.Namespace && !t.granted("Gateway", gw.Namespace, "", "Secret", key) {
			bad(field+".namespace", gatewayv1.ListenerReasonRefNotPermitted,
				"Secret %s is in another namespace and no ReferenceGrant there allows Gateways from namespace %q to use it", key, gw.Namespace)
			continue
		}
		name := fmt.Sprintf("%s-%s", key.Name, key.Namespace)
		e := t.certs[name]
		if e == nil {
			e = t.certificate(name, key)
			t.certs[name] = e
		}
		switch {
		case e.secret != key:
			bad(field, gatewayv1.ListenerReasonInvalidCertificateRef,
				"certificate name %q is already used by Secret %s; rename one of the Secrets", name, e.secret)
		case e.cert == nil:
			bad(field, gatewayv1.ListenerReasonInvalidCertificateRef, "%s", e.invalid)
		default:
			names = append(names, name)
		}
	}
	return names, problems
}

// certificate makes the model certificate of the Secret key.
func (t *translator) certificate(name string, key types.NamespacedName) *certificateEntry {
	e := &certificateEntry{secret: key}
	s := t.secrets[key]
	switch {
	case s == nil:
		e.invalid = fmt.Sprintf("Secret %s not found", key)
	case s.Type != corev1.SecretTypeTLS:
		e.invalid = fmt.Sprintf("Secret %s is of type %q, not %s", key, s.Type, corev1.SecretTypeTLS)
	default:
		src := ref("Secret", key.Namespace, key.Name)
		c := &model.Certificate{
			Meta:    model.Meta{Name: name, Owner: t.in.Cluster},
			CertPEM: string(s.Data[corev1.TLSCertKey]),
			KeyPEM:  string(s.Data[corev1.TLSPrivateKeyKey]),
			Source:  &src,
		}
		if err := c.Validate(); err != nil {
			e.invalid = fmt.Sprintf("Secret %s does not hold a usable certificate and key in %s and %s: %v", key, corev1.TLSCertKey, corev1.TLSPrivateKeyKey, err)
			break
		}
		e.cert = c
	}
	return e
}
