package main

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	credgwv1 "github.com/credgw/credgw/proto/credgw/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func TestSerialForms(t *testing.T) {
	for _, in := range []string{"a1b2c3", "A1B2C3", "a1:b2:c3", "00A1B2C3", "serial=A1B2C3", "0xa1b2c3", " 0A:1B:2C:3 "} {
		got, err := parseSerial(in)
		if err != nil || got != "a1b2c3" {
			t.Errorf("%q: %q %v, want a1b2c3", in, got, err)
		}
	}
	for _, bad := range []string{"", "serial=", "xyz", "12 34", "0x"} {
		if _, err := parseSerial(bad); err == nil || !strings.Contains(err.Error(), "hex") {
			t.Errorf("%q: %v", bad, err)
		}
	}
	for in, want := range map[string]string{"a1b2c3": "A1B2C3", "1b2c3": "01B2C3", "": "-"} {
		if got := fmtSerial(in); got != want {
			t.Errorf("fmtSerial(%q) = %q, want %q (as openssl x509 -serial prints it)", in, got, want)
		}
	}
}

func TestPlural(t *testing.T) {
	for n, want := range map[int]string{0: "0 certificates", 1: "1 certificate", 2: "2 certificates"} {
		if got := plural(n, "certificate", "certificates"); got != want {
			t.Errorf("%d: %q", n, got)
		}
	}
}

func TestTimesCarryDateAndZone(t *testing.T) {
	at := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	got := fmtTS(timestamppb.New(at))
	if _, err := time.Parse(timeLayout, got); err != nil || !strings.HasPrefix(got, at.Local().Format("2006-01-02")) {
		t.Fatalf("%q: %v", got, err)
	}
	if fmtTS(nil) != "-" || fmtTS(&timestamppb.Timestamp{}) != "-" {
		t.Fatal("an unset time is not -")
	}
}

func TestRPCErrorsRead(t *testing.T) {
	err := rpcErr(status.Error(codes.NotFound, `no person id "bob" is known here`))
	if err.Error() != `not found: no person id "bob" is known here` {
		t.Fatalf("%q", err)
	}
	if status.Code(err) != codes.NotFound {
		t.Fatalf("the code is lost: %v", status.Code(err))
	}
	plain := errors.New("--ca-file: no such file")
	if rpcErr(plain) != plain || rpcErr(nil) != nil {
		t.Fatal("a local error was changed")
	}
}

func TestReasonNames(t *testing.T) {
	for in, want := range map[string]credgwv1.RevocationReason{
		"keyCompromise": credgwv1.RevocationReason_REVOCATION_REASON_KEY_COMPROMISE, "key-compromise": credgwv1.RevocationReason_REVOCATION_REASON_KEY_COMPROMISE,
		"1": credgwv1.RevocationReason_REVOCATION_REASON_KEY_COMPROMISE, "affiliationChanged": credgwv1.RevocationReason_REVOCATION_REASON_AFFILIATION_CHANGED,
		"superseded": credgwv1.RevocationReason_REVOCATION_REASON_SUPERSEDED, "cessationOfOperation": credgwv1.RevocationReason_REVOCATION_REASON_CESSATION_OF_OPERATION,
		"privilegeWithdrawn": credgwv1.RevocationReason_REVOCATION_REASON_PRIVILEGE_WITHDRAWN, "unspecified": credgwv1.RevocationReason_REVOCATION_REASON_UNSPECIFIED,
	} {
		if got, err := reason(in); err != nil || got != want {
			t.Errorf("%q: %v %v", in, got, err)
		}
	}
	// CA-only reasons and suspension are named as such.
	for _, in := range []string{"cACompromise", "certificateHold", "aACompromise"} {
		if _, err := reason(in); err == nil || !strings.Contains(err.Error(), "not a reason for a derived credential") || !strings.Contains(err.Error(), "keyCompromise") {
			t.Errorf("%q: %v", in, err)
		}
	}
	if _, err := reason("lost"); err == nil || !strings.Contains(err.Error(), "cessationOfOperation") {
		t.Errorf("lost: %v", err)
	}
	if h := reasonHelp(); !strings.Contains(h, "keyCompromise") || !strings.Contains(h, "privilegeWithdrawn") {
		t.Errorf("help: %s", h)
	}
}

