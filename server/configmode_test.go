package server_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/credgw/credgw/server"
)

// TestConfigHoldingSecretsMode: credgw.yaml may hold the database's
// password (store.dsn) or an HSM PIN (pin-value= in a key URI). Every file
// the config names was mode-checked, the config itself was not: a 0644
// credgw.yaml with a password in it was loaded by serve and config check.
// One that holds a secret is now checked as a secret file; one that does
// not may stay readable.
func TestConfigHoldingSecretsMode(t *testing.T) {
	base := "tls: {cert_file: a, key_file: b}\npiv: {trust_anchor_files: [a]}\n"
	for _, tc := range []struct {
		name, yaml string
		secret     bool
	}{
		{"dsn password", base + "store: {driver: postgres, dsn: 'postgres://credgw:hunter2@127.0.0.1:1/credgw?connect_timeout=2'}\n", true},
		{"dsn keyword password", base + "store: {driver: postgres, dsn: 'host=127.0.0.1 port=1 user=credgw password=hunter2 connect_timeout=2'}\n", true},
		{"pin-value", base + "ca: {key_uri: 'pkcs11:token=ca;id=%01?pin-value=123456'}\n", true},
		{"no secret", base + "store: {driver: postgres, dsn: 'postgres://credgw@127.0.0.1:1/credgw?connect_timeout=2'}\n", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "credgw.yaml")
			if err := os.WriteFile(p, []byte(tc.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(p, 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := server.LoadConfig(p)
			problems := server.CheckConfig(context.Background(), p)
			said := func(err error) bool {
				return err != nil && strings.Contains(err.Error(), "credgw.yaml") && strings.Contains(err.Error(), "0600")
			}
			checked := false
			for _, e := range problems {
				checked = checked || said(e)
				if strings.Contains(e.Error(), "hunter2") || strings.Contains(e.Error(), "123456") {
					t.Errorf("config check shows the secret: %v", e)
				}
			}
			if tc.secret && (!said(err) || !checked) {
				t.Errorf("a 0644 config holding a secret: LoadConfig %v; config check %v; want both to refuse its mode", err, problems)
			}
			if !tc.secret && (said(err) || checked) {
				t.Errorf("a 0644 config holding no secret refused for its mode: %v / %v", err, problems)
			}
		})
	}
}
