package store

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"
)

func enroll(t *testing.T, s Store, id string, expires time.Time) {
	t.Helper()
	cs := CredentialSet{ID: "set-" + id, PersonID: "p", PIVCertSHA256: "c", CardUUID: "u", RawSubject: []byte{0x30, 0},
		IdentityName: "n", CredentialType: "t", State: SetPending, CreatedAt: t0}
	a := Activation{ID: id, LookupHash: "lh-" + id, Verifier: []byte{1}, MaxAttempts: 3, CreatedAt: t0, ExpiresAt: expires}
	if err := s.CreateEnrollment(context.Background(), cs, a, 0); err != nil {
		t.Fatal(err)
	}
}

func TestActivationLockout(t *testing.T) {
	forEachEngine(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		enroll(t, s, "a1", t0.Add(10*time.Minute))
		for i, want := range []string{ActPending, ActPending, ActLocked} {
			n, state, err := s.RecordFailedAttempt(ctx, "a1")
			if err != nil || n != i+1 || state != want {
				t.Fatalf("attempt %d: %d %s %v", i+1, n, state, err)
			}
		}
		if _, _, err := s.RecordFailedAttempt(ctx, "a1"); !errors.Is(err, ErrAlreadyUsed) {
			t.Fatalf("attempt on a locked activation: %v", err)
		}
		if err := s.BeginRedemption(ctx, "a1", "r1", t0, Lease{}); !errors.Is(err, ErrAlreadyUsed) {
			t.Fatalf("redeeming a locked activation: %v", err)
		}
		if cs, _ := s.CredentialSet(ctx, "set-a1"); cs.State != SetAbandoned {
			t.Fatalf("set state %s", cs.State)
		}
	})
}

func TestRedemptionOnceAndConfirm(t *testing.T) {
	forEachEngine(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		enroll(t, s, "a2", t0.Add(10*time.Minute))
		var wg sync.WaitGroup
		var mu sync.Mutex
		wins := 0
		for i := 0; i < 16; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				err := s.BeginRedemption(ctx, "a2", fmt.Sprintf("r%d", i), t0, Lease{})
				mu.Lock()
				defer mu.Unlock()
				if err == nil {
					wins++
				} else if !errors.Is(err, ErrAlreadyUsed) {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		if wins != 1 {
			t.Fatalf("%d redemptions began", wins)
		}
		a, _ := s.ActivationByID(ctx, "a2")
		if a.State != ActRedeeming || a.RedemptionID == "" {
			t.Fatalf("%+v", a)
		}
		if err := s.Confirm(ctx, a.RedemptionID, t0); !errors.Is(err, ErrAlreadyUsed) {
			t.Fatalf("confirm before the package: %v", err)
		}
		if err := s.StorePackage(ctx, "a2", a.RedemptionID, []byte{9}, "h", 1, nil, t0.Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		if err := s.StorePackage(ctx, "a2", a.RedemptionID, []byte{9}, "h", 1, nil, t0.Add(time.Hour)); !errors.Is(err, ErrNotFound) {
			t.Fatalf("package stored twice: %v", err)
		}
		if err := s.Confirm(ctx, a.RedemptionID, t0); err != nil {
			t.Fatal(err)
		}
		if err := s.Confirm(ctx, a.RedemptionID, t0); !errors.Is(err, ErrAlreadyUsed) {
			t.Fatalf("confirmed twice: %v", err)
		}
		a, _ = s.ActivationByID(ctx, "a2")
		cs, _ := s.CredentialSet(ctx, "set-a2")
		if a.State != ActCompleted || a.Package != nil || cs.State != SetActive {
			t.Fatalf("%+v %+v", a, cs)
		}
	})
}

func TestExpiryAndUnconfirmed(t *testing.T) {
	forEachEngine(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		enroll(t, s, "old", t0.Add(time.Minute))
		if err := s.BeginRedemption(ctx, "old", "r", t0.Add(2*time.Minute), Lease{}); !errors.Is(err, ErrAlreadyUsed) {
			t.Fatalf("redeeming an expired activation: %v", err)
		}
		if n, err := s.ExpirePending(ctx, t0.Add(2*time.Minute)); err != nil || n != 1 {
			t.Fatalf("ExpirePending = %d, %v", n, err)
		}
		enroll(t, s, "unc", t0.Add(10*time.Minute))
		if err := s.BeginRedemption(ctx, "unc", "ru", t0, Lease{}); err != nil {
			t.Fatal(err)
		}
		if err := s.StorePackage(ctx, "unc", "ru", []byte{1}, "h", 1, nil, t0.Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		if ids, _ := s.ClaimUnconfirmed(ctx, t0.Add(30*time.Minute)); len(ids) != 0 {
			t.Fatalf("claimed before the window: %v", ids)
		}
		ids, err := s.ClaimUnconfirmed(ctx, t0.Add(61*time.Minute))
		if err != nil || len(ids) != 1 || ids[0] != "set-unc" {
			t.Fatalf("%v %v", ids, err)
		}
		if ids, _ := s.ClaimUnconfirmed(ctx, t0.Add(62*time.Minute)); len(ids) != 0 {
			t.Fatalf("claimed twice: %v", ids)
		}
		a, _ := s.ActivationByID(ctx, "unc")
		if a.Package != nil || a.State != ActExpired {
			t.Fatalf("%+v", a)
		}
	})
}

func TestAbortRedemption(t *testing.T) {
	forEachEngine(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		enroll(t, s, "ab", t0.Add(10*time.Minute))
		if err := s.BeginRedemption(ctx, "ab", "r", t0, Lease{}); err != nil {
			t.Fatal(err)
		}
		if err := s.AbortRedemption(ctx, "ab", "other"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("abort with another redemption id: %v", err)
		}
		if err := s.AbortRedemption(ctx, "ab", "r"); err != nil {
			t.Fatal(err)
		}
		if err := s.BeginRedemption(ctx, "ab", "r2", t0, Lease{}); err != nil {
			t.Fatalf("after abort: %v", err)
		}
	})
}

