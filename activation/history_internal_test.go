package activation

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/credgw/credgw/issuance"
	credgwv1 "github.com/credgw/credgw/proto/credgw/v1"
)

// TestKeyHistoryCarriesPreviousCAs: after the issuing CA was re-keyed,
// earlier escrowed keys' certificates were signed by its old key. The
// package sends, beside encryption.p12, the old CA certificates
// (ca.previous_certificate_files) that signed them, and only those; a key
// whose certificate no configured CA signed is refused with what the
// administrator must configure, instead of a package every device refuses.
func TestKeyHistoryCarriesPreviousCAs(t *testing.T) {
	root, rootKey := testCA(t, "root", nil, nil)
	current, currentKey := testCA(t, "issuing CA", root, rootKey)
	old, oldKey := testCA(t, "issuing CA", root, rootKey)
	older, olderKey := testCA(t, "issuing CA", root, rootKey)
	stranger, strangerKey := testCA(t, "issuing CA", nil, nil)
	escrowed := func(by *x509.Certificate, byKey *ecdsa.PrivateKey) *issuance.EscrowedKey {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		c := testCert(t, &x509.Certificate{Subject: pkix.Name{CommonName: "holder"}, KeyUsage: x509.KeyUsageKeyAgreement}, k, by, byKey)
		return &issuance.EscrowedKey{ID: c.SerialNumber.Text(16), Key: k, CertDER: c.Raw, CertSerial: c.SerialNumber.Text(16)}
	}
	cur := escrowed(current, currentKey)
	curCert, _ := x509.ParseCertificate(cur.CertDER)
	for _, tc := range []struct {
		name     string
		history  []*issuance.EscrowedKey
		previous []*x509.Certificate
		want     []*x509.Certificate
		refuse   string
	}{
		{"no history", nil, []*x509.Certificate{old}, nil, ""},
		{"a history of the current CA", []*issuance.EscrowedKey{escrowed(current, currentKey)}, []*x509.Certificate{old}, nil, ""},
		{"a key of the old CA", []*issuance.EscrowedKey{escrowed(current, currentKey), escrowed(old, oldKey)},
			[]*x509.Certificate{older, old}, []*x509.Certificate{old}, ""},
		{"keys of two old CAs, each sent once", []*issuance.EscrowedKey{escrowed(old, oldKey), escrowed(older, olderKey), escrowed(old, oldKey)},
			[]*x509.Certificate{old, older}, []*x509.Certificate{old, older}, ""},
		{"a key of an old CA not configured", []*issuance.EscrowedKey{escrowed(old, oldKey)}, []*x509.Certificate{older}, nil, "ca.previous_certificate_files"},
		{"a key of a stranger with the CA's name", []*issuance.EscrowedKey{escrowed(stranger, strangerKey)}, []*x509.Certificate{old}, nil, "ca.previous_certificate_files"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var sent [][]byte
			calls := 0
			add := func(name string, _ credgwv1.ItemKind, _ credgwv1.Profile, _ string, _ []byte, chain [][]byte, _ int32) {
				calls++
				sent = chain
			}
			err := addKeyHistory(cur, curCert, tc.history, make([]byte, 32), "24681357", add, []*x509.Certificate{current, root}, tc.previous)
			if tc.refuse != "" {
				if err == nil || !strings.Contains(err.Error(), tc.refuse) || calls != 0 {
					t.Fatalf("err %v (added %d), want a refusal saying %q", err, calls, tc.refuse)
				}
				return
			}
			if err != nil || calls != 1 {
				t.Fatalf("err %v, added %d", err, calls)
			}
			if len(sent) != len(tc.want) {
				t.Fatalf("sent %d earlier CA certificates, want %d", len(sent), len(tc.want))
			}
			for i, c := range tc.want {
				if string(sent[i]) != string(c.Raw) {
					t.Errorf("earlier CA certificate %d is not the one expected", i)
				}
			}
		})
	}
}

func testCA(t *testing.T, name string, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey) {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	return testCert(t, &x509.Certificate{Subject: pkix.Name{CommonName: name}, IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}, k, parent, parentKey), k
}

func testCert(t *testing.T, tmpl *x509.Certificate, key *ecdsa.PrivateKey, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) *x509.Certificate {
	t.Helper()
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl.SerialNumber = serial
	tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(time.Hour)
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), parentKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
