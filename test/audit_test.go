package test

import (
	"database/sql"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	_ "modernc.org/sqlite"
)

// TestAuditVerifyAndExport: the journey leaves an intact audit chain with
// no secret in it; editing one event makes `credgw audit verify` fail and
// name it.
func TestAuditVerifyAndExport(t *testing.T) {
	work := t.TempDir()
	dir, gw, conf := startDevGateway(t, work, nil)
	p, password := enrollWithCLI(t, dir, gw, conf, work)
	pwFile, pinFile := filepath.Join(work, "pw"), filepath.Join(work, "pin")
	os.WriteFile(pwFile, []byte(password), 0o600)
	os.WriteFile(pinFile, []byte("correct horse"), 0o600)
	run(t, nil, true, credgwBin, "redeem", "--trust-anchor", filepath.Join(dir, "ca", "root.crt"), "--qr-payload", p.String(), "--password-file", pwFile, "--out", filepath.Join(work, "device"),
		"--keystore-pin-file", pinFile)
	// Renewal is not open yet on fresh credentials: said clearly.
	if out := run(t, nil, false, credgwBin, "renew", "--dir", filepath.Join(work, "device"), "--gateway", gw,
		"--ca-file", filepath.Join(dir, "tls", "ca.crt"), "--keystore-pin-file", pinFile); !strings.Contains(out, "renewal opens at") {
		t.Fatalf("renew of fresh credentials:\n%s", out)
	}
	cfg := filepath.Join(dir, "credgw.yaml")
	out := run(t, nil, true, credgwBin, "audit", "verify", "--config", cfg)
	if !strings.Contains(out, "audit log intact") {
		t.Fatalf("verify:\n%s", out)
	}
	// It names the anchor to keep elsewhere; verify checks it later, and
	// a chain rewritten whole (another hash at that seq) fails.
	m := regexp.MustCompile(`--anchor (\d+):([0-9a-f]{64})`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("verify names no anchor to keep:\n%s", out)
	}
	if out := run(t, nil, true, credgwBin, "audit", "verify", "--config", cfg, "--anchor", m[1]+":"+m[2]); !strings.Contains(out, "audit log intact") {
		t.Fatalf("verify with its own anchor:\n%s", out)
	}
	if out := run(t, nil, false, credgwBin, "audit", "verify", "--config", cfg, "--anchor", m[1]+":"+strings.Repeat("0", 64)); !strings.Contains(out, "anchor kept outside") {
		t.Fatalf("verify with another anchor:\n%s", out)
	}
	export := filepath.Join(work, "audit.jsonl")
	run(t, nil, true, credgwBin, "audit", "export", "--config", cfg, "--out", export)
	b, err := os.ReadFile(export)
	if err != nil {
		t.Fatal(err)
	}
	actions := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var e struct{ Action, Hash string }
		if err := json.Unmarshal([]byte(line), &e); err != nil || len(e.Hash) != 64 {
			t.Fatalf("export line %q: %v", line, err)
		}
		actions[e.Action] = true
	}
	for _, want := range []string{"piv-auth", "enroll", "redeem", "confirm"} {
		if !actions[want] {
			t.Errorf("no %q event in the export:\n%s", want, b)
		}
	}
	for _, secret := range []string{password, string(p.Secret), "correct horse"} {
		if strings.Contains(string(b), secret) {
			t.Fatalf("the audit export contains a secret")
		}
	}

	db, err := sql.Open("sqlite", filepath.Join(dir, "credgw.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`UPDATE audit_events SET outcome = 'refused' WHERE seq = 2`); err != nil {
		t.Fatal(err)
	}
	out = run(t, nil, false, credgwBin, "audit", "verify", "--config", cfg)
	if !strings.Contains(out, "broken at seq 2") || !strings.Contains(out, "edited") {
		t.Fatalf("verify after an edit:\n%s", out)
	}
}
