package issuance

import (
	"bytes"
	"context"
	"crypto/x509"
	"sync/atomic"
	"testing"

	"github.com/credgw/credgw/store"
)

// derCounting counts reads of the stored CRL's DER.
type derCounting struct {
	store.IssuanceStore
	reads atomic.Int64
}

func (d *derCounting) CRL(ctx context.Context, issuer string) (store.StoredCRL, error) {
	d.reads.Add(1)
	return d.IssuanceStore.CRL(ctx, issuer)
}

// TestCRLServedFromMemory: each anonymous CRL fetch read the whole CRL (a
// large issuer's is megabytes) from the store. A replica that holds the CRL
// of the stored number serves it from memory, reading only its state; a
// new CRL (a revocation) is read once.
func TestCRLServedFromMemory(t *testing.T) {
	ctx := context.Background()
	ds := &derCounting{IssuanceStore: testStore}
	cfg := testCA.cfg
	cfg.Store = ds
	ca, err := NewCA(cfg)
	if err != nil {
		t.Fatal(err)
	}
	first, err := ca.CRL(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	before := ds.reads.Load()
	for range 20 {
		got, err := ca.CRL(ctx, false)
		if err != nil || !bytes.Equal(got, first) {
			t.Fatalf("CRL again: %v", err)
		}
	}
	if n := ds.reads.Load() - before; n != 0 {
		t.Errorf("20 fetches of an unchanged CRL read its DER from the store %d times, want 0", n)
	}
	// A revocation: the next fetch has it.
	c := issue(t, DerivedPIVAuth, p256(t), identity(t)).Certificate
	if err := ca.Revoke(ctx, c.SerialNumber.Text(16), ReasonKeyCompromise); err != nil {
		t.Fatal(err)
	}
	next, err := ca.CRL(ctx, false)
	if err != nil || bytes.Equal(next, first) {
		t.Fatalf("CRL after a revocation: the same as before (%v)", err)
	}
	crl, err := x509.ParseRevocationList(next)
	if err != nil || !crlHas(crl, c.SerialNumber.Text(16)) {
		t.Fatalf("the CRL after a revocation does not list it (%v)", err)
	}
}
