//go:build terraform

// Run with: go test -tags terraform -run TestLatticeTerraform ./test/e2e
// It needs terraform on PATH and the hashicorp/aws provider (from the
// filesystem mirror in $TRELLIS_TF_PLUGINS, default /opt/tf-plugins when
// it exists, else from the registry).

package e2e

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"trellis.dev/trellis/test/netns"
	"trellis.dev/trellis/test/testsync"
)

// latticeTerraformProvider is the provider block of both configurations:
// the AWS provider with its VPC Lattice endpoint the server's Lattice API
// (var.endpoint), signing with the credentials the server is given.
const latticeTerraformProvider = `
terraform {
  required_providers {
    aws = { source = "hashicorp/aws", version = "5.100.0" }
  }
}
variable "endpoint" { type = string }
variable "w1" {
  type    = number
  default = 80
}
variable "w2" {
  type    = number
  default = 20
}
provider "aws" {
  region                      = "us-east-1"
  access_key                  = "AKIDTRELLISTF"
  secret_key                  = "tf-secret-key"
  skip_credentials_validation = true
  skip_requesting_account_id  = true
  skip_metadata_api_check     = true
  endpoints { vpclattice = var.endpoint }
}
`

const latticeTerraform = latticeTerraformProvider + `
resource "aws_vpclattice_service_network" "net" {
  name = "tf-net"
}
resource "aws_vpclattice_service" "svc" {
  name = "tf-inventory"
}
resource "aws_vpclattice_target_group" "v1" {
  name = "tf-inventory-ver1"
  type = "IP"
  config {
    port           = 18083
    protocol       = "HTTP"
    vpc_identifier = "vpc-0123456789abcdef0"
  }
}
resource "aws_vpclattice_target_group_attachment" "v1" {
  target_group_identifier = aws_vpclattice_target_group.v1.id
  target {
    id   = "127.0.0.1"
    port = 18083
  }
}
resource "aws_vpclattice_target_group" "v2" {
  name = "tf-inventory-ver2"
  type = "IP"
  config {
    port           = 18084
    protocol       = "HTTP"
    vpc_identifier = "vpc-0123456789abcdef0"
  }
}
resource "aws_vpclattice_target_group_attachment" "v2" {
  target_group_identifier = aws_vpclattice_target_group.v2.id
  target {
    id   = "127.0.0.1"
    port = 18084
  }
}
resource "aws_vpclattice_listener" "http" {
  name               = "http"
  protocol           = "HTTP"
  port               = 8080
  service_identifier = aws_vpclattice_service.svc.id
  default_action {
    forward {
      target_groups {
        target_group_identifier = aws_vpclattice_target_group.v1.id
        weight                  = var.w1
      }
      target_groups {
        target_group_identifier = aws_vpclattice_target_group.v2.id
        weight                  = var.w2
      }
    }
  }
}
resource "aws_vpclattice_listener_rule" "beta" {
  name                = "beta"
  listener_identifier = aws_vpclattice_listener.http.listener_id
  service_identifier  = aws_vpclattice_service.svc.id
  priority            = 10
  match {
    http_match {
      header_matches {
        name = "x-env"
        match {
          exact = "beta"
        }
      }
    }
  }
  action {
    fixed_response {
      status_code = 404
    }
  }
}
resource "aws_vpclattice_service_network_service_association" "a" {
  service_identifier         = aws_vpclattice_service.svc.id
  service_network_identifier = aws_vpclattice_service_network.net.id
}
output "dns" {
  value = aws_vpclattice_service.svc.dns_entry[0].domain_name
}
`

// terraformEnv is a server with the Lattice API (key AKIDTRELLISTF of
// owner local), an echo backend and a proxy in a network namespace, and a
// Terraform working directory holding config as main.tf.
type terraformEnv struct {
	t    *testing.T
	ns   *netns.NS
	work string
	bin  string
	env  []string
}

