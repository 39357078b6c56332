package piv

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"testing"
	"time"
)

// TestUntrustedPathNotRebuilt: a chain that does not verify costs one path
// build, not one per call. The TLS client chain is the caller's (a leaf and
// any intermediates it likes, named as the trusted CA), and every call on
// its connection is identified before any rate limit: before, each call
// rebuilt the path (up to 100 signature checks by crypto/x509's bound).
// More intermediates than any real PIV path has are refused unbuilt.
func TestUntrustedPathNotRebuilt(t *testing.T) {
	pki := newTestPKI(t, time.Now())
	issue, ca := pki.issue, pki.selfSignedCA
	root, _ := ca("the trusted root")
	fake, fakeKey := ca("the trusted root") // the same name, another key
	cardKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	authOID, _ := x509.OIDFromASN1OID(PolicyCommonAuthentication)
	card := issue(&x509.Certificate{Subject: pkix.Name{CommonName: "a card of its own making"}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, Policies: []x509.OID{authOID}}, fake, cardKey.Public(), fakeKey)
	roots := x509.NewCertPool()
	roots.AddCert(root)
	v, err := NewVerifier(Options{Roots: roots, OCSPTimeout: time.Second, CRLTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i := range 5 {
		if _, err := v.VerifyPIVAuth(ctx, card, []*x509.Certificate{fake}); !errors.Is(err, ErrUntrusted) {
			t.Fatalf("call %d: %v, want ErrUntrusted", i+1, err)
		}
	}
	if n := v.pathBuilds.Load(); n != 1 {
		t.Fatalf("5 calls with one untrusted chain built the path %d times, want 1", n)
	}
	many := make([]*x509.Certificate, maxPresentedIntermediates+1)
	for i := range many {
		many[i], _ = ca("the trusted root")
	}
	if _, err := v.VerifyPIVAuth(ctx, card, many); !errors.Is(err, ErrMalformed) {
		t.Fatalf("%d intermediates: %v, want ErrMalformed", len(many), err)
	}
	if _, err := v.VerifyDigitalSignature(ctx, card, card, many); !errors.Is(err, ErrMalformed) {
		t.Fatalf("%d intermediates with a Digital Signature certificate: %v, want ErrMalformed", len(many), err)
	}
	if n := v.pathBuilds.Load(); n != 1 {
		t.Fatalf("too many intermediates were built into paths (%d builds)", n)
	}
}

// TestPresentedCAsBounded: the CA certificates a caller presents with its
// card are the caller's own making. Eight sharing the leaf's issuer name
// (each another candidate issuer: crypto/x509 tries them all, up to 100
// signature checks) with 16384-bit RSA keys cost about 60 ms of CPU per
// sign-in, before any rate limit, and again in recordRefusal's Chains.
// Presented CAs must now have keys a PIV path has (RSA 2048 to 4096,
// ECDSA P-256, P-384, P-521) and at most two of a subject (a root both
// self-signed and cross-certified); others are refused unbuilt.
func TestPresentedCAsBounded(t *testing.T) {
	pki := newTestPKI(t, time.Now())
	root, rootKey := pki.selfSignedCA("the trusted root")
	roots := x509.NewCertPool()
	roots.AddCert(root)
	v, err := NewVerifier(Options{Roots: roots, OCSPTimeout: time.Second, CRLTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	authOID, _ := x509.OIDFromASN1OID(PolicyCommonAuthentication)
	subCA := func(name string, pub any) *x509.Certificate {
		return pki.issue(&x509.Certificate{Subject: pkix.Name{CommonName: name}, IsCA: true, BasicConstraintsValid: true,
			KeyUsage: x509.KeyUsageCertSign}, root, pub, rootKey)
	}
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	issuing := subCA("the issuing CA", caKey.Public())
	cardKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	card := pki.issue(&x509.Certificate{Subject: pkix.Name{CommonName: "a card"}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, Policies: []x509.OID{authOID}}, issuing, cardKey.Public(), caKey)
	// A huge RSA key needs no private half to be presented.
	b := make([]byte, 1024)
	rand.Read(b)
	b[0] |= 0x80
	b[len(b)-1] |= 1
	n := new(big.Int).SetBytes(b)
	huge := subCA("the issuing CA", &rsa.PublicKey{N: n, E: 65537})
	ed, _, _ := ed25519.GenerateKey(rand.Reader)
	ctx := context.Background()
	for _, tc := range []struct {
		name      string
		presented []*x509.Certificate
	}{
		{"an RSA-8192 CA", []*x509.Certificate{huge}},
		{"an Ed25519 CA", []*x509.Certificate{subCA("the issuing CA", ed)}},
		{"three CAs of one name", []*x509.Certificate{issuing, subCA("the issuing CA", caKey.Public()), subCA("the issuing CA", caKey.Public())}},
	} {
		before := v.pathBuilds.Load()
		if _, err := v.VerifyPIVAuth(ctx, card, tc.presented); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", tc.name, err)
		}
		if v.Chains(card, tc.presented) {
			t.Errorf("%s: Chains took it", tc.name)
		}
		if n := v.pathBuilds.Load() - before; n != 0 {
			t.Errorf("%s: %d paths built", tc.name, n)
		}
	}
	// The honest chain still builds, and so does a bundle with the root
	// both self-signed and cross-certified (two of one name), or a CA
	// sent twice.
	if !v.Chains(card, []*x509.Certificate{issuing}) {
		t.Fatal("the card and its issuing CA: Chains refused them")
	}
	bridgeKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	bridge := pki.issue(&x509.Certificate{Subject: pkix.Name{CommonName: "a bridge"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}, root, bridgeKey.Public(), rootKey)
	cross := pki.issue(&x509.Certificate{Subject: root.Subject, IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign},
		bridge, rootKey.Public(), bridgeKey)
	for _, bundle := range [][]*x509.Certificate{{issuing, root, cross}, {issuing, issuing}, {issuing, root, root, cross}} {
		if err := checkPresented(bundle); err != nil {
			t.Errorf("an honest bundle of %d: %v", len(bundle), err)
		}
		if !v.Chains(card, bundle) {
			t.Errorf("an honest bundle of %d: Chains refused it", len(bundle))
		}
	}
}
