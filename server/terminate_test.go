package server_test

import (
	"context"
	"strings"
	"testing"

	"github.com/credgw/credgw/activation/code"
	"github.com/credgw/credgw/agent"
	hsmsim "github.com/credgw/credgw/hsm-sim"
	credgwv1 "github.com/credgw/credgw/proto/credgw/v1"
	"google.golang.org/grpc/codes"
)

// TestTerminateIdentity: terminating a card's PIV identity revokes its
// derived credentials (active and pending), refuses its next PKI-AUTH and
// the redemption of what was pending, and leaves another card alone.
func TestTerminateIdentity(t *testing.T) {
	ctx := context.Background()
	conn := portalConn(t)
	enrollment := credgwv1.NewEnrollmentClient(conn)
	c := newCard(t, hsmsim.CardSpec{Email: "leaver@example.com"})
	sess, err := login(t, conn, c)
	if err != nil {
		t.Fatal(err)
	}
	rememberSecret([]byte(sess.GetSessionToken()))
	enrollOnce := func(name string) (code.Payload, string) {
		en, err := enrollment.CreateEnrollment(ctx, &credgwv1.CreateEnrollmentRequest{SessionToken: sess.GetSessionToken(), IdentityName: name})
		if err != nil {
			t.Fatal(err)
		}
		rememberSecret([]byte(en.GetPassword()))
		p, err := code.ParsePayload(en.GetQrPayload())
		if err != nil {
			t.Fatal(err)
		}
		rememberSecret(p.Secret)
		return p, en.GetPassword()
	}
	p1, pw1 := enrollOnce("Phone")
	if _, err := agent.Redeem(ctx, agent.Options{Payload: p1, Password: pw1, OutDir: t.TempDir(), KeystorePIN: "correct horse"}); err != nil {
		t.Fatal(err)
	}
	p2, pw2 := enrollOnce("Tablet")
	bystander := enrollCard(t)

	admin := credgwv1.NewAdminClient(dial(t, keyPair(t, dev.AdminCert, dev.AdminKey)))
	uuid := sess.GetIdentity().GetCardUuid()
	for _, bad := range []struct {
		name string
		sel  *credgwv1.PIVIdentitySelector
	}{
		{"no selector", nil},
		{"short FASC-N", &credgwv1.PIVIdentitySelector{Selector: &credgwv1.PIVIdentitySelector_Fascn{Fascn: []byte{1, 2, 3}}}},
		{"not a UUID", &credgwv1.PIVIdentitySelector{Selector: &credgwv1.PIVIdentitySelector_CardUuid{CardUuid: "card-1"}}},
		{"empty person", &credgwv1.PIVIdentitySelector{Selector: &credgwv1.PIVIdentitySelector_PersonId{}}},
	} {
		t.Run(bad.name, func(t *testing.T) {
			_, err := admin.TerminateIdentity(ctx, &credgwv1.TerminateIdentityRequest{Identity: bad.sel})
			wantCode(t, err, codes.InvalidArgument)
		})
	}
	sel := &credgwv1.PIVIdentitySelector{Selector: &credgwv1.PIVIdentitySelector_CardUuid{CardUuid: "urn:uuid:" + uuid}}
	// Only the admin role may terminate.
	_, err = credgwv1.NewAdminClient(conn).TerminateIdentity(ctx, &credgwv1.TerminateIdentityRequest{Identity: sel})
	wantCode(t, err, codes.PermissionDenied)

	resp, err := admin.TerminateIdentity(ctx, &credgwv1.TerminateIdentityRequest{Identity: sel, Comment: "separated"})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetRevokedSerials()) != 3 {
		t.Fatalf("revoked %v, want the 3 certificates of the redeemed set", resp.GetRevokedSerials())
	}
	for _, serial := range resp.GetRevokedSerials() {
		rec, err := gwStore.Certificate(ctx, serial)
		if err != nil || !rec.Revoked() || rec.RevocationReason != 5 {
			t.Fatalf("%s: revoked %v reason %d (%v)", serial, rec.Revoked(), rec.RevocationReason, err)
		}
	}
	sets, err := gwStore.CredentialSetsOfPerson(ctx, sess.GetIdentity().GetFascnIdentifier())
	if err != nil || len(sets) != 2 {
		t.Fatalf("%d sets of the person, want 2 (%v)", len(sets), err)
	}
	for _, cs := range sets {
		if cs.State != "revoked" {
			t.Errorf("set %s (%s) is %s", cs.ID, cs.IdentityName, cs.State)
		}
	}
	// The holder is told, at the address of record.
	mails.waitForText(t, "termination", "leaver@example.com", "terminated")
	// The pending enrollment cannot be redeemed, the card cannot sign in.
	if _, err := agent.Redeem(ctx, agent.Options{Payload: p2, Password: pw2, OutDir: t.TempDir(), KeystorePIN: "correct horse"}); err == nil {
		t.Fatal("a terminated identity's pending enrollment was redeemed")
	}
	_, err = login(t, conn, c)
	wantCode(t, err, codes.PermissionDenied)
	// Terminating again revokes nothing more and is not an error.
	if again, err := admin.TerminateIdentity(ctx, &credgwv1.TerminateIdentityRequest{Identity: sel}); err != nil || len(again.GetRevokedSerials()) != 0 {
		t.Fatalf("again: %v %v", again, err)
	}
	// Another card is untouched.
	if cs, err := gwStore.CredentialSet(ctx, bystander.resp.GetCredentialSetId()); err != nil || cs.State != "pending" {
		t.Fatalf("bystander: %+v %v", cs.State, err)
	}
}

