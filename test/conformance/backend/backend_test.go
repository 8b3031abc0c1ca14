package backend

import (
	"net/http"
	"reflect"
	"testing"
)

func TestKindOf(t *testing.T) {
	for _, tc := range []struct {
		image string
		want  kind
	}{
		{"registry.k8s.io/gateway-api/echo-basic:v1.5.1", echoBasic},
		{"gcr.io/k8s-staging-gateway-api/echo-basic:v20240412-v1.0.0-394-g40c666fd", echoBasic},
		{"registry.k8s.io/gateway-api/echo-basic@sha256:0123", echoBasic},
		{"echo-basic", echoBasic},
		{"localhost:5000/echo-basic", echoBasic},
		{"registry.k8s.io/coredns/coredns:v1.12.2", coreDNS},
		{"gcr.io/istio-testing/app:latest", generic},
		{"registry.k8s.io/gateway-api/echo-advanced:v1", generic},
		{"localhost:5000/not-echo-basic-really", generic},
	} {
		if got := kindOf(tc.image); got != tc.want {
			t.Errorf("kindOf(%q) = %v, want %v", tc.image, got, tc.want)
		}
	}
}

func TestSetEchoHeaders(t *testing.T) {
	for _, tc := range []struct {
		name string
		req  []string
		want http.Header
	}{
		{"none", nil, http.Header{}},
		{"one", []string{"X-Foo:bar"}, http.Header{"X-Foo": {"bar"}}},
		{"case kept", []string{"x-lower:v"}, http.Header{"x-lower": {"v"}}},
		{"list", []string{"A:1, B:2"}, http.Header{"A": {"1"}, "B": {"2"}}},
		{"value spaces kept on first", []string{"A: 1"}, http.Header{"A": {" 1"}}},
		{"repeated joins", []string{"A:1,A: 2", "A:3"}, http.Header{"A": {"1,2,3"}}},
		{"empty", []string{""}, http.Header{"": {""}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := http.Header{}
			setEchoHeaders(got, http.Header{"X-Echo-Set-Header": tc.req})
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestWhoamiZones(t *testing.T) {
	for _, tc := range []struct {
		name, corefile string
		want           []string
	}{
		{"suite's Corefile", `.:53 {
    forward . 8.8.8.8 9.9.9.9
    log
    errors
}
foo.bar.com:53 {
  whoami
}
`, []string{"foo.bar.com."}},
		{"several keys and comments", "# comment\ndns://a.example:53 b.example {\n  whoami # here\n}\n", []string{"a.example.", "b.example."}},
		{"root", ". {\n whoami\n}\n", []string{"."}},
		{"whoami nested is not a plugin line", "x.example {\n  foo {\n    whoami\n  }\n}\n", nil},
		{"none", ".:53 {\n forward . 1.1.1.1\n}\n", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := whoamiZones([]byte(tc.corefile)); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestCorefilePath(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-conf", "/root/Corefile"}, "/root/Corefile"},
		{[]string{"-dns.port=53", "--conf=/etc/coredns/Corefile"}, "/etc/coredns/Corefile"},
		{nil, "/Corefile"},
		{[]string{"-conf"}, "/Corefile"},
	} {
		if got := corefilePath(Container{Args: tc.args}); got != tc.want {
			t.Errorf("corefilePath(%q) = %q, want %q", tc.args, got, tc.want)
		}
	}
}
