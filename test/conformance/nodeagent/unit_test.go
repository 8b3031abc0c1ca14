package nodeagent

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/utils/ptr"
)

func TestIPAM(t *testing.T) {
	p, err := newIPAM(netip.MustParsePrefix("198.18.0.0/23"), netip.MustParseAddr("198.18.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	got := func(uid string, reported string) string {
		t.Helper()
		ip, err := p.allocate(types.UID(uid), reported)
		if err != nil {
			t.Fatalf("allocate %s: %v", uid, err)
		}
		return ip.String()
	}
	if ip := got("a", ""); ip != "198.18.0.2" {
		t.Errorf("first address %s, want 198.18.0.2 (skipping the network and the node)", ip)
	}
	if ip := got("a", ""); ip != "198.18.0.2" {
		t.Errorf("same pod again: %s, want its address 198.18.0.2", ip)
	}
	if ip := got("b", ""); ip != "198.18.0.3" {
		t.Errorf("second pod %s, want 198.18.0.3", ip)
	}
	p.release("a")
	if ip := got("c", ""); ip != "198.18.0.4" {
		t.Errorf("after a release: %s, want 198.18.0.4 (round robin, no early reuse)", ip)
	}
	if ip := got("d", "198.18.1.77"); ip != "198.18.1.77" {
		t.Errorf("reported free address not kept: %s", ip)
	}
	if ip := got("e", "198.18.0.3"); ip == "198.18.0.3" {
		t.Errorf("reported address in use was handed out twice")
	}
	// Exhaust the /23: 512 addresses less .0, .1 (node), .255, 1.0, 1.255.
	n := 0
	for i := 0; ; i++ {
		ip, err := p.allocate(types.UID(fmt.Sprint("x", i)), "")
		if err != nil {
			break
		}
		last := ip.As4()[3]
		if last == 0 || last == 255 || ip.String() == "198.18.0.1" {
			t.Fatalf("handed out %s", ip)
		}
		n++
	}
	if want := 512 - 5 - 4; n != want { // four held: b, c, d and e (a was released)
		t.Errorf("allocated %d more before exhaustion, want %d", n, want)
	}
	if _, err := newIPAM(netip.MustParsePrefix("2001:db8::/64"), netip.Addr{}); err == nil {
		t.Error("IPv6 prefix accepted")
	}
}

func TestLog(t *testing.T) {
	l := newLog()
	fmt.Fprint(l, "one\ntw")
	fmt.Fprint(l, "o\nthree\n")
	if got := l.String(); got != "one\ntwo\nthree\n" {
		t.Errorf("log %q", got)
	}
	out, next, more := l.read(logQuery{tail: 1}, 0)
	if string(out) != "three\n" || next != 3 {
		t.Errorf("tail 1: %q, next %d", out, next)
	}
	select {
	case <-more:
		t.Fatal("more closed without new lines")
	default:
	}
	fmt.Fprint(l, "four\n")
	<-more
	if out, _, _ := l.read(logQuery{tail: -1}, next); string(out) != "four\n" {
		t.Errorf("continuation %q", out)
	}
	if out, _, _ := l.read(logQuery{tail: -1, since: time.Now().Add(time.Hour)}, 0); len(out) != 0 {
		t.Errorf("since the future: %q", out)
	}
	out, _, _ = l.read(logQuery{tail: 1, timestamps: true}, 0)
	ts, line, _ := strings.Cut(strings.TrimSpace(string(out)), " ")
	if _, err := time.Parse(time.RFC3339Nano, ts); err != nil || line != "four" {
		t.Errorf("timestamped line %q: %v", out, err)
	}

	big := newLog()
	for i := range maxLogLines + 10 {
		fmt.Fprintln(big, i)
	}
	out, next, _ = big.read(logQuery{tail: -1}, maxLogLines+8)
	if string(out) != fmt.Sprintf("%d\n%d\n", maxLogLines+8, maxLogLines+9) || next != maxLogLines+10 {
		t.Errorf("after dropping old lines: %q, next %d", out, next)
	}
}

func TestContainerLogsEndpoint(t *testing.T) {
	a := &Agent{logs: map[string]map[string]*Log{}}
	l := a.containerLog("ns/pod", "c")
	fmt.Fprint(l, "a\nb\nc\n")
	mux := http.NewServeMux()
	mux.HandleFunc("GET /containerLogs/{namespace}/{pod}/{container}", a.serveContainerLogs)
	srv := httptest.NewServer(mux)
	defer srv.Close()

	for _, tc := range []struct {
		path, want string
		code       int
	}{
		{"/containerLogs/ns/pod/c", "a\nb\nc\n", 200},
		{"/containerLogs/ns/pod/c?tailLines=2", "b\nc\n", 200},
		{"/containerLogs/ns/pod/c?limitBytes=3", "a\nb", 200},
		{"/containerLogs/ns/pod/c?sinceTime=" + time.Now().Add(-time.Minute).UTC().Format(time.RFC3339), "a\nb\nc\n", 200},
		{"/containerLogs/ns/pod/c?sinceSeconds=60", "a\nb\nc\n", 200},
		{"/containerLogs/ns/pod/c?sinceTime=" + time.Now().Add(time.Minute).UTC().Format(time.RFC3339), "", 200},
		{"/containerLogs/ns/pod/other", "", 404},
		{"/containerLogs/ns/pod/c?previous=true", "", 400},
		{"/containerLogs/ns/pod/c?tailLines=x", "", 400},
	} {
		res, err := http.Get(srv.URL + tc.path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != tc.code || (tc.code == 200 && string(body) != tc.want) {
			t.Errorf("GET %s: %d %q, want %d %q", tc.path, res.StatusCode, body, tc.code, tc.want)
		}
	}

	t.Run("follow", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/containerLogs/ns/pod/c?follow=true&tailLines=1", nil)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		fmt.Fprint(l, "d\n")
		buf := make([]byte, 0, 16)
		for !strings.Contains(string(buf), "d\n") {
			chunk := make([]byte, 16)
			n, err := res.Body.Read(chunk)
			buf = append(buf, chunk[:n]...)
			if err != nil {
				t.Fatalf("read %q: %v", buf, err)
			}
		}
		if string(buf) != "c\nd\n" {
			t.Errorf("followed %q, want c, d", buf)
		}
	})
}

func TestExpand(t *testing.T) {
	vars := map[string]string{"A": "1", "B": "two"}
	for in, want := range map[string]string{
		"plain":        "plain",
		"$(A)":         "1",
		"x$(A)y$(B)z":  "x1ytwoz",
		"$(MISSING)":   "$(MISSING)",
		"$$(A)":        "$(A)",
		"$A":           "$A",
		"$(A":          "$(A",
		"end$":         "end$",
		"$$$(B)":       "$two",
		"$(A)$(B)$(A)": "1two1",
	} {
		if got := expand(in, vars); got != want {
			t.Errorf("expand(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestResolve(t *testing.T) {
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "certs", Namespace: "ns"},
		Data: map[string][]byte{"tls.crt": []byte("CERT"), "tls.key": []byte("KEY")}}
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "conf", Namespace: "ns"},
		Data: map[string]string{"Corefile": "whoami", "greeting": "hi"}, BinaryData: map[string][]byte{"bin": {1, 2}}}
	client := fake.NewClientset(secret, cm)
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web-1", Namespace: "ns", UID: "u1", Labels: map[string]string{"app": "web"}},
		Spec: corev1.PodSpec{
			NodeName: "node",
			Volumes: []corev1.Volume{
				{Name: "secret-volume", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "certs",
					Items: []corev1.KeyToPath{{Key: "tls.crt", Path: "crt"}, {Key: "tls.key", Path: "key"}}}}},
				{Name: "conf", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
					LocalObjectReference: corev1.LocalObjectReference{Name: "conf"}}}},
				{Name: "proj", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{
					{DownwardAPI: &corev1.DownwardAPIProjection{Items: []corev1.DownwardAPIVolumeFile{{Path: "name", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}}}},
					{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token"}},
				}}}},
				{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
			},
			Containers: []corev1.Container{{
				Name: "c",
				EnvFrom: []corev1.EnvFromSource{
					{Prefix: "CM_", ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "conf"}}},
					{SecretRef: &corev1.SecretEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "absent"}, Optional: ptr.To(true)}},
				},
				Env: []corev1.EnvVar{
					{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
					{Name: "NAMESPACE", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}},
					{Name: "APP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.labels['app']"}}},
					{Name: "IP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"}}},
					{Name: "HOST", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.hostIP"}}},
					{Name: "KEY", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "certs"}, Key: "tls.key"}}},
					{Name: "NOPE", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "conf"}, Key: "nope", Optional: ptr.To(true)}}},
					{Name: "MEM", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{Resource: "limits.memory", Divisor: resource.MustParse("1Gi")}}},
					{Name: "CPU", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{Resource: "requests.cpu", Divisor: resource.MustParse("1m")}}},
					{Name: "GREETING", Value: "$(CM_greeting), $(POD_NAME)!"},
					{Name: "TLS_SERVER_CERT", Value: "/etc/secret-volume/crt"},
				},
				Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("10m")}},
				VolumeMounts: []corev1.VolumeMount{
					{Name: "secret-volume", MountPath: "/etc/secret-volume"},
					{Name: "conf", MountPath: "/root"},
					{Name: "conf", MountPath: "/etc/greeting", SubPath: "greeting"},
					{Name: "proj", MountPath: "/var/run/info"},
					{Name: "scratch", MountPath: "/tmp"},
				},
			}},
		},
	}
	r := newResolver(client, pod, netip.MustParseAddr("198.18.0.7"), netip.MustParseAddr("198.18.0.1"))
	ctx := context.Background()

	env, err := r.env(ctx, &pod.Spec.Containers[0])
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"CM_Corefile": "whoami", "CM_greeting": "hi", "CM_bin": "\x01\x02",
		"POD_NAME": "web-1", "NAMESPACE": "ns", "APP": "web", "IP": "198.18.0.7", "HOST": "198.18.0.1",
		"KEY": "KEY", "MEM": "256", "CPU": "10", "GREETING": "hi, web-1!", "TLS_SERVER_CERT": "/etc/secret-volume/crt",
	}
	if !reflect.DeepEqual(env, want) {
		t.Errorf("env:\n got %q\nwant %q", env, want)
	}

	files, err := r.files(ctx, &pod.Spec.Containers[0])
	if err != nil {
		t.Fatal(err)
	}
	wantFiles := map[string]string{
		"/etc/secret-volume/crt": "CERT", "/etc/secret-volume/key": "KEY",
		"/root/Corefile": "whoami", "/root/greeting": "hi", "/root/bin": "\x01\x02",
		"/etc/greeting":      "hi",
		"/var/run/info/name": "web-1",
	}
	gotFiles := map[string]string{}
	for k, v := range files {
		gotFiles[k] = string(v)
	}
	if !reflect.DeepEqual(gotFiles, wantFiles) {
		t.Errorf("files:\n got %q\nwant %q", gotFiles, wantFiles)
	}

	t.Run("missing secret", func(t *testing.T) {
		p := pod.DeepCopy()
		p.Spec.Volumes[0].Secret.SecretName = "not-yet"
		_, err := newResolver(client, p, netip.MustParseAddr("198.18.0.7"), netip.MustParseAddr("198.18.0.1")).files(ctx, &p.Spec.Containers[0])
		if err == nil || !strings.Contains(err.Error(), `secret "not-yet" not found`) {
			t.Errorf("err %v, want the missing secret named", err)
		}
	})
	t.Run("missing key", func(t *testing.T) {
		p := pod.DeepCopy()
		p.Spec.Containers[0].Env = []corev1.EnvVar{{Name: "X", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "certs"}, Key: "ca.crt"}}}}
		p.Spec.Containers[0].EnvFrom = nil
		_, err := newResolver(client, p, netip.Addr{}, netip.Addr{}).env(ctx, &p.Spec.Containers[0])
		if err == nil || !strings.Contains(err.Error(), `env X: secret certs has no key "ca.crt"`) {
			t.Errorf("err %v", err)
		}
	})
	t.Run("unsupported field", func(t *testing.T) {
		if _, err := r.field("spec.hostname"); err == nil {
			t.Error("unsupported fieldPath accepted")
		}
		if got, _ := r.field("metadata.labels"); got != `app="web"` {
			t.Errorf("metadata.labels = %q", got)
		}
	})
}
