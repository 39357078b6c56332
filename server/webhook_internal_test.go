package server

import (
	"bytes"
	"encoding/hex"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	credgwv1 "github.com/credgw/credgw/proto/credgw/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

var whKey = bytes.Repeat([]byte{7}, 32)

func TestCheckWebhook(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	ts := strconv.FormatInt(now.Unix(), 10)
	sign := func(at time.Time, body string) string { return WebhookSignature(whKey, at, []byte(body)) }
	const uuidBody = `{"card_uuid":"urn:uuid:3F2504E0-4F89-41D3-9A0C-0305E82C3301","comment":"separated"}`
	fascn := strings.Repeat("d4", 25)
	tests := []struct {
		name    string
		ts, sig string
		body    string
		wantErr string
		wantSel string
	}{
		{"card UUID", ts, sign(now, uuidBody), uuidBody, "", "card_uuid:3f2504e0-4f89-41d3-9a0c-0305e82c3301"},
		{"FASC-N", ts, sign(now, `{"fascn":"`+fascn+`"}`), `{"fascn":"` + fascn + `"}`, "", "fascn:" + fascn},
		{"person", ts, sign(now, `{"person_id":"70999912345678"}`), `{"person_id":"70999912345678"}`, "", "person_id:70999912345678"},
		// Keys exactly as documented, each once: encoding/json takes any
		// case and the last of two.
		{"a key twice", ts, sign(now, `{"person_id":"70999912345678","person_id":"70999912345679"}`),
			`{"person_id":"70999912345678","person_id":"70999912345679"}`, "twice", ""},
		{"a key in another case", ts, sign(now, `{"person_id":"70999912345678","PERSON_ID":"70999912345679"}`),
			`{"person_id":"70999912345678","PERSON_ID":"70999912345679"}`, "PERSON_ID", ""},
		{"a person id the configured attribute never makes", ts, sign(now, `{"person_id":"holder@example.com"}`),
			`{"person_id":"holder@example.com"}`, "14-digit", ""},
		{"4 minutes old", strconv.FormatInt(now.Add(-4*time.Minute).Unix(), 10), sign(now.Add(-4*time.Minute), uuidBody), uuidBody, "", "card_uuid:3f2504e0-4f89-41d3-9a0c-0305e82c3301"},
		{"no timestamp", "", sign(now, uuidBody), uuidBody, "X-Credgw-Timestamp: want unix seconds", ""},
		{"timestamp not a number", "yesterday", sign(now, uuidBody), uuidBody, "want unix seconds", ""},
		{"replayed an hour later", strconv.FormatInt(now.Add(-time.Hour).Unix(), 10), sign(now.Add(-time.Hour), uuidBody), uuidBody, "from the gateway's clock", ""},
		{"from the future", strconv.FormatInt(now.Add(10*time.Minute).Unix(), 10), sign(now.Add(10*time.Minute), uuidBody), uuidBody, "from the gateway's clock", ""},
		{"no signature", ts, "", uuidBody, "X-Credgw-Signature does not match", ""},
		{"signature of another body", ts, sign(now, `{"person_id":"x"}`), uuidBody, "X-Credgw-Signature does not match", ""},
		{"signature with another timestamp", ts, sign(now.Add(time.Second), uuidBody), uuidBody, "X-Credgw-Signature does not match", ""},
		{"signature under another key", ts, WebhookSignature(bytes.Repeat([]byte{8}, 32), now, []byte(uuidBody)), uuidBody, "does not match", ""},
		{"not JSON", ts, sign(now, "card=1"), "card=1", "body: want JSON", ""},
		{"unknown field", ts, sign(now, `{"card_uuid":"x","admin":true}`), `{"card_uuid":"x","admin":true}`, "body: want JSON", ""},
		{"no identity", ts, sign(now, `{"comment":"x"}`), `{"comment":"x"}`, "exactly one of", ""},
		{"two identities", ts, sign(now, `{"person_id":"p","card_uuid":"u"}`), `{"person_id":"p","card_uuid":"u"}`, "exactly one of", ""},
		{"FASC-N not hex", ts, sign(now, `{"fascn":"zz"}`), `{"fascn":"zz"}`, "fascn: want", ""},
		{"FASC-N too short", ts, sign(now, `{"fascn":"d432"}`), `{"fascn":"d432"}`, "25-byte", ""},
		{"not a UUID", ts, sign(now, `{"card_uuid":"card-7"}`), `{"card_uuid":"card-7"}`, "want a UUID", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, sel, err := checkWebhook(whKey, now, 5*time.Minute, "fascn", tc.ts, tc.sig, []byte(tc.body))
			if tc.wantErr == "" {
				if err != nil || sel.String() != tc.wantSel {
					t.Fatalf("got %s, %v; want %s", sel.String(), err, tc.wantSel)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err %v, want %q", err, tc.wantErr)
			}
			if strings.Contains(err.Error(), string(whKey)) || (tc.sig != "" && strings.Contains(err.Error(), tc.sig)) {
				t.Fatalf("the error leaks the key or signature: %v", err)
			}
		})
	}
}

// FuzzCheckWebhook: any request is refused or accepted without a panic, and
// an unsigned one is never accepted.
func FuzzCheckWebhook(f *testing.F) {
	now := time.Unix(1_800_000_000, 0)
	f.Add("1800000000", `{"card_uuid":"3f2504e0-4f89-41d3-9a0c-0305e82c3301"}`)
	f.Add("1800000000", `{"fascn":"`+strings.Repeat("00", 25)+`"}`)
	f.Add("-1", `{`)
	f.Fuzz(func(t *testing.T, ts, body string) {
		secs, _ := strconv.ParseInt(ts, 10, 64)
		sig := WebhookSignature(whKey, time.Unix(secs, 0), []byte(body))
		checkWebhook(whKey, now, 5*time.Minute, "email", ts, sig, []byte(body))
		if _, _, err := checkWebhook(whKey, now, 5*time.Minute, "email", ts, "sha256=00", []byte(body)); err == nil {
			t.Fatal("accepted without a valid signature")
		}
	})
}

// TestPersonIDSelector: a person id given to the admin API or the webhook
// must be one the configured piv.person_attribute can make, so that a
// termination naming the person another way (an email address where ids
// are FASC-N identifiers, a stray space) is refused, not answered
// "terminated" while the person's credentials stay live. Email and UPN ids
// compare without regard to ASCII case (piv.FoldPersonID).
func TestPersonIDSelector(t *testing.T) {
	person := func(id string) *credgwv1.PIVIdentitySelector {
		return &credgwv1.PIVIdentitySelector{Selector: &credgwv1.PIVIdentitySelector_PersonId{PersonId: id}}
	}
	for _, tc := range []struct {
		attr, id string
		want     string // the selector, or the refusal's words
		ok       bool
	}{
		{"fascn", "70999912345678", "person_id:70999912345678", true},
		{"fascn", "holder@example.com", "14-digit FASC-N identifier", false},
		{"fascn", " 70999912345678", "14-digit FASC-N identifier", false},
		{"fascn", "7099991234567", "14-digit FASC-N identifier", false},
		{"email", "Pat.Doe@Example.COM", "person_id:pat.doe@example.com", true},
		{"email", "70999912345678", "an email address", false},
		{"email", "pat.doe@example.com ", "an email address", false},
		{"email", "pat\x00@example.com", "an email address", false},
		{"upn", "PDoe@Agency.Example", "person_id:pdoe@agency.example", true},
		{"upn", "pdoe", "a UPN", false},
	} {
		sel, err := selector(person(tc.id), tc.attr)
		switch {
		case tc.ok && (err != nil || sel.String() != tc.want):
			t.Errorf("%s %q: %s, %v; want %s", tc.attr, tc.id, sel.String(), err, tc.want)
		case !tc.ok && (err == nil || !strings.Contains(err.Error(), tc.want) || status.Code(err) != codes.InvalidArgument):
			t.Errorf("%s %q: %v; want InvalidArgument saying %q", tc.attr, tc.id, err, tc.want)
		}
	}
	uuid := &credgwv1.PIVIdentitySelector{Selector: &credgwv1.PIVIdentitySelector_CardUuid{CardUuid: "URN:UUID:3F2504E0-4F89-41D3-9A0C-0305E82C3301"}}
	if sel, err := selector(uuid, "fascn"); err != nil || sel.String() != "card_uuid:3f2504e0-4f89-41d3-9a0c-0305e82c3301" {
		t.Errorf("an upper-case URN: %s, %v", sel.String(), err)
	}
}

// TestWebhookKeysNotShared: the termination webhook's key must not be the
// notifications webhook's: the receiver of notifications holds that key to
// verify them, and with it could sign terminations.
func TestWebhookKeysNotShared(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, key []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(hex.EncodeToString(key)+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cfg := &Config{}
	cfg.Webhook.SecretFile = write("termination.key", whKey)
	cfg.Notify.Webhook.URL = "https://hooks.example.com/credgw"
	cfg.Notify.Webhook.SecretFile = write("notify.key", bytes.Repeat([]byte{9}, 32))
	if _, err := loadWebhookKey(cfg); err != nil {
		t.Fatalf("two keys: %v", err)
	}
	cfg.Notify.Webhook.SecretFile = write("same.key", whKey)
	if _, err := loadWebhookKey(cfg); err == nil || !strings.Contains(err.Error(), "notifications.webhook.secret_file") {
		t.Fatalf("one key for both: %v, want an error naming both settings", err)
	}
	// HMAC pads a key with zeros: K and K‖00 sign alike.
	cfg.Notify.Webhook.SecretFile = write("padded.key", append(bytes.Clone(whKey), 0))
	if _, err := loadWebhookKey(cfg); err == nil || !strings.Contains(err.Error(), "notifications.webhook.secret_file") {
		t.Fatalf("one HMAC key in two spellings: %v, want an error naming both settings", err)
	}
}
