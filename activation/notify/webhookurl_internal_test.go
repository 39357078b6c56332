package notify

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/credgw/credgw/store"
)

// TestWebhookURLNotShown: the notification webhook's URL may carry a token
// (many receivers take one in the query). A URL that does not parse was
// refused with it whole, into the log and the outbox's last error, and
// config check let it pass.
func TestWebhookURLNotShown(t *testing.T) {
	const url = "https://hooks.example.gov/credgw%zz?token=TOPSECRET"
	var problems []string
	Config{Webhook: WebhookConfig{URL: url, SecretFile: "/dev/null"}}.Validate(func(f string, a ...any) {
		problems = append(problems, fmt.Sprintf(f, a...))
	})
	if len(problems) != 1 || !strings.Contains(problems[0], "notifications.webhook.url") || strings.Contains(problems[0], "TOPSECRET") {
		t.Errorf("Validate of a URL that does not parse: %q, want one problem naming notifications.webhook.url without its token", problems)
	}
	for u, want := range map[string]int{"https://hooks.example.gov/x?token=1": 0, "http://127.0.0.1:9/hook": 0,
		"hooks.example.gov/x": 1, "ftp://hooks.example.gov/x": 1, "https:///x": 1} {
		problems = nil
		Config{Webhook: WebhookConfig{URL: u, SecretFile: "/dev/null"}}.Validate(func(f string, a ...any) {
			problems = append(problems, fmt.Sprintf(f, a...))
		})
		if len(problems) != want {
			t.Errorf("Validate of %q: %q, want %d problems (an http(s) URL with a host)", u, problems, want)
		}
	}
	h := &webhookSender{url: url, key: make([]byte, 32), client: webhookClient(), now: time.Now}
	err := h.send(context.Background(), store.Notification{ID: "n1"})
	if err == nil || strings.Contains(err.Error(), "TOPSECRET") {
		t.Errorf("send to a URL that does not parse: %v", err)
	}
}
