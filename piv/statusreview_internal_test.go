package piv

// Tests from an outside review of card status checking: each failed
// before its fix.

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"
)

// statusCard issues a PIV Authentication certificate under ca.
func statusCard(t *testing.T, pki *testPKI, ca *x509.Certificate, caKey any, serial int64, base string) *x509.Certificate {
	t.Helper()
	authPolicy, _ := x509.OIDFromASN1OID(PolicyCommonAuthentication)
	san, err := MarshalSAN(testSAN(t))
	if err != nil {
		t.Fatal(err)
	}
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "card"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtraExtensions: []pkix.Extension{san},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, Policies: []x509.OID{authPolicy},
		OCSPServer: []string{base + "/ocsp"}, CRLDistributionPoints: []string{base + "/" + ca.Subject.CommonName + ".crl"}}
	tmpl.NotBefore, tmpl.NotAfter = pki.now.Add(-time.Hour), pki.now.Add(time.Hour)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, k.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c
}

// TestOCSPCacheKeyedByIssuer: two issuing CAs that share one key under
// different names (a CA renamed or re-certified with its key kept). Card A
// (CA One, serial 77) is good; card B (CA Two, serial 77) is revoked by CA
// Two's responder. The OCSP cache and shared fetches were keyed by the
// issuer's key and the serial, so B was answered from A's cached "good".
func TestOCSPCacheKeyedByIssuer(t *testing.T) {
	now := time.Now()
	pki := newTestPKI(t, now)
	srv := httptest.NewUnstartedServer(nil)
	base := "http://" + srv.Listener.Addr().String()
	anyPolicy, _ := x509.OIDFromInts([]uint64{2, 5, 29, 32, 0})
	rootKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rootT := &x509.Certificate{Subject: pkix.Name{CommonName: "root"}, IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	root := pki.issue(rootT, rootT, rootKey.Public(), rootKey)
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader) // one key, two names
	mkCA := func(name string) *x509.Certificate {
		return pki.issue(&x509.Certificate{Subject: pkix.Name{CommonName: name}, IsCA: true, BasicConstraintsValid: true,
			KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, Policies: []x509.OID{anyPolicy},
			CRLDistributionPoints: []string{base + "/root.crl"}}, root, caKey.Public(), rootKey)
	}
	caOne, caTwo := mkCA("ca-one"), mkCA("ca-two")
	cardA := statusCard(t, pki, caOne, caKey, 77, base)
	cardB := statusCard(t, pki, caTwo, caKey, 77, base)
	crl := func(issuer *x509.Certificate, key crypto.Signer, revoked ...*big.Int) []byte {
		var e []x509.RevocationListEntry
		for _, s := range revoked {
			e = append(e, x509.RevocationListEntry{SerialNumber: s, RevocationTime: now.Add(-time.Minute)})
		}
		der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{Number: big.NewInt(1), ThisUpdate: now.Add(-time.Minute),
			NextUpdate: now.Add(time.Hour), RevokedCertificateEntries: e}, issuer, key)
		if err != nil {
			t.Error(err)
		}
		return der
	}
	var mu sync.Mutex
	var ocspCalls int
	srv.Config = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/root.crl":
			w.Write(crl(root, rootKey))
		case "/ca-one.crl":
			w.Write(crl(caOne, caKey))
		case "/ca-two.crl":
			w.Write(crl(caTwo, caKey, big.NewInt(77)))
		case "/ocsp":
			mu.Lock()
			ocspCalls++
			mu.Unlock()
			body := make([]byte, 4096)
			n, _ := r.Body.Read(body)
			req, err := ocsp.ParseRequest(body[:n])
			if err != nil {
				http.Error(w, err.Error(), 400)
				return
			}
			issuer, st := caOne, ocsp.Good
			h := req.HashAlgorithm.New()
			h.Write(caTwo.RawSubject)
			if string(h.Sum(nil)) == string(req.IssuerNameHash) {
				issuer, st = caTwo, ocsp.Revoked
			}
			der, _ := ocsp.CreateResponse(issuer, issuer, ocsp.Response{Status: st, SerialNumber: req.SerialNumber, RevokedAt: now.Add(-time.Minute),
				ThisUpdate: now.Add(-time.Minute), NextUpdate: now.Add(time.Hour), IssuerHash: req.HashAlgorithm}, caKey)
			w.Write(der)
		}
	})}
	srv.Start()
	defer srv.Close()
	roots := x509.NewCertPool()
	roots.AddCert(root)

	// Control: a fresh verifier refuses B.
	v0, _ := NewVerifier(Options{Roots: roots, Intermediates: []*x509.Certificate{caOne, caTwo}, Now: func() time.Time { return now }})
	if _, err := v0.VerifyPIVAuth(context.Background(), cardB, nil); !errors.Is(err, ErrRevoked) {
		t.Fatalf("control: card B on a fresh verifier: %v, want ErrRevoked", err)
	}
	v, _ := NewVerifier(Options{Roots: roots, Intermediates: []*x509.Certificate{caOne, caTwo}, Now: func() time.Time { return now }})
	if _, err := v.VerifyPIVAuth(context.Background(), cardA, nil); err != nil {
		t.Fatalf("card A: %v", err)
	}
	res, err := v.VerifyPIVAuth(context.Background(), cardB, nil)
	if err == nil {
		t.Fatalf("revoked card B (ca-two, serial 77) admitted with status from %q: A's cached OCSP answer (ocsp calls: %d)", res.StatusSource, ocspCalls)
	}
}

