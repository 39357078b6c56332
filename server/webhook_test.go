package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/credgw/credgw/server"
)

var webhookKey = bytes.Repeat([]byte{0x5a}, 32)

func postTermination(t *testing.T, at time.Time, body string, key []byte) (int, string) {
	t.Helper()
	req, err := http.NewRequest("POST", "http://"+gw.HTTPAddr()+"/v1/webhooks/termination", bytes.NewReader([]byte(body)))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Credgw-Timestamp", strconv.FormatInt(at.Unix(), 10))
	req.Header.Set("X-Credgw-Signature", server.WebhookSignature(key, at, []byte(body)))
	resp, err := http.DefaultClient.Do(req)
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