// TestRedemptionLeases: a claim is released once its lease has run out,
// not before; a renewed lease holds; a legacy claim (no lease) lapses five
// minutes after it began; all lists every package-less claim; a release
// puts the new escrow key on the set in the same transaction.
func TestRedemptionLeases(t *testing.T) {
	forEachEngine(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		for _, id := range []string{"dead", "alive", "fine", "legacy"} {
			enroll(t, s, id, t0.Add(10*time.Minute))
		}
		lease := func(holder string) Lease { return Lease{Holder: holder, Until: t0.Add(30 * time.Second)} }
		for id, l := range map[string]Lease{"dead": lease("h1"), "alive": lease("h2"), "fine": lease("h2"), "legacy": {}} {
			if err := s.BeginRedemption(ctx, id, "r-"+id, t0, l); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.StorePackage(ctx, "fine", "r-fine", []byte{1}, "h", 1, nil, t0.Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		lapsed := func(now time.Time, all bool) []string {
			t.Helper()
			rs, err := s.LapsedRedemptions(ctx, now, all)
			if err != nil {
				t.Fatal(err)
			}
			var ids []string
			for _, r := range rs {
				ids = append(ids, r.ActivationID)
			}
			sort.Strings(ids)
			return ids
		}
		if ids := lapsed(t0.Add(29*time.Second), false); len(ids) != 0 {
			t.Fatalf("lapsed before the lease ran out: %v", ids)
		}
		// Only the ids named, and only the holder's: r-dead is h1's.
		if n, err := s.RenewLeases(ctx, "h2", []string{"r-alive", "r-fine", "r-dead"}, t0.Add(time.Minute)); err != nil || n != 1 {
			t.Fatalf("renewed %d leases of h2 (%v), want 1 (the packaged one is done)", n, err)
		}
		if ids := lapsed(t0.Add(31*time.Second), false); fmt.Sprint(ids) != "[dead]" {
			t.Fatalf("lapsed at 31 s: %v, want [dead]", ids)
		}
		if ids := lapsed(t0.Add(5*time.Minute+time.Second), false); fmt.Sprint(ids) != "[alive dead legacy]" {
			t.Fatalf("lapsed at 5 min: %v, want [alive dead legacy]", ids)
		}
		if ids := lapsed(t0, true); fmt.Sprint(ids) != "[alive dead legacy]" {
			t.Fatalf("all: %v, want every claim without a package", ids)
		}
		alive := Redemption{ActivationID: "alive", RedemptionID: "r-alive", CredentialSetID: "set-alive"}
		if ok, err := s.ReleaseRedemption(ctx, alive, "", t0.Add(31*time.Second)); err != nil || ok {
			t.Fatalf("released a renewed claim: %v %v", ok, err)
		}
		dead := Redemption{ActivationID: "dead", RedemptionID: "r-dead", CredentialSetID: "set-dead"}
		if ok, err := s.ReleaseRedemption(ctx, dead, "new-key", t0.Add(31*time.Second)); err != nil || !ok {
			t.Fatalf("release of a lapsed claim: %v %v", ok, err)
		}
		if ok, _ := s.ReleaseRedemption(ctx, dead, "newer-key", t0.Add(31*time.Second)); ok {
			t.Fatal("released twice")
		}
		if a, _ := s.ActivationByID(ctx, "dead"); a.State != ActPending || a.RedemptionID != "" {
			t.Fatalf("%+v", a)
		}
		if cs, _ := s.CredentialSet(ctx, "set-dead"); cs.State != SetPending || cs.EscrowKeyID != "new-key" {
			t.Fatalf("released set: state %s, escrow key %q; want pending with new-key", cs.State, cs.EscrowKeyID)
		}
		// The code redeems again.
		if err := s.BeginRedemption(ctx, "dead", "r2", t0.Add(time.Minute), lease("h3")); err != nil {
			t.Fatalf("after the release: %v", err)
		}
		if a, _ := s.ActivationByID(ctx, "fine"); a.State != ActRedeeming {
			t.Fatalf("a redemption with a package was touched: %+v", a)
		}
	})
}

func TestEnrollmentCapInTransaction(t *testing.T) {
	forEachEngine(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		mk := func(id string) error {
			cs := CredentialSet{ID: "set-" + id, PersonID: "capped", PIVCertSHA256: "c", CardUUID: "u", RawSubject: []byte{0x30, 0},
				IdentityName: "n", CredentialType: "t", State: SetPending, CreatedAt: t0}
			return s.CreateEnrollment(ctx, cs, Activation{ID: id, LookupHash: "lh-" + id, Verifier: []byte{1}, MaxAttempts: 3, CreatedAt: t0, ExpiresAt: t0.Add(time.Minute)}, 2)
		}
		var wg sync.WaitGroup
		var mu sync.Mutex
		okN, limited := 0, 0
		for i := 0; i < 8; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				err := mk(fmt.Sprintf("cap-%d", i))
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					okN++
				case errors.Is(err, ErrLimit):
					limited++
				default:
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		if okN != 2 || limited != 6 {
			t.Fatalf("%d enrollments created, %d refused; want 2 and 6", okN, limited)
		}
		// A revoked set no longer counts, and its activation is ended.
		if _, err := s.RevokeCredentialSet(ctx, "set-cap-0", t0); err != nil && !errors.Is(err, ErrNotFound) {
			t.Fatal(err)
		}
	})
}

