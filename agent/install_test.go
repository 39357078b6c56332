package agent

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/credgw/credgw/activation/code"
	"github.com/credgw/credgw/activation/pfx"
	credgwv1 "github.com/credgw/credgw/proto/credgw/v1"
	"google.golang.org/protobuf/proto"
)

// The escrowed key and its history arrive as one encryption.p12, current
// first, as the manifest says. install refuses a file that holds other
// than what the manifest says, a second or renamed PKCS#12, a history
// certificate from another CA and an expired current certificate; an
// expired history certificate is taken (old mail needs its key).
func TestInstallRefusesKeyHistory(t *testing.T) {
	mkCA := func(name string) (*x509.Certificate, *ecdsa.PrivateKey) {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name}, IsCA: true, BasicConstraintsValid: true,
			NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(48 * time.Hour), KeyUsage: x509.KeyUsageCertSign}
		der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Public(), k)
		c, _ := x509.ParseCertificate(der)
		return c, k
	}
	ca, caKey := mkCA("issuing CA")
	other, otherKey := mkCA("another CA")
	leafUntil := func(serial int64, issuer *x509.Certificate, issuerKey *ecdsa.PrivateKey, notAfter time.Time) pfx.Entry {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "holder"},
			NotBefore: notAfter.Add(-2 * time.Hour), NotAfter: notAfter,
			KeyUsage: x509.KeyUsageKeyAgreement, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection}}
		asIssued(tmpl, credgwv1.Profile_PROFILE_KEY_MANAGEMENT)
		der, _ := x509.CreateCertificate(rand.Reader, tmpl, issuer, k.Public(), issuerKey)
		c, _ := x509.ParseCertificate(der)
		return pfx.Entry{Key: k, Certificate: c}
	}
	leaf := func(serial int64, issuer *x509.Certificate, issuerKey *ecdsa.PrivateKey) pfx.Entry {
		return leafUntil(serial, issuer, issuerKey, time.Now().Add(time.Hour))
	}
	current, earlier, foreign := leaf(0x10, ca, caKey), leaf(0x0f, ca, caKey), leaf(0x0e, other, otherKey)
	expiredEarlier := leafUntil(0x0d, ca, caKey, time.Now().Add(-time.Hour))
	expiredCurrent := leafUntil(0x11, ca, caKey, time.Now().Add(-time.Hour))
	secret := make([]byte, 32)
	rand.Read(secret)
	const password = "12345678"
	p12pw, _ := code.PKCS12Password(secret, password)
	file := func(entries ...pfx.Entry) []byte {
		der, err := pfx.Encode(entries, []*x509.Certificate{ca}, p12pw, 1)
		if err != nil {
			t.Fatal(err)
		}
		return der
	}
	type item struct {
		name   string
		serial string
		keys   int32
		data   []byte
	}
	pkg := func(items ...item) []byte {
		p := &credgwv1.CredentialPackage{Manifest: &credgwv1.Manifest{CredentialSetId: "set"}}
		for _, it := range items {
			sum := sha256.Sum256(it.data)
			p.Manifest.Items = append(p.Manifest.Items, &credgwv1.ManifestItem{Name: it.name, Kind: credgwv1.ItemKind_ITEM_KIND_PKCS12,
				Profile: credgwv1.Profile_PROFILE_KEY_MANAGEMENT, Serial: it.serial, Size: int64(len(it.data)), Sha256: sum[:], KeyCount: it.keys})
			p.Items = append(p.Items, &credgwv1.PackageItem{Name: it.name, Data: it.data})
		}
		p.Manifest.Items = append(p.Manifest.Items, &credgwv1.ManifestItem{Name: "chain.der", Kind: credgwv1.ItemKind_ITEM_KIND_CHAIN})
		p.Items = append(p.Items, &credgwv1.PackageItem{Name: "chain.der", Chain: [][]byte{ca.Raw}})
		raw, _ := proto.Marshal(p)
		return raw
	}
	two := file(current, earlier)
	for _, tc := range []struct {
		name string
		raw  []byte
		want string
	}{
		// Passes the key history and stops at the missing device certificates.
		{"as the manifest says", pkg(item{"encryption.p12", "10", 2, two}), "has no PROFILE_DERIVED_PIV_AUTH certificate"},
		{"an expired history key", pkg(item{"encryption.p12", "10", 2, file(current, expiredEarlier)}), "has no PROFILE_DERIVED_PIV_AUTH certificate"},
		{"an expired current key", pkg(item{"encryption.p12", "11", 2, file(expiredCurrent, earlier)}), "key 1 of encryption.p12 does not chain"},
		{"current key not the manifest's", pkg(item{"encryption.p12", "f", 2, two}), "the file: current certificate 10, 2 keys"},
		{"fewer keys than the manifest says", pkg(item{"encryption.p12", "10", 3, two}), "does not hold what the manifest says"},
		{"no key count", pkg(item{"encryption.p12", "10", 0, two}), "does not hold what the manifest says"},
		{"renamed", pkg(item{"encryption-history-1.p12", "10", 2, two}), "unexpected PKCS#12"},
		{"a second PKCS#12", pkg(item{"encryption.p12", "10", 2, two}, item{"encryption.p12", "10", 2, two}), "unexpected PKCS#12"},
		{"a history key of another CA", pkg(item{"encryption.p12", "10", 2, file(current, foreign)}), "key 2 of encryption.p12 does not chain"},
		{"another transport password", pkg(item{"encryption.p12", "10", 1, func() []byte {
			der, _ := pfx.Encode([]pfx.Entry{current}, nil, "not the derived password", 1)
			return der
		}()}), "does not open"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := &Result{Certificates: map[credgwv1.Profile]*x509.Certificate{}}
			err := install(context.Background(), tc.raw, nil, nil, Options{Payload: code.Payload{Secret: secret}, Password: password,
				OutDir: t.TempDir(), KeystorePIN: "correct horse"}, res)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
}
