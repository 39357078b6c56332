package server

import (
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"strings"
	"testing"
	"time"
)

// TestTLSChainPresentsAnchor: devices pin enrollment.tls_anchor_file from
// the QR code and trust the gateway only if its handshake presents that
// certificate and chains to it. A tls.cert_file holding the leaf alone
// (what most TLS set-ups have) passed config check and serve, and every
// redemption then failed as if the gateway were an impostor.
func TestTLSChainPresentsAnchor(t *testing.T) {
	mk := func(cn string, ca bool, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey) {
		t.Helper()
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), BasicConstraintsValid: true, IsCA: ca}
		if ca {
			tmpl.KeyUsage = x509.KeyUsageCertSign
		} else {
			tmpl.KeyUsage, tmpl.ExtKeyUsage = x509.KeyUsageDigitalSignature, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
			tmpl.DNSNames = []string{cn}
		}
		return issueTest(t, tmpl, parent, parentKey)
	}
	root, rootKey := mk("TLS Root", true, nil, nil)
	inter, interKey := mk("TLS Intermediate", true, root, rootKey)
	leaf, _ := mk("credgw.example", false, inter, interKey)
	// The address devices dial (enrollment.gateway_address) must be a
	// name of the certificate, as the agent checks.
	direct, _ := mk("credgw.example", false, root, rootKey)
	other, otherKey := mk("Other Root", true, nil, nil)
	otherLeaf, _ := mk("credgw.example", false, other, otherKey)
	chain := func(cs ...*x509.Certificate) *tls.Certificate {
		c := &tls.Certificate{Leaf: cs[0]}
		for _, x := range cs {
			c.Certificate = append(c.Certificate, x.Raw)
		}
		return c
	}
	for _, tc := range []struct {
		name   string
		cert   *tls.Certificate
		anchor *x509.Certificate
		want   string // "" accepted
	}{
		{"leaf, intermediate and anchor", chain(leaf, inter, root), root, ""},
		{"leaf and anchor", chain(direct, root), root, ""},
		{"the anchor is the intermediate", chain(leaf, inter), inter, ""},
		{"leaf alone", chain(direct), root, "does not carry"},
		{"leaf and intermediate, no anchor", chain(leaf, inter), root, "does not carry"},
		{"anchor sent but not the leaf's", chain(otherLeaf, root), root, "does not chain"},
		{"the leaf is the anchor (self-signed, pinned)", chain(direct), direct, ""},
		{"a name the certificate does not have", chain(leaf, inter, root), root, "add a subjectAltName"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			host := "credgw.example"
			if strings.HasPrefix(tc.name, "a name") {
				host = "gateway.example.org"
			}
			err := presentsAnchor(tc.cert, tc.anchor, host)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want != "" && err == nil:
				t.Fatal("accepted")
			case tc.want != "" && !strings.Contains(err.Error(), tc.want):
				t.Fatalf("err = %v, want it to say %q", err, tc.want)
			case tc.want != "" && !strings.Contains(err.Error(), "tls.cert_file"):
				t.Fatalf("err = %v does not name tls.cert_file", err)
			}
		})
	}
}
