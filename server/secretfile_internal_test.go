package server

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
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
