package e2e

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"trellis.dev/trellis/internal/client"
	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/test/netns"
	testpki "trellis.dev/trellis/test/pki"
	"trellis.dev/trellis/test/testsync"
)

// latticeEnv is a server with the Lattice API, a proxy of cluster local
// and echo backends, in one network namespace, driven by the AWS CLI.
type latticeEnv struct {
	t     *testing.T
	ns    *netns.NS
	dir   string
	proxy *proc
	http  *http.Client
}

const (
	latticeKey, latticeSecret, latticeEndpoint = "AKIDTRELLISE2E", "e2e-secret-key", "http://127.0.0.1:7071"
	// westKey signs as owner west, a second account.
	westKey, westSecret = "AKIDTRELLISWEST", "west-secret-key"
)

// startLattice starts the server (with extra flags), one echo backend per
// name on its address, and a proxy.
func startLattice(t *testing.T, backends map[string]string, proxyArgs ...string) *latticeEnv {
	t.Helper()
	e := &latticeEnv{t: t, ns: netns.New(t), dir: t.TempDir()}
	creds := filepath.Join(e.dir, "lattice-credentials")
	if err := os.WriteFile(creds, []byte(latticeKey+" "+latticeSecret+" local\n"+westKey+" "+westSecret+" west\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := start(t, e.ns, "server", "server", "--listen", "127.0.0.1:7070", "--data", filepath.Join(e.dir, "data"), "--tokens", "e2e=local",
		"--heartbeat", "500ms", "--lattice-listen", "127.0.0.1:7071", "--lattice-credentials-file", creds)
	srv.waitOutput(t, 10*time.Second, "VPC Lattice API on http://127.0.0.1:7071")
	for name, addr := range backends {
		start(t, e.ns, name, "echo", "--listen", addr, "--name", name).waitOutput(t, 10*time.Second, "echo:")
	}
	e.proxy = start(t, e.ns, "proxy", append([]string{"proxy", "--server", "http://127.0.0.1:7070", "--token", "e2e", "--cluster", "local"}, proxyArgs...)...)
	e.http = e.ns.HTTPClient(5 * time.Second)
	return e
}

// cli runs `aws vpc-lattice args...`, which must succeed, and returns its
// JSON output.
func (e *latticeEnv) cli(args ...string) map[string]any {
	e.t.Helper()
	return e.cliAs(latticeKey, latticeSecret, args...)
}

// cliAs is cli signed with another key.
func (e *latticeEnv) cliAs(key, secret string, args ...string) map[string]any {
	e.t.Helper()
	out, stderr, err := awsCLI(e.t, e.ns, latticeEndpoint, key, secret, args...)
	if err != nil {
		e.t.Fatalf("aws vpc-lattice %s: %v\n%s", strings.Join(args, " "), err, stderr)
	}
	var v map[string]any
	if strings.TrimSpace(out) != "" {
		if err := json.Unmarshal([]byte(out), &v); err != nil {
			e.t.Fatalf("aws vpc-lattice %s: %v\n%s", args[0], err, out)
		}
	}
	return v
}

// fails runs a command that must fail with the AWS error code, and
// returns the CLI's message.
func (e *latticeEnv) fails(code, op string, args ...string) string {
	e.t.Helper()
	return e.failsAs(latticeKey, latticeSecret, code, op, args...)
}

// failsAs is fails signed with another key.
func (e *latticeEnv) failsAs(key, secret, code, op string, args ...string) string {
	e.t.Helper()
	_, stderr, err := awsCLI(e.t, e.ns, latticeEndpoint, key, secret, args...)
	want := fmt.Sprintf("An error occurred (%s) when calling the %s operation", code, op)
	if err == nil || !strings.Contains(stderr, want) {
		e.t.Errorf("aws vpc-lattice %s: want %q, got err %v, stderr %s", strings.Join(args, " "), want, err, stderr)
	}
	return stderr
}

// targetGroup creates an IP target group on port with one target,
// 127.0.0.1, and returns its ID.
func (e *latticeEnv) targetGroup(name, config string) string {
	e.t.Helper()
	id := e.cli("create-target-group", "--name", name, "--type", "IP", "--config", config)["id"].(string)
	if reg := e.cli("register-targets", "--target-group-identifier", id, "--targets", "id=127.0.0.1"); len(reg["successful"].([]any)) != 1 {
		e.t.Fatalf("register-targets: %v", reg)
	}
	return id
}

func forwardTo(tg string) string {
	return fmt.Sprintf(`{"forward":{"targetGroups":[{"targetGroupIdentifier":%q}]}}`, tg)
}

// A listener's rules answer by priority, not by Gateway API precedence:
// a prefix rule of priority 10 takes /api/items from an exact rule of
// priority 20, and an UpdateRule to priority 5 gives it back.
func TestLatticeRulePriority(t *testing.T) {
	e := startLattice(t, map[string]string{"prefix-backend": "127.0.0.1:18083", "exact-backend": "127.0.0.1:18084"})
	sn := e.cli("create-service-network", "--name", "prio")["id"].(string)
	svc := e.cli("create-service", "--name", "prio")
	svcID, dns := svc["id"].(string), svc["dnsEntry"].(map[string]any)["domainName"].(string)
	prefixTG := e.targetGroup("prefix-backend", `{"port":18083,"protocol":"HTTP","vpcIdentifier":"vpc-0123456789abcdef0"}`)
	exactTG := e.targetGroup("exact-backend", `{"port":18084,"protocol":"HTTP","vpcIdentifier":"vpc-0123456789abcdef0"}`)
	lis := e.cli("create-listener", "--service-identifier", svcID, "--name", "http", "--protocol", "HTTP", "--port", "8080",
		"--default-action", `{"fixedResponse":{"statusCode":404}}`)["id"].(string)
	e.cli("create-rule", "--service-identifier", svcID, "--listener-identifier", lis, "--name", "api-prefix", "--priority", "10",
		"--match", `{"httpMatch":{"pathMatch":{"match":{"prefix":"/api"}}}}`, "--action", forwardTo(prefixTG))
	exactRule := e.cli("create-rule", "--service-identifier", svcID, "--listener-identifier", lis, "--name", "items-exact", "--priority", "20",
		"--match", `{"httpMatch":{"pathMatch":{"match":{"exact":"/api/items"}}}}`, "--action", forwardTo(exactTG))["id"].(string)
	e.cli("create-service-network-service-association", "--service-identifier", svcID, "--service-network-identifier", sn)

	e.proxy.waitOutput(t, 15*time.Second, "listening on 127.0.0.1:8080")
	const items = "http://127.0.0.1:8080/api/items"
	answers := func(want string) func() bool {
		return func() bool {
			status, backend, err := get(e.http, items, dns)
			return err == nil && status == http.StatusOK && backend == want
		}
	}
	testsync.WaitFor(t, 10*time.Second, "/api/items to go to the priority-10 prefix rule", answers("prefix-backend"))
	for range 10 {
		if status, backend, err := get(e.http, items, dns); err != nil || backend != "prefix-backend" {
			t.Fatalf("/api/items went to %q (%d, %v), want prefix-backend (priority 10)", backend, status, err)
		}
	}
	if status, _, err := get(e.http, "http://127.0.0.1:8080/other", dns); err != nil || status != http.StatusNotFound {
		t.Errorf("/other: %d, %v; want the default action's 404", status, err)
	}

	e.fails("ConflictException", "UpdateRule", "update-rule", "--service-identifier", svcID, "--listener-identifier", lis,
		"--rule-identifier", exactRule, "--priority", "10")
	got := e.cli("update-rule", "--service-identifier", svcID, "--listener-identifier", lis, "--rule-identifier", exactRule, "--priority", "5")
	if got["priority"] != 5.0 {
		t.Errorf("update-rule: %v", got)
	}
	testsync.WaitFor(t, 10*time.Second, "/api/items to go to the exact rule, now priority 5", answers("exact-backend"))
	if status, backend, err := get(e.http, "http://127.0.0.1:8080/api/other", dns); err != nil || backend != "prefix-backend" {
		t.Errorf("/api/other went to %q (%d, %v), want prefix-backend", backend, status, err)
	}
	rules := e.cli("list-rules", "--service-identifier", svcID, "--listener-identifier", lis)["items"].([]any)
	if len(rules) != 3 {
		t.Errorf("list-rules: %v", rules)
	}
}

// targetStatuses lists a target group's targets as "id:port" → "STATUS
// reason" through the CLI.
func (e *latticeEnv) targetStatuses(tg string) map[string]string {
	e.t.Helper()
	out := map[string]string{}
	for _, it := range e.cli("list-targets", "--target-group-identifier", tg)["items"].([]any) {
		m := it.(map[string]any)
		out[fmt.Sprintf("%v:%v", m["id"], m["port"])] = fmt.Sprint(m["status"], " ", m["reasonCode"])
	}
	return out
}

// ListTargets shows the proxy's own health checks: a live target turns
// HEALTHY and one whose port is closed UNHEALTHY, and requests go to the
// healthy one only; checks turned off with UpdateTargetGroup make both
// UNAVAILABLE; a deregistered target is DRAINING.
func TestLatticeTargetHealth(t *testing.T) {
	e := startLattice(t, map[string]string{"live": "127.0.0.1:18083"})
	sn := e.cli("create-service-network", "--name", "health")["id"].(string)
	svc := e.cli("create-service", "--name", "health")
	svcID, dns := svc["id"].(string), svc["dnsEntry"].(map[string]any)["domainName"].(string)
	tg := e.cli("create-target-group", "--name", "web", "--type", "IP", "--config",
		`{"port":18083,"protocol":"HTTP","healthCheck":{"enabled":true,"path":"/","healthCheckIntervalSeconds":5,"healthCheckTimeoutSeconds":2,"healthyThresholdCount":2,"unhealthyThresholdCount":2,"matcher":{"httpCode":"200-299"}}}`)["id"].(string)
	// 18099: nothing listens there.
	e.cli("register-targets", "--target-group-identifier", tg, "--targets", "id=127.0.0.1", "id=127.0.0.1,port=18099")
	if got := e.targetStatuses(tg); got["127.0.0.1:18083"] != "UNUSED TargetGroupNotInUse" {
		t.Errorf("before a listener uses the group: %v", got)
	}
	e.cli("create-listener", "--service-identifier", svcID, "--name", "http", "--protocol", "HTTP", "--port", "8080", "--default-action", forwardTo(tg))
	e.cli("create-service-network-service-association", "--service-identifier", svcID, "--service-network-identifier", sn)

	want := map[string]string{"127.0.0.1:18083": "HEALTHY <nil>", "127.0.0.1:18099": "UNHEALTHY HealthCheckFailed"}
	var got map[string]string
	testsync.WaitFor(t, 30*time.Second, "the proxy's checks to reach list-targets", func() bool {
		got = e.targetStatuses(tg)
		return fmt.Sprint(got) == fmt.Sprint(want)
	})
	for range 10 {
		if status, backend, err := get(e.http, "http://127.0.0.1:8080/", dns); err != nil || status != http.StatusOK || backend != "live" {
			t.Fatalf("a request went to %q (%d, %v), want the healthy target", backend, status, err)
		}
	}

	e.cli("update-target-group", "--target-group-identifier", tg, "--health-check", `{"enabled":false}`)
	if got := e.targetStatuses(tg); got["127.0.0.1:18099"] != "UNAVAILABLE HealthCheckDisabled" {
		t.Errorf("checks off: %v", got)
	}
	e.cli("deregister-targets", "--target-group-identifier", tg, "--targets", "id=127.0.0.1,port=18099")
	if got := e.targetStatuses(tg); got["127.0.0.1:18099"] != "DRAINING TargetDeregistrationInProgress" || got["127.0.0.1:18083"] != "UNAVAILABLE HealthCheckDisabled" {
		t.Errorf("after deregistering: %v", got)
	}
}

// HTTPS and TLS passthrough listeners through the CLI: an HTTPS listener
// terminates TLS with the Certificate its service's certificateArn names
// (written with the Trellis API) for the custom domain name, and forwards
// HTTP; a TLS_PASSTHROUGH listener hands the TLS connection for its
// service's custom domain, unopened, to a TCP target group's target.
// What Lattice refuses is ValidationException naming the field.
func TestLatticeHTTPSAndPassthrough(t *testing.T) {
	e := startLattice(t, map[string]string{"inventory": "127.0.0.1:18083"})
	ca := testpki.NewCA(t)
	ctx := t.Context()

	// The certificate, as the Trellis API holds it.
	leaf := ca.Issue(t, "inventory.example.com")
	tc, err := client.New("http://127.0.0.1:7070", "e2e", client.Options{HTTPClient: e.ns.HTTPClient(5 * time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	if err := tc.Put(ctx, &model.Certificate{Meta: model.Meta{Name: "inventory-cert", Owner: "local"}, CertPEM: string(leaf.CertPEM), KeyPEM: string(leaf.KeyPEM)}); err != nil {
		t.Fatal(err)
	}

	sn := e.cli("create-service-network", "--name", "tls")["id"].(string)
	plain := e.cli("create-service", "--name", "plain")["id"].(string)
	const certARN = "arn:aws:acm:us-east-1:123456789012:certificate/inventory-cert"
	svc := e.cli("create-service", "--name", "inventory", "--custom-domain-name", "inventory.example.com", "--certificate-arn", certARN)
	if svc["customDomainName"] != "inventory.example.com" || svc["certificateArn"] != certARN {
		t.Errorf("create-service: %v", svc)
	}
	svcID := svc["id"].(string)
	web := e.targetGroup("inventory", `{"port":18083,"protocol":"HTTP"}`)
	e.fails("ValidationException", "CreateListener", "create-listener", "--service-identifier", plain, "--name", "https",
		"--protocol", "HTTPS", "--default-action", forwardTo(web))
	e.fails("ValidationException", "CreateService", "create-service", "--name", "bad", "--certificate-arn", "arn:aws:acm:us-east-1:123456789012:cert/x")
	e.cli("create-listener", "--service-identifier", svcID, "--name", "https", "--protocol", "HTTPS", "--port", "8443", "--default-action", forwardTo(web))
	e.cli("create-service-network-service-association", "--service-identifier", svcID, "--service-network-identifier", sn)

	// The passthrough backend: TLS of its own, in the namespace.
	ln, err := e.ns.Listen("tcp", "127.0.0.1:18443")
	if err != nil {
		t.Fatal(err)
	}
	backend := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "passthrough backend, tls %v", r.TLS != nil)
	})}
	go backend.Serve(tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{ca.Issue(t, "db.example.com").TLS(t)}}))
	t.Cleanup(func() { backend.Close() })

	db := e.cli("create-service", "--name", "database", "--custom-domain-name", "db.example.com")["id"].(string)
	tcp := e.targetGroup("database", `{"port":18443,"protocol":"TCP"}`)
	e.fails("ValidationException", "CreateListener", "create-listener", "--service-identifier", plain, "--name", "tls",
		"--protocol", "TLS_PASSTHROUGH", "--port", "9443", "--default-action", forwardTo(tcp))
	e.fails("ValidationException", "CreateListener", "create-listener", "--service-identifier", db, "--name", "tls",
		"--protocol", "TLS_PASSTHROUGH", "--port", "9443", "--default-action", forwardTo(web))
	tlsListener := e.cli("create-listener", "--service-identifier", db, "--name", "tls", "--protocol", "TLS_PASSTHROUGH", "--port", "9443",
		"--default-action", forwardTo(tcp))["id"].(string)
	e.fails("ValidationException", "CreateRule", "create-rule", "--service-identifier", db, "--listener-identifier", tlsListener,
		"--name", "nope", "--priority", "1", "--match", `{"httpMatch":{"method":"GET"}}`, "--action", forwardTo(tcp))
	e.cli("create-service-network-service-association", "--service-identifier", db, "--service-network-identifier", sn)

	e.proxy.waitOutput(t, 15*time.Second, "listening on 127.0.0.1:8443")
	e.proxy.waitOutput(t, 15*time.Second, "listening on 127.0.0.1:9443")
	client := func(serverName string) *http.Client {
		return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
			DialContext:     e.ns.DialContext,
			TLSClientConfig: &tls.Config{RootCAs: ca.Pool(), ServerName: serverName},
		}}
	}
	// HTTPS, terminated by the proxy with inventory-cert.
	hc := client("inventory.example.com")
	testsync.WaitFor(t, 10*time.Second, "HTTPS to answer", func() bool {
		status, backend, err := get(hc, "https://127.0.0.1:8443/", "inventory.example.com")
		return err == nil && status == http.StatusOK && backend == "inventory"
	})
	// TLS passthrough: the backend's own certificate and answer.
	pc := client("db.example.com")
	testsync.WaitFor(t, 10*time.Second, "TLS passthrough to reach the backend", func() bool {
		resp, err := pc.Get("https://127.0.0.1:9443/")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.TLS != nil && resp.TLS.PeerCertificates[0].Subject.CommonName == "db.example.com" && string(b) == "passthrough backend, tls true"
	})
}

