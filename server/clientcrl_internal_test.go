package server

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestClientCRLFilesChecked: `credgw config check` reads
// tls.client_crl_files as serve does (a CRL no client CA signed is a
// problem), a CRL signed over SHA-1 is refused, and a CRL past its
// nextUpdate is named as stale, still used.
func TestClientCRLFilesChecked(t *testing.T) {
	dir := t.TempDir()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "clients CA"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(der)
	caFile := filepath.Join(dir, "clients-ca.pem")
	os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	crl := func(name string, signer *ecdsa.PrivateKey, next time.Time, alg ...x509.SignatureAlgorithm) string {
		var sigAlg x509.SignatureAlgorithm
		if len(alg) > 0 {
			sigAlg = alg[0]
		}
		der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{Number: big.NewInt(1), ThisUpdate: next.Add(-48 * time.Hour), NextUpdate: next, SignatureAlgorithm: sigAlg,
			RevokedCertificateEntries: []x509.RevocationListEntry{{SerialNumber: big.NewInt(9), RevocationTime: next.Add(-48 * time.Hour)}}}, ca, signer)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, name)
		os.WriteFile(p, der, 0o644)
		return p
	}
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	forged := crl("forged.crl", other, time.Now().Add(time.Hour))
	stale := crl("stale.crl", key, time.Now().Add(-time.Hour))
	sha1 := crl("sha1.crl", key, time.Now().Add(time.Hour), x509.ECDSAWithSHA1)

	c := &Config{TLS: TLSConfig{ClientCAFiles: []string{caFile}, ClientCRLFiles: []string{forged}}}
	if errs := c.checkFiles(); !slices.ContainsFunc(errs, func(e error) bool { return strings.Contains(e.Error(), "tls.client_crl_files") }) {
		t.Fatalf("config check of a CRL no client CA signed: %v", errs)
	}
	// Common Policy 7.1.3: no SHA-1 in status signatures, as for the
	// cards' CRLs credgw fetches (piv's SHA1Signed).
	if _, _, err := readClientCRLs([]string{sha1}, []*x509.Certificate{ca}, time.Now()); err == nil || !strings.Contains(err.Error(), "SHA-1") {
		t.Errorf("a CRL signed over SHA-1: %v, want it refused", err)
	}
	revoked, staleNamed, err := readClientCRLs([]string{stale}, []*x509.Certificate{ca}, time.Now())
	if err != nil || len(staleNamed) != 1 || !revoked[string(ca.RawSubject)+"\x00"+"9"] {
		t.Fatalf("a stale CRL: revoked %v, stale %v, %v; want serial 9 revoked and the CRL named stale", revoked, staleNamed, err)
	}
}
