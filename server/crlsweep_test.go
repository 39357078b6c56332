package server_test

import (
	"context"
	"crypto/x509"
	"testing"
	"time"

	credgwv1 "github.com/credgw/credgw/proto/credgw/v1"
)

// TestCRLIssuedWithoutFetches: the CRL is issued on schedule, not only when
// a relying party fetches it (Common Policy §4.9.7: at least every 18
// hours): the sweep signs a CRL that lists a revocation soon after it, and
// signs a fresh one when the last is 18 hours old, with no fetch between.
func TestCRLIssuedWithoutFetches(t *testing.T) {
	ctx := context.Background()
	t.Cleanup(func() { clockOffset.Store(0) })
	serial := issueForDevCard(t).SerialNumber
	admin := credgwv1.NewAdminClient(dial(t, keyPair(t, dev.AdminCert, dev.AdminKey)))
	if _, err := admin.RevokeCertificate(ctx, &credgwv1.RevokeCertificateRequest{Serial: serial.Text(16)}); err != nil {
		t.Fatal(err)
	}
	gw.Sweep(ctx)
	stored, err := gwStore.CRL(ctx, cfg.CA.Name)
	if err != nil || stored.Stale {
		t.Fatalf("after the sweep: %+v, %v; want a CRL with the revocation", stored.Stale, err)
	}
	crl, err := x509.ParseRevocationList(stored.DER)
	if err != nil {
		t.Fatal(err)
	}
	listed := false
	for _, e := range crl.RevokedCertificateEntries {
		listed = listed || e.SerialNumber.Cmp(serial) == 0
	}
	if !listed {
		t.Fatalf("the swept CRL does not list %s", serial.Text(16))
	}

	clockOffset.Store(int64(19 * time.Hour))
	gw.Sweep(ctx)
	if stored, err = gwStore.CRL(ctx, cfg.CA.Name); err != nil || now().Sub(stored.ThisUpdate) >= 18*time.Hour {
		t.Fatalf("19 hours on, no fetch: the CRL's thisUpdate is %s (%v), want within 18 hours", stored.ThisUpdate, err)
	}
}