// TestReserveAttempt: of concurrent reservations, exactly max_attempts get
// one; a returned attempt can be reserved again; the lock takes a spent
// activation only.
func TestReserveAttempt(t *testing.T) {
	forEachEngine(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		enroll(t, s, "ra", t0.Add(10*time.Minute))
		start := make(chan struct{})
		var wg sync.WaitGroup
		var mu sync.Mutex
		got := map[string]int{}
		for i := 0; i < 20; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				_, err := s.ReserveAttempt(ctx, "ra")
				mu.Lock()
				defer mu.Unlock()
				got[fmt.Sprint(err)]++
			}()
		}
		close(start)
		wg.Wait()
		if got["<nil>"] != 3 || got[ErrBusy.Error()] != 17 {
			t.Fatalf("reservations: %v, want 3 and 17 busy", got)
		}
		if a, err := s.ReturnAttempt(ctx, "ra"); err != nil || a.FailedAttempts != 2 {
			t.Fatalf("return: %d %v", a.FailedAttempts, err)
		}
		if locked, _, err := s.LockIfSpent(ctx, "ra"); locked || err != nil {
			t.Fatalf("locked with an attempt left: %v %v", locked, err)
		}
		if a, err := s.ReserveAttempt(ctx, "ra"); err != nil || a.FailedAttempts != 3 {
			t.Fatalf("reserve again: %d %v", a.FailedAttempts, err)
		}
		if locked, redeeming, err := s.LockIfSpent(ctx, "ra"); !locked || redeeming || err != nil {
			t.Fatalf("lock: %v %v %v", locked, redeeming, err)
		}
		if _, err := s.ReserveAttempt(ctx, "ra"); !errors.Is(err, ErrLocked) {
			t.Fatalf("reserve on a locked activation: %v", err)
		}
		if _, err := s.ReturnAttempt(ctx, "ra"); !errors.Is(err, ErrAlreadyUsed) {
			t.Fatalf("return on a locked activation: %v", err)
		}
		if cs, _ := s.CredentialSet(ctx, "set-ra"); cs.State != SetAbandoned {
			t.Fatalf("set state %s", cs.State)
		}
	})
}

