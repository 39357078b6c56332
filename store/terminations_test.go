package store

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestTerminations(t *testing.T) {
	forEachEngine(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		enroll(t, s, "a1", t0.Add(600e9))
		fascn := []byte{0xd4, 0x32, 0x10}
		for _, bad := range []IdentitySelector{{}, {CardUUID: "u", PersonID: "p"}} {
			if err := s.Terminate(ctx, Termination{Selector: bad, TerminatedAt: t0}); !errors.Is(err, ErrNoSelector) {
				t.Fatalf("Terminate(%+v) = %v", bad, err)
			}
			if _, err := s.CredentialSetsOfIdentity(ctx, bad); !errors.Is(err, ErrNoSelector) {
				t.Fatalf("CredentialSetsOfIdentity(%+v) = %v", bad, err)
			}
		}
		if a, err := s.ActivationOfSet(ctx, "set-a1"); err != nil || a.ID != "a1" {
			t.Fatalf("ActivationOfSet: %+v %v", a.ID, err)
		}
		if _, err := s.ActivationOfSet(ctx, "no-such-set"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("ActivationOfSet(unknown) = %v", err)
		}
		for _, sel := range []IdentitySelector{{CardUUID: "u"}, {PersonID: "p"}} {
			sets, err := s.CredentialSetsOfIdentity(ctx, sel)
			if err != nil || len(sets) != 1 || sets[0].ID != "set-a1" {
				t.Fatalf("%+v: %v %v", sel, sets, err)
			}
		}
		if sets, err := s.CredentialSetsOfIdentity(ctx, IdentitySelector{CardUUID: "other"}); err != nil || len(sets) != 0 {
			t.Fatalf("other card: %v %v", sets, err)
		}
		if got, err := s.Terminated(ctx, fascn, "u", "p"); err != nil || got {
			t.Fatalf("before: %v %v", got, err)
		}
		for _, tc := range []struct {
			sel                IdentitySelector
			fascn              []byte
			cardUUID, personID string
		}{
			{IdentitySelector{FASCN: fascn}, fascn, "", ""},
			{IdentitySelector{CardUUID: "u2"}, nil, "u2", ""},
			{IdentitySelector{PersonID: "p2"}, nil, "x", "p2"},
		} {
			if err := s.Terminate(ctx, Termination{Selector: tc.sel, TerminatedAt: t0, Comment: "left the agency"}); err != nil {
				t.Fatal(err)
			}
			// Again: not an error.
			if err := s.Terminate(ctx, Termination{Selector: tc.sel, TerminatedAt: t0}); err != nil {
				t.Fatal(err)
			}
			if got, err := s.Terminated(ctx, tc.fascn, tc.cardUUID, tc.personID); err != nil || !got {
				t.Fatalf("%+v not terminated: %v", tc.sel, err)
			}
		}
		// Empty values never match.
		if got, err := s.Terminated(ctx, nil, "", ""); err != nil || got {
			t.Fatalf("empty identity terminated: %v %v", got, err)
		}
	})
}

func TestAdminLists(t *testing.T) {
	forEachEngine(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		enroll(t, s, "a1", t0.Add(600e9))
		enroll(t, s, "a2", t0.Add(600e9))
		sets, err := s.ListCredentialSets(ctx, IdentitySelector{}, "", 0, 10)
		if err != nil || len(sets) != 2 {
			t.Fatalf("all sets: %v %v", sets, err)
		}
		if sets, err := s.ListCredentialSets(ctx, IdentitySelector{CardUUID: "u"}, "pending", 1, 10); err != nil || len(sets) != 1 {
			t.Fatalf("page 2: %v %v", sets, err)
		}
		if sets, err := s.ListCredentialSets(ctx, IdentitySelector{CardUUID: "x"}, "", 0, 10); err != nil || len(sets) != 0 {
			t.Fatalf("other card: %v %v", sets, err)
		}
		acts, err := s.ListActivations(ctx, IdentitySelector{PersonID: "p"}, "pending", 0, 10)
		if err != nil || len(acts) != 2 || acts[0].Package != nil {
			t.Fatalf("activations: %v %v", acts, err)
		}
		if acts, err := s.ListActivations(ctx, IdentitySelector{}, "locked", 0, 10); err != nil || len(acts) != 0 {
			t.Fatalf("locked: %v %v", acts, err)
		}
		if _, err := s.ListActivations(ctx, IdentitySelector{CardUUID: "u", PersonID: "p"}, "", 0, 10); !errors.Is(err, ErrNoSelector) {
			t.Fatalf("two selectors: %v", err)
		}
	})
}

