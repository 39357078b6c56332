package issuance

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	crand "crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"
)

// rsaKeyE3 builds an RSA-2048 key with public exponent 3 (Go's generator
// always uses 65537).
func rsaKeyE3(t *testing.T) *rsa.PrivateKey {
	t.Helper()
	e := big.NewInt(3)
	one := big.NewInt(1)
	for {
		p, _ := crand.Prime(crand.Reader, 1024)
		q, _ := crand.Prime(crand.Reader, 1024)
		phi := new(big.Int).Mul(new(big.Int).Sub(p, one), new(big.Int).Sub(q, one))
		d := new(big.Int).ModInverse(e, phi)
		if d == nil || p.Cmp(q) == 0 {
			continue
		}
		k := &rsa.PrivateKey{PublicKey: rsa.PublicKey{N: new(big.Int).Mul(p, q), E: 3}, D: d, Primes: []*big.Int{p, q}}
		if k.N.BitLen() != 2048 {
			continue
		}
		k.Precompute()
		return k
	}
}

// TestCSRRefusals: every CSR refusal path, each a clear ErrBadRequest, and
// none leaves an intent behind.
func TestCSRRefusals(t *testing.T) {
	ctx := context.Background()
	id := identity(t)
	cardKey := p256(t)
	id.CardKey = cardKey.Public()
	reused := p256(t)
	issue(t, DerivedPIVAuth, reused, identity(t)) // certified once already
	twice := p256(t)
	rsa1024, _ := rsa.GenerateKey(crand.Reader, 1024)
	p224, _ := ecdsa.GenerateKey(elliptic.P224(), crand.Reader)
	badSig := newCSR(t, p256(t))
	badSig.Signature[len(badSig.Signature)-3] ^= 0xff
	otherKeyCSR := newCSR(t, p256(t))
	otherKeyCSR.PublicKey = p256(t).Public() // signature no longer matches the key

	tests := []struct {
		name   string
		csr    *x509.CertificateRequest
		others []crypto.PublicKey
		want   string
	}{
		{"bad signature", badSig, nil, "signature does not verify"},
		{"key swapped after signing", otherKeyCSR, nil, "signature does not verify"},
		{"RSA-1024", newCSR(t, rsa1024), nil, "RSA-1024 is not allowed"},
		{"e=3", csrE3(t), nil, "exponent 3 is not allowed"},
		{"P-224", newCSR(t, p224), nil, "P-224 is not allowed"},
		{"the card's own key", newCSR(t, cardKey), nil, "PIV card's own key"},
		{"a key certified before", newCSR(t, reused), nil, "certified this key before"},
		{"the same key for two profiles", newCSR(t, twice), []crypto.PublicKey{twice.Public()}, "another profile"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := testCA.Issue(ctx, Request{Profile: DigitalSignature, CSR: tc.csr, Identity: id, OtherKeys: tc.others})
			if !errors.Is(err, ErrBadRequest) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want ErrBadRequest saying %q", err, tc.want)
			}
		})
	}
}

func csrE3(t *testing.T) *x509.CertificateRequest {
	k := rsaKeyE3(t)
	der, err := x509.CreateCertificateRequest(crand.Reader, &x509.CertificateRequest{}, k)
	if err != nil {
		// Go refuses to sign with e=3: build the CSR with a good key and
		// swap the key in; checkCSR must refuse the exponent whichever check
		// comes first, so test allowedKey directly too.
		if aerr := allowedKey(&k.PublicKey); aerr == nil || !strings.Contains(aerr.Error(), "exponent 3") {
			t.Fatalf("allowedKey(e=3) = %v", aerr)
		}
		t.Skipf("Go will not sign a CSR with e=3 (%v); allowedKey refuses it", err)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		t.Fatal(err)
	}
	return csr
}

