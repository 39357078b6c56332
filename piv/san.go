package piv

import (
	"bytes"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"unicode/utf8"
)

// Object identifiers of the subjectAltName extension and of the otherName
// forms found in PIV Authentication certificates.
var (
	// OIDSubjectAltName is id-ce-subjectAltName (RFC 5280 §4.2.1.6).
	OIDSubjectAltName = asn1.ObjectIdentifier{2, 5, 29, 17}
	// OIDPIVFASCN is id-piv-FASC-N; its otherName value is
	// [0] EXPLICIT OCTET STRING holding the 25-byte FASC-N.
	OIDPIVFASCN = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 6, 6}
	// OIDMicrosoftUPN is the Microsoft user principal name; its otherName
	// value is [0] EXPLICIT UTF8String.
	OIDMicrosoftUPN = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 311, 20, 2, 3}
)

// ErrSAN is wrapped by every error MarshalSAN, ParseSAN and
// SANFromCertificate return.
var ErrSAN = errors.New("piv: invalid subjectAltName")

// sanError is a subjectAltName error that matches ErrSAN under errors.Is.
type sanError string

func (e sanError) Error() string { return "piv: subjectAltName: " + string(e) }
func (e sanError) Unwrap() error { return ErrSAN }

func sanErrorf(format string, args ...any) error {
	return sanError(fmt.Sprintf(format, args...))
}

// SAN is the part of a subjectAltName a PIV certificate profile uses. Each
// slice keeps the order of the names in the extension; absent kinds are nil.
type SAN struct {
	// FASCN is the raw 25-byte FASC-N of the id-piv-FASC-N otherName, nil
	// if absent. Decode it with ParseFASCN.
	FASCN []byte
	// UUIDs are the card UUIDs of the "urn:uuid:" uniformResourceIdentifiers,
	// as lower-case 8-4-4-4-12 text without the "urn:uuid:" prefix.
	UUIDs []string
	// URIs are the other uniformResourceIdentifiers.
	URIs []string
	// Emails are the rfc822Names.
	Emails []string
	// UPNs are the Microsoft UPN otherNames.
	UPNs []string
	// DNSNames are the dNSNames.
	DNSNames []string
}

// GeneralName CHOICE tags (RFC 5280 §4.2.1.6), all context-specific.
const (
	gnOtherName     = 0
	gnRFC822Name    = 1
	gnDNSName       = 2
	gnX400Address   = 3
	gnDirectoryName = 4
	gnEDIPartyName  = 5
	gnURI           = 6
	gnIPAddress     = 7
	gnRegisteredID  = 8
)

// DER identifier octets used by the encoder.
const (
	derSequence      = 0x30
	derOctetString   = 0x04
	derUTF8String    = 0x0C
	derContextPrim   = 0x80 // | tag, primitive
	derContextConstr = 0xA0 // | tag, constructed
)

const uuidURNPrefix = "urn:uuid:"

// appendTLV appends the DER encoding of one element with a single-octet
// identifier and the given contents.
func appendTLV(b []byte, identifier byte, content []byte) []byte {
	b = append(b, identifier)
	n := len(content)
	if n < 0x80 {
		b = append(b, byte(n))
	} else {
		var lenBytes []byte
		for v := n; v > 0; v >>= 8 {
			lenBytes = append([]byte{byte(v)}, lenBytes...)
		}
		b = append(b, 0x80|byte(len(lenBytes)))
		b = append(b, lenBytes...)
	}
	return append(b, content...)
}

// appendOtherName appends otherName ::= [0] IMPLICIT SEQUENCE { type-id,
// [0] EXPLICIT value } where value is the DER of the inner value.
func appendOtherName(b []byte, typeID asn1.ObjectIdentifier, value []byte) ([]byte, error) {
	oid, err := asn1.Marshal(typeID)
	if err != nil {
		return nil, sanErrorf("encoding otherName type-id %v: %v", typeID, err)
	}
	content := appendTLV(oid, derContextConstr, value) // [0] EXPLICIT value
	return appendTLV(b, derContextConstr|gnOtherName, content), nil
}

