package activation

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"
)

// TestChainsToDevice: the device's trust anchors are checked before
// anything is issued: its root, or a CA of the chain, passes; a root of
// another PKI is refused as a precondition saying nothing was issued.
func TestChainsToDevice(t *testing.T) {
	h := newHarness(t, nil)
	chain := h.svc.cfg.Issuer.Chain()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "another PKI's root"}, IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Public(), k)
	foreign, _ := x509.ParseCertificate(der)
	for _, tc := range []struct {
		name    string
		anchors []*x509.Certificate
		refused bool
	}{
		{"none given", nil, false},
		{"the chain's root", chain[len(chain)-1:], false},
		{"the issuing CA itself", chain[:1], false},
		{"another PKI's root and ours", []*x509.Certificate{foreign, chain[len(chain)-1]}, false},
		{"another PKI's root", []*x509.Certificate{foreign}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := h.svc.chainsToDevice(tc.anchors)
			if (err != nil) != tc.refused {
				t.Fatalf("err = %v, refused want %v", err, tc.refused)
			}
			if tc.refused && (!errors.Is(err, ErrPrecondition) || !strings.Contains(err.Error(), "nothing was issued")) {
				t.Fatalf("err = %v, want a precondition saying nothing was issued", err)
			}
		})
	}
}
