package test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestBackupAndRestore: `credgw backup` copies the SQLite store while the
// gateway serves; restored in place of a lost database, the gateway starts
// on it, its audit chain verifies with every event the backup held, and it
// enrolls and redeems again (its gateway secrets came back with it).
func TestBackupAndRestore(t *testing.T) {
	work := t.TempDir()
	dir := filepath.Join(work, "dev")
	devInit(t, dir)
	cfg := filepath.Join(dir, "credgw.yaml")
	gw := regexp.MustCompile(`grpc: (127\.0\.0\.1:\d+)`).FindStringSubmatch(string(mustRead(t, cfg)))[1]
	conf := "SOFTHSM2_CONF=" + filepath.Join(dir, "hsm", "softhsm2.conf")
	startServe(t, filepath.Join(dir, "hsm"))
	stop := startProcess(t, "credgw serving", credgwBin, "serve", "--config", cfg)
	redeem := func(out string) {
		t.Helper()
		os.MkdirAll(out, 0o700)
		p, password := enrollWithCLI(t, dir, gw, conf, out)
		pwFile, pinFile := filepath.Join(out, "pw"), filepath.Join(out, "pin")
		os.WriteFile(pwFile, []byte(password), 0o600)
		os.WriteFile(pinFile, []byte("correct horse"), 0o600)
		run(t, nil, true, credgwBin, "redeem", "--trust-anchor", filepath.Join(dir, "ca", "root.crt"), "--qr-payload", p.String(), "--password-file", pwFile, "--out", filepath.Join(out, "device"),
			"--keystore-pin-file", pinFile)
	}
	redeem(filepath.Join(work, "first"))
	backup := filepath.Join(work, "credgw-backup.db")
	if out := run(t, nil, true, credgwBin, "backup", "--config", cfg, "--out", backup); !strings.Contains(out, "integrity ok") {
		t.Fatalf("backup:\n%s", out)
	}
	if fi, err := os.Stat(backup); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("backup file: %v %v, want mode 0600", err, fi)
	}
	run(t, nil, false, credgwBin, "backup", "--config", cfg, "--out", backup) // never overwrites
	exported := func() int {
		t.Helper()
		out := filepath.Join(t.TempDir(), "audit.jsonl")
		run(t, nil, true, credgwBin, "audit", "export", "--config", cfg, "--out", out)
		return strings.Count(string(mustRead(t, out)), "\n")
	}
	atBackup := exported()

	// The database is lost; the backup is put in its place.
	stop()
	db := filepath.Join(dir, "credgw.db")
	for _, f := range []string{db, db + "-wal", db + "-shm"} {
		os.Remove(f)
	}
	if err := os.WriteFile(db, mustRead(t, backup), 0o600); err != nil {
		t.Fatal(err)
	}
	startProcess(t, "credgw serving", credgwBin, "serve", "--config", cfg)
	if out := run(t, nil, true, credgwBin, "audit", "verify", "--config", cfg); !strings.Contains(out, "audit log intact") {
		t.Fatalf("audit verify after the restore:\n%s", out)
	}
	if n := exported(); n < atBackup {
		t.Fatalf("%d audit events after the restore, %d at the backup", n, atBackup)
	}
	redeem(filepath.Join(work, "after"))
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
