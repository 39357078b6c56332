package issuance

import (
	"strings"
	"testing"
)

func TestRevocationReasonNames(t *testing.T) {
	for _, tc := range []struct {
		r          RevocationReason
		name, flag string
		endEntity  bool
	}{
		{ReasonUnspecified, "unspecified", "unspecified", true},
		{ReasonKeyCompromise, "keyCompromise", "key-compromise", true},
		{ReasonCACompromise, "cACompromise", "ca-compromise", false},
		{ReasonAffiliationChanged, "affiliationChanged", "affiliation-changed", true},
		{ReasonSuperseded, "superseded", "superseded", true},
		{ReasonCessationOfOperation, "cessationOfOperation", "cessation-of-operation", true},
		{ReasonCertificateHold, "certificateHold", "certificate-hold", false},
		{ReasonRemoveFromCRL, "removeFromCRL", "remove-from-crl", false},
		{ReasonPrivilegeWithdrawn, "privilegeWithdrawn", "privilege-withdrawn", true},
		{ReasonAACompromise, "aACompromise", "aa-compromise", false},
	} {
		if got := tc.r.String(); got != tc.name {
			t.Errorf("%d: String %q, want %q", tc.r, got, tc.name)
		}
		if got := tc.r.Flag(); got != tc.flag {
			t.Errorf("%d: Flag %q, want %q", tc.r, got, tc.flag)
		}
		if got := tc.r.EndEntity(); got != tc.endEntity {
			t.Errorf("%s: EndEntity %v", tc.name, got)
		}
		for _, in := range []string{tc.name, tc.flag, strings.ToUpper(tc.name)} {
			if got, err := ParseRevocationReason(in); err != nil || got != tc.r {
				t.Errorf("Parse(%q) = %v, %v; want %v", in, got, err, tc.r)
			}
		}
	}
}

func TestParseRevocationReasonRefuses(t *testing.T) {
	for _, in := range []string{"", "7", "compromised", "keycompromise!", "11", "-1"} {
		if r, err := ParseRevocationReason(in); err == nil {
			t.Errorf("Parse(%q) = %v, want an error", in, r)
		} else if !strings.Contains(err.Error(), "cessation-of-operation") {
			t.Errorf("Parse(%q): %v does not list the reasons", in, err)
		}
	}
	if got := RevocationReason(7).String(); got != "reason(7)" {
		t.Errorf("7: %q", got)
	}
}
