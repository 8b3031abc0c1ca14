//go:build terraform

// Run with: go test -tags terraform -run TestLatticeTerraform ./test/e2e
// It needs terraform on PATH and the hashicorp/aws provider (from the
// filesystem mirror in $TRELLIS_TF_PLUGINS, default /opt/tf-plugins when
// it exists, else from the registry).

package e2e

import (
	"bytes"
	"context"
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

const latticeTerraform = `
terraform {
  required_providers {
    aws = { source = "hashicorp/aws", version = "5.100.0" }
  }
}
variable "endpoint" { type = string }
provider "aws" {
  region                      = "us-east-1"
  access_key                  = "AKIDTRELLISTF"
  secret_key                  = "tf-secret-key"
  skip_credentials_validation = true
  skip_requesting_account_id  = true
  skip_metadata_api_check     = true
  endpoints { vpclattice = var.endpoint }
}
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
resource "aws_vpclattice_listener" "http" {
  name               = "http"
  protocol           = "HTTP"
  port               = 8080
  service_identifier = aws_vpclattice_service.svc.id
  default_action {
    forward {
      target_groups {
        target_group_identifier = aws_vpclattice_target_group.v1.id
        weight                  = 100
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

// Terraform's aws_vpclattice_* resources manage a Trellis service network:
// apply creates what the proxy serves, a second plan finds nothing to
// change, destroy removes it all.
func TestLatticeTerraform(t *testing.T) {
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
	start(t, ns, "proxy", "proxy", "--server", "http://127.0.0.1:7070", "--token", "e2e", "--cluster", "local")

	work := filepath.Join(dir, "tf")
	if err := os.MkdirAll(work, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(work, "main.tf"), []byte(latticeTerraform), 0o644); err != nil {
		t.Fatal(err)
	}
	env := append(os.Environ(), "CHECKPOINT_DISABLE=1", "TF_IN_AUTOMATION=1", "TF_INPUT=0")
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
		env = append(env, "TF_CLI_CONFIG_FILE="+rc)
	}
	tf := func(args ...string) (string, error) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		cmd := ns.Command(ctx, bin, append([]string{"-chdir=" + work}, args...)...)
		cmd.Env = env
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		return out.String(), err
	}
	vars := "-var=endpoint=http://127.0.0.1:7071"
	if out, err := tf("init", "-no-color"); err != nil {
		t.Fatalf("terraform init: %v\n%s", err, out)
	}
	if out, err := tf("apply", "-auto-approve", "-no-color", vars); err != nil {
		t.Fatalf("terraform apply: %v\n%s", err, out)
	}
	out, err := tf("output", "-raw", "dns")
	if err != nil || !strings.HasSuffix(out, ".vpc-lattice-svcs.us-east-1.on.aws") {
		t.Fatalf("terraform output dns: %v %q", err, out)
	}
	dns := out
	c := ns.HTTPClient(5 * time.Second)
	testsync.WaitFor(t, 15*time.Second, "the proxy to serve the service Terraform made", func() bool {
		status, backend, err := get(c, "http://127.0.0.1:8080/", dns)
		return err == nil && status == http.StatusOK && backend == "inventory-ver1"
	})
	if status, _, err := getWith(c, "http://127.0.0.1:8080/", dns, http.Header{"X-Env": {"beta"}}); err != nil || status != http.StatusNotFound {
		t.Errorf("x-env: beta: status %d (%v), want the rule's fixed 404", status, err)
	}
	if out, err := tf("plan", "-detailed-exitcode", "-no-color", vars); err != nil {
		t.Errorf("a second plan is not empty (%v):\n%s", err, out)
	}
	if out, err := tf("destroy", "-auto-approve", "-no-color", vars); err != nil {
		t.Fatalf("terraform destroy: %v\n%s", err, out)
	}
	if out := trellisOutput(t, ns, "get", "services", "--server", "http://127.0.0.1:7070", "--token", "e2e"); strings.Contains(out, "snsa-") {
		t.Errorf("services left after destroy:\n%s", out)
	}
}
