package nodeagent

import (
	"context"
	"fmt"
	"maps"
	"math"
	"net/netip"
	"path"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// resolver turns a container spec into what the process would see: its
// environment and the files of its volume mounts. It reads Secrets and
// ConfigMaps from the API once per Pod start.
type resolver struct {
	client  kubernetes.Interface
	pod     *corev1.Pod
	podIP   netip.Addr
	hostIP  netip.Addr
	secrets map[string]*corev1.Secret
	cms     map[string]*corev1.ConfigMap
}

func newResolver(client kubernetes.Interface, pod *corev1.Pod, podIP, hostIP netip.Addr) *resolver {
	return &resolver{client: client, pod: pod, podIP: podIP, hostIP: hostIP,
		secrets: map[string]*corev1.Secret{}, cms: map[string]*corev1.ConfigMap{}}
}

// The kinds of object whose data a Pod may use.
const (
	kindSecret    = "secret"
	kindConfigMap = "configmap"
)

// data is the data of the Secret or ConfigMap (kind) name of the Pod's
// namespace, string and binary values alike; empty when it is missing and
// optional.
func (r *resolver) data(ctx context.Context, kind, name string, optional *bool) (map[string][]byte, error) {
	if kind == kindSecret {
		s, err := fetch(ctx, r, r.secrets, kind, name, optional, r.client.CoreV1().Secrets(r.pod.Namespace).Get)
		return secretData(s), err
	}
	cm, err := fetch(ctx, r, r.cms, kind, name, optional, r.client.CoreV1().ConfigMaps(r.pod.Namespace).Get)
	return configMapData(cm), err
}

// fetch gets the object name of the Pod's namespace, a what, once, keeping
// it (or its absence) in cache; nil, nil when it is missing and optional.
func fetch[T any](ctx context.Context, r *resolver, cache map[string]*T, what, name string, optional *bool,
	get func(context.Context, string, metav1.GetOptions) (*T, error)) (*T, error) {
	v, ok := cache[name]
	if !ok {
		var err error
		v, err = get(ctx, name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			v = nil
		case err != nil:
			return nil, fmt.Errorf("%s %s/%s: %w", what, r.pod.Namespace, name, err)
		}
		cache[name] = v
	}
	if v == nil && (optional == nil || !*optional) {
		return nil, fmt.Errorf("%s %q not found", what, name)
	}
	return v, nil
}

func configMapData(cm *corev1.ConfigMap) map[string][]byte {
	out := map[string][]byte{}
	if cm == nil {
		return out
	}
	for k, v := range cm.Data {
		out[k] = []byte(v)
	}
	for k, v := range cm.BinaryData {
		out[k] = v
	}
	return out
}

func secretData(s *corev1.Secret) map[string][]byte {
	out := map[string][]byte{}
	if s == nil {
		return out
	}
	for k, v := range s.Data {
		out[k] = v
	}
	for k, v := range s.StringData {
		out[k] = []byte(v)
	}
	return out
}

// env builds the container's environment as the kubelet does: envFrom
// sources first, in order, then env entries, which override them; a value
// may refer to variables defined before it as $(NAME).
func (r *resolver) env(ctx context.Context, c *corev1.Container) (map[string]string, error) {
	env := map[string]string{}
	for _, from := range c.EnvFrom {
		var data map[string][]byte
		var err error
		switch {
		case from.ConfigMapRef != nil:
			data, err = r.data(ctx, kindConfigMap, from.ConfigMapRef.Name, from.ConfigMapRef.Optional)
		case from.SecretRef != nil:
			data, err = r.data(ctx, kindSecret, from.SecretRef.Name, from.SecretRef.Optional)
		}
		if err != nil {
			return nil, fmt.Errorf("envFrom: %w", err)
		}
		for k, v := range data {
			env[from.Prefix+k] = string(v)
		}
	}
	for _, e := range c.Env {
		if e.ValueFrom == nil {
			env[e.Name] = expand(e.Value, env)
			continue
		}
		v, set, err := r.envSource(ctx, c, e.ValueFrom)
		if err != nil {
			return nil, fmt.Errorf("env %s: %w", e.Name, err)
		}
		if set {
			env[e.Name] = v
		}
	}
	return env, nil
}

// envSource resolves one valueFrom. set is false when an optional source
// is absent: the variable is then not defined at all.
func (r *resolver) envSource(ctx context.Context, c *corev1.Container, src *corev1.EnvVarSource) (v string, set bool, err error) {
	switch {
	case src.FieldRef != nil:
		v, err = r.field(src.FieldRef.FieldPath)
		return v, err == nil, err
	case src.ResourceFieldRef != nil:
		v, err = r.resourceField(c, src.ResourceFieldRef)
		return v, err == nil, err
	case src.ConfigMapKeyRef != nil:
		ref := src.ConfigMapKeyRef
		return r.lookupKey(ctx, kindConfigMap, ref.Name, ref.Key, ref.Optional)
	case src.SecretKeyRef != nil:
		ref := src.SecretKeyRef
		return r.lookupKey(ctx, kindSecret, ref.Name, ref.Key, ref.Optional)
	}
	return "", false, fmt.Errorf("unsupported valueFrom source")
}

// lookupKey reads one key of a Secret's or ConfigMap's data.
func (r *resolver) lookupKey(ctx context.Context, kind, name, key string, optional *bool) (string, bool, error) {
	data, err := r.data(ctx, kind, name, optional)
	if err != nil {
		return "", false, err
	}
	if v, ok := data[key]; ok {
		return string(v), true, nil
	}
	if optional != nil && *optional {
		return "", false, nil
	}
	return "", false, fmt.Errorf("%s %s has no key %q", kind, name, key)
}

// field resolves a downward API field path of the Pod.
func (r *resolver) field(p string) (string, error) {
	meta := r.pod.ObjectMeta
	if key, ok := subscript(p, "metadata.labels"); ok {
		return meta.Labels[key], nil
	}
	if key, ok := subscript(p, "metadata.annotations"); ok {
		return meta.Annotations[key], nil
	}
	switch p {
	case "metadata.name":
		return meta.Name, nil
	case "metadata.namespace":
		return meta.Namespace, nil
	case "metadata.uid":
		return string(meta.UID), nil
	case "metadata.labels":
		return formatMap(meta.Labels), nil
	case "metadata.annotations":
		return formatMap(meta.Annotations), nil
	case "spec.nodeName":
		return r.pod.Spec.NodeName, nil
	case "spec.serviceAccountName":
		return r.pod.Spec.ServiceAccountName, nil
	case "status.hostIP", "status.hostIPs":
		return r.hostIP.String(), nil
	case "status.podIP", "status.podIPs":
		return r.podIP.String(), nil
	}
	return "", fmt.Errorf("unsupported fieldPath %q", p)
}

// subscript parses "prefix['key']".
func subscript(p, prefix string) (string, bool) {
	rest, ok := strings.CutPrefix(p, prefix+"['")
	if !ok || !strings.HasSuffix(rest, "']") {
		return "", false
	}
	return strings.TrimSuffix(rest, "']"), true
}

// formatMap renders labels or annotations as the downward API does:
// key="value" lines, sorted by key.
func formatMap(m map[string]string) string {
	var b strings.Builder
	for i, k := range slices.Sorted(maps.Keys(m)) {
		if i > 0 {
			b.WriteByte('\n')
		}
		fmt.Fprintf(&b, "%s=%q", k, m[k])
	}
	return b.String()
}

// resourceField resolves a resourceFieldRef. A limit that is not set is
// the node's allocatable amount, as with the kubelet.
func (r *resolver) resourceField(c *corev1.Container, ref *corev1.ResourceFieldSelector) (string, error) {
	target := c
	if ref.ContainerName != "" {
		target = nil
		for i := range r.pod.Spec.Containers {
			if r.pod.Spec.Containers[i].Name == ref.ContainerName {
				target = &r.pod.Spec.Containers[i]
			}
		}
		if target == nil {
			return "", fmt.Errorf("resourceFieldRef: no container %q", ref.ContainerName)
		}
	}
	kind, name, ok := strings.Cut(ref.Resource, ".")
	if !ok || (kind != "limits" && kind != "requests") {
		return "", fmt.Errorf("unsupported resource %q", ref.Resource)
	}
	res := corev1.ResourceName(name)
	var q resource.Quantity
	if kind == "limits" {
		q, ok = target.Resources.Limits[res]
		if !ok {
			q = capacity[res]
		}
	} else {
		q = target.Resources.Requests[res]
	}
	divisor := ref.Divisor
	if divisor.IsZero() {
		divisor = resource.MustParse("1")
	}
	if res == corev1.ResourceCPU {
		return fmt.Sprint(int64(math.Ceil(float64(q.MilliValue()) / float64(divisor.MilliValue())))), nil
	}
	return fmt.Sprint(int64(math.Ceil(float64(q.Value()) / float64(divisor.Value())))), nil
}

// expand replaces $(NAME) with NAME's value when defined; $$ is a literal
// $, and anything else is kept as written.
func expand(s string, vars map[string]string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 == len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '(':
			end := strings.IndexByte(s[i+2:], ')')
			if end < 0 {
				b.WriteString(s[i:])
				return b.String()
			}
			name := s[i+2 : i+2+end]
			if v, ok := vars[name]; ok {
				b.WriteString(v)
			} else {
				b.WriteString(s[i : i+3+end])
			}
			i += 2 + end
		default:
			b.WriteByte('$')
		}
	}
	return b.String()
}