func startTerraform(t *testing.T, config string) *terraformEnv {
	t.Helper()
	bin, err := exec.LookPath("terraform")
	if err != nil {
		t.Fatalf("terraform is required for this test: %v", err)
	}
	ns := netns.New(t)
	dir := t.TempDir()
	creds := filepath.Join(dir, "creds")
	if err := os.WriteFile(creds, []byte("AKIDTRELLISTF tf-secret-key local\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := start(t, ns, "server", "server", "--listen", "127.0.0.1:7070", "--data", filepath.Join(dir, "data"), "--tokens", "e2e=local",
		"--heartbeat", "500ms", "--lattice-listen", "127.0.0.1:7071", "--lattice-credentials-file", creds)
	srv.waitOutput(t, 10*time.Second, "VPC Lattice API on")
	start(t, ns, "echo", "echo", "--listen", "127.0.0.1:18083", "--name", "inventory-ver1").waitOutput(t, 10*time.Second, "echo:")
	start(t, ns, "echo2", "echo", "--listen", "127.0.0.1:18084", "--name", "inventory-ver2").waitOutput(t, 10*time.Second, "echo:")
	start(t, ns, "proxy", "proxy", "--server", "http://127.0.0.1:7070", "--token", "e2e", "--cluster", "local")

	work := filepath.Join(dir, "tf")
	if err := os.MkdirAll(work, 0o755); err != nil {
		t.Fatal(err)
	}
	e := &terraformEnv{t: t, ns: ns, work: work, bin: bin}
	e.write(config)
	e.env = append(os.Environ(), "CHECKPOINT_DISABLE=1", "TF_IN_AUTOMATION=1", "TF_INPUT=0")
	plugins := os.Getenv("TRELLIS_TF_PLUGINS")
	if plugins == "" {
		if _, err := os.Stat("/opt/tf-plugins"); err == nil {
			plugins = "/opt/tf-plugins"
		}
	}
	if plugins != "" {
		rc := filepath.Join(dir, "cli.tfrc")
		if err := os.WriteFile(rc, []byte(`provider_installation { filesystem_mirror { path = "`+plugins+`" } }`+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		e.env = append(e.env, "TF_CLI_CONFIG_FILE="+rc)
	}
	if out, err := e.tf("init", "-no-color"); err != nil {
		t.Fatalf("terraform init: %v\n%s", err, out)
	}
	return e
}

// write replaces main.tf.
func (e *terraformEnv) write(config string) {
	e.t.Helper()
	if err := os.WriteFile(filepath.Join(e.work, "main.tf"), []byte(config), 0o644); err != nil {
		e.t.Fatal(err)
	}
}

// tf runs terraform in the working directory, in the namespace.
func (e *terraformEnv) tf(args ...string) (string, error) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := e.ns.Command(ctx, e.bin, append([]string{"-chdir=" + e.work}, args...)...)
	cmd.Env = e.env
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// Terraform's aws_vpclattice_* resources manage a Trellis service network:
// apply creates what the proxy serves, split 80/20 between two target
// groups; a second plan finds nothing to change; new weights plan as one
// change to the listener alone, and the split follows them after the
// apply; destroy removes it all.
func TestLatticeTerraform(t *testing.T) {
	e := startTerraform(t, latticeTerraform)
	ns, tf := e.ns, e.tf
	vars := "-var=endpoint=http://127.0.0.1:7071"
	if out, err := tf("apply", "-auto-approve", "-no-color", vars); err != nil {
		t.Fatalf("terraform apply: %v\n%s", err, out)
	}
	out, err := tf("output", "-raw", "dns")
	if err != nil || !strings.HasSuffix(out, ".vpc-lattice-svcs.us-east-1.on.aws") {
		t.Fatalf("terraform output dns: %v %q", err, out)
	}
	dns := out
	c := ns.HTTPClient(5 * time.Second)
	split := func(n int) map[string]int {
		got := map[string]int{}
		for range n {
			status, backend, err := get(c, "http://127.0.0.1:8080/", dns)
			if err != nil || status != http.StatusOK {
				got["error"]++
				continue
			}
			got[backend]++
		}
		return got
	}
	testsync.WaitFor(t, 15*time.Second, "the proxy to serve the service Terraform made", func() bool {
		status, _, err := get(c, "http://127.0.0.1:8080/", dns)
		return err == nil && status == http.StatusOK
	})
	// Smooth weighted round robin: 200 requests split exactly.
	if got := split(200); got["inventory-ver1"] != 160 || got["inventory-ver2"] != 40 {
		t.Errorf("weights 80/20: %v, want 160/40", got)
	}
	if status, _, err := getWith(c, "http://127.0.0.1:8080/", dns, http.Header{"X-Env": {"beta"}}); err != nil || status != http.StatusNotFound {
		t.Errorf("x-env: beta: status %d (%v), want the rule's fixed 404", status, err)
	}
	if out, err := tf("plan", "-detailed-exitcode", "-no-color", vars); err != nil {
		t.Errorf("a second plan is not empty (%v):\n%s", err, out)
	}

	// New weights: the plan changes the listener and nothing else.
	reweigh := []string{vars, "-var=w1=20", "-var=w2=80"}
	out, err = tf(append([]string{"plan", "-detailed-exitcode", "-no-color"}, reweigh...)...)
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 2 || !strings.Contains(out, "Plan: 0 to add, 1 to change, 0 to destroy.") ||
		!strings.Contains(out, "aws_vpclattice_listener.http will be updated in-place") {
		t.Errorf("plan of new weights: want the listener alone to change (%v):\n%s", err, out)
	}
	if out, err := tf(append([]string{"apply", "-auto-approve", "-no-color"}, reweigh...)...); err != nil {
		t.Fatalf("terraform apply of new weights: %v\n%s", err, out)
	}
	changed := time.Now()
	testsync.WaitFor(t, 10*time.Second, "the split to follow the new weights", func() bool {
		got := split(10)
		return got["inventory-ver2"] == 8 && got["inventory-ver1"] == 2
	})
	t.Logf("weights 80/20 → 20/80: traffic followed %v after the apply returned", time.Since(changed).Round(time.Millisecond))
	if got := split(200); got["inventory-ver1"] != 40 || got["inventory-ver2"] != 160 {
		t.Errorf("weights 20/80: %v, want 40/160", got)
	}
	if out, err := tf(append([]string{"plan", "-detailed-exitcode", "-no-color"}, reweigh...)...); err != nil {
		t.Errorf("a plan after the new weights is not empty (%v):\n%s", err, out)
	}

	if out, err := tf(append([]string{"destroy", "-auto-approve", "-no-color"}, reweigh...)...); err != nil {
		t.Fatalf("terraform destroy: %v\n%s", err, out)
	}
	if out := trellisOutput(t, ns, "get", "services", "--server", "http://127.0.0.1:7070", "--token", "e2e"); strings.Contains(out, "snsa-") {
		t.Errorf("services left after destroy:\n%s", out)
	}
}

// latticeTerraformBad has a rule whose path prefix lacks its leading '/':
// the provider lets it through, and the Lattice API refuses it.
const latticeTerraformBad = latticeTerraformProvider + `
variable "prefix" { type = string }
resource "aws_vpclattice_service" "svc" {
  name = "tf-bad"
}
resource "aws_vpclattice_listener" "http" {
  name               = "http"
  protocol           = "HTTP"
  port               = 8080
  service_identifier = aws_vpclattice_service.svc.id
  default_action {
    fixed_response {
      status_code = 404
    }
  }
}
resource "aws_vpclattice_listener_rule" "api" {
  name                = "api"
  listener_identifier = aws_vpclattice_listener.http.listener_id
  service_identifier  = aws_vpclattice_service.svc.id
  priority            = 10
  match {
    http_match {
      path_match {
        match {
          prefix = var.prefix
        }
      }
    }
  }
  action {
    fixed_response {
      status_code = 500
    }
  }
}
output "listener" {
  value = aws_vpclattice_listener.http.listener_id
}
output "service" {
  value = aws_vpclattice_service.svc.id
}
`

// Bad input through Terraform: a rule the provider accepts but Lattice
// refuses fails the apply with the ValidationException naming the field;
// nothing of the rule exists on the server, so the next plan adds exactly
// it; with the value fixed, the apply succeeds and a plan is empty.
func TestLatticeTerraformBadInput(t *testing.T) {
	e := startTerraform(t, latticeTerraformBad)
	vars := []string{"-var=endpoint=http://127.0.0.1:7071", "-var=prefix=api/v1"}
	out, err := e.tf(append([]string{"apply", "-auto-approve", "-no-color"}, vars...)...)
	if err == nil || !strings.Contains(out, "ValidationException") || !strings.Contains(out, "match.httpMatch.pathMatch.match") {
		t.Fatalf("apply with a bad prefix: want Lattice's ValidationException naming match.httpMatch.pathMatch.match, got %v:\n%s", err, out)
	}
	t.Logf("terraform's error:\n%s", out[strings.Index(out, "Error:"):])
	state, err := e.tf("state", "list")
	if err != nil || strings.Contains(state, "aws_vpclattice_listener_rule.api") || !strings.Contains(state, "aws_vpclattice_listener.http") {
		t.Fatalf("state after the failed apply (%v):\n%s", err, state)
	}
	svc, _ := e.tf("output", "-raw", "service")
	listener, _ := e.tf("output", "-raw", "listener")
	rules, stderr, err := awsCLI(t, e.ns, "http://127.0.0.1:7071", "AKIDTRELLISTF", "tf-secret-key", "list-rules",
		"--service-identifier", svc, "--listener-identifier", listener)
	if err != nil || strings.Count(rules, `"id"`) != 1 || !strings.Contains(rules, `"isDefault": true`) {
		t.Fatalf("the listener's rules after the failed apply (%v %s):\n%s", err, stderr, rules)
	}
	out, err = e.tf(append([]string{"plan", "-detailed-exitcode", "-no-color"}, vars...)...)
	if exit, ok := err.(*exec.ExitError); !ok || exit.ExitCode() != 2 || !strings.Contains(out, "Plan: 1 to add, 0 to change, 0 to destroy") {
		t.Errorf("plan after the failed apply: want only the rule to add, got %v:\n%s", err, out)
	}
	vars[1] = "-var=prefix=/api/v1"
	if out, err := e.tf(append([]string{"apply", "-auto-approve", "-no-color"}, vars...)...); err != nil {
		t.Fatalf("apply with the prefix fixed: %v\n%s", err, out)
	}
	if out, err := e.tf(append([]string{"plan", "-detailed-exitcode", "-no-color"}, vars...)...); err != nil {
		t.Errorf("a plan after the fixed apply is not empty (%v):\n%s", err, out)
	}
	if out, err := e.tf(append([]string{"destroy", "-auto-approve", "-no-color"}, vars...)...); err != nil {
		t.Fatalf("terraform destroy: %v\n%s", err, out)
	}
}
