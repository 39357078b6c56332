package activation

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/credgw/credgw/issuance"
	credgwv1 "github.com/credgw/credgw/proto/credgw/v1"
	"github.com/credgw/credgw/store"
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

// TestRedeemRefusesUnknownHistoryIssuerBeforeIssuing: after a re-key of
// the issuing CA whose old certificate is not in
// ca.previous_certificate_files, a redemption whose key history holds a
// key of the old CA is refused before anything is issued (before, its
// certificates were issued, then revoked: CRL entries for nothing). The
// code stays pending with no attempt used, and redeems once the old CA
// certificate is configured.
func TestRedeemRefusesUnknownHistoryIssuerBeforeIssuing(t *testing.T) {
	h := newHarness(t, nil)
	ctx := context.Background()
	alice := h.signIn(t, "a@example.gov")
	h.install(t, h.enroll(t, alice))
	old := h.issuer.Issuer.Chain()[0]

	// The re-key: a new issuing CA key and certificate.
	dir := t.TempDir()
	init, err := issuance.InitCA(ctx, issuance.InitOptions{Dir: filepath.Join(dir, "ca"), Organization: "credgw activation test"})
	if err != nil {
		t.Fatal(err)
	}
	signer, err := issuance.ReadKeyFile(init.IssuingKeyFile)
	if err != nil {
		t.Fatal(err)
	}
	if h.issuer.Issuer, err = issuance.NewCA(issuance.Config{Name: "issuing-ca", Chain: []*x509.Certificate{init.Issuing, init.Root},
		Signer: signer, Store: h.st, BaseURL: "http://127.0.0.1:1", Now: h.clock}); err != nil {
		t.Fatal(err)
	}

	second := h.enroll(t, h.again(alice))
	_, err = h.svc.Redeem(ctx, second.request(t), nil)
	if !errors.Is(err, ErrPrecondition) || !strings.Contains(err.Error(), "ca.previous_certificate_files") {
		t.Fatalf("got %v, want a precondition failure naming ca.previous_certificate_files", err)
	}
	if certs, err := h.st.CertificatesOfSet(ctx, second.en.CredentialSetID); err != nil || len(certs) != 0 {
		t.Fatalf("%d certificates of the refused set (%v), want none: the refusal comes before issuance", len(certs), err)
	}
	if a, err := h.st.ActivationByID(ctx, second.payload.ID); err != nil || a.State != store.ActPending || a.FailedAttempts != 0 {
		t.Fatalf("the activation is %q with %d failed attempts (%v), want pending with none", a.State, a.FailedAttempts, err)
	}

	h.svc.cfg.PreviousCAs = []*x509.Certificate{old}
	d, err := h.svc.Redeem(ctx, second.request(t), nil)
	if err != nil {
		t.Fatalf("with the old CA configured: %v", err)
	}
	if n := keyCount(t, d); n != 2 {
		t.Fatalf("the package holds %d keys, want 2", n)
	}
}