// files returns every file the container sees through its volume mounts,
// by absolute path.
func (r *resolver) files(ctx context.Context, c *corev1.Container) (map[string][]byte, error) {
	files := map[string][]byte{}
	for _, m := range c.VolumeMounts {
		var vol *corev1.Volume
		for i := range r.pod.Spec.Volumes {
			if r.pod.Spec.Volumes[i].Name == m.Name {
				vol = &r.pod.Spec.Volumes[i]
			}
		}
		if vol == nil {
			return nil, fmt.Errorf("volumeMount %s: no such volume", m.Name)
		}
		content, err := r.volume(ctx, c, vol)
		if err != nil {
			return nil, fmt.Errorf("volume %s: %w", vol.Name, err)
		}
		for rel, data := range content {
			if m.SubPath != "" {
				switch {
				case rel == m.SubPath:
					rel = ""
				case strings.HasPrefix(rel, m.SubPath+"/"):
					rel = strings.TrimPrefix(rel, m.SubPath+"/")
				default:
					continue
				}
			}
			files[path.Join(m.MountPath, rel)] = data
		}
	}
	return files, nil
}

// volume returns a volume's files by path relative to its root. Kinds
// that hold no API data (emptyDir, hostPath, ...) are empty.
func (r *resolver) volume(ctx context.Context, c *corev1.Container, v *corev1.Volume) (map[string][]byte, error) {
	out := map[string][]byte{}
	switch {
	case v.Secret != nil:
		return r.project(ctx, out, kindSecret, v.Secret.SecretName, v.Secret.Items, v.Secret.Optional)
	case v.ConfigMap != nil:
		return r.project(ctx, out, kindConfigMap, v.ConfigMap.Name, v.ConfigMap.Items, v.ConfigMap.Optional)
	case v.DownwardAPI != nil:
		return r.downward(out, c, v.DownwardAPI.Items)
	case v.Projected != nil:
		for _, src := range v.Projected.Sources {
			var err error
			switch {
			case src.Secret != nil:
				_, err = r.project(ctx, out, kindSecret, src.Secret.Name, src.Secret.Items, src.Secret.Optional)
			case src.ConfigMap != nil:
				_, err = r.project(ctx, out, kindConfigMap, src.ConfigMap.Name, src.ConfigMap.Items, src.ConfigMap.Optional)
			case src.DownwardAPI != nil:
				_, err = r.downward(out, c, src.DownwardAPI.Items)
			}
			if err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

// project copies the data of the Secret or ConfigMap (kind) name into out:
// every key under its own name, or only the listed items under their paths.
func (r *resolver) project(ctx context.Context, out map[string][]byte, kind, name string, items []corev1.KeyToPath, optional *bool) (map[string][]byte, error) {
	data, err := r.data(ctx, kind, name, optional)
	if err != nil {
		return nil, err
	}
	if len(items) == 0 {
		for k, v := range data {
			out[k] = v
		}
		return out, nil
	}
	for _, it := range items {
		v, ok := data[it.Key]
		if !ok {
			if optional != nil && *optional {
				continue
			}
			return nil, fmt.Errorf("%s %s has no key %q", kind, name, it.Key)
		}
		out[it.Path] = v
	}
	return out, nil
}

// downward writes downward API items into out.
func (r *resolver) downward(out map[string][]byte, c *corev1.Container, items []corev1.DownwardAPIVolumeFile) (map[string][]byte, error) {
	for _, it := range items {
		var v string
		var err error
		switch {
		case it.FieldRef != nil:
			v, err = r.field(it.FieldRef.FieldPath)
		case it.ResourceFieldRef != nil:
			v, err = r.resourceField(c, it.ResourceFieldRef)
		}
		if err != nil {
			return nil, fmt.Errorf("downwardAPI %s: %w", it.Path, err)
		}
		out[it.Path] = []byte(v)
	}
	return out, nil
}