// TestAdminLists: an administrator lists a card's credential sets and
// activations, pages through all of them, and bad requests say what to fix.
func TestAdminLists(t *testing.T) {
	ctx := context.Background()
	e := enrollCard(t)
	cs, err := gwStore.CredentialSet(ctx, e.resp.GetCredentialSetId())
	if err != nil {
		t.Fatal(err)
	}
	admin := credgwv1.NewAdminClient(dial(t, keyPair(t, dev.AdminCert, dev.AdminKey)))
	sel := &credgwv1.PIVIdentitySelector{Selector: &credgwv1.PIVIdentitySelector_CardUuid{CardUuid: cs.CardUUID}}
	sets, err := admin.ListCredentials(ctx, &credgwv1.AdminListCredentialsRequest{Identity: sel})
	if err != nil || len(sets.GetCredentialSets()) != 1 || sets.GetCredentialSets()[0].GetId() != cs.ID {
		t.Fatalf("%v %v", sets, err)
	}
	acts, err := admin.ListActivations(ctx, &credgwv1.ListActivationsRequest{Identity: sel, State: credgwv1.ActivationState_ACTIVATION_STATE_PENDING})
	if err != nil || len(acts.GetActivations()) != 1 || acts.GetActivations()[0].GetAttemptsLeft() != 5 {
		t.Fatalf("%v %v", acts, err)
	}
	// Page through everything, one at a time: no set twice.
	seen := map[string]bool{}
	token := ""
	for i := 0; i < 1000; i++ {
		p, err := admin.ListCredentials(ctx, &credgwv1.AdminListCredentialsRequest{PageSize: 1, PageToken: token})
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range p.GetCredentialSets() {
			if seen[s.GetId()] {
				t.Fatalf("set %s listed twice", s.GetId())
			}
			seen[s.GetId()] = true
		}
		if token = p.GetNextPageToken(); token == "" {
			break
		}
	}
	if !seen[cs.ID] {
		t.Fatal("paging missed the set")
	}
	// A person the gateway never saw is not found (a mistyped id), not an
	// empty answer; a known one with nothing in a state is an empty answer.
	nobody := &credgwv1.PIVIdentitySelector{Selector: &credgwv1.PIVIdentitySelector_PersonId{PersonId: "00000000000000"}}
	_, err = admin.ListCredentials(ctx, &credgwv1.AdminListCredentialsRequest{Identity: nobody})
	wantCode(t, err, codes.NotFound)
	if err != nil && !strings.Contains(err.Error(), `person id "00000000000000"`) {
		t.Fatalf("the message does not name the person: %v", err)
	}
	// An id piv.person_attribute (fascn here) never makes says so.
	_, err = admin.TerminateIdentity(ctx, &credgwv1.TerminateIdentityRequest{Identity: &credgwv1.PIVIdentitySelector{
		Selector: &credgwv1.PIVIdentitySelector_PersonId{PersonId: "no-such-person"}}})
	wantCode(t, err, codes.InvalidArgument)
	_, err = admin.ListActivations(ctx, &credgwv1.ListActivationsRequest{Identity: nobody})
	wantCode(t, err, codes.NotFound)
	_, err = admin.RevokeIdentity(ctx, &credgwv1.RevokeIdentityRequest{Identity: nobody})
	wantCode(t, err, codes.NotFound)
	if none, err := admin.ListCredentials(ctx, &credgwv1.AdminListCredentialsRequest{Identity: sel,
		State: credgwv1.CredentialSetState_CREDENTIAL_SET_STATE_ABANDONED}); err != nil || len(none.GetCredentialSets()) != 0 {
		t.Fatalf("a known card with no abandoned set: %v %v", none, err)
	}
	for _, bad := range []*credgwv1.AdminListCredentialsRequest{{PageSize: 501}, {PageToken: "x"}, {PageToken: "-1"}} {
		_, err := admin.ListCredentials(ctx, bad)
		wantCode(t, err, codes.InvalidArgument)
	}

	// Cancel the pending activation: it can no longer be redeemed.
	actID := acts.GetActivations()[0].GetId()
	_, err = admin.CancelActivation(ctx, &credgwv1.CancelActivationRequest{})
	wantCode(t, err, codes.InvalidArgument)
	_, err = admin.CancelActivation(ctx, &credgwv1.CancelActivationRequest{ActivationId: "no-such-activation"})
	wantCode(t, err, codes.NotFound)
	// A comment goes into the audit log: bounded like the others.
	_, err = admin.CancelActivation(ctx, &credgwv1.CancelActivationRequest{ActivationId: actID, Comment: strings.Repeat("x", 1025)})
	wantCode(t, err, codes.InvalidArgument)
	if _, err := admin.CancelActivation(ctx, &credgwv1.CancelActivationRequest{ActivationId: actID, Comment: "phone lost before setup"}); err != nil {
		t.Fatal(err)
	}
	_, err = admin.CancelActivation(ctx, &credgwv1.CancelActivationRequest{ActivationId: actID})
	wantCode(t, err, codes.FailedPrecondition)
	if st := setState(t, cs.ID); st != "revoked" {
		t.Fatalf("set after cancel: %s", st)
	}
	if _, err := agent.Redeem(ctx, agent.Options{Payload: e.payload, Password: e.resp.GetPassword(), OutDir: t.TempDir(), KeystorePIN: "correct horse"}); err == nil {
		t.Fatal("a cancelled activation was redeemed")
	}
	// The person's audit trail shows it.
	trail, err := admin.ReadAuditLog(ctx, &credgwv1.ReadAuditLogRequest{PersonId: cs.PersonID})
	if err != nil {
		t.Fatal(err)
	}
	types := map[string]bool{}
	for _, ev := range trail.GetEvents() {
		if ev.GetPersonId() != cs.PersonID {
			t.Fatalf("another person's event in the trail: %v", ev)
		}
		types[ev.GetType()] = true
	}
	if !types["enroll"] || !types["cancel-activation"] {
		t.Fatalf("trail: %v", types)
	}
}

