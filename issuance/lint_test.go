package issuance

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestLintGate: a certificate that the profile check lets through but RFC
// 5280 forbids (a malformed rfc822Name from a card's certificate) is refused
// by the lint; its intent is closed as lint_failed, nothing is signed with
// the CA key, and the key may be used again.
func TestLintGate(t *testing.T) {
	ctx := context.Background()
	id := identity(t)
	id.Email = "not an email"
	key := p256(t)
	_, err := testCA.Issue(ctx, Request{Profile: DigitalSignature, CSR: newCSR(t, key), Identity: id})
	if !errors.Is(err, ErrLint) || !strings.Contains(err.Error(), "e_ext_san_rfc822_format_invalid") {
		t.Fatalf("err = %v, want ErrLint naming the lint", err)
	}
	spki, _ := SPKIHash(key.Public())
	if seen, _ := testStore.KeyCertified(ctx, spki); seen {
		t.Fatal("the refused key counts as certified")
	}
	id.Email = "alice@example.gov"
	if _, err := testCA.Issue(ctx, Request{Profile: DigitalSignature, CSR: newCSR(t, key), Identity: id}); err != nil {
		t.Fatalf("the same key after a lint refusal: %v", err)
	}
}

// TestZlintCommand runs the zlint command (RFC 5280 lints) on every profile:
// no error, no fatal.
func TestZlintCommand(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "zlint")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/zmap/zlint/v3/cmd/zlint").CombinedOutput(); err != nil {
		t.Fatalf("building zlint: %v\n%s", err, out)
	}
	for _, p := range Profiles() {
		c := issue(t, p, p256(t), identity(t)).Certificate
		f := filepath.Join(dir, string(p)+".pem")
		os.WriteFile(f, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}), 0o644)
		out, err := exec.Command(bin, "-includeSources", "RFC5280", f).Output()
		if err != nil {
			t.Fatalf("zlint %s: %v", p, err)
		}
		var results map[string]struct {
			Result string `json:"result"`
		}
		if err := json.Unmarshal(out, &results); err != nil {
			t.Fatalf("zlint output: %v\n%s", err, out)
		}
		ran := 0
		for name, r := range results {
			ran++
			if r.Result == "error" || r.Result == "fatal" {
				t.Errorf("%s: zlint %s: %s", p, name, r.Result)
			}
		}
		if ran < 50 {
			t.Fatalf("zlint ran %d lints", ran)
		}
	}
}
