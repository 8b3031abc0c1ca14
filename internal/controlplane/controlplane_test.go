package controlplane

import (
	"strings"
	"testing"
)

// Flags that cannot work together fail before anything is opened, naming
// the flags.
func TestOpenStoreFlagErrors(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name string
		ec   EtcdOptions
		want string
	}{
		{"etcd TLS without etcd", EtcdOptions{CAFile: "ca.crt"}, "need --etcd-endpoints"},
		{"certificate without key", EtcdOptions{Endpoints: []string{"https://etcd:2379"}, CertFile: "tls.crt"}, "go together"},
		{"TLS files for plain http", EtcdOptions{Endpoints: []string{"http://etcd:2379"}, CAFile: "ca.crt"}, "need https:// endpoints"},
		{"missing CA file", EtcdOptions{Endpoints: []string{"https://etcd:2379"}, CAFile: dir + "/missing.crt"}, "--etcd-ca-file"},
	}
	for _, tc := range tests {
		st, _, err := OpenStore(t.Context(), StoreOptions{DataDir: dir, Etcd: tc.ec})
		if err == nil {
			st.Close()
			t.Errorf("%s: no error", tc.name)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %q, want it to say %q", tc.name, err, tc.want)
		}
	}
	// No etcd flags: the embedded store in the data directory.
	st, where, err := OpenStore(t.Context(), StoreOptions{DataDir: dir, Etcd: EtcdOptions{Prefix: "/trellis/"}})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if where != "in "+dir {
		t.Errorf("embedded store is %q, want %q", where, "in "+dir)
	}
}