func TestRevokedSetsWithLiveCertificates(t *testing.T) {
	forEachEngine(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		if ids, err := s.RevokedSetsWithLiveCertificates(ctx, 10); err != nil || len(ids) != 0 {
			t.Fatalf("empty store: %v %v", ids, err)
		}
	})
}

// TestWebhookDeliveries: a signature is accepted once until it expires,
// on every engine; forgetting it (a failed request) lets it through again;
// the sweep forgets what expired.
func TestWebhookDeliveries(t *testing.T) {
	forEachEngine(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		until := t0.Add(5 * time.Minute)
		for i, want := range []bool{true, false, false} {
			if first, err := s.RememberDelivery(ctx, "sha256=aa", until); err != nil || first != want {
				t.Fatalf("try %d: first %v, %v; want %v", i, first, err, want)
			}
		}
		if err := s.ForgetDelivery(ctx, "sha256=aa"); err != nil {
			t.Fatal(err)
		}
		if first, err := s.RememberDelivery(ctx, "sha256=aa", until); err != nil || !first {
			t.Fatalf("after forgetting: first %v, %v", first, err)
		}
		if _, err := s.DeleteExpired(ctx, until.Add(time.Second)); err != nil {
			t.Fatal(err)
		}
		if first, err := s.RememberDelivery(ctx, "sha256=aa", until.Add(time.Hour)); err != nil || !first {
			t.Fatalf("after it expired: first %v, %v", first, err)
		}
	})
}

// TestGatewaySecret: the first sealed secret of a name is kept; a second
// replica's offer gets the first one back, on every engine.
func TestGatewaySecret(t *testing.T) {
	forEachEngine(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		first, since, err := s.GatewaySecret(ctx, "pepper", []byte("sealed by replica 1"), t0)
		if err != nil || string(first) != "sealed by replica 1" || !since.Equal(t0) {
			t.Fatalf("first: %q %s %v", first, since, err)
		}
		again, since, err := s.GatewaySecret(ctx, "pepper", []byte("sealed by replica 2"), t0.Add(time.Hour))
		if err != nil || string(again) != "sealed by replica 1" || !since.Equal(t0) {
			t.Fatalf("second replica got %q made %s, %v; want the first one's", again, since, err)
		}
		other, _, err := s.GatewaySecret(ctx, "another", []byte("x"), t0)
		if err != nil || string(other) != "x" {
			t.Fatalf("another name: %q %v", other, err)
		}
	})
}

// TestTerminationFinished: a termination is unfinished from Terminate to
// FinishTermination, in any spelling of a person id, and only its own.
func TestTerminationFinished(t *testing.T) {
	forEachEngine(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		sel := IdentitySelector{PersonID: "ann@example.gov"}
		unfinished := func(sel IdentitySelector) bool {
			t.Helper()
			u, err := s.TerminationUnfinished(ctx, sel, t0.Add(time.Second))
			if err != nil {
				t.Fatal(err)
			}
			return u
		}
		if unfinished(sel) {
			t.Fatal("unfinished before any termination")
		}
		if _, err := s.TerminatedAt(ctx, sel); !errors.Is(err, ErrNotFound) {
			t.Errorf("TerminatedAt before the termination: %v", err)
		}
		if err := s.Terminate(ctx, Termination{Selector: sel, TerminatedAt: t0}); err != nil {
			t.Fatal(err)
		}
		// Terminating again keeps the first time.
		if err := s.Terminate(ctx, Termination{Selector: sel, TerminatedAt: t0.Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
		if at, err := s.TerminatedAt(ctx, IdentitySelector{PersonID: "ANN@example.gov"}); err != nil || !at.Equal(t0) {
			t.Errorf("TerminatedAt: %v, %v; want %v", at, err, t0)
		}
		if u, err := s.TerminationUnfinished(ctx, sel, t0); err != nil || u {
			t.Errorf("a termination recorded at before counts as unfinished: %v %v", u, err)
		}
		if !unfinished(IdentitySelector{PersonID: "Ann@Example.gov"}) {
			t.Error("the termination is not unfinished in another spelling")
		}
		if unfinished(IdentitySelector{PersonID: "bob@example.gov"}) || unfinished(IdentitySelector{CardUUID: "ann@example.gov"}) {
			t.Error("another identity's termination is unfinished")
		}
		if err := s.FinishTermination(ctx, sel, t0.Add(time.Minute)); err != nil {
			t.Fatal(err)
		}
		if unfinished(sel) {
			t.Error("unfinished after FinishTermination")
		}
		if _, err := s.TerminationUnfinished(ctx, IdentitySelector{}, t0); !errors.Is(err, ErrNoSelector) {
			t.Errorf("no selector: %v", err)
		}
	})
}
