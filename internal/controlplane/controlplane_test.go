package controlplane

import (
	"maps"
	"os"
	"path/filepath"
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

// Accepted tokens come from TOKEN=CLUSTER pairs and a tokens file.
func TestLoadTokens(t *testing.T) {
	file := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(file, []byte("# comment\n\nt1 east\nt2 west\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := LoadTokens([]string{"t3=north"}, file)
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]string{"t1": "east", "t2": "west", "t3": "north"}; !maps.Equal(got, want) {
		t.Errorf("tokens %v, want %v", got, want)
	}
	for _, tc := range []struct {
		pairs []string
		file  string
		want  string
	}{
		{[]string{"no-cluster"}, "", "want TOKEN=CLUSTER"},
		{nil, "", "no tokens"},
		{nil, filepath.Join(t.TempDir(), "missing"), "--tokens-file"},
	} {
		if _, err := LoadTokens(tc.pairs, tc.file); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("LoadTokens(%q, %q): %v, want an error saying %q", tc.pairs, tc.file, err, tc.want)
		}
	}
	bad := filepath.Join(t.TempDir(), "bad")
	if err := os.WriteFile(bad, []byte("t1 east extra\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadTokens(nil, bad); err == nil || !strings.Contains(err.Error(), bad+":1") {
		t.Errorf("a bad line: %v, want its file and line", err)
	}
}
