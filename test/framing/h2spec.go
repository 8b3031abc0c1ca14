package framing

import (
	"cmp"
	"encoding/xml"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
)

// H2SpecCase is one case of an h2spec report.
type H2SpecCase struct {
	// ID is the case's package and name: "http2/4.2 Sends a large ...".
	ID      string
	Skipped bool
	Failed  bool
	// Detail is what h2spec expected and got, for a failed case.
	Detail string
}

// H2SpecKnownFailures are the h2spec cases peer.HTTPServer fails, with
// why: the peer listener's server, which also serves the proxy's HTTPS
// connections that negotiate h2. A case not listed that fails is a
// regression; a listed one that passes is news (the list should shrink).
var H2SpecKnownFailures = map[string]string{
	"http2/4.2 Sends a large size HEADERS frame that exceeds the SETTINGS_MAX_FRAME_SIZE": "h2spec's frame (about 20 KiB) is within the 64 KiB SETTINGS_MAX_FRAME_SIZE the server announces, so it is served",
}

// H2Spec runs h2spec (bin) over TLS against addr, each case given timeout
// seconds, and returns the cases of its JUnit report and its output. It
// fails t when h2spec wrote no report or one it cannot read.
func H2Spec(t testing.TB, bin, addr string, timeout int) ([]H2SpecCase, []byte) {
	t.Helper()
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	report := filepath.Join(t.TempDir(), "h2spec.xml")
	cmd := exec.Command(bin, "-h", host, "-p", port, "-t", "-k", "-o", strconv.Itoa(timeout), "-j", report)
	out, _ := cmd.CombinedOutput() // it exits non-zero when a case fails
	x, err := os.ReadFile(report)
	if err != nil {
		t.Fatalf("h2spec wrote no report: %v\n%s", err, out)
	}
	var suites struct {
		Suites []struct {
			Cases []struct {
				Package string    `xml:"package,attr"`
				Name    string    `xml:"classname,attr"`
				Failure *string   `xml:"failure"`
				Error   *string   `xml:"error"`
				Skipped *struct{} `xml:"skipped"`
			} `xml:"testcase"`
		} `xml:"testsuite"`
	}
	if err := xml.Unmarshal(x, &suites); err != nil {
		t.Fatalf("h2spec report: %v", err)
	}
	var cases []H2SpecCase
	for _, s := range suites.Suites {
		for _, c := range s.Cases {
			hc := H2SpecCase{ID: c.Package + " " + c.Name, Skipped: c.Skipped != nil}
			if d := cmp.Or(c.Failure, c.Error); d != nil && !hc.Skipped {
				hc.Failed, hc.Detail = true, *d
			}
			cases = append(cases, hc)
		}
	}
	return cases, out
}
