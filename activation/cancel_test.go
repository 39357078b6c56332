package activation

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/credgw/credgw/store"
)

// newService is the activation service on the package's test harness
// (SQLite, the smallstep authority with a software key, a file KEK).
func newService(t *testing.T) (*Service, *store.SQLite) {
	h := newHarness(t, nil)
	return h.svc, h.st
}

// enroll stores a pending credential set of person p1 and its
func enroll(t *testing.T, st *store.SQLite, id string) {
	t.Helper()
	now := time.Now()
	cs := store.CredentialSet{ID: "set-" + id, PersonID: "p1", PIVCertSHA256: "c-" + id, CardUUID: "u1", RawSubject: []byte{0x30, 0},
		Email: "p1@example.com", IdentityName: "phone", CredentialType: "t", State: store.SetPending, CreatedAt: now}
	a := store.Activation{ID: id, LookupHash: "lh-" + id, Verifier: []byte{1}, MaxAttempts: 3, CreatedAt: now, ExpiresAt: now.Add(10 * time.Minute)}
	if err := st.CreateEnrollment(context.Background(), cs, a, 0); err != nil {
		t.Fatal(err)
	}
}

// TestCancel: only a pending activation can be cancelled; a refusal
// leaves the activation and its set as they were, with no audit event.
func TestCancel(t *testing.T) {
	tests := []struct {
		name string
		id   string
		// before brings activation "a" into the case's state.
		before  func(t *testing.T, svc *Service, st *store.SQLite)
		want    error
		wantAct string // activation a's state after
		wantSet string // set-a's state after
	}{
		{"unknown activation", "nope", nil, ErrNoSuch, store.ActPending, store.SetPending},
		{"locked", "a", func(t *testing.T, svc *Service, st *store.SQLite) {
			for range 3 {
				if _, _, err := st.RecordFailedAttempt(context.Background(), "a"); err != nil {
					t.Fatal(err)
				}
			}
		}, ErrPrecondition, store.ActLocked, store.SetAbandoned},
		{"being redeemed", "a", func(t *testing.T, svc *Service, st *store.SQLite) {
			if err := st.BeginRedemption(context.Background(), "a", "r1", time.Now(), store.Lease{}); err != nil {
				t.Fatal(err)
			}
		}, ErrPrecondition, store.ActRedeeming, store.SetRedeeming},
		{"cancelled already", "a", func(t *testing.T, svc *Service, st *store.SQLite) {
			if _, err := svc.Cancel(context.Background(), "a", "first"); err != nil {
				t.Fatal(err)
			}
		}, ErrPrecondition, store.ActExpired, store.SetRevoked},
		{"pending", "a", nil, nil, store.ActExpired, store.SetRevoked},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			svc, st := newService(t)
			enroll(t, st, "a")
			if tc.before != nil {
				tc.before(t, svc, st)
			}
			before := cancelEvents(t, st)
			_, err := svc.Cancel(ctx, tc.id, "by the help desk")
			if !errors.Is(err, tc.want) {
				t.Fatalf("Cancel: err = %v, want %v", err, tc.want)
			}
			ac, err := st.ActivationByID(ctx, "a")
			if err != nil || ac.State != tc.wantAct {
				t.Errorf("activation: state %q, %v; want %q", ac.State, err, tc.wantAct)
			}
			cs, err := st.CredentialSet(ctx, "set-a")
			if err != nil || cs.State != tc.wantSet {
				t.Errorf("set: state %q, %v; want %q", cs.State, err, tc.wantSet)
			}
			added := cancelEvents(t, st) - before
			want := 0
			if tc.want == nil {
				want = 1
			}
			if added != want {
				t.Errorf("Cancel wrote %d cancel-activation events, want %d", added, want)
			}
		})
	}
}

func cancelEvents(t *testing.T, st *store.SQLite) int {
	t.Helper()
	evs, err := st.AuditEvents(context.Background(), 0, 1000, "")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range evs {
		if e.Action == "cancel-activation" {
			n++
		}
	}
	return n
}