func isIA5(s string) bool {
	for i := range len(s) {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// parseUUID reports whether s is RFC 4122 text (8-4-4-4-12 hexadecimal
// digits, either case) and returns it in lower case.
func parseUUID(s string) (string, bool) {
	if len(s) != 36 {
		return "", false
	}
	for i := range len(s) {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return "", false
			}
		default:
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
				return "", false
			}
		}
	}
	return strings.ToLower(s), true
}

// hasUUIDPrefix reports whether s starts with "urn:uuid:", compared without
// regard to case as RFC 8141 and RFC 4122 allow.
func hasUUIDPrefix(s string) bool {
	return len(s) >= len(uuidURNPrefix) && strings.EqualFold(s[:len(uuidURNPrefix)], uuidURNPrefix)
}

func (s SAN) empty() bool {
	return s.FASCN == nil && len(s.UUIDs) == 0 && len(s.URIs) == 0 &&
		len(s.Emails) == 0 && len(s.UPNs) == 0 && len(s.DNSNames) == 0
}

// MarshalSAN returns the non-critical subjectAltName extension holding s,
// for x509.Certificate.ExtraExtensions (crypto/x509 then leaves the SAN
// fields of the template unused). The names are written in the order:
// FASC-N otherName, UPN otherNames, rfc822Names, dNSNames, then the
// uniformResourceIdentifiers with the "urn:uuid:" ones first. The result is
// non-critical; RFC 5280 wants it critical when the certificate's subject is
// empty, so set Critical on the result in that case.
//
// It fails if s is empty, if FASCN is present but not 25 bytes, if a UUID is
// not canonical RFC 4122 text (lower-case 8-4-4-4-12, no prefix), if a UPN is
// empty or not valid UTF-8, if an email, DNS name or URI is empty or not
// IA5 (ASCII), if a URI does not parse as an absolute URI, or if a URI in
// URIs is a "urn:uuid:" (those belong in UUIDs). FASCN's content is not
// decoded: use FASCN.Marshal to build it.
func MarshalSAN(s SAN) (pkix.Extension, error) {
	if s.empty() {
		return pkix.Extension{}, sanErrorf("no names to encode")
	}
	var names []byte
	var err error
	if s.FASCN != nil {
		if len(s.FASCN) != fascnBytes {
			return pkix.Extension{}, sanErrorf("FASC-N is %d bytes, want %d", len(s.FASCN), fascnBytes)
		}
		names, err = appendOtherName(names, OIDPIVFASCN, appendTLV(nil, derOctetString, s.FASCN))
		if err != nil {
			return pkix.Extension{}, err
		}
	}
	for i, upn := range s.UPNs {
		if upn == "" || !utf8.ValidString(upn) {
			return pkix.Extension{}, sanErrorf("UPN %d %q is empty or not valid UTF-8", i+1, upn)
		}
		names, err = appendOtherName(names, OIDMicrosoftUPN, appendTLV(nil, derUTF8String, []byte(upn)))
		if err != nil {
			return pkix.Extension{}, err
		}
	}
	for i, email := range s.Emails {
		if email == "" || !isIA5(email) {
			return pkix.Extension{}, sanErrorf("email %d %q is empty or not IA5", i+1, email)
		}
		names = appendTLV(names, derContextPrim|gnRFC822Name, []byte(email))
	}
	for i, name := range s.DNSNames {
		if name == "" || !isIA5(name) {
			return pkix.Extension{}, sanErrorf("DNS name %d %q is empty or not IA5", i+1, name)
		}
		names = appendTLV(names, derContextPrim|gnDNSName, []byte(name))
	}
	for i, u := range s.UUIDs {
		if canon, ok := parseUUID(u); !ok || canon != u {
			return pkix.Extension{}, sanErrorf("UUID %d %q is not canonical RFC 4122 text (lower-case 8-4-4-4-12)", i+1, u)
		}
		names = appendTLV(names, derContextPrim|gnURI, []byte(uuidURNPrefix+u))
	}
	for i, u := range s.URIs {
		if u == "" || !isIA5(u) {
			return pkix.Extension{}, sanErrorf("URI %d %q is empty or not IA5", i+1, u)
		}
		if hasUUIDPrefix(u) {
			return pkix.Extension{}, sanErrorf("URI %d %q is a urn:uuid: put the UUID in UUIDs", i+1, u)
		}
		if parsed, err := url.Parse(u); err != nil || parsed.Scheme == "" {
			return pkix.Extension{}, sanErrorf("URI %d %q is not an absolute URI", i+1, u)
		}
		names = appendTLV(names, derContextPrim|gnURI, []byte(u))
	}
	return pkix.Extension{
		Id:    slices.Clone(OIDSubjectAltName),
		Value: appendTLV(nil, derSequence, names),
	}, nil
}

