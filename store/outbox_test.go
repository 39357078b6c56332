package store

import (
	"context"
	"testing"
	"time"
)

func TestOutbox(t *testing.T) {
	forEachEngine(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		for _, id := range []string{"n1", "n2"} {
			if err := s.EnqueueNotification(ctx, Notification{ID: id, Kind: "binding", Recipient: "a@example.com", Subject: "s", Body: "b", CreatedAt: t0}); err != nil {
				t.Fatal(err)
			}
		}
		got, err := s.ClaimNotifications(ctx, t0, time.Minute, 10)
		if err != nil || len(got) != 2 || got[0].Attempts != 1 {
			t.Fatalf("claim: %+v %v", got, err)
		}
		if again, err := s.ClaimNotifications(ctx, t0, time.Minute, 10); err != nil || len(again) != 0 {
			t.Fatalf("claimed twice: %v %v", again, err)
		}
		byID := map[string]Notification{got[0].ID: got[0], got[1].ID: got[1]}
		// A stale claim records nothing.
		stale := byID["n1"]
		stale.Claim++
		if err := s.NotificationSent(ctx, stale, t0); err != nil {
			t.Fatal(err)
		}
		if all, _ := s.Notifications(ctx); !all[0].SentAt.IsZero() {
			t.Fatal("a stale claim marked the notification sent")
		}
		if err := s.NotificationSent(ctx, byID["n1"], t0); err != nil {
			t.Fatal(err)
		}
		n2 := byID["n2"]
		n2.DoneBackends = "webhook" // the webhook took it, the relay did not
		if err := s.NotificationFailed(ctx, n2, "smtp: connection refused", t0.Add(time.Minute)); err != nil {
			t.Fatal(err)
		}
		if early, err := s.ClaimNotifications(ctx, t0.Add(30*time.Second), time.Minute, 10); err != nil || len(early) != 0 {
			t.Fatalf("retried before its time: %v %v", early, err)
		}
		retry, err := s.ClaimNotifications(ctx, t0.Add(time.Minute), time.Minute, 10)
		if err != nil || len(retry) != 1 || retry[0].ID != "n2" || retry[0].Attempts != 2 || retry[0].LastError == "" || retry[0].DoneBackends != "webhook" {
			t.Fatalf("retry: %+v %v", retry, err)
		}
		all, err := s.Notifications(ctx)
		if err != nil || len(all) != 2 || all[0].SentAt.IsZero() {
			t.Fatalf("list: %+v %v", all, err)
		}
	})
}

// TestSentNotificationsPruned: sent notifications stayed in the outbox for
// good, with the names and addresses they carried, and the table grew
// without end. Those sent before a time go; unsent ones (due, or given up)
// stay, and so does a repeat's id guard for what is kept.
func TestSentNotificationsPruned(t *testing.T) {
	forEachEngine(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		for _, id := range []string{"old", "recent", "unsent"} {
			if err := s.EnqueueNotification(ctx, Notification{ID: id, Kind: "binding", Recipient: "a@example.com", Subject: "s", Body: "b", CreatedAt: t0}); err != nil {
				t.Fatal(err)
			}
		}
		got, err := s.ClaimNotifications(ctx, t0, time.Minute, 10)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range got {
			switch n.ID {
			case "old":
				err = s.NotificationSent(ctx, n, t0)
			case "recent":
				err = s.NotificationSent(ctx, n, t0.Add(48*time.Hour))
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		n, err := s.PruneSentNotifications(ctx, t0.Add(24*time.Hour))
		if err != nil || n != 1 {
			t.Fatalf("pruned %d, %v; want 1", n, err)
		}
		all, err := s.Notifications(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, n := range all {
			ids = append(ids, n.ID)
		}
		if len(ids) != 2 || ids[0] == "old" || ids[1] == "old" {
			t.Fatalf("left %v, want recent and unsent", ids)
		}
	})
}