// TestRevokeCredentialSetEndsItsRenewal: revoking a set revokes, in the
// same transaction, its renewal in progress (its activation expired, its
// package deleted), and leaves alone a confirmed renewal and the renewals
// of other sets.
func TestRevokeCredentialSetEndsItsRenewal(t *testing.T) {
	forEachEngine(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		// renewal makes set-<id> renewing set-<of>, its package stored.
		renewal := func(id, of string) string {
			t.Helper()
			cs := CredentialSet{ID: "set-" + id, PersonID: "p", PIVCertSHA256: "c", CardUUID: "u", RawSubject: []byte{0x30, 0},
				IdentityName: "n", CredentialType: "t", State: SetPending, CreatedAt: t0, RenewsSetID: "set-" + of}
			a := Activation{ID: id, LookupHash: "lh-" + id, Verifier: []byte{1}, MaxAttempts: 3, CreatedAt: t0, ExpiresAt: t0.Add(time.Hour)}
			if err := s.CreateEnrollment(ctx, cs, a, 0); err != nil {
				t.Fatal(err)
			}
			if err := s.BeginRedemption(ctx, id, "r-"+id, t0, Lease{}); err != nil {
				t.Fatal(err)
			}
			if err := s.StorePackage(ctx, id, "r-"+id, []byte{9}, "h", 1, nil, t0.Add(time.Hour)); err != nil {
				t.Fatal(err)
			}
			return "r-" + id
		}
		for _, id := range []string{"lost", "other", "superseded"} {
			// Active sets: only those can be renewed.
			enroll(t, s, id, t0.Add(time.Hour))
			if err := s.BeginRedemption(ctx, id, "r-"+id, t0, Lease{}); err != nil {
				t.Fatal(err)
			}
			if err := s.StorePackage(ctx, id, "r-"+id, []byte{9}, "h", 1, nil, t0.Add(time.Hour)); err != nil {
				t.Fatal(err)
			}
			if err := s.Confirm(ctx, "r-"+id, t0); err != nil {
				t.Fatal(err)
			}
		}
		renewal("lost-renewal", "lost")
		renewal("other-renewal", "other")
		if err := s.Confirm(ctx, renewal("confirmed-renewal", "superseded"), t0); err != nil {
			t.Fatal(err)
		}
		live, err := s.LiveRenewals(ctx, "set-lost")
		if err != nil || len(live) != 1 || live[0].ID != "set-lost-renewal" {
			t.Fatalf("the live renewals of set-lost: %v (%v), want set-lost-renewal", live, err)
		}
		for _, id := range []string{"set-lost", "set-superseded"} {
			if _, err := s.RevokeCredentialSet(ctx, id, t0.Add(time.Minute)); err != nil {
				t.Fatal(err)
			}
		}
		for _, tc := range []struct {
			activation, set  string
			wantAct, wantSet string
			wantPackage      bool
		}{
			{"lost-renewal", "set-lost-renewal", ActExpired, SetRevoked, false},
			{"other-renewal", "set-other-renewal", ActRedeeming, SetRedeeming, true},
			{"confirmed-renewal", "set-confirmed-renewal", ActCompleted, SetActive, false},
		} {
			a, err := s.ActivationByID(ctx, tc.activation)
			if err != nil {
				t.Fatal(err)
			}
			cs, err := s.CredentialSet(ctx, tc.set)
			if err != nil {
				t.Fatal(err)
			}
			if a.State != tc.wantAct || cs.State != tc.wantSet || (a.Package != nil) != tc.wantPackage {
				t.Errorf("%s: activation %s, set %s, package %v; want %s, %s, %v", tc.activation, a.State, cs.State, a.Package != nil,
					tc.wantAct, tc.wantSet, tc.wantPackage)
			}
		}
		if live, err := s.LiveRenewals(ctx, "set-lost"); err != nil || len(live) != 0 {
			t.Fatalf("the live renewals of set-lost after its revocation: %v (%v), want none", live, err)
		}
	})
}

