package activation

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/credgw/credgw/issuance"
	"github.com/credgw/credgw/store"
)

// TestRevokedWaitingPackageTold: a package with the person's escrowed
// keys was stored (and may have been downloaded) but never confirmed, and
// its set is revoked: by the person, or by the termination of their
// identity. Every key delivery is told (Common Policy §4.12.1). Before,
// the revocation took the package away and the sweep, which tells of
// unconfirmed packages, no longer found it: nobody was told.
func TestRevokedWaitingPackageTold(t *testing.T) {
	for _, tc := range []struct {
		name   string
		revoke func(h *harness, sess store.PIVSession, setID string) error
	}{
		{"revoked by the person", func(h *harness, sess store.PIVSession, setID string) error {
			_, err := h.svc.RevokeSet(context.Background(), sess.PersonID, setID, issuance.ReasonCessationOfOperation)
			return err
		}},
		{"the identity terminated", func(h *harness, sess store.PIVSession, setID string) error {
			_, err := h.svc.RevokeIdentity(context.Background(), store.IdentitySelector{PersonID: sess.PersonID}, issuance.ReasonCessationOfOperation, true, "left")
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, nil)
			ctx := context.Background()
			sess := h.signIn(t, "victim@example.gov")
			e := h.enroll(t, sess)
			d, err := h.svc.Redeem(ctx, e.request(t), nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := tc.revoke(h, sess, d.Manifest.GetCredentialSetId()); err != nil {
				t.Fatal(err)
			}
			h.advance(DefaultConfirmWindow + time.Minute)
			if _, err := h.svc.Sweep(ctx); err != nil {
				t.Fatal(err)
			}
			ns, err := h.st.Notifications(ctx)
			if err != nil {
				t.Fatal(err)
			}
			var kinds []string
			told := 0
			for _, n := range ns {
				kinds = append(kinds, n.Kind)
				if n.Kind == "key-delivery" {
					told++
				}
			}
			if told != 1 {
				t.Errorf("%d key-delivery notices (notices: %v), want 1: the escrowed keys may have left escrow", told, kinds)
			}
		})
	}
}

// setHookStore runs onSet once, the next time CredentialSet is read while
// armed.
type setHookStore struct {
	store.Store
	armed atomic.Bool
	onSet func()
}

func (s *setHookStore) CredentialSet(ctx context.Context, id string) (store.CredentialSet, error) {
	if s.armed.CompareAndSwap(true, false) && s.onSet != nil {
		s.onSet()
	}
	return s.Store.CredentialSet(ctx, id)
}

// TestCancelRacingARedemptionTold: an administrator cancels a pending code
// (its QR code and password were seen) while a device redeems it: the
// redemption stores its package between Cancel's check of the state and
// the revocation. The revocation takes the package away, and the person
// is told their escrowed keys may have left escrow. Before, nobody was.
func TestCancelRacingARedemptionTold(t *testing.T) {
	var hs *setHookStore
	h := newHarness(t, func(c *Config) {
		hs = &setHookStore{Store: c.Store}
		c.Store = hs
	})
	ctx := context.Background()
	e := h.enroll(t, h.signIn(t, "victim@example.gov"))
	var d *Delivery
	var rerr error
	hs.onSet = func() { d, rerr = h.svc.Redeem(ctx, e.request(t), nil) }
	hs.armed.Store(true)
	if _, err := h.svc.Cancel(ctx, e.payload.ID, "QR code seen by a colleague"); err != nil {
		t.Fatal(err)
	}
	if d == nil {
		t.Fatalf("the racing redemption: %v", rerr)
	}
	ns, err := h.st.Notifications(ctx)
	if err != nil {
		t.Fatal(err)
	}
	told := 0
	for _, n := range ns {
		if n.Kind == "key-delivery" {
			told++
		}
	}
	if told != 1 {
		t.Errorf("%d key-delivery notices, want 1", told)
	}
}
