package server

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/credgw/credgw/issuance"
)

// TestRootCRLChecked: the root's CRL (signed at the ceremony, served from
// ca.root_crl_file) is what every relying party that checks the whole path
// needs; an expired one breaks them all. It is served only if the root
// signed it, with caching headers from its dates, and its nextUpdate is
// reported (the credgw_root_crl_next_update_timestamp_seconds gauge, the
// CredgwRootCRLExpiring alert) so that someone signs the next in time.
func TestRootCRLChecked(t *testing.T) {
	rootKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "root"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().AddDate(10, 0, 0)}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, rootKey.Public(), rootKey)
	root, _ := x509.ParseCertificate(der)
	dir := t.TempDir()
	this := time.Now().Add(-time.Hour).Truncate(time.Second).UTC()
	next := this.Add(30 * 24 * time.Hour)
	crl := func(signer *ecdsa.PrivateKey) []byte {
		b, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{Number: big.NewInt(1), ThisUpdate: this, NextUpdate: next}, root, signer)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	cfg := &Config{}
	cfg.CA.RootCRLFile = filepath.Join(dir, "root.crl")
	rc := newRootCRL(cfg, root)
	h := rootHandler(root, rc)
	get := func() *httptest.ResponseRecorder {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest("GET", issuance.RootCRLPath, nil))
		return w
	}
	if err := os.WriteFile(cfg.CA.RootCRLFile, crl(rootKey), 0o644); err != nil {
		t.Fatal(err)
	}
	w := get()
	if w.Code != http.StatusOK || w.Header().Get("Last-Modified") != this.Format(http.TimeFormat) || w.Header().Get("Expires") == "" {
		t.Fatalf("the root's CRL: %d, headers %v", w.Code, w.Header())
	}
	if got := rc.nextUpdate(); got != float64(next.Unix()) {
		t.Fatalf("the gauge: %v, want nextUpdate %d", got, next.Unix())
	}
	// Another key's CRL put in its place (touching the file's time).
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err := os.WriteFile(cfg.CA.RootCRLFile, append(crl(other), 0), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg.CA.RootCRLFile, crl(other), 0o644); err != nil {
		t.Fatal(err)
	}
	if w := get(); w.Code != http.StatusServiceUnavailable {
		t.Fatalf("a CRL the root did not sign: %d, want 503", w.Code)
	}
	if got := rc.nextUpdate(); got != -1 {
		t.Fatalf("the gauge of a CRL the root did not sign: %v, want -1", got)
	}
	if newRootCRL(&Config{}, root) != nil {
		t.Fatal("a root CRL without ca.root_crl_file")
	}
}
