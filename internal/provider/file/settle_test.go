package file

import (
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"trellis.dev/trellis/internal/translate"
	"trellis.dev/trellis/test/testsync"
)

// authPolicy allows the inventory route to two teams, one statement each.
const authPolicy = `# Who may call the inventory service.
apiVersion: trellis.dev/v1alpha1
kind: AuthPolicy
metadata:
  name: inventory-readers
spec:
  targetRefs:
    - group: gateway.networking.k8s.io
      kind: HTTPRoute
      name: inventory
  policy:
    Statement:
      - Effect: Allow
        Principal: "*"
        Action: trellis:Invoke
        Resource: "*"
        Condition: {StringEquals: {"trellis:RequestHeader/x-team": hotel}}
      - Effect: Allow
        Principal: "*"
        Action: trellis:Invoke
        Resource: "*"
        Condition: {StringEquals: {"trellis:RequestHeader/x-team": parking}}
`

// secondStatement is authPolicy's second statement, to its end.
const secondStatement = `      - Effect: Allow
        Principal: "*"
        Action: trellis:Invoke
        Resource: "*"
        Condition: {StringEquals: {"trellis:RequestHeader/x-team": parking}}
`

// logTo makes a provider log as text into b.
func logTo(b *testsync.Buffer) func(p *Provider) {
	return func(p *Provider) { p.Logger = slog.New(slog.NewTextHandler(b, nil)) }
}

// startPolicy starts a provider over the quick start and the auth policy,
// with the settle period given, logging as text into the buffer returned.
func startPolicy(t *testing.T, settle time.Duration) (*harness, *testsync.Buffer) {
	t.Helper()
	logs := &testsync.Buffer{}
	h := startWith(t, func(h *harness) { h.write("auth.yaml", authPolicy) }, func(p *Provider) {
		logTo(logs)(p)
		p.SettlePeriod = settle
	}, nil)
	return h, logs
}

// policyStatements returns how many statements the inventory service's
// auth policy has, or -1 if it has none.
func policyStatements(t *testing.T, out *translate.Output) int {
	t.Helper()
	for _, s := range out.Services {
		if s.Source.Name != "inventory" {
			continue
		}
		if s.Auth == nil {
			return -1
		}
		var doc struct{ Statement []json.RawMessage }
		if err := json.Unmarshal(s.Auth.Policy, &doc); err != nil {
			t.Fatalf("policy %s: %v", s.Auth.Policy, err)
		}
		return len(doc.Statement)
	}
	t.Fatal("no inventory service")
	return 0
}

// hasService reports whether out has a service from the route called name.
func hasService(out *translate.Output, name string) bool {
	for _, s := range out.Services {
		if s.Source.Name == name {
			return true
		}
	}
	return false
}

// ready waits for the first attempt to apply and returns what it applied.
func (h *harness) ready() *translate.Output {
	h.t.Helper()
	if err := h.result(); err != nil {
		h.t.Fatal(err)
	}
	return h.nextApply()
}

// step waits for the next attempt, which must succeed, and passes each
// configuration applied so far to check.
func (h *harness) step(check func(out *translate.Output)) {
	h.t.Helper()
	if err := h.result(); err != nil {
		h.t.Fatalf("attempt failed: %v", err)
	}
	for {
		select {
		case out := <-h.applied:
			check(out)
		default:
			return
		}
	}
}

