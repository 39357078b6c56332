package server

import (
	"strings"
	"testing"
	"time"
)

// TestEscrowRSA2048Past2030: escrow.key_type rsa2048 is refused once
// ca.validity would let an encryption certificate run past 2030-12-31;
// the default is rsa3072.
func TestEscrowRSA2048Past2030(t *testing.T) {
	base := "tls: {cert_file: a, key_file: b}\npiv: {trust_anchor_files: [a]}\n"
	defer func(f func() time.Time) { configNow = f }(configNow)
	configNow = func() time.Time { return time.Date(2030, 3, 1, 0, 0, 0, 0, time.UTC) }
	for _, tc := range []struct{ name, yaml, want string }{
		{"rsa2048, a year", base + "escrow: {key_type: rsa2048}\n", "past 2030-12-31"},
		{"rsa2048, 200 days", base + "escrow: {key_type: rsa2048}\nca: {validity: 4800h}\n", ""},
		{"rsa3072", base + "escrow: {key_type: rsa3072}\nca: {validity: 26304h}\n", ""},
		{"p256", base + "escrow: {key_type: p256}\n", ""},
		{"rsa4096", base + "escrow: {key_type: rsa4096}\n", "rsa3072, rsa2048 or p256"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseConfig([]byte(tc.yaml), t.TempDir())
			if tc.want == "" && err != nil {
				t.Fatalf("refused: %v", err)
			}
			if tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("err = %v, want it to say %q", err, tc.want)
			}
		})
	}
	c, err := ParseConfig([]byte(base), t.TempDir())
	if err != nil || c.Escrow.KeyType != "rsa3072" {
		t.Fatalf("default escrow.key_type %q (%v), want rsa3072", c.Escrow.KeyType, err)
	}
}

// TestConfigCheckWantsNotifications: escrowed keys are delivered only by
// a gateway that tells every attempt, and the one credential type issues
// one: config check says so of a config with a CA and no sender, instead
// of "ok" and then every enrollment refused.
func TestConfigCheckWantsNotifications(t *testing.T) {
	c := &Config{}
	c.CA.CertificateFile = "ca/issuing.crt"
	if err := c.checkNotifications(); err == nil || !strings.Contains(err.Error(), "notifications") {
		t.Fatalf("a CA without notifications: %v, want an error naming the section", err)
	}
	for _, set := range []func(*Config){
		func(c *Config) { c.Notify.File = "notifications.jsonl" },
		func(c *Config) { c.Notify.SMTP.Address = "mail.example.gov:587" },
		func(c *Config) { c.Notify.Webhook.URL = "https://hooks.example.gov/credgw" },
	} {
		ok := *c
		set(&ok)
		if err := ok.checkNotifications(); err != nil {
			t.Errorf("with a sender: %v", err)
		}
	}
	if err := (&Config{}).checkNotifications(); err != nil {
		t.Errorf("no CA, nothing issued: %v", err)
	}
}
