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
	serial := int64(100)
	issue := func(tmpl, parent *x509.Certificate, pub any, key *ecdsa.PrivateKey) *x509.Certificate {
		serial++
		if tmpl.SerialNumber == nil {
			tmpl.SerialNumber = big.NewInt(serial)
		}
		tmpl.NotBefore, tmpl.NotAfter = now.Add(-time.Hour), now.Add(time.Hour)
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, key)
		if err != nil {
			t.Fatal(err)
		}
		c, _ := x509.ParseCertificate(der)
		return c
	}
	ca := func(name string) (*x509.Certificate, *ecdsa.PrivateKey) {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{Subject: pkix.Name{CommonName: name}, IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
		return issue(tmpl, tmpl, k.Public(), k), k
	}
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
// and what it reads from a response it accepted reads the same again.
func FuzzOCSPCertIDs(f *testing.F) {
	f.Add([]byte{0x30, 0x03, 0x0a, 0x01, 0x00})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, der []byte) {
		ids, err := ocspCertIDs(der)
		if err != nil {
			return
		}
		again, err := ocspCertIDs(der)
		if err != nil || len(again) != len(ids) {
			t.Fatalf("read %d CertIDs, then %d (%v)", len(ids), len(again), err)
		}
	})
}