// waitLog waits until one line of the log holds every one of want.
func waitLog(t *testing.T, logs *testsync.Buffer, want ...string) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for {
		for line := range strings.Lines(logs.String()) {
			if !slices.ContainsFunc(want, func(w string) bool { return !strings.Contains(line, w) }) {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no line of the log says all of %q:\n%s", want, logs)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A shell's "cat auth.bak > auth.yaml" empties the file and then writes it
// a piece at a time: no moment of that may be applied without the policy.
func TestProviderRewriteInPlaceKeepsAuthPolicy(t *testing.T) {
	h, logs := startPolicy(t, time.Minute)
	if n := policyStatements(t, h.ready()); n != 2 {
		t.Fatalf("the policy has %d statements at start, want 2", n)
	}
	f, err := os.OpenFile(filepath.Join(h.dir, "auth.yaml"), os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	applies := 0
	keepsPolicy := func(out *translate.Output) {
		applies++
		if n := policyStatements(t, out); n != 2 {
			t.Fatalf("applied a policy with %d statements (-1: none) while its file was being written", n)
		}
	}
	h.step(keepsPolicy) // empty
	// Cut at a third of the file, inside the first statement, at the start
	// of the second (what is there then parses, with one statement), and
	// inside it.
	second := strings.Index(authPolicy, secondStatement)
	cuts := []int{len(authPolicy) / 3, second - 20, second, second + 30}
	written := 0
	for _, cut := range cuts {
		if _, err := f.WriteString(authPolicy[written:cut]); err != nil {
			t.Fatal(err)
		}
		written = cut
		h.step(keepsPolicy)
	}
	if _, err := f.WriteString(authPolicy[written:]); err != nil {
		t.Fatal(err)
	}
	h.step(keepsPolicy)
	if applies == 0 {
		t.Fatal("nothing was applied while the file was rewritten")
	}
	waitLog(t, logs, "may be partly written", "reason=\"cut short\"")
	if strings.Contains(logs.String(), "configuration object removed") {
		t.Errorf("the log reports a removal:\n%s", logs)
	}
}

// A file that stays empty past the settle period is applied as empty, and
// the log names what went away.
func TestProviderSettledRemovalApplies(t *testing.T) {
	const settle = 300 * time.Millisecond
	h, logs := startPolicy(t, settle)
	h.ready()
	emptied := time.Now()
	if err := os.Truncate(filepath.Join(h.dir, "auth.yaml"), 0); err != nil {
		t.Fatal(err)
	}
	for {
		if err := h.result(); err != nil {
			t.Fatal(err)
		}
		if policyStatements(t, h.nextApply()) == -1 {
			break
		}
	}
	if took := time.Since(emptied); took < settle {
		t.Errorf("the policy went %v after its file was emptied, before the settle period of %v", took, settle)
	}
	waitLog(t, logs, `msg="configuration object removed" kind=AuthPolicy namespace=default name=inventory-readers file=`+filepath.Join(h.dir, "auth.yaml"))
}

// Deleting a file is not a partial write: it applies at once.
func TestProviderDeleteAppliesAtOnce(t *testing.T) {
	h, logs := startPolicy(t, time.Hour)
	h.ready()
	if err := os.Remove(filepath.Join(h.dir, "auth.yaml")); err != nil {
		t.Fatal(err)
	}
	if err := h.result(); err != nil {
		t.Fatal(err)
	}
	if n := policyStatements(t, h.nextApply()); n != -1 {
		t.Fatalf("the policy of a deleted file is still applied (%d statements)", n)
	}
	waitLog(t, logs, `msg="configuration object removed" kind=AuthPolicy namespace=default name=inventory-readers`)
}

// A route file emptied, or rewritten to hold only a comment, keeps its
// route (and so its listener) until it settles.
func TestProviderEmptiedRouteFileKeepsRoute(t *testing.T) {
	h := startWith(t, nil, func(p *Provider) { p.SettlePeriod = time.Minute }, nil)
	if !hasService(h.ready(), "inventory") {
		t.Fatal("no inventory service at start")
	}
	keepsRoute := func(out *translate.Output) {
		if !hasService(out, "inventory") {
			t.Fatal("applied without the inventory route while its file was being written")
		}
	}
	if err := os.Truncate(filepath.Join(h.dir, "inventory.yaml"), 0); err != nil {
		t.Fatal(err)
	}
	h.step(keepsRoute)
	h.write("inventory.yaml", "# being written\n")
	h.step(keepsRoute)
}

// A change that takes a statement from a policy waits for the settle
// period even when it is no prefix of what was there.
func TestProviderFewerStatementsSettle(t *testing.T) {
	h, logs := startPolicy(t, time.Minute)
	h.ready()
	one := strings.Replace(authPolicy, "# Who may", "# Only hotel: who may", 1)
	one = one[:strings.Index(one, secondStatement)]
	tmp := filepath.Join(h.dir, ".auth.yaml.tmp")
	if err := os.WriteFile(tmp, []byte(one), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(h.dir, "auth.yaml")); err != nil {
		t.Fatal(err)
	}
	h.step(func(out *translate.Output) {
		if n := policyStatements(t, out); n != 2 {
			t.Fatalf("applied the policy with %d statements before the file settled", n)
		}
	})
	waitLog(t, logs, `reason="AuthPolicy default/inventory-readers has fewer statements"`)
}

// A policy moved to another file is not a removal, and the old file's held
// content does not make it a duplicate.
func TestProviderPolicyMovesBetweenFiles(t *testing.T) {
	h, logs := startPolicy(t, time.Hour)
	h.ready()
	keepsPolicy := func(out *translate.Output) {
		if n := policyStatements(t, out); n != 2 {
			t.Fatalf("applied a policy with %d statements (-1: none) while it moved", n)
		}
	}
	if err := os.Truncate(filepath.Join(h.dir, "auth.yaml"), 0); err != nil {
		t.Fatal(err)
	}
	h.step(keepsPolicy)
	h.write("policies.yaml", authPolicy)
	h.step(keepsPolicy)
	if err := os.Remove(filepath.Join(h.dir, "auth.yaml")); err != nil {
		t.Fatal(err)
	}
	h.step(keepsPolicy)
	if strings.Contains(logs.String(), "configuration object removed") {
		t.Errorf("a moved policy was reported removed:\n%s", logs)
	}
}

func TestRemoval(t *testing.T) {
	const gateway = `apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge}
spec:
  gatewayClassName: trellis
  listeners:
    - {name: http, protocol: HTTP, port: 80}
    - {name: https, protocol: HTTPS, port: 443}
`
	twoTargets := strings.Replace(authPolicy, "      name: inventory\n", "      name: inventory\n    - group: gateway.networking.k8s.io\n      kind: HTTPRoute\n      name: parking\n", 1)
	oneStatementObject := strings.Replace(authPolicy[:strings.Index(authPolicy, secondStatement)],
		"      - Effect", "        Effect", 1)
	tests := []struct {
		name     string
		old, cur string
		// elsewhere are objects another file defines now.
		elsewhere []objectKey
		want      string
	}{
		{name: "unchanged", old: authPolicy, cur: authPolicy},
		{name: "emptied", old: route, cur: "# nothing yet\n", want: "it defines nothing now"},
		{name: "policy gone", old: service + "---\n" + authPolicy, cur: service, want: "it no longer defines AuthPolicy default/inventory-readers"},
		{name: "policy moved", old: service + "---\n" + authPolicy, cur: service, elsewhere: []objectKey{{"AuthPolicy", "default", "inventory-readers"}}},
		{name: "gateway gone", old: service + "---\n" + gateway, cur: service, want: "it no longer defines Gateway default/edge"},
		{name: "route gone", old: service + "---\n" + route, cur: service},
		{name: "listener gone", old: gateway, cur: strings.Replace(gateway, "    - {name: https, protocol: HTTPS, port: 443}\n", "", 1), want: "Gateway default/edge no longer has listener https"},
		{name: "listener added", old: gateway, cur: gateway + "    - {name: alt, protocol: HTTP, port: 8080}\n"},
		{name: "listener changed", old: gateway, cur: strings.Replace(gateway, "port: 80}", "port: 81}", 1)},
		{name: "fewer targets", old: twoTargets, cur: authPolicy, want: "AuthPolicy default/inventory-readers has fewer targetRefs"},
		{name: "fewer statements", old: authPolicy, cur: oneStatementObject, want: "AuthPolicy default/inventory-readers has fewer statements"},
		{name: "statement object to list", old: oneStatementObject, cur: authPolicy},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			old, errs := parseFile("old.yaml", []byte(tt.old))
			if len(errs) > 0 {
				t.Fatal(errs)
			}
			cur, errs := parseFile("cur.yaml", []byte(tt.cur))
			if len(errs) > 0 {
				t.Fatal(errs)
			}
			defined := map[objectKey]bool{}
			for _, e := range cur {
				defined[e.key] = true
			}
			for _, k := range tt.elsewhere {
				defined[k] = true
			}
			if got := removal(old, cur, defined); got != tt.want {
				t.Errorf("removal = %q, want %q", got, tt.want)
			}
		})
	}
}
