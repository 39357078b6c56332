package server

import (
	"os"
	"path/filepath"
	"testing"
)

// TestCredentialsDirectoryPaths: the packaged config names the secrets
// systemd hands the unit (LoadCredential=) under $CREDENTIALS_DIRECTORY,
// which systemd sets for the unit and for a `systemd-run` of config check
// alike. Before, the config had to write out
// /run/credentials/credgw.service/, which a transient unit does not have,
// so the documented check as the unit's user could never pass.
func TestCredentialsDirectoryPaths(t *testing.T) {
	cfg := &Config{dir: "/etc/credgw"}
	t.Setenv("CREDENTIALS_DIRECTORY", "/run/credentials/run-u7.service")
	for in, want := range map[string]string{
		"$CREDENTIALS_DIRECTORY/tls-key": "/run/credentials/run-u7.service/tls-key",
		"tls/server.key":                 "/etc/credgw/tls/server.key",
		"/etc/credgw/ca.pin":             "/etc/credgw/ca.pin",
		"$HOME/x":                        filepath.Join("/etc/credgw", "$HOME/x"),
	} {
		if got := cfg.Path(in); got != want {
			t.Errorf("Path(%q) = %q, want %q", in, got, want)
		}
	}
	// The PIN file is read when the URI is (its mode is checked): a
	// credentials folder of the test's own.
	creds := t.TempDir()
	if err := os.WriteFile(filepath.Join(creds, "ca-pin"), []byte("123456\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("CREDENTIALS_DIRECTORY", creds)
	h := newHSM(cfg)
	u, err := h.parseKeyURI("ca.key_uri", "pkcs11:token=credgw-ca;id=%01?pin-source=$CREDENTIALS_DIRECTORY/ca-pin")
	if err != nil {
		t.Fatalf("pin-source: %v", err)
	}
	if u.PINSource != filepath.Join(creds, "ca-pin") {
		t.Errorf("pin-source: %q", u.PINSource)
	}
	t.Setenv("CREDENTIALS_DIRECTORY", "")
	for _, text := range []string{
		"key_file: $CREDENTIALS_DIRECTORY/tls-key",
		// After a quoted value holding " #" on the same line.
		`tls: {cert_file: "certs #1/server.crt", key_file: $CREDENTIALS_DIRECTORY/tls-key}`,
		"ca:\n  key_uri: pkcs11:token=ca;id=%01?pin-source=$CREDENTIALS_DIRECTORY/ca-pin",
	} {
		if err := credentialsDirectoryUnset([]byte(text)); err == nil {
			t.Errorf("%q names a path under $CREDENTIALS_DIRECTORY outside a unit: no explanation", text)
		}
	}
	// The packaged config's comments name it too; a copy for the admin
	// commands keeps them while its paths name /etc/credgw.
	for _, text := range []string{"key_file: tls/server.key", "# $CREDENTIALS_DIRECTORY/ names it\nkey_file: tls/server.key  # not $CREDENTIALS_DIRECTORY/tls-key"} {
		if err := credentialsDirectoryUnset([]byte(text)); err != nil {
			t.Errorf("%q: %v", text, err)
		}
	}
}
