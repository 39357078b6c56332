package activation

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/credgw/credgw/store"
)

// rebound is a store in which someone with write access to the database
// changed one credential set: what is in its row when credgw reads it.
type rebound struct {
	store.Store
	mu     sync.Mutex
	set    string
	change func(*store.CredentialSet)
}

func (r *rebound) CredentialSet(ctx context.Context, id string) (store.CredentialSet, error) {
	cs, err := r.Store.CredentialSet(ctx, id)
	r.mu.Lock()
	defer r.mu.Unlock()
	if err == nil && id == r.set && r.change != nil {
		r.change(&cs)
	}
	return cs, err
}

func (r *rebound) rebind(set string, change func(*store.CredentialSet)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.set, r.change = set, change
}

// TestRedeemRefusesAChangedSet: a code opens the credential set it was
// made for, as it was made. Someone with their own card and write access
// to the database (but not the KEK) who points their own pending set at a
// colleague — person, card, subject, email — or their activation at the
// colleague's set gets nothing issued and no escrowed key: the password's
// verifier is bound to the set. Before, the redemption issued
// certificates in the colleague's name (and, after a failed first try
// that gave the colleague a new escrow key, the colleague's key history).
func TestRedeemRefusesAChangedSet(t *testing.T) {
	ctx := context.Background()
	victimOf := func(h *harness, t *testing.T) store.CredentialSet {
		v := h.signIn(t, "victim@example.gov")
		e := h.enroll(t, v)
		cs, err := h.st.CredentialSet(ctx, e.en.CredentialSetID)
		if err != nil {
			t.Fatal(err)
		}
		return cs
	}
	tests := []struct {
		name   string
		change func(victim store.CredentialSet) func(*store.CredentialSet)
	}{
		{"the set moved to the colleague", func(v store.CredentialSet) func(*store.CredentialSet) {
			return func(cs *store.CredentialSet) {
				cs.PersonID, cs.PIVCertSHA256, cs.FASCN, cs.CardUUID, cs.RawSubject, cs.UPN = v.PersonID, v.PIVCertSHA256, v.FASCN, v.CardUUID, v.RawSubject, v.UPN
			}
		}},
		{"only the subject", func(v store.CredentialSet) func(*store.CredentialSet) {
			return func(cs *store.CredentialSet) { cs.RawSubject = v.RawSubject }
		}},
		{"only the person", func(v store.CredentialSet) func(*store.CredentialSet) {
			return func(cs *store.CredentialSet) { cs.PersonID = v.PersonID }
		}},
		{"the activation pointed at the colleague's set", func(v store.CredentialSet) func(*store.CredentialSet) {
			return func(cs *store.CredentialSet) { *cs = v }
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := &rebound{}
			h := newHarness(t, func(c *Config) { r.Store = c.Store; c.Store = r })
			victim := victimOf(h, t)
			keysBefore := len(escrowKeys(t, h, victim.PersonID))
			mallory := h.enroll(t, h.signIn(t, "mallory@example.gov"))
			r.rebind(mallory.en.CredentialSetID, tc.change(victim))
			for try := 1; try <= 2; try++ {
				d, err := h.svc.Redeem(ctx, mallory.request(t), nil)
				if err == nil {
					t.Fatalf("try %d: the changed set was redeemed: %d certificates", try, len(d.Manifest.GetItems()))
				}
				var wrong *WrongPasswordError
				if !errors.As(err, &wrong) {
					t.Fatalf("try %d: %v, want the password refused", try, err)
				}
			}
			if n := len(escrowKeys(t, h, victim.PersonID)); n != keysBefore {
				t.Fatalf("the colleague has %d escrowed keys, had %d", n, keysBefore)
			}
			if recs, err := h.st.CertificatesOfSet(ctx, mallory.en.CredentialSetID); err != nil || len(recs) != 0 {
				t.Fatalf("certificates of the changed set: %d, %v", len(recs), err)
			}
		})
	}
	t.Run("the set changed after the password was checked", func(t *testing.T) {
		r := &rebound{}
		h := newHarness(t, func(c *Config) { r.Store = c.Store; c.Store = r })
		victim := victimOf(h, t)
		mallory := h.enroll(t, h.signIn(t, "mallory@example.gov"))
		// The first read (the password's) sees the row as made; the
		// second, the one issuance would use, the colleague's.
		reads := 0
		r.rebind(mallory.en.CredentialSetID, func(cs *store.CredentialSet) {
			if reads++; reads > 1 {
				cs.PersonID, cs.RawSubject = victim.PersonID, victim.RawSubject
			}
		})
		_, err := h.svc.Redeem(ctx, mallory.request(t), nil)
		if !errors.Is(err, ErrPermission) {
			t.Fatalf("%v, want PermissionDenied", err)
		}
		if recs, err := h.st.CertificatesOfSet(ctx, mallory.en.CredentialSetID); err != nil || len(recs) != 0 {
			t.Fatalf("certificates of the changed set: %d, %v", len(recs), err)
		}
	})
	t.Run("the set as made redeems", func(t *testing.T) {
		r := &rebound{}
		h := newHarness(t, func(c *Config) { r.Store = c.Store; c.Store = r })
		h.install(t, h.enroll(t, h.signIn(t, "owner@example.gov")))
	})
}