// TestAdminReadsAudited: an administrator's reads of people's records (the
// lists of credential sets and activations, the audit log) and a refused
// revocation leave an audit event each with the administrator's name:
// before, an administrator could page out every cardholder's email, UPN and
// FASC-N without trace.
func TestAdminReadsAudited(t *testing.T) {
	ctx := context.Background()
	admin := credgwv1.NewAdminClient(dial(t, keyPair(t, dev.AdminCert, dev.AdminKey)))
	adminEvents := func() map[string]int {
		t.Helper()
		evs, err := gwStore.AuditEvents(ctx, 0, 0, "")
		if err != nil {
			t.Fatal(err)
		}
		n := map[string]int{}
		for _, e := range evs {
			if strings.HasPrefix(e.Actor, "admin:") {
				n[e.Action+"/"+e.Outcome]++
			}
		}
		return n
	}
	before := adminEvents()
	if _, err := admin.ListCredentials(ctx, &credgwv1.AdminListCredentialsRequest{PageSize: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.ListActivations(ctx, &credgwv1.ListActivationsRequest{PageSize: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.ReadAuditLog(ctx, &credgwv1.ReadAuditLogRequest{PageSize: 1}); err != nil {
		t.Fatal(err)
	}
	_, err := admin.RevokeCertificate(ctx, &credgwv1.RevokeCertificateRequest{Serial: "0badbad0"})
	wantCode(t, err, codes.NotFound)
	after := adminEvents()
	if after["admin-read/ok"]-before["admin-read/ok"] != 3 || after["revoke/refused"]-before["revoke/refused"] != 1 {
		t.Fatalf("admin events before %v, after %v; want 3 more admin-read/ok and 1 more revoke/refused", before, after)
	}
}
