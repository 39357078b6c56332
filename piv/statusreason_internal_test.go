package piv

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"
)

// TestRevocationReasonKept: a card's revocation was ErrRevoked and a
// time, whatever the issuer said of why: the linkage check could not tell
// a compromised card key (whoever held it could have enrolled) from a
// card replaced. The reason OCSP or the CRL gives is kept (RevokedError).
func TestRevocationReasonKept(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "reason test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	revokedAt := now.Add(-time.Hour).Truncate(time.Second)
	for _, tc := range []struct {
		name     string
		ocspDown bool
		reason   int
		source   string
	}{
		{"OCSP keyCompromise", false, ocsp.KeyCompromise, "OCSP"},
		{"OCSP superseded", false, ocsp.Superseded, "OCSP"},
		{"CRL keyCompromise", true, ocsp.KeyCompromise, "CRL"},
		{"CRL cACompromise", true, ocsp.CACompromise, "CRL"},
		{"CRL without a reason", true, 0, "CRL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var leaf *x509.Certificate
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				switch {
				case r.URL.Path == "/ocsp" && tc.ocspDown:
					http.Error(w, "down", http.StatusServiceUnavailable)
				case r.URL.Path == "/ocsp":
					der, err := ocsp.CreateResponse(ca, ca, ocsp.Response{Status: ocsp.Revoked, SerialNumber: leaf.SerialNumber,
						RevokedAt: revokedAt, RevocationReason: tc.reason, ThisUpdate: now.Add(-time.Minute), NextUpdate: now.Add(time.Hour)}, key)
					if err != nil {
						http.Error(w, err.Error(), http.StatusInternalServerError)
						return
					}
					w.Write(der)
				default:
					der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{Number: big.NewInt(1),
						RevokedCertificateEntries: []x509.RevocationListEntry{{SerialNumber: leaf.SerialNumber, RevocationTime: revokedAt, ReasonCode: tc.reason}},
						ThisUpdate:                now.Add(-time.Minute), NextUpdate: now.Add(time.Hour)}, ca, key)
					if err != nil {
						http.Error(w, err.Error(), http.StatusInternalServerError)
						return
					}
					w.Write(der)
				}
			}))
			defer srv.Close()
			leafTmpl := &x509.Certificate{SerialNumber: big.NewInt(77), Subject: pkix.Name{CommonName: "card"},
				NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
				OCSPServer: []string{srv.URL + "/ocsp"}, CRLDistributionPoints: []string{srv.URL + "/crl"}}
			leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, ca, key.Public(), key)
			if err != nil {
				t.Fatal(err)
			}
			if leaf, err = x509.ParseCertificate(leafDER); err != nil {
				t.Fatal(err)
			}
			s := newStatusChecker(Options{HTTPClient: srv.Client(), OCSPTimeout: time.Minute, CRLTimeout: time.Minute,
				MaxStatusAge: DefaultMaxStatusAge, Now: time.Now})
			_, err = s.check(context.Background(), leaf, ca)
			var re *RevokedError
			if !errors.Is(err, ErrRevoked) || !errors.As(err, &re) {
				t.Fatalf("status: %v, want a RevokedError", err)
			}
			if re.Reason != tc.reason || re.Source != tc.source || !re.At.Equal(revokedAt) {
				t.Errorf("revoked %+v, want reason %d from %s at %s", re, tc.reason, tc.source, revokedAt)
			}
			if want := tc.reason == ocsp.KeyCompromise || tc.reason == ocsp.CACompromise; re.Compromise() != want {
				t.Errorf("Compromise() = %v, want %v", re.Compromise(), want)
			}
		})
	}
}
