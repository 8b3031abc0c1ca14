package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"trellis.dev/trellis/internal/demo"
	"trellis.dev/trellis/test/netns"
	"trellis.dev/trellis/test/testsync"
)

// awsCLI runs the real AWS CLI's `aws vpc-lattice` against the Lattice API
// at endpoint, inside ns, signed with the given key; it returns stdout,
// stderr and the exit error.
func awsCLI(t *testing.T, ns *netns.NS, endpoint, key, secret string, args ...string) (string, string, error) {
	t.Helper()
	bin, err := exec.LookPath("aws")
	if err != nil {
		t.Fatalf("the AWS CLI is required (hack/test.sh installs it: apt-get install awscli): %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := ns.Command(ctx, bin, append([]string{"--endpoint-url", endpoint, "--output", "json", "vpc-lattice"}, args...)...)
	cmd.Env = append(os.Environ(), "AWS_ACCESS_KEY_ID="+key, "AWS_SECRET_ACCESS_KEY="+secret, "AWS_DEFAULT_REGION=us-east-1",
		"AWS_REGION=us-east-1", "AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE=/dev/null", "AWS_MAX_ATTEMPTS=1", "AWS_PAGER=")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	return stdout.String(), stderr.String(), err
}

// getWith sends one request with Host host and the given headers, and
// returns the status and the demo backend that answered.
func getWith(c *http.Client, url, host string, header http.Header) (int, string, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	req.Host = host
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	var r demo.Reply
	if json.NewDecoder(resp.Body).Decode(&r) != nil {
		return resp.StatusCode, "", nil
	}
	return resp.StatusCode, r.Backend, nil
}

// `aws vpc-lattice` drives Trellis: the AWS CLI creates a service
// network, a service, two target groups with real backends, a listener
// splitting 80/20, a rule on a header and the association; the proxy
// serves them at once; AWS_IAM with a policy refuses an anonymous caller;
// deleting out of order is Lattice's ConflictException; a bad signature
// and an unknown key get AWS's error codes.
func TestLatticeAPIWithAWSCLI(t *testing.T) {
	ns := netns.New(t)
	dir := t.TempDir()
	const key, secret, endpoint = "AKIDTRELLISE2E", "e2e-secret-key", "http://127.0.0.1:7071"
	creds := filepath.Join(dir, "lattice-credentials")
	if err := os.WriteFile(creds, []byte("# key secret owner\n"+key+" "+secret+" local\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := start(t, ns, "server", "server", "--listen", "127.0.0.1:7070", "--data", filepath.Join(dir, "data"), "--tokens", "e2e=local",
		"--heartbeat", "500ms", "--lattice-listen", "127.0.0.1:7071", "--lattice-credentials-file", creds)
	srv.waitOutput(t, 10*time.Second, "VPC Lattice API on http://127.0.0.1:7071")
	for name, addr := range map[string]string{"inventory-ver1": "127.0.0.1:18083", "inventory-ver2": "127.0.0.1:18084"} {
		start(t, ns, name, "echo", "--listen", addr, "--name", name).waitOutput(t, 10*time.Second, "echo:")
	}
	px := start(t, ns, "proxy", "proxy", "--server", "http://127.0.0.1:7070", "--token", "e2e", "--cluster", "local")

	lattice := func(args ...string) map[string]any {
		t.Helper()
		out, stderr, err := awsCLI(t, ns, endpoint, key, secret, args...)
		if err != nil {
			t.Fatalf("aws vpc-lattice %s: %v\n%s", strings.Join(args, " "), err, stderr)
		}
		var v map[string]any
		if strings.TrimSpace(out) != "" {
			if err := json.Unmarshal([]byte(out), &v); err != nil {
				t.Fatalf("aws vpc-lattice %s: %v\n%s", args[0], err, out)
			}
		}
		return v
	}
	// fails runs a command that must fail with the AWS error code.
	fails := func(code, op string, args ...string) {
		t.Helper()
		_, stderr, err := awsCLI(t, ns, endpoint, key, secret, args...)
		want := fmt.Sprintf("An error occurred (%s) when calling the %s operation", code, op)
		if err == nil || !strings.Contains(stderr, want) {
			t.Errorf("aws vpc-lattice %s: want %q, got err %v, stderr %s", strings.Join(args, " "), want, err, stderr)
		}
	}

	sn := lattice("create-service-network", "--name", "my-hotel")["id"].(string)
	svc := lattice("create-service", "--name", "inventory")
	svcID, dns := svc["id"].(string), svc["dnsEntry"].(map[string]any)["domainName"].(string)
	tg := map[string]string{}
	for name, port := range map[string]string{"inventory-ver1": "18083", "inventory-ver2": "18084"} {
		tg[name] = lattice("create-target-group", "--name", name, "--type", "IP",
			"--config", `{"port":`+port+`,"protocol":"HTTP","vpcIdentifier":"vpc-0123456789abcdef0"}`)["id"].(string)
		reg := lattice("register-targets", "--target-group-identifier", tg[name], "--targets", "id=127.0.0.1")
		if n := len(reg["successful"].([]any)); n != 1 {
			t.Fatalf("register-targets: %v", reg)
		}
	}
	listener := lattice("create-listener", "--service-identifier", svcID, "--name", "http", "--protocol", "HTTP", "--port", "8080",
		"--default-action", fmt.Sprintf(`{"forward":{"targetGroups":[{"targetGroupIdentifier":%q,"weight":80},{"targetGroupIdentifier":%q,"weight":20}]}}`,
			tg["inventory-ver1"], tg["inventory-ver2"]))["id"].(string)
	ruleID := lattice("create-rule", "--service-identifier", svcID, "--listener-identifier", listener, "--name", "beta", "--priority", "10",
		"--match", `{"httpMatch":{"headerMatches":[{"name":"x-env","match":{"exact":"beta"}}]}}`,
		"--action", fmt.Sprintf(`{"forward":{"targetGroups":[{"targetGroupIdentifier":%q}]}}`, tg["inventory-ver2"]))["id"].(string)
	fails("ConflictException", "CreateRule", "create-rule", "--service-identifier", svcID, "--listener-identifier", listener,
		"--name", "other", "--priority", "10", "--match", `{"httpMatch":{"method":"GET"}}`, "--action", `{"fixedResponse":{"statusCode":404}}`)
	fails("ValidationException", "CreateRule", "create-rule", "--service-identifier", svcID, "--listener-identifier", listener,
		"--name", "other", "--priority", "101", "--match", `{"httpMatch":{"method":"GET"}}`, "--action", `{"fixedResponse":{"statusCode":404}}`)
	batch := lattice("batch-update-rule", "--service-identifier", svcID, "--listener-identifier", listener,
		"--rules", fmt.Sprintf(`[{"ruleIdentifier":%q,"priority":20},{"ruleIdentifier":"rule-00000000000000000","priority":30}]`, ruleID))
	if ok, bad := batch["successful"].([]any), batch["unsuccessful"].([]any); len(ok) != 1 || len(bad) != 1 ||
		ok[0].(map[string]any)["priority"] != 20.0 || bad[0].(map[string]any)["failureCode"] != "ResourceNotFoundException" {
		t.Errorf("batch-update-rule: %v", batch)
	}
	assoc := lattice("create-service-network-service-association", "--service-identifier", svcID, "--service-network-identifier", sn)["id"].(string)
	items := lattice("list-service-network-service-associations", "--service-network-identifier", sn)["items"].([]any)
	if len(items) != 1 || items[0].(map[string]any)["id"] != assoc {
		t.Fatalf("list-service-network-service-associations: %v", items)
	}

	// A VPC is a cluster: associating vpc-remote lets cluster remote join.
	vpcAssoc := lattice("create-service-network-vpc-association", "--service-network-identifier", sn, "--vpc-identifier", "vpc-remote")
	if vpcAssoc["status"] != "ACTIVE" {
		t.Errorf("create-service-network-vpc-association: %v", vpcAssoc)
	}
	vpcAssocID := vpcAssoc["id"].(string)
	if got := lattice("get-service-network-vpc-association", "--service-network-vpc-association-identifier", vpcAssocID); got["vpcId"] != "vpc-remote" {
		t.Errorf("get-service-network-vpc-association: %v", got)
	}
	if items := lattice("list-service-network-vpc-associations", "--vpc-identifier", "vpc-remote")["items"].([]any); len(items) != 1 {
		t.Errorf("list-service-network-vpc-associations: %v", items)
	}
	fails("ConflictException", "CreateServiceNetworkVpcAssociation", "create-service-network-vpc-association",
		"--service-network-identifier", sn, "--vpc-identifier", "vpc-remote")
	// A resource policy is stored, not enforced.
	snARN := lattice("get-service-network", "--service-network-identifier", sn)["arn"].(string)
	const rp = `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"123456789012"},"Action":"vpc-lattice:*","Resource":"*"}]}`
	lattice("put-resource-policy", "--resource-arn", snARN, "--policy", rp)
	if got := lattice("get-resource-policy", "--resource-arn", snARN); got["policy"] != rp {
		t.Errorf("get-resource-policy: %v", got)
	}
	lattice("delete-resource-policy", "--resource-arn", snARN)
	fails("ResourceNotFoundException", "GetResourcePolicy", "get-resource-policy", "--resource-arn", snARN)

	// Served at once: the split, and the rule.
	px.waitOutput(t, 15*time.Second, "listening on 127.0.0.1:8080")
	c := ns.HTTPClient(5 * time.Second)
	const url = "http://127.0.0.1:8080/"
	testsync.WaitFor(t, 10*time.Second, "the proxy to serve the Lattice service", func() bool {
		status, _, err := get(c, url, dns)
		return err == nil && status == http.StatusOK
	})
	counts := split(t, c, url, dns, 500)
	t.Logf("500 requests: %v", counts)
	assertShare(t, counts, 500, "inventory-ver1", 80, 5)
	for range 20 {
		status, backend, err := getWith(c, url, dns, http.Header{"X-Env": {"BETA"}})
		if err != nil || status != http.StatusOK || backend != "inventory-ver2" {
			t.Fatalf("x-env: BETA went to %q (status %d, %v), want inventory-ver2", backend, status, err)
		}
	}

	// A prefix match (case-sensitive) and a contains match (any case, as
	// Lattice's default), each answered 404 by a fixed response.
	var hdrRules []string
	for _, r := range []struct{ name, priority, match string }{
		{"release-candidates", "11", `{"httpMatch":{"headerMatches":[{"name":"x-build","caseSensitive":true,"match":{"prefix":"rc-"}}]}}`},
		{"blocked", "12", `{"httpMatch":{"headerMatches":[{"name":"x-tag","match":{"contains":"blocked"}}]}}`},
	} {
		hdrRules = append(hdrRules, lattice("create-rule", "--service-identifier", svcID, "--listener-identifier", listener, "--name", r.name,
			"--priority", r.priority, "--match", r.match, "--action", `{"fixedResponse":{"statusCode":404}}`)["id"].(string))
	}
	// (The CLI itself refuses a match of two kinds; the server's refusal is
	// internal/lattice's TestHeaderMatchKinds.)
	testsync.WaitFor(t, 10*time.Second, "the header-match rules to be served", func() bool {
		status, _, err := getWith(c, url, dns, http.Header{"X-Build": {"rc-7"}})
		return err == nil && status == http.StatusNotFound
	})
	for _, tc := range []struct {
		name, value string
		want        int
	}{
		{"X-Build", "RC-7", http.StatusOK}, {"X-Build", "xrc-7", http.StatusOK},
		{"X-Tag", "is-BLOCKED-now", http.StatusNotFound}, {"X-Tag", "block", http.StatusOK},
	} {
		if status, _, err := getWith(c, url, dns, http.Header{tc.name: {tc.value}}); err != nil || status != tc.want {
			t.Errorf("%s: %s answered %d (%v), want %d", tc.name, tc.value, status, err, tc.want)
		}
	}
	for _, id := range hdrRules {
		lattice("delete-rule", "--service-identifier", svcID, "--listener-identifier", listener, "--rule-identifier", id)
	}

	// UpdateListener shifts every request to ver2.
	lattice("update-listener", "--service-identifier", svcID, "--listener-identifier", listener, "--default-action",
		fmt.Sprintf(`{"forward":{"targetGroups":[{"targetGroupIdentifier":%q,"weight":0},{"targetGroupIdentifier":%q,"weight":10}]}}`,
			tg["inventory-ver1"], tg["inventory-ver2"]))
	testsync.WaitFor(t, 10*time.Second, "the shift to ver2", func() bool {
		counts := split(t, c, url, dns, 20)
		return counts["inventory-ver2"] == 20
	})

	// AWS_IAM and a policy that allows only one workload: an anonymous
	// caller gets 403.
	lattice("update-service", "--service-identifier", svcID, "--auth-type", "AWS_IAM")
	pol := lattice("put-auth-policy", "--resource-identifier", svcID, "--policy",
		`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Trellis":"spiffe://local/ns/default/sa/checkout"},"Action":"vpc-lattice-svcs:Invoke","Resource":"*"}]}`)
	if pol["state"] != "Active" {
		t.Errorf("put-auth-policy: state %v, want Active", pol["state"])
	}
	testsync.WaitFor(t, 10*time.Second, "an anonymous caller to be refused", func() bool {
		status, _, err := get(c, url, dns)
		return err == nil && status == http.StatusForbidden
	})
	lattice("update-service", "--service-identifier", svcID, "--auth-type", "NONE")
	testsync.WaitFor(t, 10*time.Second, "auth to be off again", func() bool {
		status, _, err := get(c, url, dns)
		return err == nil && status == http.StatusOK
	})

	// Out of order: Lattice's ConflictException, as the CLI prints it.
	fails("ConflictException", "DeleteServiceNetwork", "delete-service-network", "--service-network-identifier", sn)
	fails("ConflictException", "DeleteService", "delete-service", "--service-identifier", svcID)
	fails("ConflictException", "DeleteTargetGroup", "delete-target-group", "--target-group-identifier", tg["inventory-ver1"])

	// Bad signature and unknown key.
	if _, stderr, err := awsCLI(t, ns, endpoint, key, "not-the-secret", "list-service-networks"); err == nil ||
		!strings.Contains(stderr, "(InvalidSignatureException)") {
		t.Errorf("a wrong secret: err %v, stderr %s", err, stderr)
	}
	if _, stderr, err := awsCLI(t, ns, endpoint, "AKIDUNKNOWN", secret, "list-service-networks"); err == nil ||
		!strings.Contains(stderr, "(UnrecognizedClientException)") {
		t.Errorf("an unknown key: err %v, stderr %s", err, stderr)
	}

	// In dependency order.
	lattice("delete-service-network-service-association", "--service-network-service-association-identifier", assoc)
	testsync.WaitFor(t, 10*time.Second, "the proxy to stop serving the service", func() bool {
		status, _, err := get(c, url, dns)
		return err != nil || status == http.StatusNotFound
	})
	lattice("delete-rule", "--service-identifier", svcID, "--listener-identifier", listener, "--rule-identifier", ruleID)
	lattice("delete-listener", "--service-identifier", svcID, "--listener-identifier", listener)
	lattice("delete-service", "--service-identifier", svcID)
	for _, id := range tg {
		lattice("deregister-targets", "--target-group-identifier", id, "--targets", "id=127.0.0.1")
		lattice("delete-target-group", "--target-group-identifier", id)
	}
	fails("ConflictException", "DeleteServiceNetwork", "delete-service-network", "--service-network-identifier", sn)
	lattice("delete-service-network-vpc-association", "--service-network-vpc-association-identifier", vpcAssocID)
	lattice("delete-service-network", "--service-network-identifier", sn)
	for _, list := range []string{"list-service-networks", "list-services", "list-target-groups"} {
		if items := lattice(list)["items"].([]any); len(items) != 0 {
			t.Errorf("%s after deleting everything: %v", list, items)
		}
	}
	out := trellisOutput(t, ns, "get", "services", "--server", "http://127.0.0.1:7070", "--token", "e2e")
	if strings.Contains(out, "snsa-") {
		t.Errorf("trellis get services after deleting everything:\n%s", out)
	}
}