// TestSHA1StatusSignatureRefused: an OCSP response (or, the responder
// answering nothing, a CRL) signed with sha1WithRSAEncryption by the
// issuing CA was taken (COMMON §7.1.3 / SP 800-78 forbid SHA-1 for status
// signing; Certificate.CheckSignature, which x/crypto/ocsp and
// RevocationList.CheckSignatureFrom use, allows SHA-1).
func TestSHA1StatusSignatureRefused(t *testing.T) {
	now := time.Now()
	for _, tc := range []struct {
		name string
		path string // what the RSA CA signs over SHA-1
	}{{"OCSP", "/ocsp"}, {"CRL", "/rsa-ca.crl"}} {
		t.Run(tc.name, func(t *testing.T) {
			pki := newTestPKI(t, now)
			srv := httptest.NewUnstartedServer(nil)
			base := "http://" + srv.Listener.Addr().String()
			anyPolicy, _ := x509.OIDFromInts([]uint64{2, 5, 29, 32, 0})
			rootKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			rootT := &x509.Certificate{Subject: pkix.Name{CommonName: "root"}, IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
			root := pki.issue(rootT, rootT, rootKey.Public(), rootKey)
			caKey, _ := rsa.GenerateKey(rand.Reader, 2048)
			caT := &x509.Certificate{SerialNumber: big.NewInt(500), Subject: pkix.Name{CommonName: "rsa-ca"}, IsCA: true, BasicConstraintsValid: true,
				KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, Policies: []x509.OID{anyPolicy},
				CRLDistributionPoints: []string{base + "/root.crl"}, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour)}
			caDER, err := x509.CreateCertificate(rand.Reader, caT, root, caKey.Public(), rootKey)
			if err != nil {
				t.Fatal(err)
			}
			ca, _ := x509.ParseCertificate(caDER)
			card := statusCard(t, pki, ca, caKey, 91, base)
			srv.Config = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				var der []byte
				var err error
				switch {
				case r.URL.Path == "/root.crl":
					der, err = x509.CreateRevocationList(rand.Reader, &x509.RevocationList{Number: big.NewInt(1), ThisUpdate: now.Add(-time.Minute),
						NextUpdate: now.Add(time.Hour)}, root, rootKey)
				case r.URL.Path == tc.path && tc.path == "/ocsp":
					der, err = ocsp.CreateResponse(ca, ca, ocsp.Response{Status: ocsp.Good, SerialNumber: card.SerialNumber,
						ThisUpdate: now.Add(-time.Minute), NextUpdate: now.Add(time.Hour), SignatureAlgorithm: x509.SHA1WithRSA}, caKey)
				case r.URL.Path == tc.path:
					der, err = x509.CreateRevocationList(rand.Reader, &x509.RevocationList{Number: big.NewInt(1), ThisUpdate: now.Add(-time.Minute),
						NextUpdate: now.Add(time.Hour), SignatureAlgorithm: x509.SHA1WithRSA}, ca, caKey)
				default:
					http.NotFound(w, r)
					return
				}
				if err != nil {
					t.Error(err)
				}
				w.Write(der)
			})}
			srv.Start()
			defer srv.Close()
			roots := x509.NewCertPool()
			roots.AddCert(root)
			v, _ := NewVerifier(Options{Roots: roots, Intermediates: []*x509.Certificate{ca}, Now: func() time.Time { return now }})
			if res, err := v.VerifyPIVAuth(context.Background(), card, nil); err == nil {
				t.Fatalf("a SHA-1-signed %s was taken as the card's status (%s)", tc.name, res.StatusSource)
			}
		})
	}
}

// TestDNSubtreesPrepared: RFC 5280 §7.1 compares names after RFC 4518
// preparation (NFKC, soft hyphen mapped to nothing). withinDN folded case
// and spaces only, so a subject a constrained CA may not certify under an
// excluded subtree passed when spelled with fullwidth letters or a soft
// hyphen.
func TestDNSubtreesPrepared(t *testing.T) {
	base := pkix.Name{Country: []string{"US"}, Organization: []string{"Evil Agency"}}.ToRDNSequence()
	for _, org := range []string{"Ｅvil Agency", "E\u00advil Agency"} {
		name := pkix.Name{Country: []string{"US"}, Organization: []string{org}, CommonName: "x"}.ToRDNSequence()
		if !withinDN(name, base) {
			t.Errorf("%q is not taken as within the excluded subtree O=Evil Agency", org)
		}
	}
}
