package piv

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestDelegatedResponderStatus: a delegated OCSP responder's certificate
// without id-pkix-ocsp-nocheck is itself checked on its issuer's CRL: a
// revoked responder (its key compromised) vouches for no card, and one
// whose status cannot be found fails the answer (the card's CRL is asked
// instead). With nocheck, or signed by the issuer itself, nothing is
// fetched.
func TestDelegatedResponderStatus(t *testing.T) {
	now := time.Now()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "issuing CA"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour)}
	der, _ := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	ca, _ := x509.ParseCertificate(der)

	var mu sync.Mutex // the handler runs beside the test
	var revokedSerials []*big.Int
	fetches := 0
	count := func() int { mu.Lock(); defer mu.Unlock(); return fetches }
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		fetches++
		var entries []x509.RevocationListEntry
		for _, s := range revokedSerials {
			entries = append(entries, x509.RevocationListEntry{SerialNumber: s, RevocationTime: now.Add(-time.Minute)})
		}
		tmpl := &x509.RevocationList{Number: big.NewInt(int64(fetches)), ThisUpdate: now.Add(-time.Minute),
			NextUpdate: now.Add(time.Hour), RevokedCertificateEntries: entries}
		if r.URL.Path == "/part.crl" {
			// A partition (its IDP names its URL) that lists nothing.
			tmpl.RevokedCertificateEntries = nil
			tmpl.ExtraExtensions = []pkix.Extension{{Id: asn1.ObjectIdentifier{2, 5, 29, 28}, Critical: true,
				Value: idp([]string{"http://" + r.Host + "/part.crl"}, nil)}}
		}
		crl, err := x509.CreateRevocationList(rand.Reader, tmpl, ca, caKey)
		if err != nil {
			t.Error(err)
		}
		w.Write(crl)
	}))
	defer srv.Close()

	serial := int64(10)
	responder := func(noCheck bool, dp []string) *x509.Certificate {
		serial++
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "responder"}, NotBefore: now.Add(-time.Hour),
			NotAfter: now.Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageOCSPSigning}, CRLDistributionPoints: dp}
		if noCheck {
			tmpl.ExtraExtensions = []pkix.Extension{{Id: asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 48, 1, 5}, Value: []byte{0x05, 0x00}}}
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, k.Public(), caKey)
		if err != nil {
			t.Fatal(err)
		}
		c, _ := x509.ParseCertificate(der)
		return c
	}
	v, err := NewVerifier(Options{Roots: x509.NewCertPool(), Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	crlURL := []string{srv.URL + "/ca.crl"}

	good := responder(false, crlURL)
	if err := v.status.checkDelegatedStatus(ctx, good, ca, nil); err != nil {
		t.Fatalf("a responder in good standing: %v", err)
	}
	bad := responder(false, crlURL)
	mu.Lock()
	revokedSerials = append(revokedSerials, bad.SerialNumber)
	mu.Unlock()
	v2, _ := NewVerifier(Options{Roots: x509.NewCertPool(), Now: func() time.Time { return now }}) // no cached CRL
	if err := v2.status.checkDelegatedStatus(ctx, bad, ca, nil); err == nil || !strings.Contains(err.Error(), "revoked") {
		t.Fatalf("a revoked responder: %v, want refused as revoked", err)
	}
	if err := v2.status.checkDelegatedStatus(ctx, responder(false, nil), ca, nil); err == nil || !strings.Contains(err.Error(), "status is unknown") {
		t.Fatalf("a responder without nocheck or CRL: %v, want its status unknown", err)
	}
	// A responder certificate that names no CRL is looked up on the
	// card's CRL (the same issuer's).
	card := &x509.Certificate{CRLDistributionPoints: crlURL}
	if err := v2.status.checkDelegatedStatus(ctx, responder(false, nil), ca, card); err != nil {
		t.Fatalf("a responder without a CRL of its own, on the card's: %v", err)
	}
	quiet := responder(false, nil)
	mu.Lock()
	revokedSerials = append(revokedSerials, quiet.SerialNumber)
	mu.Unlock()
	v3, _ := NewVerifier(Options{Roots: x509.NewCertPool(), Now: func() time.Time { return now }})
	if err := v3.status.checkDelegatedStatus(ctx, quiet, ca, card); err == nil || !strings.Contains(err.Error(), "revoked") {
		t.Fatalf("a revoked responder without a CRL of its own, on the card's CRL: %v, want refused as revoked", err)
	}
	// The card's CRL is a partition: it covers the card's distribution
	// point, not a responder certificate that names none (only the
	// complete CRL does, RFC 5280 §6.3.3). Its silence is not good status.
	partCard := &x509.Certificate{CRLDistributionPoints: []string{srv.URL + "/part.crl"}}
	if err := v3.status.checkDelegatedStatus(ctx, quiet, ca, partCard); err == nil || !strings.Contains(err.Error(), "not a complete CRL") {
		t.Fatalf("a responder without a CRL of its own, on the card's partitioned CRL: %v, want its status unknown", err)
	}
	before := count()
	if err := v2.status.checkDelegatedStatus(ctx, responder(true, nil), ca, nil); err != nil {
		t.Fatalf("a responder with nocheck: %v", err)
	}
	if err := v2.status.checkDelegatedStatus(ctx, ca, ca, nil); err != nil {
		t.Fatalf("the issuer itself: %v", err)
	}
	if n := count(); n != before {
		t.Fatalf("%d CRL fetches for nocheck and the issuer itself", n-before)
	}
}
