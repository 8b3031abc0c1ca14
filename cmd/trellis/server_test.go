package main

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
		ec   etcdFlags
		want string
	}{
		{"etcd TLS without etcd", etcdFlags{caFile: "ca.crt"}, "need --etcd-endpoints"},
		{"certificate without key", etcdFlags{endpoints: []string{"https://etcd:2379"}, certFile: "tls.crt"}, "go together"},
		{"TLS files for plain http", etcdFlags{endpoints: []string{"http://etcd:2379"}, caFile: "ca.crt"}, "need https:// endpoints"},
		{"missing CA file", etcdFlags{endpoints: []string{"https://etcd:2379"}, caFile: dir + "/missing.crt"}, "--etcd-ca-file"},
	}
	for _, tc := range tests {
		st, _, err := openStore(t.Context(), dir, tc.ec)
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
	st, where, err := openStore(t.Context(), dir, etcdFlags{prefix: "/trellis/"})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if where != "in "+dir {
		t.Errorf("embedded store is %q, want %q", where, "in "+dir)
	}
}
