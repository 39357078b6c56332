package issuance

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"
)

// TestOCSPResponseEncoding: the responses credgw encodes itself read back
// with x/crypto/ocsp (signature checked against the CA) for every CA key
// type and CertID hash, good and revoked (with and without a reason), with
// the producedAt they were given.
func TestOCSPResponseEncoding(t *testing.T) {
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	p521, _ := ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	now := time.Now().Truncate(time.Second).UTC()
	for name, key := range map[string]crypto.Signer{"p256": p256, "p384": p384, "p521": p521, "rsa": rsaKey} {
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "OCSP test CA " + name}, IsCA: true,
			BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour)}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
		if err != nil {
			t.Fatal(err)
		}
		ca, _ := x509.ParseCertificate(der)
		for _, h := range []crypto.Hash{crypto.SHA1, crypto.SHA256, crypto.SHA384, crypto.SHA512} {
			for _, r := range []ocsp.Response{
				{Status: ocsp.Good},
				{Status: ocsp.Revoked, RevokedAt: now.Add(-time.Minute), RevocationReason: ocsp.KeyCompromise},
				{Status: ocsp.Revoked, RevokedAt: now.Add(-time.Minute), RevocationReason: ocsp.Unspecified},
			} {
				serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
				r.SerialNumber, r.IssuerHash = serial, h
				r.ThisUpdate, r.NextUpdate = now.Add(-time.Minute), now.Add(4*time.Hour)
				b, err := createOCSPResponse(ca, r, now, key)
				if err != nil {
					t.Fatalf("%s %v: %v", name, h, err)
				}
				got, err := ocsp.ParseResponse(b, ca)
				if err != nil {
					t.Fatalf("%s %v status %d: %v", name, h, r.Status, err)
				}
				if got.Status != r.Status || got.SerialNumber.Cmp(serial) != 0 || !got.ProducedAt.Equal(now) || !got.ThisUpdate.Equal(r.ThisUpdate) ||
					!got.NextUpdate.Equal(r.NextUpdate) || got.IssuerHash != h || !got.RevokedAt.Equal(r.RevokedAt) || got.RevocationReason != r.RevocationReason {
					t.Fatalf("%s %v: read back %+v, want %+v", name, h, got, r)
				}
			}
		}
	}
}
