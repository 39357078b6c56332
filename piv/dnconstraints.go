package piv

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"slices"
	"strings"
	"unicode"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
	"golang.org/x/text/cases"
	"golang.org/x/text/unicode/norm"
)

// crypto/x509 enforces name constraints on DNS names, email addresses, IP
// addresses and URIs, but not on distinguished names (directoryName): it
// ignores them, or, in a critical extension, refuses every certificate
// below the CA as "unhandled critical extension". credgw checks them on
// each verified path (RFC 5280 §6.1.3(b)-(c)), as agency and bridge CAs
// constrain the subjects under them.

var oidNameConstraints = asn1.ObjectIdentifier{2, 5, 29, 30}

// dnSubtrees are a CA's directoryName subtrees; others are the kinds of
// GeneralName crypto/x509 does not process besides (otherName, x400Address,
// ediPartyName, registeredID).
type dnSubtrees struct {
	permitted, excluded []pkix.RDNSequence
	others              bool
}

// parseDNSubtrees reads a name constraints extension (RFC 5280 §4.2.1.10).
func parseDNSubtrees(ext []byte) (dnSubtrees, error) {
	var out dnSubtrees
	s := cryptobyte.String(ext)
	var seq cryptobyte.String
	if !s.ReadASN1(&seq, cbasn1.SEQUENCE) || !s.Empty() {
		return out, errors.New("piv: invalid name constraints")
	}
	for _, tag := range []cbasn1.Tag{cbasn1.Tag(0).ContextSpecific().Constructed(), cbasn1.Tag(1).ContextSpecific().Constructed()} {
		var subtrees cryptobyte.String
		var present bool
		if !seq.ReadOptionalASN1(&subtrees, &present, tag) {
			return out, errors.New("piv: invalid name constraints")
		}
		for !subtrees.Empty() {
			var st, base cryptobyte.String
			var baseTag cbasn1.Tag
			if !subtrees.ReadASN1(&st, cbasn1.SEQUENCE) || !st.ReadAnyASN1(&base, &baseTag) {
				return out, errors.New("piv: invalid name constraints subtree")
			}
			switch baseTag {
			case cbasn1.Tag(4).ContextSpecific().Constructed(): // directoryName: [4] EXPLICIT Name
				var name cryptobyte.String
				if !base.ReadASN1Element(&name, cbasn1.SEQUENCE) || !base.Empty() {
					return out, errors.New("piv: invalid directoryName subtree")
				}
				var rdns pkix.RDNSequence
				if rest, err := asn1.Unmarshal(name, &rdns); err != nil || len(rest) > 0 {
					return out, errors.New("piv: invalid directoryName subtree")
				}
				if !textOnly(rdns) {
					// encoding/asn1 reads a UniversalString as nil: such a
					// subtree could not be compared.
					return out, errors.New("piv: a directoryName subtree with a value that is not text")
				}
				if tag == cbasn1.Tag(0).ContextSpecific().Constructed() {
					out.permitted = append(out.permitted, rdns)
				} else {
					out.excluded = append(out.excluded, rdns)
				}
			case cbasn1.Tag(1).ContextSpecific(), cbasn1.Tag(2).ContextSpecific(), cbasn1.Tag(6).ContextSpecific(), cbasn1.Tag(7).ContextSpecific():
				// rfc822Name, dNSName, URI, iPAddress: crypto/x509's.
			default:
				out.others = true
			}
		}
	}
	if !seq.Empty() {
		return out, errors.New("piv: invalid name constraints")
	}
	return out, nil
}

// textOnly: every attribute value of name was read as text.
func textOnly(name pkix.RDNSequence) bool {
	for _, rdn := range name {
		for _, atv := range rdn {
			if _, ok := atv.Value.(string); !ok {
				return false
			}
		}
	}
	return true
}

// nameConstraintsOf is c's name constraints extension, if any.
func nameConstraintsOf(c *x509.Certificate) (pkix.Extension, bool) {
	for _, e := range c.Extensions {
		if e.Id.Equal(oidNameConstraints) {
			return e, true
		}
	}
	return pkix.Extension{}, false
}

// handleDNConstraints is c, or, when crypto/x509 left c's critical name
// constraints unhandled only for their directoryName subtrees (which
// checkDNConstraints enforces), a copy that no longer lists them as
// unhandled. c itself is never changed (pools and callers share it).
func handleDNConstraints(c *x509.Certificate) *x509.Certificate {
	if !slices.ContainsFunc(c.UnhandledCriticalExtensions, oidNameConstraints.Equal) {
		return c
	}
	e, ok := nameConstraintsOf(c)
	if !ok {
		return c
	}
	st, err := parseDNSubtrees(e.Value)
	if err != nil || st.others {
		return c // still unhandled: refused
	}
	cp := *c
	cp.UnhandledCriticalExtensions = slices.DeleteFunc(slices.Clone(c.UnhandledCriticalExtensions), oidNameConstraints.Equal)
	return &cp
}

