package issuance

import (
	"fmt"
	"strconv"
	"strings"
	"unicode"
)

// RevocationReason is an RFC 5280 §5.3.1 CRLReason code. It travels typed
// from the API (whose enum has the same numbers) through the services to
// the CA, which records it as its number.
type RevocationReason int

// The RFC 5280 reason codes (7 is not used).
const (
	ReasonUnspecified          RevocationReason = 0
	ReasonKeyCompromise        RevocationReason = 1
	ReasonCACompromise         RevocationReason = 2
	ReasonAffiliationChanged   RevocationReason = 3
	ReasonSuperseded           RevocationReason = 4
	ReasonCessationOfOperation RevocationReason = 5
	ReasonCertificateHold      RevocationReason = 6
	ReasonRemoveFromCRL        RevocationReason = 8
	ReasonPrivilegeWithdrawn   RevocationReason = 9
	ReasonAACompromise         RevocationReason = 10
)

// reasonNames are RFC 5280's own spellings.
var reasonNames = map[RevocationReason]string{
	ReasonUnspecified:          "unspecified",
	ReasonKeyCompromise:        "keyCompromise",
	ReasonCACompromise:         "cACompromise",
	ReasonAffiliationChanged:   "affiliationChanged",
	ReasonSuperseded:           "superseded",
	ReasonCessationOfOperation: "cessationOfOperation",
	ReasonCertificateHold:      "certificateHold",
	ReasonRemoveFromCRL:        "removeFromCRL",
	ReasonPrivilegeWithdrawn:   "privilegeWithdrawn",
	ReasonAACompromise:         "aACompromise",
}

// String is the RFC 5280 name ("keyCompromise"), or "reason(N)" for a
// number RFC 5280 does not define.
func (r RevocationReason) String() string {
	if n, ok := reasonNames[r]; ok {
		return n
	}
	return fmt.Sprintf("reason(%d)", int(r))
}

// EndEntity reports whether a CA may put the reason on an end-entity
// certificate: not the CA-only ones (cACompromise, aACompromise), not
// certificateHold (Common Policy §4.9.13: no suspension) and not
// removeFromCRL (delta CRLs only).
func (r RevocationReason) EndEntity() bool {
	switch r {
	case ReasonUnspecified, ReasonKeyCompromise, ReasonAffiliationChanged, ReasonSuperseded,
		ReasonCessationOfOperation, ReasonPrivilegeWithdrawn:
		return true
	}
	return false
}

// forCA reports whether a root may put the reason on a CA certificate it
// issued: the end-entity ones and cACompromise; not certificateHold
// (Common Policy §4.9.13), removeFromCRL (delta CRLs only, RFC 5280
// §5.3.1), aACompromise (attribute certificates) or an undefined code.
func (r RevocationReason) forCA() bool { return r.EndEntity() || r == ReasonCACompromise }

// EndEntityReasons are the reasons EndEntity allows, in code order.
func EndEntityReasons() []RevocationReason {
	return []RevocationReason{ReasonUnspecified, ReasonKeyCompromise, ReasonAffiliationChanged, ReasonSuperseded,
		ReasonCessationOfOperation, ReasonPrivilegeWithdrawn}
}

// ParseRevocationReason reads a reason by its RFC 5280 name, in any case
// and with or without dashes ("keyCompromise", "key-compromise",
// "KEY_COMPROMISE"), or by its number.
func ParseRevocationReason(s string) (RevocationReason, error) {
	fold := func(s string) string {
		return strings.ToLower(strings.NewReplacer("-", "", "_", "", " ", "").Replace(strings.TrimSpace(s)))
	}
	if n, err := strconv.Atoi(strings.TrimSpace(s)); err == nil {
		if _, ok := reasonNames[RevocationReason(n)]; ok {
			return RevocationReason(n), nil
		}
	} else {
		want := fold(s)
		for r, n := range reasonNames {
			if fold(n) == want {
				return r, nil
			}
		}
	}
	return 0, fmt.Errorf("revocation reason %q: one of %s", s, reasonList())
}

// reasonList names the end-entity reasons as the command line spells
// them.
func reasonList() string {
	var out []string
	for _, r := range EndEntityReasons() {
		out = append(out, r.Flag())
	}
	return strings.Join(out, ", ")
}

// Flag is the reason as the command line spells it: "key-compromise".
func (r RevocationReason) Flag() string {
	switch r {
	case ReasonCACompromise:
		return "ca-compromise"
	case ReasonAACompromise:
		return "aa-compromise"
	case ReasonRemoveFromCRL:
		return "remove-from-crl"
	}
	n := r.String()
	var b strings.Builder
	for _, c := range n {
		if c >= 'A' && c <= 'Z' {
			b.WriteByte('-')
		}
		b.WriteRune(unicode.ToLower(c))
	}
	return b.String()
}