// TestCrashBetweenSignAndRecord: the issuer dies after the CA signed and
// before the certificate is recorded. Nothing is returned; the intent row
// with the serial remains, and it is revocable: CRL and OCSP cover it.
func TestCrashBetweenSignAndRecord(t *testing.T) {
	ctx := context.Background()
	cfg := testCA.cfg
	var crashed string
	cfg.afterSign = func(serial string) error {
		crashed = serial
		return errors.New("simulated crash: process killed")
	}
	ca, err := NewCA(cfg)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ca.Issue(ctx, Request{Profile: DerivedPIVAuth, CSR: newCSR(t, p256(t)), Identity: identity(t)})
	if err == nil || got != nil {
		t.Fatal("a certificate came out of a crashed issuance")
	}
	rec, err := testStore.Certificate(ctx, crashed)
	if err != nil {
		t.Fatalf("no intent row for serial %s: %v", crashed, err)
	}
	if rec.Status != "intent" || rec.DER != nil || rec.PersonID == "" || rec.NotAfter.IsZero() {
		t.Fatalf("intent %+v", rec)
	}
	if err := testCA.Revoke(ctx, crashed, 0); err != nil {
		t.Fatalf("revoking the intent: %v", err)
	}
	crl := fetchCRL(t)
	if !crlHas(crl, crashed) {
		t.Fatal("the CRL does not list the crashed issuance")
	}
	if st := ocspStatus(t, crashed); st != "revoked" {
		t.Fatalf("OCSP says %s", st)
	}
}

// TestStaleIntentsRevoked: an intent left by a crash is revoked by the
// sweep (RevokeStaleIntents) and goes on the CRL without anyone asking.
func TestStaleIntentsRevoked(t *testing.T) {
	ctx := context.Background()
	cfg := testCA.cfg
	var crashed string
	cfg.afterSign = func(serial string) error { crashed = serial; return errors.New("killed") }
	ca, err := NewCA(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ca.Issue(ctx, Request{Profile: DerivedPIVAuth, CSR: newCSR(t, p256(t)), Identity: identity(t)}); err == nil {
		t.Fatal("no crash")
	}
	if n, err := testCA.RevokeStaleIntents(ctx, time.Now().Add(-time.Hour)); err != nil || n != 0 {
		t.Fatalf("a fresh intent was revoked: %d %v", n, err)
	}
	n, err := testCA.RevokeStaleIntents(ctx, time.Now().Add(time.Minute))
	if err != nil || n < 1 {
		t.Fatalf("RevokeStaleIntents = %d, %v", n, err)
	}
	if !crlHas(fetchCRL(t), crashed) {
		t.Fatal("the CRL does not list the crashed issuance")
	}
}

// TestNoRSA2048Past2030: a certificate valid after 2030-12-31 is not made
// for an RSA-2048 key (Common Policy §6.1.5); RSA-3072 and P-256 are, and
// RSA-2048 still is for certificates ending before.
func TestNoRSA2048Past2030(t *testing.T) {
	ctx := context.Background()
	cfg := testCA.cfg
	if cfg.Chain[0].NotAfter.Before(time.Date(2031, 7, 1, 0, 0, 0, 0, time.UTC)) {
		t.Skipf("the test issuing CA ends %s, before the certificates this test needs", cfg.Chain[0].NotAfter)
	}
	rsa2048, _ := rsa.GenerateKey(crand.Reader, 2048)
	rsa3072, _ := rsa.GenerateKey(crand.Reader, 3072)
	for _, tc := range []struct {
		name string
		now  time.Time
		key  crypto.Signer
		ok   bool
	}{
		{"RSA-2048 ending 2031", time.Date(2030, 6, 1, 0, 0, 0, 0, time.UTC), rsa2048, false},
		{"RSA-2048 ending 2030", time.Date(2029, 12, 1, 0, 0, 0, 0, time.UTC), rsa2048, true},
		{"RSA-3072 ending 2031", time.Date(2030, 6, 1, 0, 0, 0, 0, time.UTC), rsa3072, true},
		{"P-256 ending 2031", time.Date(2030, 6, 1, 0, 0, 0, 0, time.UTC), p256(t), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := cfg
			c.Now = func() time.Time { return tc.now }
			ca, err := NewCA(c)
			if err != nil {
				t.Fatal(err)
			}
			_, err = ca.Issue(ctx, Request{Profile: DigitalSignature, CSR: newCSR(t, tc.key), Identity: identity(t)})
			switch {
			case tc.ok && err != nil:
				t.Fatalf("refused: %v", err)
			case !tc.ok && (!errors.Is(err, ErrBadRequest) || !strings.Contains(err.Error(), "past 2030-12-31")):
				t.Fatalf("err = %v, want ErrBadRequest saying RSA-2048 may not be certified past 2030-12-31", err)
			}
		})
	}
}
