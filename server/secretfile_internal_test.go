package server

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestPortalCSRFKeyFileIsSecret: whoever reads portal.csrf_key_file can
// forge the portal's CSRF tokens; like the other secret files it must be
// readable by its owner only.
func TestPortalCSRFKeyFileIsSecret(t *testing.T) {
	dir := t.TempDir()
	for mode, ok := range map[os.FileMode]bool{0o600: true, 0o400: true, 0o440: true, 0o644: false, 0o604: false, 0o660: false} {
		p := filepath.Join(dir, mode.String()+".key")
		if err := os.WriteFile(p, []byte(strings.Repeat("ab", 32)+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		cfg := &Config{}
		cfg.Portal.CSRFKeyFile = p
		k, err := portalCSRFKey(cfg)
		if ok && (err != nil || len(k) != 32) {
			t.Errorf("mode %v: %d bytes, %v", mode, len(k), err)
		}
		if !ok && (err == nil || !strings.Contains(err.Error(), "portal.csrf_key_file") || !strings.Contains(err.Error(), "0600")) {
			t.Errorf("mode %v: %v, want a refusal naming the setting and 0600", mode, err)
		}
	}
}

// TestConfigCheckReadsEverySecretFile: config check read the CSRF key
// but not the notification secrets, so a 0644 file passed the check and
// then stopped serve; and it named the CSRF field twice.
func TestConfigCheckReadsEverySecretFile(t *testing.T) {
	dir := t.TempDir()
	open := func(name string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(strings.Repeat("ab", 32)+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	c := &Config{}
	c.Portal.CSRFKeyFile = open("csrf.key")
	c.Notify.SMTP.Address, c.Notify.SMTP.PasswordFile = "mail.example:587", open("smtp.pw")
	c.Notify.Webhook.URL, c.Notify.Webhook.SecretFile = "https://hooks.example/credgw", open("hook.key")
	var got []string
	for _, err := range c.checkFiles() {
		got = append(got, err.Error())
	}
	all := strings.Join(got, "\n")
	for _, field := range []string{"portal.csrf_key_file", "notifications.smtp.password_file", "notifications.webhook.secret_file"} {
		if n := strings.Count(all, field); n != 1 {
			t.Errorf("%s named %d times in:\n%s", field, n, all)
		}
	}
}

// TestPortalSaysWhichLimit: every limit was shown as "Too many sign-ins
// with this card", the per-card enrollment limit included.
func TestPortalSaysWhichLimit(t *testing.T) {
	title, detail, code := portalBackend{}.Explain(limited("enrollments for this card", 5*time.Second))
	if code != 429 || strings.Contains(title+detail, "sign-in") || !strings.Contains(detail, "enrollments for this card") || !strings.Contains(detail, "retry in 5s") {
		t.Fatalf("%d %q %q", code, title, detail)
	}
}

// TestConfigCheckSaysWhatMakesTheCA: after 'ca init --csr-out', config
// check said only that ca.certificate_file does not exist.
func TestConfigCheckSaysWhatMakesTheCA(t *testing.T) {
	dir := t.TempDir()
	c, err := decodeConfig([]byte("tls: {cert_file: a, key_file: b}\npiv: {trust_anchor_files: [a]}\nca: {certificate_file: issuing.crt}\n"), dir)
	if err != nil {
		t.Fatal(err)
	}
	var all []string
	for _, err := range c.checkFiles() {
		all = append(all, err.Error())
	}
	if got := strings.Join(all, "\n"); !strings.Contains(got, "ca.certificate_file") || !strings.Contains(got, "credgw ca import") {
		t.Fatalf("config check says:\n%s", got)
	}
}
