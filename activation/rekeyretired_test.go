package activation

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"math/big"
	"path/filepath"
	"testing"
	"time"

	"github.com/credgw/credgw/issuance"
)

// TestRenewAfterCARekey: after a CA re-key with ca.retired (key-ceremony.md:
// "Devices need not renew early: credgw renew in its window moves each to
// the new key"), a device holding a certificate of the old key renews; it
// was refused as "signed by unknown authority".
func TestRenewAfterCARekey(t *testing.T) {
	h := newHarness(t, nil)
	ctx := context.Background()
	current := renewable(t, h) // issued by the old key, under "issuing-ca"
	old := h.issuer.Issuer.(*issuance.CA)
	chain := old.Chain()
	rootKey, err := issuance.ReadKeyFile(filepath.Join(filepath.Dir(h.dbPath), "ca", "root.key"))
	if err != nil {
		t.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := *chain[0]
	tmpl.SerialNumber = big.NewInt(777)
	tmpl.NotBefore = h.clock().Add(-time.Hour)
	spki, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	skid := sha256.Sum256(spki)
	tmpl.SubjectKeyId = skid[:20]
	der, err := x509.CreateCertificate(rand.Reader, &tmpl, chain[1], key.Public(), rootKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	oldKey, _ := issuance.ReadKeyFile(filepath.Join(filepath.Dir(h.dbPath), "ca", "issuing.key"))
	retired, err := issuance.NewCA(issuance.Config{Name: "issuing-ca", Chain: chain, Signer: oldKey, Store: h.st, BaseURL: "http://127.0.0.1:1", Now: h.clock, StatusOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	ca, err := issuance.NewCA(issuance.Config{Name: "issuing-ca-2", Chain: []*x509.Certificate{cert, chain[1]}, Signer: key, Store: h.st,
		BaseURL: "http://127.0.0.1:1", Now: h.clock, Retired: []*issuance.CA{retired}})
	if err != nil {
		t.Fatal(err)
	}
	h.issuer.Issuer = ca
	// A key listed only as a previous certificate cannot revoke what it
	// issued: its certificates do not renew (confirming could not revoke
	// them).
	h.svc.cfg.PreviousCAs = []*x509.Certificate{chain[0]}
	if _, err := h.svc.Rekey(ctx, rekeyRequest(t, current), nil); !errors.Is(err, ErrPermission) {
		t.Fatalf("renewing under a key only in ca.previous_certificate_files: %v, want ErrPermission", err)
	}
	h.svc.cfg.RetiredCAs = ca.RetiredCertificates() // as serve wires ca.retired
	req := rekeyRequest(t, current)
	d, err := h.svc.Rekey(ctx, req, nil)
	if err != nil {
		t.Fatalf("renewing an old-key certificate after the CA re-key: %v", err)
	}
	if _, err := h.svc.ConfirmRekey(ctx, current, d.RedemptionID, req.Secret, d.SHA256); err != nil {
		t.Fatalf("confirming it: %v", err)
	}
	// The old certificate is revoked (superseded) on the retired key's CRL.
	if rec, err := h.st.Certificate(ctx, NormalizeSerial(current.SerialNumber.Text(16))); err != nil || !rec.Revoked() || rec.Issuer != "issuing-ca" {
		t.Errorf("the renewed certificate: revoked %v, issuer %q (%v)", rec.Revoked(), rec.Issuer, err)
	}
}
