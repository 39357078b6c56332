package server

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestSoftHSMTokenFilesNotOurs: ca init run as root writes the key's
// SoftHSM files as root; the service (user credgw) then cannot read them
// and SoftHSM reports the key as not there, so config check said "object
// not found" about a key that exists. The token files this user cannot
// open are named, with what to do.
func TestSoftHSMTokenFilesNotOurs(t *testing.T) {
	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens")
	token := filepath.Join(tokens, "9d1f")
	if err := os.MkdirAll(token, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"token.object", "a1.object", "b2.object"} {
		if err := os.WriteFile(filepath.Join(token, f), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	conf := filepath.Join(dir, "softhsm2.conf")
	if err := os.WriteFile(conf, []byte("# test\ndirectories.tokendir = "+tokens+"/\nobjectstore.backend = file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	old := accessible
	t.Cleanup(func() { accessible = old })
	accessible = func(p string) error {
		if strings.HasSuffix(p, "a1.object") {
			return errors.New("permission denied")
		}
		return nil
	}
	hint := softHSMUnreadable(conf)
	if !strings.Contains(hint, "a1.object") || strings.Contains(hint, "b2.object") || !strings.Contains(hint, "chown -R") {
		t.Errorf("hint %q: want a1.object named and the chown", hint)
	}
	accessible = func(string) error { return nil }
	if hint := softHSMUnreadable(conf); hint != "" {
		t.Errorf("every file readable: hint %q, want none", hint)
	}
}