// TestForgetCode: an ended activation's secret can make a new activation
// once its code is forgotten; a live one keeps its secret to itself.
func TestForgetCode(t *testing.T) {
	forEachEngine(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		enroll(t, s, "f1", t0.Add(time.Hour))
		reuse := func(id string) error {
			cs := CredentialSet{ID: "set-" + id, PersonID: "p", PIVCertSHA256: "c", CardUUID: "u", RawSubject: []byte{0x30, 0},
				IdentityName: "n", CredentialType: "t", State: SetPending, CreatedAt: t0}
			return s.CreateEnrollment(ctx, cs, Activation{ID: id, LookupHash: "lh-f1", Verifier: []byte{1}, MaxAttempts: 3,
				CreatedAt: t0, ExpiresAt: t0.Add(time.Hour)}, 0)
		}
		if err := s.ForgetCode(ctx, "f1"); err != nil {
			t.Fatal(err)
		}
		if err := reuse("f2"); !errors.Is(err, ErrConflict) {
			t.Fatalf("a live activation's secret reused: %v, want ErrConflict", err)
		}
		if _, err := s.RevokeCredentialSet(ctx, "set-f1", t0); err != nil {
			t.Fatal(err)
		}
		if err := s.ForgetCode(ctx, "f1"); err != nil {
			t.Fatal(err)
		}
		if err := reuse("f3"); err != nil {
			t.Fatalf("an ended activation's secret, forgotten: %v", err)
		}
		if a, err := s.ActivationByID(ctx, "f1"); err != nil || a.State != ActExpired {
			t.Fatalf("the ended activation: %v %v", a.State, err)
		}
	})
}

// TestRenewalOfActiveSetOnly: a renewal is created only for a set that is
// active at that moment.
func TestRenewalOfActiveSetOnly(t *testing.T) {
	forEachEngine(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		renew := func(id, of string) error {
			cs := CredentialSet{ID: "set-" + id, PersonID: "p", PIVCertSHA256: "c", CardUUID: "u", RawSubject: []byte{0x30, 0},
				IdentityName: "n", CredentialType: "t", State: SetPending, CreatedAt: t0, RenewsSetID: "set-" + of}
			return s.CreateEnrollment(ctx, cs, Activation{ID: id, LookupHash: "lh-" + id, Verifier: []byte{1}, MaxAttempts: 3,
				CreatedAt: t0, ExpiresAt: t0.Add(time.Hour)}, 0)
		}
		enroll(t, s, "pending-one", t0.Add(time.Hour))
		if err := renew("r1", "pending-one"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("a renewal of a pending set: %v, want ErrNotFound", err)
		}
		if err := renew("r2", "no-such-set"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("a renewal of no set: %v, want ErrNotFound", err)
		}
		if _, err := s.ActivationByID(ctx, "r1"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("the refused renewal's activation: %v, want none", err)
		}
	})
}