// CheckDNConstraints is checkDNConstraints for a chain built elsewhere
// (the issuing side checks what it is about to sign against its own path).
func CheckDNConstraints(chain []*x509.Certificate) error { return checkDNConstraints(chain) }

// checkDNConstraints enforces the directoryName constraints of every CA on
// a verified chain (leaf first, anchor last) on the subjects below it,
// self-issued CA certificates excepted (RFC 5280 §6.1.3(b)-(c)).
func checkDNConstraints(chain []*x509.Certificate) error {
	for i := len(chain) - 1; i >= 1; i-- {
		e, ok := nameConstraintsOf(chain[i])
		if !ok {
			continue
		}
		st, err := parseDNSubtrees(e.Value)
		if err != nil {
			return fmt.Errorf("%w: CA %q: %v", ErrUntrusted, chain[i].Subject, err)
		}
		if len(st.permitted) == 0 && len(st.excluded) == 0 {
			continue
		}
		for j := i - 1; j >= 0; j-- {
			c := chain[j]
			if j > 0 && string(c.RawIssuer) == string(c.RawSubject) {
				continue
			}
			var subject pkix.RDNSequence
			if _, err := asn1.Unmarshal(c.RawSubject, &subject); err != nil {
				return fmt.Errorf("%w: subject of %q: %v", ErrUntrusted, c.Subject, err)
			}
			if len(subject) == 0 {
				continue
			}
			if !textOnly(subject) {
				return fmt.Errorf("%w: %q has a name value that is not text, which CA %q's name constraints cannot be checked against", ErrUntrusted, c.Subject, chain[i].Subject)
			}
			if len(st.permitted) > 0 && !slices.ContainsFunc(st.permitted, func(base pkix.RDNSequence) bool { return withinDN(subject, base) }) {
				return fmt.Errorf("%w: %q is outside the names CA %q may certify (its name constraints)", ErrUntrusted, c.Subject, chain[i].Subject)
			}
			if slices.ContainsFunc(st.excluded, func(base pkix.RDNSequence) bool { return withinDN(subject, base) }) {
				return fmt.Errorf("%w: %q is within names CA %q excludes (its name constraints)", ErrUntrusted, c.Subject, chain[i].Subject)
			}
		}
	}
	return nil
}

// withinDN reports whether name is within the subtree of base: base's
// RDNs are name's first ones (RFC 5280 §7.1 comparison: attribute types
// equal, string values equal after case folding and space compression).
func withinDN(name, base pkix.RDNSequence) bool {
	if len(base) > len(name) {
		return false
	}
	for i, rdn := range base {
		if !sameRDN(rdn, name[i]) {
			return false
		}
	}
	return true
}

func sameRDN(a, b pkix.RelativeDistinguishedNameSET) bool {
	if len(a) != len(b) {
		return false
	}
	for _, x := range a {
		if !slices.ContainsFunc(b, func(y pkix.AttributeTypeAndValue) bool {
			return x.Type.Equal(y.Type) && sameValue(x.Value, y.Value)
		}) {
			return false
		}
	}
	return true
}

func sameValue(a, b any) bool {
	as, aok := a.(string)
	bs, bok := b.(string)
	return aok && bok && prepareDN(as) == prepareDN(bs)
}

// prepareDN is RFC 4518's string preparation for caseIgnoreMatch, as RFC
// 5280 §7.1 compares names: characters mapped to nothing (soft hyphen,
// variation selectors, zero-width and other format characters, controls)
// go, other spaces become spaces, then NFKC and case folding (so that
// fullwidth or compatibility letters are the letters they stand for),
// and insignificant spaces go.
func prepareDN(s string) string {
	s = strings.Map(func(r rune) rune {
		switch {
		case r == '\t' || r == '\n' || r == '\v' || r == '\f' || r == '\r' || r == 0x85 || unicode.Is(unicode.Zs, r):
			return ' '
		case r == 0x00AD || r == 0x034F || r == 0x1806 || r >= 0x180B && r <= 0x180D || r >= 0xFE00 && r <= 0xFE0F || r == 0xFFFC,
			unicode.IsControl(r), unicode.Is(unicode.Cf, r):
			return -1
		}
		return r
	}, s)
	s = norm.NFKC.String(cases.Fold().String(norm.NFKC.String(s)))
	return strings.Join(strings.Fields(s), " ")
}
