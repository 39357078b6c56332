package test

import (
	"crypto/x509"
	"io"
	"math/big"
	"net/http"
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
	httpAddr := string(regexp.MustCompile(`(?m)^  http: (127\.0\.0\.1:\d+)$`).FindSubmatch(mustRead(t, cfg))[1])
	crlNumber := func() *big.Int { return fetchCRLNumber(t, httpAddr) }
	crlNumber() // the backup holds a CRL built, not stale
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
	// After the backup, a revocation and the CRL that lists it.
	auth, _ := readDerivedAuth(t, filepath.Join(work, "first", "device"))
	run(t, nil, true, credgwBin, "admin", "revoke", "--serial", auth.SerialNumber.Text(16), "--reason", "keyCompromise",
		"--gateway", gw, "--ca-file", filepath.Join(dir, "tls", "ca.crt"),
		"--cert", filepath.Join(dir, "tls", "admin.crt"), "--key", filepath.Join(dir, "tls", "admin.key"))
	published := crlNumber()
	anchor := regexp.MustCompile(`--anchor \d+:[0-9a-f]{64}`).FindString(run(t, nil, true, credgwBin, "audit", "verify", "--config", cfg))
	if anchor == "" {
		t.Fatal("audit verify printed no anchor")
	}

	// A restore while the gateway serves is refused, and changes nothing.
	if out := run(t, nil, false, credgwBin, "restore", "--config", cfg, "--from", backup); !strings.Contains(out, "in use") {
		t.Fatalf("restore under a running gateway:\n%s", out)
	}
	// The database is lost; credgw restore puts the backup in its place,
	// migrates and verifies, as key-ceremony.md says.
	stop()
	out := run(t, nil, true, credgwBin, "restore", "--config", cfg, "--from", backup, strings.Fields(anchor)[0], strings.Fields(anchor)[1])
	for _, want := range []string{"restored", "is kept as", "marked stale", "audit log intact", "not in the restored log"} {
		if !strings.Contains(out, want) {
			t.Fatalf("restore says no %q:\n%s", want, out)
		}
	}
	startProcess(t, "credgw serving", credgwBin, "serve", "--config", cfg)
	// The backup's stored CRL was numbered before the one published after
	// it: a cache must never be handed a CRL numbered lower than one it
	// saw (RFC 5280 §5.2.3).
	if n := crlNumber(); n.Cmp(published) <= 0 {
		t.Fatalf("CRL number %v after the restore, not above %v published before it", n, published)
	}
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

// fetchCRLNumber fetches the issuing CA's CRL from a gateway's public
// HTTP address and returns its number.
func fetchCRLNumber(t *testing.T, httpAddr string) *big.Int {
	t.Helper()
	resp, err := http.Get("http://" + httpAddr + "/crl/issuing-ca.crl")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	der, _ := io.ReadAll(resp.Body)
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		t.Fatalf("the CRL from %s: %v (HTTP %d)", httpAddr, err, resp.StatusCode)
	}
	return crl.Number
}