func TestSetsTable(t *testing.T) {
	at := timestamppb.New(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	resp := &credgwv1.AdminListCredentialsResponse{CredentialSets: []*credgwv1.CredentialSet{
		{Id: "set-1", State: credgwv1.CredentialSetState_CREDENTIAL_SET_STATE_ACTIVE, CreatedAt: at,
			PivIdentity: &credgwv1.PIVIdentity{PersonId: "alice"},
			Certificates: []*credgwv1.Certificate{
				{Serial: "a1b2c3", Profile: credgwv1.Profile_PROFILE_DERIVED_PIV_AUTH, Status: credgwv1.CertificateStatus_CERTIFICATE_STATUS_GOOD, NotAfter: at},
				{Serial: "d4", Profile: credgwv1.Profile_PROFILE_KEY_MANAGEMENT, Status: credgwv1.CertificateStatus_CERTIFICATE_STATUS_REVOKED, RevokedAt: at, NotAfter: at},
			}},
		{Id: "set-2", State: credgwv1.CredentialSetState_CREDENTIAL_SET_STATE_PENDING, IdentityName: "Phone", CreatedAt: at},
	}}
	var b bytes.Buffer
	if err := printSets(&b, resp); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{"OWNER", "PROFILE", "SERIAL", "alice", "derived-piv-auth", "A1B2C3", "key-management", "D4", "active", "pending", "Phone",
		fmtTime(at.AsTime()), "revoked " + fmtTime(at.AsTime()), "2 credential sets, 2 certificates"} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in\n%s", want, out)
		}
	}
	if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 5 {
		t.Errorf("%d lines, want a header, 3 rows and a total:\n%s", len(lines), out)
	}
	b.Reset()
	printRevoked(&b, "revoked", []string{"a1"})
	if got := b.String(); got != "revoked 1 certificate:\n  serial=A1\n" {
		t.Errorf("%q", got)
	}
}

// TestActivationsTableSaysMore: the gateway answers at most a page of
// activations; when it says more exist (next_page_token), the table says
// so and how to narrow it, as admin list does, instead of ending silently.
func TestActivationsTableSaysMore(t *testing.T) {
	at := timestamppb.New(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	resp := &credgwv1.ListActivationsResponse{Activations: []*credgwv1.Activation{
		{Id: "act-1", CredentialSetId: "set-1", State: credgwv1.ActivationState_ACTIVATION_STATE_PENDING, AttemptsLeft: 5, CreatedAt: at, ExpiresAt: at},
	}}
	const more = "more activations exist: narrow the list with --person, --card-uuid or --fascn"
	var b bytes.Buffer
	if err := printActivations(&b, resp); err != nil {
		t.Fatal(err)
	}
	if out := b.String(); !strings.Contains(out, "act-1") || !strings.Contains(out, "1 activation") || strings.Contains(out, "more") {
		t.Errorf("one page only:\n%s", out)
	}
	resp.NextPageToken = "500"
	b.Reset()
	if err := printActivations(&b, resp); err != nil {
		t.Fatal(err)
	}
	if out := b.String(); !strings.HasSuffix(out, "1 activation\n"+more+"\n") {
		t.Errorf("no %q line at the end of\n%s", more, out)
	}
}

// TestAdminTablesCannotDriveTheTerminal: credgw admin's tables printed the
// gateway's strings as they came: an admin's comment in an audit event's
// details, or the device name a person typed at enrollment, could carry
// escape sequences and carriage returns that rewrite or hide lines on the
// terminal of whoever reads the table.
func TestAdminTablesCannotDriveTheTerminal(t *testing.T) {
	const evil = "x\r\x1b[2K8  2026-01-01  piv-auth  piv:bob  ok\x1b[8m\x07"
	var b bytes.Buffer
	if err := printAudit(&b, &credgwv1.ReadAuditLogResponse{Events: []*credgwv1.AuditEvent{
		{Sequence: 7, Type: "revoke", Actor: "admin:" + evil, Outcome: "ok", PersonId: evil, Details: "comment=" + evil}}}); err != nil {
		t.Fatal(err)
	}
	if err := printSets(&b, &credgwv1.AdminListCredentialsResponse{CredentialSets: []*credgwv1.CredentialSet{
		{Id: "set-" + evil, IdentityName: evil, State: credgwv1.CredentialSetState_CREDENTIAL_SET_STATE_PENDING}}}); err != nil {
		t.Fatal(err)
	}
	if err := printActivations(&b, &credgwv1.ListActivationsResponse{Activations: []*credgwv1.Activation{{Id: evil, CredentialSetId: evil}}}); err != nil {
		t.Fatal(err)
	}
	if out := b.String(); strings.ContainsAny(out, "\x1b\r\x07") {
		t.Errorf("a table carries control characters:\n%q", out)
	}
}