// ParseSAN decodes a subjectAltName extension value (pkix.Extension.Value),
// GeneralNames ::= SEQUENCE SIZE (1..MAX) OF GeneralName.
//
// It is strict about the encoding: the value must be one DER SEQUENCE with
// no trailing data, every element a context-specific GeneralName, string
// kinds primitive and IA5, and every otherName a type-id followed by exactly
// one [0] EXPLICIT value. otherNames of unknown type-id and the GeneralName
// kinds SAN does not carry (x400Address, directoryName, ediPartyName,
// iPAddress, registeredID) are skipped. A FASC-N otherName whose value is
// not a 25-byte OCTET STRING, a second FASC-N, a UPN that is not a valid
// UTF8String and a "urn:uuid:" URI whose UUID is malformed are errors; UUIDs
// are accepted in either case and returned in lower case.
func ParseSAN(value []byte) (SAN, error) {
	var seq asn1.RawValue
	rest, err := asn1.Unmarshal(value, &seq)
	if err != nil {
		return SAN{}, sanErrorf("malformed GeneralNames: %v", err)
	}
	if len(rest) != 0 {
		return SAN{}, sanErrorf("%d bytes of trailing data after GeneralNames", len(rest))
	}
	if seq.Class != asn1.ClassUniversal || seq.Tag != asn1.TagSequence || !seq.IsCompound {
		return SAN{}, sanErrorf("GeneralNames is not a SEQUENCE (class %d, tag %d)", seq.Class, seq.Tag)
	}
	if len(seq.Bytes) == 0 {
		return SAN{}, sanErrorf("GeneralNames is empty")
	}
	var s SAN
	for n, data := 1, seq.Bytes; len(data) > 0; n++ {
		var gn asn1.RawValue
		data, err = asn1.Unmarshal(data, &gn)
		if err != nil {
			return SAN{}, sanErrorf("GeneralName %d: malformed: %v", n, err)
		}
		if gn.Class != asn1.ClassContextSpecific {
			return SAN{}, sanErrorf("GeneralName %d: not a context-specific tag (class %d, tag %d)", n, gn.Class, gn.Tag)
		}
		switch gn.Tag {
		case gnOtherName:
			if !gn.IsCompound {
				return SAN{}, sanErrorf("GeneralName %d: otherName is not constructed", n)
			}
			if err := s.parseOtherName(n, gn.Bytes); err != nil {
				return SAN{}, err
			}
		case gnRFC822Name, gnDNSName, gnURI:
			kind := stringNameKind(gn.Tag)
			if gn.IsCompound {
				return SAN{}, sanErrorf("GeneralName %d: %s is constructed", n, kind)
			}
			v := string(gn.Bytes)
			if !isIA5(v) {
				return SAN{}, sanErrorf("GeneralName %d: %s %q is not IA5", n, kind, v)
			}
			switch gn.Tag {
			case gnRFC822Name:
				s.Emails = append(s.Emails, v)
			case gnDNSName:
				s.DNSNames = append(s.DNSNames, v)
			default:
				if !hasUUIDPrefix(v) {
					s.URIs = append(s.URIs, v)
					break
				}
				u, ok := parseUUID(v[len(uuidURNPrefix):])
				if !ok {
					return SAN{}, sanErrorf("GeneralName %d: %q is not a well-formed UUID URN", n, v)
				}
				s.UUIDs = append(s.UUIDs, u)
			}
		case gnX400Address, gnDirectoryName, gnEDIPartyName, gnIPAddress, gnRegisteredID:
			// Not part of SAN; skipped.
		default:
			return SAN{}, sanErrorf("GeneralName %d: unknown tag [%d]", n, gn.Tag)
		}
	}
	return s, nil
}

