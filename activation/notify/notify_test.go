package notify_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/credgw/credgw/activation/notify"
	"github.com/credgw/credgw/store"
)

// TestValidate: each bad field is reported once, with its setting's name.
func TestValidate(t *testing.T) {
	smtp := notify.SMTPConfig{Address: "mail.example.com:587", From: "credgw@example.com"}
	hook := notify.WebhookConfig{URL: "https://hooks.example.com/credgw", SecretFile: "hook.key"}
	tests := []struct {
		name string
		cfg  notify.Config
		want []string // the setting each complaint names, in order
	}{
		{"empty: nothing configured", notify.Config{}, nil},
		{"smtp and webhook", notify.Config{SMTP: smtp, Webhook: hook}, nil},
		{"smtp with username and password file", notify.Config{SMTP: notify.SMTPConfig{Address: smtp.Address, From: smtp.From,
			Username: "u", PasswordFile: "pw"}}, nil},
		{"smtp fields ignored without an address", notify.Config{SMTP: notify.SMTPConfig{From: "nobody", Username: "u"}}, nil},
		{"smtp address without port", notify.Config{SMTP: notify.SMTPConfig{Address: "mail.example.com", From: smtp.From}},
			[]string{"notifications.smtp.address"}},
		{"smtp from not an address", notify.Config{SMTP: notify.SMTPConfig{Address: smtp.Address, From: "credgw"}},
			[]string{"notifications.smtp.from"}},
		{"smtp from missing", notify.Config{SMTP: notify.SMTPConfig{Address: smtp.Address}},
			[]string{"notifications.smtp.from"}},
		{"smtp username without password file", notify.Config{SMTP: notify.SMTPConfig{Address: smtp.Address, From: smtp.From, Username: "u"}},
			[]string{"notifications.smtp.password_file"}},
		{"webhook url without secret", notify.Config{Webhook: notify.WebhookConfig{URL: hook.URL}},
			[]string{"notifications.webhook"}},
		{"webhook secret without url", notify.Config{Webhook: notify.WebhookConfig{SecretFile: hook.SecretFile}},
			[]string{"notifications.webhook"}},
		{"every field bad at once", notify.Config{SMTP: notify.SMTPConfig{Address: "nohostport", From: "x", Username: "u"},
			Webhook: notify.WebhookConfig{URL: hook.URL}},
			[]string{"notifications.smtp.address", "notifications.smtp.from", "notifications.smtp.password_file", "notifications.webhook"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			tc.cfg.Validate(func(format string, a ...any) {
				// The message starts with the setting's name.
				got = append(got, strings.TrimSuffix(strings.Fields(fmt.Sprintf(format, a...))[0], ":"))
			})
			if !slices.Equal(got, tc.want) {
				t.Fatalf("Validate reported %q, want %q", got, tc.want)
			}
		})
	}
}

