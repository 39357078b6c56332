package store

import (
	"context"
	"testing"
	"time"
)

func TestLinkageSchedule(t *testing.T) {
	forEachEngine(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		enroll(t, s, "a1", t0.Add(10*time.Minute)) // set-a1, cert "c", created t0
		week := 7 * 24 * time.Hour
		if n, err := s.ScheduleLinkage(ctx, week); err != nil || n != 1 {
			t.Fatalf("schedule: %d %v", n, err)
		}
		if n, err := s.ScheduleLinkage(ctx, week); err != nil || n != 0 {
			t.Fatalf("schedule again: %d %v", n, err)
		}
		if got, err := s.ClaimLinkage(ctx, t0.Add(week-time.Second), time.Minute, 10); err != nil || len(got) != 0 {
			t.Fatalf("claimed before due: %v %v", got, err)
		}
		if _, ok, err := s.OldestDueLinkage(ctx, t0.Add(week-time.Second)); err != nil || ok {
			t.Fatalf("a check due before its time: %v %v", ok, err)
		}
		if due, ok, err := s.OldestDueLinkage(ctx, t0.Add(week+time.Hour)); err != nil || !ok || !due.Equal(t0.Add(week)) {
			t.Fatalf("oldest due check: %v %v %v, want %v", due, ok, err, t0.Add(week))
		}
		now := t0.Add(week)
		got, err := s.ClaimLinkage(ctx, now, time.Minute, 10)
		if err != nil || len(got) != 1 || got[0].CertSHA256 != "c" {
			t.Fatalf("claim: %v %v", got, err)
		}
		// Claimed: another replica gets nothing until the lease ends.
		if again, err := s.ClaimLinkage(ctx, now, time.Minute, 10); err != nil || len(again) != 0 {
			t.Fatalf("claimed twice: %v %v", again, err)
		}
		l := got[0]
		l.NextCheck, l.LastChecked, l.LastStatus, l.UnknownSince = now.Add(24*time.Hour), now, "unknown", now
		if err := s.FinishLinkage(ctx, l); err != nil {
			t.Fatal(err)
		}
		next, err := s.ClaimLinkage(ctx, now.Add(24*time.Hour), time.Minute, 10)
		if err != nil || len(next) != 1 || !next[0].UnknownSince.Equal(now) || next[0].LastStatus != "unknown" {
			t.Fatalf("next day: %+v %v", next, err)
		}
		if n, err := s.LiveSetsOfCert(ctx, "c"); err != nil || n != 1 {
			t.Fatalf("live sets: %d %v", n, err)
		}
		if err := s.DeleteLinkage(ctx, "c"); err != nil {
			t.Fatal(err)
		}
		if sets, err := s.CredentialSetsOfIdentity(ctx, IdentitySelector{CertSHA256: "c"}); err != nil || len(sets) != 1 {
			t.Fatalf("sets of cert: %v %v", sets, err)
		}
	})
}
