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
