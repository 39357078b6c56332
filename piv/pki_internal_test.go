package piv

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"sync/atomic"
	"testing"
	"time"
)

// testPKI issues the certificates of the package's internal tests: each
// valid an hour either side of now, with a serial of its own unless the
// template sets one.
type testPKI struct {
	t      testing.TB
	now    time.Time
	serial atomic.Int64
}

func newTestPKI(t testing.TB, now time.Time) *testPKI { return &testPKI{t: t, now: now} }

func (p *testPKI) issue(tmpl, parent *x509.Certificate, pub any, key *ecdsa.PrivateKey) *x509.Certificate {
	p.t.Helper()
	if tmpl.SerialNumber == nil {
		tmpl.SerialNumber = big.NewInt(p.serial.Add(1) + 1)
	}
	tmpl.NotBefore, tmpl.NotAfter = p.now.Add(-time.Hour), p.now.Add(time.Hour)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, key)
	if err != nil {
		p.t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		p.t.Fatal(err)
	}
	return c
}

// selfSignedCA is a root named name with a new P-256 key.
func (p *testPKI) selfSignedCA(name string) (*x509.Certificate, *ecdsa.PrivateKey) {
	p.t.Helper()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{Subject: pkix.Name{CommonName: name}, IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	return p.issue(tmpl, tmpl, k.Public(), k), k
}
