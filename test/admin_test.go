package test

import (
	"encoding/json"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestAdminCLI: `credgw admin` lists the dev card's enrollment (a table, or
// JSON with --json), terminates the card's identity, and the audit log
// shows it; an unknown person fails with a readable message.
func TestAdminCLI(t *testing.T) {
	work := t.TempDir()
	dir, gw, conf := startDevGateway(t, work, nil)
	enrollWithCLI(t, dir, gw, conf, work)
	conn := []string{"--gateway", gw, "--ca-file", filepath.Join(dir, "tls", "ca.crt"),
		"--cert", filepath.Join(dir, "tls", "admin.crt"), "--key", filepath.Join(dir, "tls", "admin.key")}
	admin := func(ok bool, args ...string) string {
		return run(t, nil, ok, credgwBin, append(append([]string{"admin"}, args...), conn...)...)
	}

	var list struct {
		CredentialSets []struct {
			ID       string `json:"id"`
			Identity struct {
				CardUUID string `json:"card_uuid"`
			} `json:"piv_identity"`
		} `json:"credential_sets"`
	}
	out := admin(true, "list", "--state", "pending", "--json")
	if err := json.Unmarshal([]byte(out), &list); err != nil || len(list.CredentialSets) != 1 || list.CredentialSets[0].Identity.CardUUID == "" {
		t.Fatalf("admin list: %v\n%s", err, out)
	}
	if out := admin(true, "activations", "--json"); !strings.Contains(out, `"ACTIVATION_STATE_PENDING"`) {
		t.Fatalf("admin activations:\n%s", out)
	}
	// The table: a header, the pending set, dates with their zone.
	out = admin(true, "list")
	for _, want := range []string{"OWNER", "SET STATE", list.CredentialSets[0].ID, "pending", "1 credential set, 0 certificates"} {
		if !strings.Contains(out, want) {
			t.Fatalf("admin list: no %q in\n%s", want, out)
		}
	}
	if !regexp.MustCompile(`\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [A-Z+\-0-9]+`).MatchString(out) {
		t.Fatalf("admin list: no date with zone in\n%s", out)
	}
	if out := admin(true, "activations"); !strings.Contains(out, "ATTEMPTS LEFT") || !strings.Contains(out, "pending") {
		t.Fatalf("admin activations:\n%s", out)
	}
	// An unknown person is an error that says so, not an empty answer; an
	// id the person attribute (fascn here) never makes says what one is.
	for _, args := range [][]string{{"list", "--person", "00000000000000"}, {"activations", "--person", "00000000000000"}, {"revoke-identity", "--person", "00000000000000"}} {
		out := admin(false, args...)
		if !strings.Contains(out, `not found: no person id "00000000000000"`) || strings.Contains(out, "rpc error") {
			t.Fatalf("%v:\n%s", args, out)
		}
	}
	if out := admin(false, "list", "--person", "nobody"); !strings.Contains(out, "14-digit FASC-N identifier") || strings.Contains(out, "rpc error") {
		t.Fatalf("list --person nobody:\n%s", out)
	}
	if out := admin(false, "revoke", "--serial", "serial=ZZ"); !strings.Contains(out, "openssl x509") {
		t.Fatalf("revoke, bad serial:\n%s", out)
	}
	if out := admin(false, "revoke", "--serial", "0A:BC", "--reason", "cACompromise"); !strings.Contains(out, "not a reason for a derived credential") {
		t.Fatalf("revoke, CA-only reason:\n%s", out)
	}
	if out := admin(false, "revoke", "--serial", "serial=0ABC", "--reason", "keyCompromise"); !strings.Contains(out, "not found") || strings.Contains(out, "rpc error") {
		t.Fatalf("revoke, unknown serial:\n%s", out)
	}
	if out := run(t, nil, true, credgwBin, "admin", "list", "--help"); !strings.Contains(out, "pending, redeeming, active, revoked, abandoned") {
		t.Fatalf("list --help names no states:\n%s", out)
	}
	if out := admin(false, "terminate"); !strings.Contains(out, "give the PIV identity") {
		t.Fatalf("terminate without identity:\n%s", out)
	}
	if out := admin(false, "list", "--state", "lost"); !strings.Contains(out, "--state") {
		t.Fatalf("bad state:\n%s", out)
	}
	person := ""
	out = admin(true, "audit", "--json")
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, `"person_id"`) && person == "" {
			person = strings.Trim(strings.TrimSpace(strings.SplitN(line, ":", 2)[1]), `",`)
		}
	}
	if person == "" {
		t.Fatalf("no person in the audit log:\n%s", out)
	}
	if out := admin(true, "audit", "--person", person); !strings.Contains(out, " enroll ") || !strings.Contains(out, "EVENT") {
		t.Fatalf("audit trail of the person:\n%s", out)
	}
	if out := admin(false, "cancel", "--activation", "nope"); !strings.Contains(out, "no activation") {
		t.Fatalf("cancel unknown:\n%s", out)
	}
	if out := admin(true, "terminate", "--person", person, "--comment", "separated"); !strings.Contains(out, "terminated person "+person) ||
		!strings.Contains(out, "no live certificate to revoke") {
		t.Fatalf("terminate:\n%s", out)
	}
	if out := admin(true, "list", "--person", person, "--json"); !strings.Contains(out, "CREDENTIAL_SET_STATE_REVOKED") {
		t.Fatalf("after terminate:\n%s", out)
	}
	if out := admin(true, "list", "--person", person); !strings.Contains(out, "revoked") {
		t.Fatalf("after terminate:\n%s", out)
	}
	if out := admin(true, "audit", "--json"); !strings.Contains(out, `"terminate"`) {
		t.Fatalf("audit after terminate:\n%s", out)
	}
}
