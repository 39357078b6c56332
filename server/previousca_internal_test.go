package server

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/credgw/credgw/issuance"
	"github.com/credgw/credgw/store"
)

// TestPreviousCAs: ca.previous_certificate_files are the issuing CA's
// certificates from before a re-key, which earlier escrowed keys' certificates
// chain through. Each must be a CA certificate under the same root as the
// issuing CA (checked as of its own start, it may have expired since), and
// not the issuing CA's certificate in use; each refusal names the file.
func TestPreviousCAs(t *testing.T) {
	dir := t.TempDir()
	mk := func(name string, ca bool, parent *x509.Certificate, parentKey *ecdsa.PrivateKey, from time.Time) (*x509.Certificate, *ecdsa.PrivateKey) {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
		tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: name}, NotBefore: from, NotAfter: from.AddDate(3, 0, 0),
			IsCA: ca, BasicConstraintsValid: true}
		if ca {
			tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign
		} else {
			tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		}
		if parent == nil {
			parent, parentKey = tmpl, k
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, k.Public(), parentKey)
		if err != nil {
			t.Fatal(err)
		}
		c, _ := x509.ParseCertificate(der)
		return c, k
	}
	write := func(name string, certs ...*x509.Certificate) string {
		var b []byte
		for _, c := range certs {
			b = append(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
		}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	now := time.Now()
	root, rootKey := mk("root", true, nil, nil, now.AddDate(-5, 0, 0))
	issuing, _ := mk("issuing CA", true, root, rootKey, now.AddDate(0, -1, 0))
	chain := []*x509.Certificate{issuing, root}
	old, _ := mk("issuing CA", true, root, rootKey, now.AddDate(-4, 0, 0)) // expired a year ago
	otherRoot, otherRootKey := mk("other root", true, nil, nil, now.AddDate(-1, 0, 0))
	other, _ := mk("issuing CA", true, otherRoot, otherRootKey, now.AddDate(-1, 0, 0))
	leaf, _ := mk("not a CA", false, root, rootKey, now.AddDate(-1, 0, 0))
	t.Run("retired", func(t *testing.T) {
		root, rootKey := mk("root", true, nil, nil, now.AddDate(-1, 0, 0))
		issuing, _ := mk("issuing CA", true, root, rootKey, now.AddDate(0, -1, 0))
		testRetiredCAs(t, dir, mk, write, root, rootKey, []*x509.Certificate{issuing, root})
	})

	got, err := previousCAs("ca.previous_certificate_files", []string{write("old.pem", old)}, chain)
	if err != nil || len(got) != 1 || !got[0].Equal(old) {
		t.Fatalf("an expired CA certificate of the same root: %v, %v", got, err)
	}
	if got, err := previousCAs("ca.previous_certificate_files", nil, chain); err != nil || len(got) != 0 {
		t.Fatalf("none: %v, %v", got, err)
	}
	for _, tc := range []struct {
		name string
		file string
		want string
	}{
		{"under another root", write("other.pem", other), "does not chain to the issuing CA's root"},
		{"not a CA", write("leaf.pem", leaf), "not a CA certificate"},
		{"the issuing CA in use", write("issuing.pem", issuing), "the issuing CA's certificate in use"},
		{"the root", write("root.pem", root), "self-signed"},
		{"missing", filepath.Join(dir, "nope.pem"), "no such file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := previousCAs("ca.previous_certificate_files", []string{tc.file}, chain)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "ca.previous_certificate_files") {
				t.Fatalf("err %v, want one naming ca.previous_certificate_files and saying %q", err, tc.want)
			}
		})
	}
}

// testRetiredCAs: ca.retired loads each earlier key as a status-only CA
// under its name, its certificate under the same root and its key matching
// it; a refusal names the entry.
func testRetiredCAs(t *testing.T, dir string, mk func(string, bool, *x509.Certificate, *ecdsa.PrivateKey, time.Time) (*x509.Certificate, *ecdsa.PrivateKey),
	write func(string, ...*x509.Certificate) string, root *x509.Certificate, rootKey *ecdsa.PrivateKey, chain []*x509.Certificate) {
	ctx := context.Background()
	st, err := store.OpenSQLite(ctx, filepath.Join(dir, "retired.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	old, oldKey := mk("issuing CA", true, root, rootKey, time.Now().AddDate(0, -6, 0))
	keyFile := func(name string, k *ecdsa.PrivateKey) string {
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	base := issuance.Config{Store: st, BaseURL: "http://pki.example.gov"}
	cfg := &Config{CA: CAConfig{Name: "issuing-ca-2", Retired: []RetiredCAConfig{{Name: "issuing-ca", CertificateFile: write("retired.pem", old), KeyFile: keyFile("retired.key", oldKey)}}}}
	cas, err := retiredCAs(ctx, cfg, newHSM(cfg), chain, base)
	if err != nil || len(cas) != 1 {
		t.Fatalf("retiredCAs: %v", err)
	}
	if _, err := cas[0].Issue(ctx, issuance.Request{Profile: issuance.DerivedPIVAuth}); err == nil || !strings.Contains(err.Error(), "retired") {
		t.Errorf("a retired CA issued: %v", err)
	}
	_, otherKey := mk("x", true, nil, nil, time.Now())
	cfg.CA.Retired[0].KeyFile = keyFile("other.key", otherKey)
	if _, err := retiredCAs(ctx, cfg, newHSM(cfg), chain, base); err == nil || !strings.Contains(err.Error(), "ca.retired[0]") || !strings.Contains(err.Error(), "does not match its certificate") {
		t.Errorf("a key that is not the certificate's: %v", err)
	}
}
