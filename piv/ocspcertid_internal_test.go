package piv

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"
)

// TestOCSPCertIDNamesTheIssuer: an OCSP answer counts for a card only if
// its CertID names the card's issuer (name and key hashes), under SHA-1 or
// SHA-256. A responder that two CAs delegate to signs a "good" answer about
// the card's serial under the other CA: x/crypto/ocsp matches by serial
// alone and accepts it; credgw must not.
func TestOCSPCertIDNamesTheIssuer(t *testing.T) {
	now := time.Now()
	pki := newTestPKI(t, now)
	issue, ca := pki.issue, pki.selfSignedCA
	cardCA, cardCAKey := ca("the card's CA")
	otherCA, _ := ca("another CA")
	rk, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	responder := issue(&x509.Certificate{Subject: pkix.Name{CommonName: "shared responder"}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageOCSPSigning}},
		cardCA, rk.Public(), cardCAKey)
	ck, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	card := issue(&x509.Certificate{SerialNumber: big.NewInt(0x5eed), Subject: pkix.Name{CommonName: "card"}}, cardCA, ck.Public(), cardCAKey)
	answer := func(about *x509.Certificate, h crypto.Hash, serial *big.Int) []byte {
		der, err := ocsp.CreateResponse(about, responder, ocsp.Response{Status: ocsp.Good, SerialNumber: serial, ThisUpdate: now,
			NextUpdate: now.Add(time.Hour), Certificate: responder, IssuerHash: h}, rk)
		if err != nil {
			t.Fatal(err)
		}
		return der
	}
	for _, tc := range []struct {
		name string
		der  []byte
		want string // "" for accepted
	}{
		{"the card's issuer, SHA-1", answer(cardCA, crypto.SHA1, card.SerialNumber), ""},
		{"the card's issuer, SHA-256", answer(cardCA, crypto.SHA256, card.SerialNumber), ""},
		{"the serial under another CA", answer(otherCA, crypto.SHA1, card.SerialNumber), "another issuer"},
		{"the serial under another CA, SHA-256", answer(otherCA, crypto.SHA256, card.SerialNumber), "another issuer"},
		{"another serial", answer(cardCA, crypto.SHA1, big.NewInt(7)), "no answer"},
		{"not an OCSP response", []byte{0x30, 0x03, 0x0a, 0x01, 0x00}, "malformed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.want != "" && tc.want != "malformed" && tc.want != "no answer" {
				// What x/crypto/ocsp alone says: accepted.
				if _, err := ocsp.ParseResponseForCert(tc.der, card, cardCA); err != nil {
					t.Fatalf("the library refuses it already: %v", err)
				}
			}
			err := checkOCSPCertID(tc.der, card, cardCA)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want one saying %q", err, tc.want)
			}
		})
	}
}

// FuzzOCSPCertIDs: the CertID reader takes any bytes without panicking,
// and where both it and x/crypto/ocsp read a response, the serial the
// library matched is among its CertIDs (differential against the
// library). It may refuse what the library takes: the library's
// encoding/asn1 accepts some non-DER forms (a responderID under an
// application tag, say), and a refused answer only sends the check to the
// CRL, failing closed. The seeds are real responses, which both read.
func FuzzOCSPCertIDs(f *testing.F) {
	f.Add([]byte{0x30, 0x03, 0x0a, 0x01, 0x00})
	f.Add([]byte{})
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "ca"}, IsCA: true, BasicConstraintsValid: true,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageCertSign}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Public(), k)
	ca, _ := x509.ParseCertificate(der)
	for _, h := range []crypto.Hash{crypto.SHA1, crypto.SHA256} {
		resp, err := ocsp.CreateResponse(ca, ca, ocsp.Response{Status: ocsp.Good, SerialNumber: big.NewInt(42), ThisUpdate: time.Now(),
			NextUpdate: time.Now().Add(time.Hour), IssuerHash: h}, k)
		if err != nil {
			f.Fatal(err)
		}
		if _, err := ocspCertIDs(resp); err != nil {
			f.Fatalf("a response x/crypto/ocsp made (%v) is not read: %v", h, err)
		}
		f.Add(resp)
	}
	f.Fuzz(func(t *testing.T, der []byte) {
		ids, err := ocspCertIDs(der)
		lib, lerr := ocsp.ParseResponse(der, nil)
		if lerr != nil || err != nil {
			return
		}
		found := false
		for _, id := range ids {
			found = found || id.serial.Cmp(lib.SerialNumber) == 0
		}
		if !found {
			t.Fatalf("no CertID for the serial %v the library read", lib.SerialNumber)
		}
	})
}