// Access log subscriptions through the CLI: a proxy started with
// --access-log-dir writes the entries of a service's subscription (a
// CloudWatch log group) and of its network's (an S3 bucket) to files
// named after them; deleting the subscription stops its file.
func TestLatticeAccessLogSubscription(t *testing.T) {
	dir := t.TempDir()
	e := startLattice(t, map[string]string{"inventory": "127.0.0.1:18083"}, "--access-log-dir", dir)
	sn := e.cli("create-service-network", "--name", "logged")["id"].(string)
	svc := e.cli("create-service", "--name", "inventory")
	svcID, dns := svc["id"].(string), svc["dnsEntry"].(map[string]any)["domainName"].(string)
	tg := e.targetGroup("inventory", `{"port":18083,"protocol":"HTTP"}`)
	e.cli("create-listener", "--service-identifier", svcID, "--name", "http", "--protocol", "HTTP", "--port", "8080", "--default-action", forwardTo(tg))
	e.cli("create-service-network-service-association", "--service-identifier", svcID, "--service-network-identifier", sn)
	sub := e.cli("create-access-log-subscription", "--resource-identifier", svcID,
		"--destination-arn", "arn:aws:logs:us-east-1:123456789012:log-group:inventory-logs")
	subID := sub["id"].(string)
	e.cli("create-access-log-subscription", "--resource-identifier", sn, "--destination-arn", "arn:aws:s3:::network-bucket")
	e.fails("ValidationException", "CreateAccessLogSubscription", "create-access-log-subscription", "--resource-identifier", svcID,
		"--destination-arn", "arn:aws:s3:::bucket/with/a/prefix")
	e.fails("ConflictException", "CreateAccessLogSubscription", "create-access-log-subscription", "--resource-identifier", svcID,
		"--destination-arn", "arn:aws:logs:us-east-1:123456789012:log-group:second-group")
	if got := e.cli("get-access-log-subscription", "--access-log-subscription-identifier", subID); got["resourceId"] != svcID {
		t.Errorf("get-access-log-subscription: %v", got)
	}
	if items := e.cli("list-access-log-subscriptions", "--resource-identifier", sn)["items"].([]any); len(items) != 1 {
		t.Errorf("list-access-log-subscriptions of the network: %v", items)
	}

	e.proxy.waitOutput(t, 15*time.Second, "listening on 127.0.0.1:8080")
	lines := func(name string) []string {
		b, _ := os.ReadFile(filepath.Join(dir, name+".log"))
		return strings.FieldsFunc(string(b), func(r rune) bool { return r == '\n' })
	}
	testsync.WaitFor(t, 10*time.Second, "the service to answer", func() bool {
		status, _, err := get(e.http, "http://127.0.0.1:8080/warm", dns)
		return err == nil && status == http.StatusOK
	})
	for range 5 {
		if status, _, err := get(e.http, "http://127.0.0.1:8080/logged", dns); err != nil || status != http.StatusOK {
			t.Fatalf("request: %d %v", status, err)
		}
	}
	count := func(name string) int {
		n := 0
		for _, l := range lines(name) {
			var entry map[string]any
			if json.Unmarshal([]byte(l), &entry) == nil && entry["requestPath"] == "/logged" && entry["responseCode"] == 200.0 {
				n++
			}
		}
		return n
	}
	testsync.WaitFor(t, 10*time.Second, "both sinks to hold the 5 requests", func() bool {
		return count("inventory-logs") == 5 && count("network-bucket") == 5
	})

	e.cli("delete-access-log-subscription", "--access-log-subscription-identifier", subID)
	testsync.WaitFor(t, 10*time.Second, "the service's sink to be dropped", func() bool {
		before := len(lines("inventory-logs"))
		if status, _, err := get(e.http, "http://127.0.0.1:8080/after", dns); err != nil || status != http.StatusOK {
			return false
		}
		time.Sleep(2 * time.Second) // the writer flushes every second
		return len(lines("inventory-logs")) == before
	})
	testsync.WaitFor(t, 10*time.Second, "the network's sink to keep logging", func() bool {
		for _, l := range lines("network-bucket") {
			if strings.Contains(l, `"requestPath":"/after"`) {
				return true
			}
		}
		return false
	})
}

