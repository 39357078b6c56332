package piv

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"
)

// TestOCSPAnswersCheckedEndToEnd: through VerifyPIVAuth, an OCSP answer
// whose CertID names another CA, or signed by a delegated responder whose
// own certificate its issuer revoked, is not the card's status: the card's
// CRL decides (StatusSource "crl"). A proper answer is taken ("ocsp").
// (The unit tests of checkOCSPCertID and checkDelegatedStatus would pass
// with the calls to them removed from the OCSP fetch; this one would not.)
func TestOCSPAnswersCheckedEndToEnd(t *testing.T) {
	now := time.Now()
	var mu sync.Mutex // what the responder serves; the handler runs beside the test
	pki := newTestPKI(t, now)
	next := func() *big.Int { return big.NewInt(pki.serial.Add(1) + 1) }
	var srvURL string
	srv := httptest.NewUnstartedServer(nil)
	srvURL = "http://" + srv.Listener.Addr().String()
	issue := pki.issue
	anyPolicy, _ := x509.OIDFromInts([]uint64{2, 5, 29, 32, 0})
	authPolicy, _ := x509.OIDFromASN1OID(PolicyCommonAuthentication)
	rootKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rootT := &x509.Certificate{Subject: pkix.Name{CommonName: "root"}, IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	root := issue(rootT, rootT, rootKey.Public(), rootKey)
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ca := issue(&x509.Certificate{Subject: pkix.Name{CommonName: "issuing CA"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, Policies: []x509.OID{anyPolicy}, CRLDistributionPoints: []string{srvURL + "/root.crl"}},
		root, caKey.Public(), rootKey)
	otherKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	other := issue(&x509.Certificate{Subject: pkix.Name{CommonName: "another CA"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}, root, otherKey.Public(), rootKey)
	respKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	responder := issue(&x509.Certificate{Subject: pkix.Name{CommonName: "delegated responder"}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageOCSPSigning}},
		ca, respKey.Public(), caKey)
	cardKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	san, err := MarshalSAN(testSAN(t))
	if err != nil {
		t.Fatal(err)
	}
	card := issue(&x509.Certificate{Subject: pkix.Name{CommonName: "card"}, KeyUsage: x509.KeyUsageDigitalSignature, ExtraExtensions: []pkix.Extension{san},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, Policies: []x509.OID{authPolicy},
		OCSPServer: []string{srvURL + "/ocsp"}, CRLDistributionPoints: []string{srvURL + "/ca.crl"}}, ca, cardKey.Public(), caKey)

	var about *x509.Certificate // the CA the OCSP answer's CertID names
	var revokedByCA []*big.Int
	crl := func(issuer *x509.Certificate, key *ecdsa.PrivateKey, revoked []*big.Int) []byte {
		var entries []x509.RevocationListEntry
		for _, s := range revoked {
			entries = append(entries, x509.RevocationListEntry{SerialNumber: s, RevocationTime: now.Add(-time.Minute)})
		}
		der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{Number: next(), ThisUpdate: now.Add(-time.Minute),
			NextUpdate: now.Add(time.Hour), RevokedCertificateEntries: entries}, issuer, key)
		if err != nil {
			t.Error(err)
		}
		return der
	}
	srv.Config = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		switch r.URL.Path {
		case "/root.crl":
			w.Write(crl(root, rootKey, nil))
		case "/ca.crl":
			w.Write(crl(ca, caKey, revokedByCA))
		case "/ocsp":
			der, err := ocsp.CreateResponse(about, responder, ocsp.Response{Status: ocsp.Good, SerialNumber: card.SerialNumber,
				ThisUpdate: now.Add(-time.Minute), NextUpdate: now.Add(time.Hour), Certificate: responder, IssuerHash: crypto.SHA256}, respKey)
			if err != nil {
				t.Error(err)
			}
			w.Write(der)
		default:
			http.NotFound(w, r)
		}
	})}
	srv.Start()
	defer srv.Close()

	roots := x509.NewCertPool()
	roots.AddCert(root)
	for _, tc := range []struct {
		name    string
		about   *x509.Certificate
		revoked []*big.Int
		want    string
	}{
		{"a proper answer", ca, nil, "ocsp"},
		{"an answer about another CA's serial", other, nil, "crl"},
		{"an answer from a revoked delegated responder", ca, []*big.Int{responder.SerialNumber}, "crl"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mu.Lock()
			about, revokedByCA = tc.about, tc.revoked
			mu.Unlock()
			v, err := NewVerifier(Options{Roots: roots, Intermediates: []*x509.Certificate{ca}, Now: func() time.Time { return now }})
			if err != nil {
				t.Fatal(err)
			}
			res, err := v.VerifyPIVAuth(context.Background(), card, nil)
			if err != nil {
				t.Fatal(err)
			}
			if res.StatusSource != tc.want {
				t.Fatalf("status from %q, want %q", res.StatusSource, tc.want)
			}
		})
	}
}
