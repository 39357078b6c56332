package attest_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"testing"
	"time"

	"github.com/credgw/credgw/activation/attest"
)

// TestExpiredCopyOfTheRootAnchorsByKey: a device chain that ends with an
// older, expired self-signed copy of a configured root (same name, same
// key: Google's 2016 RSA root, expired 2026-05-24, beside the 2022 one
// credgw embeds) was refused as an intermediate outside its validity. The
// reference verifier anchors by key: such a last certificate stands for
// the configured root, whose validity counts.
func TestExpiredCopyOfTheRootAnchorsByKey(t *testing.T) {
	now := time.Now()
	rk, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	name := pkix.Name{SerialNumber: "f92009e853b6b045"}
	mk := func(serial int64, nb, na time.Time) *x509.Certificate {
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: name, NotBefore: nb, NotAfter: na, IsCA: true, BasicConstraintsValid: true,
			KeyUsage: x509.KeyUsageCertSign}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, rk.Public(), rk)
		if err != nil {
			t.Fatal(err)
		}
		c, _ := x509.ParseCertificate(der)
		return c
	}
	oldRoot := mk(1, now.AddDate(-10, 0, 0), now.AddDate(0, -6, 0)) // expired
	newRoot := mk(2, now.AddDate(-4, 0, 0), now.AddDate(16, 0, 0))
	ik, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	itmpl := &x509.Certificate{SerialNumber: big.NewInt(3), Subject: pkix.Name{CommonName: "batch"}, NotBefore: now.AddDate(-1, 0, 0),
		NotAfter: now.AddDate(5, 0, 0), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	ider, _ := x509.CreateCertificate(rand.Reader, itmpl, newRoot, ik.Public(), rk)
	inter, _ := x509.ParseCertificate(ider)
	dk, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	origin := attest.OriginGenerated
	kd := attest.KeyDescription{AttestationVersion: 300, AttestationSecurityLevel: attest.TrustedEnvironment, KeyMintVersion: 300,
		KeyMintSecurityLevel: attest.TrustedEnvironment, Challenge: []byte("c"),
		HardwareEnforced: attest.AuthorizationList{Purposes: []int{attest.PurposeSign}, Origin: &origin,
			RootOfTrust: &attest.RootOfTrust{VerifiedBootKey: make([]byte, 32), DeviceLocked: true, VerifiedBootState: attest.Verified}}}
	ext, _ := kd.Marshal()
	ltmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Android Keystore Key"}, NotBefore: time.Unix(0, 0),
		NotAfter: now.AddDate(20, 0, 0), ExtraExtensions: []pkix.Extension{{Id: attest.OIDKeyDescription, Value: ext}}}
	lder, _ := x509.CreateCertificate(rand.Reader, ltmpl, inter, dk.Public(), ik)
	p := &attest.Policy{Roots: []*x509.Certificate{newRoot}, RequireVerifiedBoot: true, RequireDeviceLocked: true}
	if _, err := p.Verify(attest.FormatAndroidKey, [][]byte{lder, ider}, dk.Public(), []byte("c")); err != nil {
		t.Fatalf("without the root: %v", err)
	}
	if _, err := p.Verify(attest.FormatAndroidKey, [][]byte{lder, ider, oldRoot.Raw}, dk.Public(), []byte("c")); err != nil {
		t.Fatalf("as the device sends it (expired copy of the root last): %v", err)
	}
}
