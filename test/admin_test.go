package test

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
)

// TestAdminCLI: `credgw admin` lists the dev card's enrollment, terminates
// the card's identity, and the audit log shows it.
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
	out := admin(true, "list", "--state", "pending")
	if err := json.Unmarshal([]byte(out), &list); err != nil || len(list.CredentialSets) != 1 {
		t.Fatalf("admin list: %v\n%s", err, out)
	}
	if out := admin(true, "activations"); !strings.Contains(out, `"ACTIVATION_STATE_PENDING"`) {
		t.Fatalf("admin activations:\n%s", out)
	}
	if out := admin(false, "terminate"); !strings.Contains(out, "give the PIV identity") {
		t.Fatalf("terminate without identity:\n%s", out)
	}
	if out := admin(false, "list", "--state", "lost"); !strings.Contains(out, "--state") {
		t.Fatalf("bad state:\n%s", out)
	}
	person := ""
	out = admin(true, "audit")
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, `"person_id"`) && person == "" {
			person = strings.Trim(strings.TrimSpace(strings.SplitN(line, ":", 2)[1]), `",`)
		}
	}
	if person == "" {
		t.Fatalf("no person in the audit log:\n%s", out)
	}
	if out := admin(true, "audit", "--person", person); !strings.Contains(out, `"enroll"`) {
		t.Fatalf("audit trail of the person:\n%s", out)
	}
	if out := admin(false, "cancel", "--activation", "nope"); !strings.Contains(out, "no activation") {
		t.Fatalf("cancel unknown:\n%s", out)
	}
	if out := admin(true, "terminate", "--person", person, "--comment", "separated"); !strings.Contains(out, "revoked_serials") && !strings.Contains(out, "{}") {
		t.Fatalf("terminate:\n%s", out)
	}
	if out := admin(true, "list", "--person", person); !strings.Contains(out, "CREDENTIAL_SET_STATE_REVOKED") {
		t.Fatalf("after terminate:\n%s", out)
	}
	if out := admin(true, "audit"); !strings.Contains(out, `"terminate"`) {
		t.Fatalf("audit after terminate:\n%s", out)
	}
}
