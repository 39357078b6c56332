package server_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/credgw/credgw/server"
)

var webhookKey = bytes.Repeat([]byte{0x5a}, 32)

func postTermination(t *testing.T, at time.Time, body string, key []byte) (int, string) {
	t.Helper()
	return postTerminationTo(t, http.DefaultClient, "http://"+gw.WebhookAddr(), at, body, key)
}

// postTerminationTo posts a termination signed with key to base's webhook.
func postTerminationTo(t *testing.T, c *http.Client, base string, at time.Time, body string, key []byte) (int, string) {
	t.Helper()
	req, err := http.NewRequest("POST", base+"/v1/webhooks/termination", bytes.NewReader([]byte(body)))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Credgw-Timestamp", strconv.FormatInt(at.Unix(), 10))
	req.Header.Set("X-Credgw-Signature", server.WebhookSignature(key, at, []byte(body)))
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestTerminationWebhook: a signed, fresh termination revokes the card's
// derived credentials; a bad signature or an old timestamp changes nothing.
func TestTerminationWebhook(t *testing.T) {
	ctx := context.Background()
	e := enrollCard(t)
	cs, err := gwStore.CredentialSet(ctx, e.resp.GetCredentialSetId())
	if err != nil {
		t.Fatal(err)
	}
	body := fmt.Sprintf(`{"card_uuid":%q,"comment":"HR: separated"}`, cs.CardUUID)
	refusals := []struct {
		name string
		at   time.Time
		key  []byte
		want int
	}{
		{"bad signature", now(), bytes.Repeat([]byte{1}, 32), http.StatusUnauthorized},
		{"old timestamp", now().Add(-10 * time.Minute), webhookKey, http.StatusUnauthorized},
	}
	for _, tc := range refusals {
		t.Run(tc.name, func(t *testing.T) {
			if code, msg := postTermination(t, tc.at, body, tc.key); code != tc.want {
				t.Fatalf("%d %s", code, msg)
			}
			if cs, _ := gwStore.CredentialSet(ctx, cs.ID); cs.State != "pending" {
				t.Fatalf("a refused webhook changed the set to %s", cs.State)
			}
		})
	}
	code, msg := postTermination(t, now(), body, webhookKey)
	if code != http.StatusOK {
		t.Fatalf("%d %s", code, msg)
	}
	var out struct {
		Terminated string `json:"terminated"`
	}
	if err := json.Unmarshal([]byte(msg), &out); err != nil || out.Terminated != "card_uuid:"+cs.CardUUID {
		t.Fatalf("%s (%v)", msg, err)
	}
	if cs, _ := gwStore.CredentialSet(ctx, cs.ID); cs.State != "revoked" {
		t.Fatalf("set is %s after termination", cs.State)
	}
	if ok, err := gwStore.Terminated(ctx, nil, cs.CardUUID, ""); err != nil || !ok {
		t.Fatalf("not recorded as terminated: %v", err)
	}
}

// TestTerminationWebhookReplay: a termination replayed inside the
// timestamp window is answered 409 and has no effect: one audit event, one
// notification, however often it is sent (issue 14, point 5).
func TestTerminationWebhookReplay(t *testing.T) {
	ctx := context.Background()
	e := enrollCard(t)
	cs, err := gwStore.CredentialSet(ctx, e.resp.GetCredentialSetId())
	if err != nil {
		t.Fatal(err)
	}
	terminations := func() int {
		evs, err := gwStore.AuditEvents(ctx, 0, 0, "")
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, e := range evs {
			if e.Action == "terminate" && e.CardUUID == cs.CardUUID {
				n++
			}
		}
		return n
	}
	body := fmt.Sprintf(`{"card_uuid":%q,"comment":"HR: separated"}`, cs.CardUUID)
	at := now()
	if code, msg := postTermination(t, at, body, webhookKey); code != http.StatusOK {
		t.Fatalf("%d %s", code, msg)
	}
	for range 3 {
		if code, msg := postTermination(t, at, body, webhookKey); code != http.StatusConflict {
			t.Fatalf("a replay: %d %s, want 409", code, msg)
		}
	}
	if n := terminations(); n != 1 {
		t.Fatalf("%d termination audit events for one termination sent four times", n)
	}
	// A new request (a new timestamp) for the same identity is not a
	// replay: it is accepted, and terminating again changes nothing.
	if code, msg := postTermination(t, at.Add(time.Second), body, webhookKey); code != http.StatusOK {
		t.Fatalf("a fresh request: %d %s", code, msg)
	}
}

// TestTerminationWebhookOwnListener: with termination_webhook.listen and a
// TLS certificate, the webhook is served over HTTPS on its own listener
// (where the identity system reaches it) and not on the management one
// (issue 16, point 4).
func TestTerminationWebhookOwnListener(t *testing.T) {
	other := *cfg
	other.Listen.GRPC, other.Listen.HTTP, other.Listen.Management, other.Portal.Listen = "127.0.0.1:0", "", "127.0.0.1:0", ""
	other.Store.Driver, other.Store.DSN = "sqlite", filepath.Join(t.TempDir(), "other.db")
	createStore(t, &other)
	other.Webhook.Listen = "127.0.0.1:0"
	other.Webhook.TLSCertFile, other.Webhook.TLSKeyFile = filepath.Join(dev.Dir, "tls", "server.crt"), filepath.Join(dev.Dir, "tls", "server.key")
	s, err := server.New(context.Background(), &other, server.WithClock(now))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown(context.Background())
	if s.WebhookAddr() == "" || s.WebhookAddr() == s.ManagementAddr() {
		t.Fatalf("webhook at %q, management at %q: want a listener of its own", s.WebhookAddr(), s.ManagementAddr())
	}
	pem, err := os.ReadFile(dev.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	tlsClient := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	body := `{"card_uuid":"7b0a5e52-51d4-4b6e-9c0e-0c1f5ad1a001","comment":"HR: separated"}`
	if code, msg := postTerminationTo(t, tlsClient, "https://"+s.WebhookAddr(), now(), body, webhookKey); code != http.StatusOK {
		t.Fatalf("over TLS: %d %s", code, msg)
	}
	if code, _ := postTerminationTo(t, http.DefaultClient, "http://"+s.WebhookAddr(), now(), body, webhookKey); code == http.StatusOK {
		t.Fatal("plain HTTP to the TLS webhook listener was accepted")
	}
	if code, _ := postTerminationTo(t, http.DefaultClient, "http://"+s.ManagementAddr(), now(), body, webhookKey); code != http.StatusNotFound && code != http.StatusMethodNotAllowed {
		t.Fatalf("the management listener answered the webhook: %d", code)
	}
}