// TestReadKeyFile: a key file must exist and hold at least 32 bytes in hex;
// every refusal names the setting.
func TestReadKeyFile(t *testing.T) {
	const field = "notifications.webhook.secret_file"
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	writeMode := func(name, content string, mode os.FileMode) string {
		p := write(name, content)
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	key32 := strings.Repeat("ab", 32)
	tests := []struct {
		name    string
		path    string
		wantErr bool
		wantIs  error
		wantLen int
	}{
		{"missing file", filepath.Join(dir, "absent.key"), true, fs.ErrNotExist, 0},
		{"not hex", write("nothex.key", strings.Repeat("zz", 32)), true, nil, 0},
		{"odd number of hex digits", write("odd.key", key32+"a"), true, nil, 0},
		{"too short: 31 bytes", write("short.key", strings.Repeat("ab", 31)), true, nil, 0},
		{"empty", write("empty.key", ""), true, nil, 0},
		{"32 bytes", write("ok.key", key32), false, nil, 32},
		{"64 bytes with a newline", write("long.key", strings.Repeat("cd", 64)+"\n"), false, nil, 64},
		// Whoever reads it can sign termination requests (revoking
		// anyone's credentials) or forge notifications.
		{"readable by others", writeMode("world.key", key32, 0o644), true, nil, 0},
		{"writable by the group", writeMode("group.key", key32, 0o660), true, nil, 0},
		{"read-only for the owner", writeMode("ro.key", key32, 0o400), false, nil, 32},
		// root:credgw 0640, and what systemd's LoadCredential shows (0440:
		// the mask of its ACL for the service's user).
		{"readable by the group", writeMode("group-read.key", key32, 0o640), false, nil, 32},
		{"a systemd credential", writeMode("credential.key", key32, 0o440), false, nil, 32},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			k, err := notify.ReadKeyFile(tc.path, field)
			if !tc.wantErr {
				if err != nil || len(k) != tc.wantLen {
					t.Fatalf("ReadKeyFile = %d bytes, %v; want %d bytes", len(k), err, tc.wantLen)
				}
				return
			}
			if err == nil {
				t.Fatalf("ReadKeyFile accepted a %d-byte key", len(k))
			}
			if k != nil {
				t.Errorf("refused with a key of %d bytes", len(k))
			}
			if !strings.HasPrefix(err.Error(), field+": ") {
				t.Errorf("error %q does not start with the setting's name", err)
			}
			if tc.wantIs != nil && !errors.Is(err, tc.wantIs) {
				t.Errorf("error %v does not wrap %v", err, tc.wantIs)
			}
		})
	}
}

// TestSignature is a known answer: HMAC-SHA-256 over "<unix seconds>.<body>"
// (computed independently with Python's hmac module).
func TestSignature(t *testing.T) {
	key := make([]byte, 32)
	for i := range key {
		key[i] = byte(i)
	}
	ts := time.Unix(1700000000, 999_000_000) // fractions of a second do not count
	body := []byte(`{"kind":"revoked"}`)
	const want = "sha256=14c2baa35813b51d4e290e90acff292a96f8cb4c4c6a611259d9a6a3d9b75602"
	if got := notify.Signature(key, ts, body); got != want {
		t.Fatalf("Signature = %s, want %s", got, want)
	}
	// Each input counts.
	for name, got := range map[string]string{
		"other key":  notify.Signature(append([]byte{1}, key[1:]...), ts, body),
		"other time": notify.Signature(key, ts.Add(time.Second), body),
		"other body": notify.Signature(key, ts, []byte(`{"kind":"revokeD"}`)),
	} {
		if got == want {
			t.Errorf("%s: same signature", name)
		}
	}
}

// fakeStore counts what the outbox asks of the store; any other call
// panics on the nil embedded interface.
type fakeStore struct {
	store.OutboxStore
	enqueued []store.Notification
	lookups  int
}

func (f *fakeStore) EnqueueNotification(_ context.Context, n store.Notification) error {
	f.enqueued = append(f.enqueued, n)
	return nil
}

func (f *fakeStore) CredentialSet(_ context.Context, id string) (store.CredentialSet, error) {
	f.lookups++
	return store.CredentialSet{ID: id, Email: "holder@example.com", IdentityName: "phone"}, nil
}

