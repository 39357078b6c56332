package server

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/credgw/credgw/activation/attest"
)

// TestAttestationStatusFile: the status list is read again when it
// changes, and an old or missing one fails attestations closed.
func TestAttestationStatusFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "status.json")
	now := time.Now()
	f := &statusFile{path: path, maxAge: 24 * time.Hour, now: func() time.Time { return now }}
	if _, err := f.revoked(); !errors.Is(err, attest.ErrStatusUnavailable) {
		t.Fatalf("missing file: %v", err)
	}
	if err := os.WriteFile(path, []byte(`{"entries": {}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if list, err := f.revoked(); err != nil || len(list) != 0 {
		t.Fatalf("empty list: %v %v", list, err)
	}
	// The operator's job writes a new list: seen at once.
	if err := os.WriteFile(path, []byte(`{"entries": {"c0ffee": {"status": "REVOKED"}}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	later := now.Add(time.Second)
	if err := os.Chtimes(path, later, later); err != nil {
		t.Fatal(err)
	}
	if list, err := f.revoked(); err != nil || !list["c0ffee"] {
		t.Fatalf("refreshed list: %v %v", list, err)
	}
	// A day and more without a refresh: refused, saying what to do.
	now = later.Add(25 * time.Hour)
	_, err := f.revoked()
	if !errors.Is(err, attest.ErrStatusUnavailable) || !errorsContains(err, "status_max_age") {
		t.Fatalf("stale list: %v", err)
	}
}

func errorsContains(err error, s string) bool { return err != nil && strings.Contains(err.Error(), s) }
