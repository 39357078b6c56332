package server_test

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/base64"
	"io"
	"math/big"
	"net/http"
	"strings"
	"testing"

	"golang.org/x/crypto/ocsp"
)

// TestOCSPGETThroughTheGateway: an RFC 5019 GET whose base64 holds "//"
// (a client that does not URL-encode it) reaches the responder on the
// plain-HTTP listener instead of ServeMux's cleaned-path redirect, and an
// unknown serial is unauthorized.
func TestOCSPGETThroughTheGateway(t *testing.T) {
	ca := gw.CA()
	if ca == nil {
		t.Fatal("the dev config has a CA but the gateway has none")
	}
	serial, _ := new(big.Int).SetString("7fffffffffffffffffffffffff", 16)
	req, err := ocsp.CreateRequest(&x509.Certificate{SerialNumber: serial}, ca.Chain()[0], &ocsp.RequestOptions{Hash: crypto.SHA256})
	if err != nil {
		t.Fatal(err)
	}
	b64 := base64.StdEncoding.EncodeToString(req)
	if !strings.Contains(b64, "//") {
		t.Fatalf("the test request's base64 has no //: %s", b64)
	}
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Get(ca.OCSPURL() + "/" + b64)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !bytes.Equal(body, ocsp.UnauthorizedErrorResponse) {
		t.Fatalf("HTTP %d %x, want 200 and unauthorized", resp.StatusCode, body)
	}
}
