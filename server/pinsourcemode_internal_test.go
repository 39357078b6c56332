package server

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestPINSourceModeAsSecretFiles: the HSM PIN's file was held to a rule
// weaker than every other secret file's: pkcs11 refuses only bits for
// others and group write, so a 0640 PIN file of any group was read, while
// a webhook key of that mode is refused unless the group is the
// gateway's own (or an ACL grants it). The gateway's HSM PINs now get
// the secret-file rule.
func TestPINSourceModeAsSecretFiles(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("chown to another group needs root (CI runs as root)")
	}
	dir := t.TempDir()
	pin := filepath.Join(dir, "ca.pin")
	if err := os.WriteFile(pin, []byte("123456\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := &Config{}
	cfg.dir = dir
	h := newHSM(cfg)
	uri := "pkcs11:token=credgw-ca;id=%01?pin-source=ca.pin"
	if _, err := h.parseKeyURI("ca.key_uri", uri); err != nil {
		t.Fatalf("a 0600 PIN file: %v", err)
	}
	if err := os.Chown(pin, 0, 65534); err != nil { // nogroup: not the gateway's
		t.Fatal(err)
	}
	if err := os.Chmod(pin, 0o640); err != nil {
		t.Fatal(err)
	}
	_, err := h.parseKeyURI("ca.key_uri", uri)
	if err == nil || !strings.Contains(err.Error(), "ca.key_uri") || !strings.Contains(err.Error(), "0600") {
		t.Fatalf("a 0640 PIN file of another group: %v, want a refusal naming ca.key_uri and the fix", err)
	}
	if strings.Contains(err.Error(), "123456") {
		t.Fatalf("the refusal shows the PIN: %v", err)
	}
}
