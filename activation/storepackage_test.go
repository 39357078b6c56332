package activation

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/credgw/credgw/store"
)

// lostReplyStore: StorePackage commits, and its answer is lost (a
// PostgreSQL connection cut while the UPDATE commits).
type lostReplyStore struct {
	store.Store
	lose atomic.Bool
	// blind, when set, fails the next activation read after a lost
	// reply (the same database, still away).
	blind, failRead atomic.Bool
}

func (s *lostReplyStore) ActivationByID(ctx context.Context, id string) (store.Activation, error) {
	if s.failRead.CompareAndSwap(true, false) {
		return store.Activation{}, store.ErrUnavailable
	}
	return s.Store.ActivationByID(ctx, id)
}

func (s *lostReplyStore) StorePackage(ctx context.Context, id, rid string, sealed []byte, sha string, size int64, manifest []byte, confirmBy time.Time) error {
	err := s.Store.StorePackage(ctx, id, rid, sealed, sha, size, manifest, confirmBy)
	if err == nil && s.lose.CompareAndSwap(true, false) {
		s.failRead.Store(s.blind.Load())
		return store.ErrUnavailable
	}
	return err
}

// TestStoredPackageWithLostReplyNotRevoked: a package stored whose
// answer was lost is the device's to resume. Before, the redemption was
// given back as if nothing was stored: every certificate in the package
// was revoked, and the device's retry resumed it and confirmed a set of
// revoked certificates.
func TestStoredPackageWithLostReplyNotRevoked(t *testing.T) {
	for _, blind := range []bool{false, true} {
		t.Run(map[bool]string{false: "the state read back", true: "the state unreadable too"}[blind], func(t *testing.T) {
			storedPackageWithLostReply(t, blind)
		})
	}
}

// storedPackageWithLostReply: with blind, the give-back cannot read the
// activation either (the database still away): it must not take the
// package for another call's and revoke what it carries.
func storedPackageWithLostReply(t *testing.T, blind bool) {
	ctx := context.Background()
	var st *lostReplyStore
	h := newHarness(t, func(cfg *Config) { st = &lostReplyStore{Store: cfg.Store}; cfg.Store = st })
	e := h.enroll(t, h.signIn(t, "a@example.gov"))
	st.blind.Store(blind)
	st.lose.Store(true)
	req := e.request(t)
	if _, err := h.svc.Redeem(ctx, req, nil); err == nil {
		t.Fatal("the first call succeeded although its package's store answered no")
	}
	d, err := h.svc.Redeem(ctx, req, nil)
	if err != nil {
		t.Fatalf("the device's retry: %v", err)
	}
	if !d.Resumed {
		t.Errorf("the retry issued anew; want the stored package resumed")
	}
	recs, err := h.st.CertificatesOfSet(ctx, d.Manifest.GetCredentialSetId())
	if err != nil || len(recs) != 3 {
		t.Fatalf("%d certificates in the set (%v), want 3", len(recs), err)
	}
	for _, r := range recs {
		if r.Revoked() {
			t.Errorf("certificate %s of the delivered package is revoked", r.Serial)
		}
	}
}
