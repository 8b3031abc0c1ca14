package peer

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/http"
)

// HeaderRefused marks a receiver's own refusal (its value is the reason,
// such as NotDeliverable), as opposed to a target's answer: the request
// reached no target.
const HeaderRefused = "Trellis-Peer-Refused"

// Refused returns the refusal resp carries (HeaderRefused), closing its
// body, or nil when resp is an answer to deliver to the client.
func Refused(resp *http.Response) *RefusedError {
	reason := resp.Header.Get(HeaderRefused)
	if reason == "" {
		return nil
	}
	resp.Body.Close()
	return &RefusedError{Status: resp.StatusCode, Reason: reason}
}

// Unsent reports whether err, from RoundTrip or Tunnel, says the request
// reached no target: no connection to the peer could be made (dial, TLS
// handshake, the peer's certificate), or the peer refused it before
// delivering (RefusedError with a Reason), or refused the stream before
// processing it (REFUSED_STREAM, or above a GOAWAY's last stream). Sending it elsewhere then costs
// no target a second copy.
func Unsent(err error) bool {
	var refused *RefusedError
	if errors.As(err, &refused) {
		return refused.Reason != ""
	}
	var unsent *unsentError
	if errors.As(err, &unsent) {
		return true
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	var alert tls.AlertError
	var verify *tls.CertificateVerificationError
	var record tls.RecordHeaderError
	var unknown x509.UnknownAuthorityError
	var invalid x509.CertificateInvalidError
	return errors.As(err, &alert) || errors.As(err, &verify) || errors.As(err, &record) ||
		errors.As(err, &unknown) || errors.As(err, &invalid)
}