// A network is shared by its resource policy, as with RAM: another
// account's service association is AccessDeniedException until the
// network's policy allows that account to create associations, then
// succeeds; the owner cannot delete a network another account joined;
// a policy that does not allow it shares nothing.
func TestLatticeResourcePolicySharing(t *testing.T) {
	e := startLattice(t, nil)
	sn := e.cli("create-service-network", "--name", "shared")
	snID, snARN := sn["id"].(string), sn["arn"].(string)
	west := func(args ...string) map[string]any { t.Helper(); return e.cliAs(westKey, westSecret, args...) }
	svc := west("create-service", "--name", "west-svc")["id"].(string)
	westAccount := strings.Split(west("get-service", "--service-identifier", svc)["arn"].(string), ":")[4]
	west("create-listener", "--service-identifier", svc, "--name", "http", "--protocol", "HTTP", "--port", "8080",
		"--default-action", `{"fixedResponse":{"statusCode":404}}`)
	e.failsAs(westKey, westSecret, "AccessDeniedException", "CreateServiceNetworkServiceAssociation", "create-service-network-service-association",
		"--service-identifier", svc, "--service-network-identifier", snARN)

	// A policy for other actions shares nothing.
	e.cli("put-resource-policy", "--resource-arn", snARN, "--policy",
		`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"`+westAccount+`"},"Action":"vpc-lattice:GetServiceNetwork","Resource":"*"}]}`)
	e.failsAs(westKey, westSecret, "AccessDeniedException", "CreateServiceNetworkServiceAssociation", "create-service-network-service-association",
		"--service-identifier", svc, "--service-network-identifier", snARN)

	e.cli("put-resource-policy", "--resource-arn", snARN, "--policy",
		`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::`+westAccount+`:root"},"Action":["vpc-lattice:CreateServiceNetworkServiceAssociation","vpc-lattice:GetServiceNetwork"],"Resource":"*"}]}`)
	as := west("create-service-network-service-association", "--service-identifier", svc, "--service-network-identifier", snARN)
	if as["status"] != "ACTIVE" || as["createdBy"] != westAccount {
		t.Fatalf("create-service-network-service-association on the shared network: %v", as)
	}
	items := e.cli("list-service-network-service-associations", "--service-network-identifier", snID)["items"].([]any)
	if len(items) != 1 || items[0].(map[string]any)["serviceNetworkName"] != "shared" {
		t.Errorf("the owner lists the other account's association: %v", items)
	}
	e.fails("ConflictException", "DeleteServiceNetwork", "delete-service-network", "--service-network-identifier", snID)
	out := trellisOutput(t, e.ns, "get", "services", "--server", "http://127.0.0.1:7070", "--token", "e2e")
	if !strings.Contains(out, as["id"].(string)) {
		t.Errorf("trellis get services: west's service is not in the shared network:\n%s", out)
	}
	west("delete-service-network-service-association", "--service-network-service-association-identifier", as["id"].(string))
	e.cli("delete-service-network", "--service-network-identifier", snID)
}