// stringNameKind names the IA5String GeneralName kinds for error messages.
func stringNameKind(tag int) string {
	switch tag {
	case gnRFC822Name:
		return "rfc822Name"
	case gnDNSName:
		return "dNSName"
	default:
		return "uniformResourceIdentifier"
	}
}

// parseOtherName decodes the contents of the n-th GeneralName, an
// otherName ::= SEQUENCE { type-id OBJECT IDENTIFIER, value [0] EXPLICIT ANY },
// into s.
func (s *SAN) parseOtherName(n int, content []byte) error {
	var typeID asn1.ObjectIdentifier
	rest, err := asn1.Unmarshal(content, &typeID)
	if err != nil {
		return sanErrorf("GeneralName %d: otherName type-id: %v", n, err)
	}
	var wrapper asn1.RawValue
	rest, err = asn1.Unmarshal(rest, &wrapper)
	if err != nil {
		return sanErrorf("GeneralName %d: otherName %v value: %v", n, typeID, err)
	}
	if len(rest) != 0 {
		return sanErrorf("GeneralName %d: otherName %v: trailing data after value", n, typeID)
	}
	if wrapper.Class != asn1.ClassContextSpecific || wrapper.Tag != 0 || !wrapper.IsCompound {
		return sanErrorf("GeneralName %d: otherName %v: value is not [0] EXPLICIT", n, typeID)
	}

	var what string
	switch {
	case typeID.Equal(OIDPIVFASCN):
		what = "FASC-N"
	case typeID.Equal(OIDMicrosoftUPN):
		what = "UPN"
	default:
		return nil // unknown otherName: skipped
	}
	var inner asn1.RawValue
	rest, err = asn1.Unmarshal(wrapper.Bytes, &inner)
	if err != nil {
		return sanErrorf("GeneralName %d: %s otherName: malformed value: %v", n, what, err)
	}
	if len(rest) != 0 {
		return sanErrorf("GeneralName %d: %s otherName: trailing data after value", n, what)
	}
	if what == "FASC-N" {
		if inner.Class != asn1.ClassUniversal || inner.Tag != asn1.TagOctetString || inner.IsCompound {
			return sanErrorf("GeneralName %d: FASC-N otherName: value is not an OCTET STRING (class %d, tag %d)", n, inner.Class, inner.Tag)
		}
		if len(inner.Bytes) != fascnBytes {
			return sanErrorf("GeneralName %d: FASC-N otherName: %d bytes, want %d", n, len(inner.Bytes), fascnBytes)
		}
		if s.FASCN != nil {
			return sanErrorf("GeneralName %d: second FASC-N otherName", n)
		}
		s.FASCN = bytes.Clone(inner.Bytes)
		return nil
	}
	if inner.Class != asn1.ClassUniversal || inner.Tag != asn1.TagUTF8String || inner.IsCompound {
		return sanErrorf("GeneralName %d: UPN otherName: value is not a UTF8String (class %d, tag %d)", n, inner.Class, inner.Tag)
	}
	if !utf8.Valid(inner.Bytes) {
		return sanErrorf("GeneralName %d: UPN otherName: invalid UTF-8", n)
	}
	s.UPNs = append(s.UPNs, string(inner.Bytes))
	return nil
}

// SANFromCertificate finds the one subjectAltName extension in
// cert.Extensions and parses it with ParseSAN. A missing or repeated
// extension is an error.
func SANFromCertificate(cert *x509.Certificate) (SAN, error) {
	if cert == nil {
		return SAN{}, sanErrorf("nil certificate")
	}
	var found []pkix.Extension
	for _, ext := range cert.Extensions {
		if ext.Id.Equal(OIDSubjectAltName) {
			found = append(found, ext)
		}
	}
	switch len(found) {
	case 0:
		return SAN{}, sanErrorf("certificate has no subjectAltName extension")
	case 1:
		return ParseSAN(found[0].Value)
	default:
		return SAN{}, sanErrorf("certificate has %d subjectAltName extensions", len(found))
	}
}