func (f *fakeStore) CredentialSetsOfIdentity(_ context.Context, sel store.IdentitySelector) ([]store.CredentialSet, error) {
	f.lookups++
	return []store.CredentialSet{{ID: "set-1", Email: "holder@example.com"}}, nil
}

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// TestNoSenderEnqueuesNothing: with no sender configured the outbox drops
// what it is given, without asking the store anything.
func TestNoSenderEnqueuesNothing(t *testing.T) {
	ctx := context.Background()
	st := &fakeStore{}
	o, err := notify.New(notify.Config{}, func(p string) string { return p }, st, discard(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if o.Enabled() {
		t.Fatal("Enabled() with no sender")
	}
	o.Set(ctx, "revoked", "set-1", "revoked", "Your derived credential was revoked.")
	o.Identity(ctx, "terminated", store.IdentitySelector{CardUUID: "u"}, "terminated", "Your card was terminated.")
	if sent, failed, err := o.Deliver(ctx); sent != 0 || failed != 0 || err != nil {
		t.Fatalf("Deliver = %d, %d, %v", sent, failed, err)
	}
	if len(st.enqueued) != 0 || st.lookups != 0 {
		t.Fatalf("%d enqueued, %d store lookups; want none", len(st.enqueued), st.lookups)
	}
	select {
	case <-o.Kicks():
		t.Fatal("kicked with nothing enqueued")
	default:
	}
	var nilOutbox *notify.Outbox
	if nilOutbox.Enabled() {
		t.Fatal("a nil outbox is enabled")
	}
}

// TestWebhookSenderEnqueues is the control of the test above: the same
// calls with a webhook configured enqueue one notification each.
func TestWebhookSenderEnqueues(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "hook.key"), []byte(strings.Repeat("ab", 32)), 0o600); err != nil {
		t.Fatal(err)
	}
	st := &fakeStore{}
	cfg := notify.Config{Webhook: notify.WebhookConfig{URL: "http://127.0.0.1:9/hook", SecretFile: "hook.key"}}
	o, err := notify.New(cfg, func(p string) string { return filepath.Join(dir, p) }, st, discard(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if !o.Enabled() {
		t.Fatal("a webhook is configured but Enabled() is false")
	}
	o.Set(ctx, "revoked", "set-1", "revoked", "Your derived credential was revoked.")
	o.Identity(ctx, "terminated", store.IdentitySelector{CardUUID: "u"}, "terminated", "Your card was terminated.")
	if len(st.enqueued) != 2 || st.enqueued[0].Recipient != "holder@example.com" || st.enqueued[0].Kind != "revoked" ||
		st.enqueued[1].Kind != "terminated" {
		t.Fatalf("enqueued %+v", st.enqueued)
	}
	select {
	case <-o.Kicks():
	default:
		t.Fatal("not kicked after an enqueue")
	}
}

// TestNewRefuses: a configured sender whose files cannot be read is an
// error naming the setting.
func TestNewRefuses(t *testing.T) {
	dir := t.TempDir()
	short := filepath.Join(dir, "short.key")
	if err := os.WriteFile(short, []byte("abcd"), 0o600); err != nil {
		t.Fatal(err)
	}
	notPEM := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	shared := filepath.Join(dir, "shared.pw")
	if err := os.WriteFile(shared, []byte("hunter2"), 0o644); err != nil {
		t.Fatal(err)
	}
	smtp := notify.SMTPConfig{Address: "mail.example.com:587", From: "credgw@example.com"}
	tests := []struct {
		name  string
		cfg   notify.Config
		field string
	}{
		{"smtp password file readable by others", notify.Config{SMTP: notify.SMTPConfig{Address: smtp.Address, From: smtp.From, Username: "u",
			PasswordFile: shared}}, "notifications.smtp.password_file"},
		{"webhook secret missing", notify.Config{Webhook: notify.WebhookConfig{URL: "http://h/", SecretFile: filepath.Join(dir, "absent.key")}},
			"notifications.webhook.secret_file"},
		{"webhook secret too short", notify.Config{Webhook: notify.WebhookConfig{URL: "http://h/", SecretFile: short}},
			"notifications.webhook.secret_file"},
		{"smtp CA file missing", notify.Config{SMTP: notify.SMTPConfig{Address: smtp.Address, From: smtp.From, CAFile: filepath.Join(dir, "absent.pem")}},
			"notifications.smtp.ca_file"},
		{"smtp CA file without PEM", notify.Config{SMTP: notify.SMTPConfig{Address: smtp.Address, From: smtp.From, CAFile: notPEM}},
			"notifications.smtp.ca_file"},
		{"smtp password file missing", notify.Config{SMTP: notify.SMTPConfig{Address: smtp.Address, From: smtp.From, Username: "u",
			PasswordFile: filepath.Join(dir, "absent.pw")}}, "notifications.smtp.password_file"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o, err := notify.New(tc.cfg, func(p string) string { return p }, &fakeStore{}, discard(), nil)
			if err == nil || o != nil {
				t.Fatalf("New = %v, %v; want an error", o, err)
			}
			if !strings.HasPrefix(err.Error(), tc.field+": ") {
				t.Fatalf("error %q does not name %s", err, tc.field)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Fatalf("error %q shows the password", err)
			}
		})
	}
}
