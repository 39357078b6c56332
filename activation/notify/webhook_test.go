package notify_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/credgw/credgw/activation/notify"
	"github.com/credgw/credgw/store"
)

// failStore is a claimStore that also records failed deliveries.
type failStore struct {
	claimStore
	failed []failure
}

type failure struct {
	id, cause string
	next      time.Time
}

func (f *failStore) NotificationFailed(_ context.Context, n store.Notification, cause string, next time.Time) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failed = append(f.failed, failure{n.ID, cause, next})
	return nil
}

// TestWebhookRedirectNotFollowed: a webhook URL that redirects (307, 308
// keep the method and body) must not get the signed body and its
// X-Credgw-Signature and X-Credgw-Timestamp headers re-sent to wherever
// it points, https to http included; the delivery fails, saying why, and
// is retried with the usual backoff.
func TestWebhookRedirectNotFollowed(t *testing.T) {
	for _, code := range []int{http.StatusTemporaryRedirect, http.StatusPermanentRedirect, http.StatusFound} {
		t.Run(http.StatusText(code), func(t *testing.T) {
			var elsewhere atomic.Int32
			target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				elsewhere.Add(1)
			}))
			defer target.Close()
			var hook atomic.Int32
			redirector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				hook.Add(1)
				http.Redirect(w, r, target.URL+"/collect", code)
			}))
			defer redirector.Close()

			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "hook.key"), []byte(strings.Repeat("ab", 32)), 0o600); err != nil {
				t.Fatal(err)
			}
			now := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
			st := &failStore{}
			st.due = []store.Notification{{ID: "n1", Kind: "binding", Recipient: "holder@example.com", Subject: "s", Body: "b", Attempts: 1}}
			cfg := notify.Config{Webhook: notify.WebhookConfig{URL: redirector.URL + "/hook?token=s3cret", SecretFile: "hook.key"}}
			o, err := notify.New(cfg, func(p string) string { return filepath.Join(dir, p) }, st, discard(), func() time.Time { return now })
			if err != nil {
				t.Fatal(err)
			}
			sent, failed, err := o.Deliver(context.Background())
			if n := elsewhere.Load(); n != 0 {
				t.Fatalf("the redirect target received %d requests: the signed body went where the webhook URL pointed", n)
			}
			if err != nil || sent != 0 || failed != 1 {
				t.Fatalf("Deliver: sent %d failed %d: %v; want the delivery failed", sent, failed, err)
			}
			if hook.Load() != 1 {
				t.Errorf("the webhook URL was asked %d times, want 1", hook.Load())
			}
			if len(st.failed) != 1 || st.sent != 0 {
				t.Fatalf("failed %+v, sent %d; want one failure recorded", st.failed, st.sent)
			}
			f := st.failed[0]
			for _, want := range []string{"webhook", "redirect", http.StatusText(code), "final URL"} {
				if !strings.Contains(f.cause, want) {
					t.Errorf("cause %q does not say %q", f.cause, want)
				}
			}
			if strings.Contains(f.cause, "s3cret") || strings.Contains(f.cause, "/collect") {
				t.Errorf("cause %q carries a URL", f.cause)
			}
			if !f.next.After(now) {
				t.Errorf("retry at %s, want after %s (backoff)", f.next, now)
			}
		})
	}
}
