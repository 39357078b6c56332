package attest

import (
	"encoding/asn1"
	"errors"
	"fmt"
	"slices"
)

// OIDKeyDescription is Android Key Attestation's extension: a KeyDescription
// in the attestation certificate of a key made in the device's keystore.
var OIDKeyDescription = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 11129, 2, 1, 17}

// SecurityLevel is where the keystore that made and holds the key runs.
type SecurityLevel int

// The security levels of the KeyDescription schema.
const (
	Software           SecurityLevel = 0
	TrustedEnvironment SecurityLevel = 1
	StrongBox          SecurityLevel = 2
)

func (l SecurityLevel) String() string {
	switch l {
	case Software:
		return "Software"
	case TrustedEnvironment:
		return "TrustedEnvironment"
	case StrongBox:
		return "StrongBox"
	}
	return fmt.Sprintf("SecurityLevel(%d)", int(l))
}

// ParseSecurityLevel reads a level's name (as String writes it, any case,
// or the config's snake_case: trusted_environment, strongbox, software).
func ParseSecurityLevel(s string) (SecurityLevel, error) {
	switch s {
	case "Software", "software":
		return Software, nil
	case "TrustedEnvironment", "trusted_environment", "tee", "TEE":
		return TrustedEnvironment, nil
	case "StrongBox", "strongbox", "strong_box":
		return StrongBox, nil
	}
	return 0, fmt.Errorf("attest: security level %q: use software, trusted_environment or strongbox", s)
}

// VerifiedBootState is the device's boot verification.
type VerifiedBootState int

// The verified boot states of the KeyDescription schema.
const (
	Verified   VerifiedBootState = 0
	SelfSigned VerifiedBootState = 1
	Unverified VerifiedBootState = 2
	Failed     VerifiedBootState = 3
)

func (s VerifiedBootState) String() string {
	switch s {
	case Verified:
		return "Verified"
	case SelfSigned:
		return "SelfSigned"
	case Unverified:
		return "Unverified"
	case Failed:
		return "Failed"
	}
	return fmt.Sprintf("VerifiedBootState(%d)", int(s))
}

// Key origins and purposes (KeyMint's KeyOrigin and KeyPurpose).
const (
	OriginGenerated = 0
	PurposeSign     = 2
)

// KeyMint tags of the AuthorizationList fields credgw reads.
const (
	tagPurpose     = 1
	tagAlgorithm   = 2
	tagKeySize     = 3
	tagECCurve     = 10
	tagOrigin      = 702
	tagRootOfTrust = 704
	tagOSVersion   = 705
	tagOSPatch     = 706
)

// KeyDescription is the attestation extension's content (the fields credgw
// checks; the others are skipped as the reference verifier skips them).
type KeyDescription struct {
	AttestationVersion       int
	AttestationSecurityLevel SecurityLevel
	KeyMintVersion           int
	KeyMintSecurityLevel     SecurityLevel
	Challenge                []byte
	UniqueID                 []byte
	SoftwareEnforced         AuthorizationList
	HardwareEnforced         AuthorizationList
}

// AuthorizationList is what a keystore enforces about a key. A field the
// list does not hold is nil.
type AuthorizationList struct {
	Purposes    []int
	Algorithm   *int
	KeySize     *int
	ECCurve     *int
	Origin      *int
	RootOfTrust *RootOfTrust
	OSVersion   *int
	OSPatch     *int
}

// RootOfTrust is the device's boot state as its keystore saw it.
type RootOfTrust struct {
	VerifiedBootKey   []byte
	DeviceLocked      bool
	VerifiedBootState VerifiedBootState
	VerifiedBootHash  []byte // attestation version 3 and later
}

// ErrMalformed means the extension does not follow the published schema.
var ErrMalformed = errors.New("attest: malformed KeyDescription")

func malformed(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, a...))
}

// maxInt bounds the integers read: the schema's are small, and a value
// that does not fit an int is malformed, not a panic.
const maxInt = 1 << 40

// ParseKeyDescription reads the DER extension value strictly: the eight
// fields in order, nothing after them, each of its type.
func ParseKeyDescription(der []byte) (*KeyDescription, error) {
	var seq asn1.RawValue
	rest, err := asn1.Unmarshal(der, &seq)
	if err != nil {
		return nil, malformed("%v", err)
	}
	if len(rest) > 0 || seq.Class != asn1.ClassUniversal || seq.Tag != asn1.TagSequence || !seq.IsCompound {
		return nil, malformed("not one SEQUENCE")
	}
	els, err := elements(seq.Bytes)
	if err != nil {
		return nil, err
	}
	if len(els) != 8 {
		return nil, malformed("%d fields, want 8", len(els))
	}
	kd := &KeyDescription{}
	ints := []*int{&kd.AttestationVersion, nil, &kd.KeyMintVersion, nil}
	levels := []*SecurityLevel{nil, &kd.AttestationSecurityLevel, nil, &kd.KeyMintSecurityLevel}
	for i := range 4 {
		if ints[i] != nil {
			if *ints[i], err = intOf(els[i], asn1.TagInteger); err != nil {
				return nil, err
			}
			continue
		}
		v, err := intOf(els[i], asn1.TagEnum)
		if err != nil {
			return nil, err
		}
		if v < 0 || v > int(StrongBox) {
			return nil, malformed("security level %d", v)
		}
		*levels[i] = SecurityLevel(v)
	}
	if kd.Challenge, err = octets(els[4]); err != nil {
		return nil, err
	}
	if kd.UniqueID, err = octets(els[5]); err != nil {
		return nil, err
	}
	if kd.SoftwareEnforced, err = parseAuthorizationList(els[6]); err != nil {
		return nil, fmt.Errorf("softwareEnforced: %w", err)
	}
	if kd.HardwareEnforced, err = parseAuthorizationList(els[7]); err != nil {
		return nil, fmt.Errorf("hardwareEnforced: %w", err)
	}
	return kd, nil
}

// elements splits a constructed value's content into its elements.
func elements(b []byte) ([]asn1.RawValue, error) {
	var out []asn1.RawValue
	for len(b) > 0 {
		var v asn1.RawValue
		rest, err := asn1.Unmarshal(b, &v)
		if err != nil {
			return nil, malformed("%v", err)
		}
		out = append(out, v)
		b = rest
	}
	return out, nil
}

func intOf(v asn1.RawValue, tag int) (int, error) {
	if v.Class != asn1.ClassUniversal || v.Tag != tag || v.IsCompound {
		return 0, malformed("tag %d where tag %d belongs", v.Tag, tag)
	}
	// encoding/asn1 reads ENUMERATED into asn1.Enumerated and INTEGER into
	// int64 with the same minimal-encoding rules.
	fixed := v
	fixed.Tag, fixed.FullBytes = asn1.TagInteger, nil
	full, err := asn1.Marshal(fixed)
	if err != nil {
		return 0, malformed("%v", err)
	}
	var n int64
	if _, err := asn1.Unmarshal(full, &n); err != nil {
		return 0, malformed("%v", err)
	}
	if n < -maxInt || n > maxInt {
		return 0, malformed("integer %d out of range", n)
	}
	return int(n), nil
}

func octets(v asn1.RawValue) ([]byte, error) {
	if v.Class != asn1.ClassUniversal || v.Tag != asn1.TagOctetString || v.IsCompound {
		return nil, malformed("tag %d where an OCTET STRING belongs", v.Tag)
	}
	return v.Bytes, nil
}

func parseAuthorizationList(v asn1.RawValue) (AuthorizationList, error) {
	var al AuthorizationList
	if v.Class != asn1.ClassUniversal || v.Tag != asn1.TagSequence || !v.IsCompound {
		return al, malformed("an AuthorizationList is not a SEQUENCE")
	}
	els, err := elements(v.Bytes)
	if err != nil {
		return al, err
	}
	last := -1
	for _, e := range els {
		if e.Class != asn1.ClassContextSpecific || !e.IsCompound {
			return al, malformed("an AuthorizationList entry is not an explicit tag")
		}
		// DER: tags in ascending order, each once.
		if e.Tag <= last {
			return al, malformed("tag [%d] after [%d]: tags must ascend", e.Tag, last)
		}
		last = e.Tag
		inner, err := elements(e.Bytes)
		if err != nil {
			return al, err
		}
		if len(inner) != 1 {
			return al, malformed("tag [%d] holds %d values", e.Tag, len(inner))
		}
		x := inner[0]
		one := func() (*int, error) {
			n, err := intOf(x, asn1.TagInteger)
			if err != nil {
				return nil, fmt.Errorf("tag [%d]: %w", e.Tag, err)
			}
			return &n, nil
		}
		switch e.Tag {
		case tagPurpose:
			if x.Class != asn1.ClassUniversal || x.Tag != asn1.TagSet || !x.IsCompound {
				return al, malformed("purpose is not a SET")
			}
			members, err := elements(x.Bytes)
			if err != nil {
				return al, err
			}
			for _, m := range members {
				n, err := intOf(m, asn1.TagInteger)
				if err != nil {
					return al, fmt.Errorf("purpose: %w", err)
				}
				al.Purposes = append(al.Purposes, n)
			}
		case tagAlgorithm:
			al.Algorithm, err = one()
		case tagKeySize:
			al.KeySize, err = one()
		case tagECCurve:
			al.ECCurve, err = one()
		case tagOrigin:
			al.Origin, err = one()
		case tagOSVersion:
			al.OSVersion, err = one()
		case tagOSPatch:
			al.OSPatch, err = one()
		case tagRootOfTrust:
			al.RootOfTrust, err = parseRootOfTrust(x)
		}
		if err != nil {
			return al, err
		}
	}
	return al, nil
}

func parseRootOfTrust(v asn1.RawValue) (*RootOfTrust, error) {
	if v.Class != asn1.ClassUniversal || v.Tag != asn1.TagSequence || !v.IsCompound {
		return nil, malformed("rootOfTrust is not a SEQUENCE")
	}
	els, err := elements(v.Bytes)
	if err != nil {
		return nil, err
	}
	if len(els) != 3 && len(els) != 4 {
		return nil, malformed("rootOfTrust has %d fields, want 3 or 4", len(els))
	}
	rot := &RootOfTrust{}
	if rot.VerifiedBootKey, err = octets(els[0]); err != nil {
		return nil, err
	}
	b := els[1]
	if b.Class != asn1.ClassUniversal || b.Tag != asn1.TagBoolean || len(b.Bytes) != 1 || (b.Bytes[0] != 0 && b.Bytes[0] != 0xff) {
		return nil, malformed("rootOfTrust.deviceLocked is not a DER BOOLEAN")
	}
	rot.DeviceLocked = b.Bytes[0] == 0xff
	state, err := intOf(els[2], asn1.TagEnum)
	if err != nil {
		return nil, err
	}
	if state < int(Verified) || state > int(Failed) {
		return nil, malformed("verifiedBootState %d", state)
	}
	rot.VerifiedBootState = VerifiedBootState(state)
	if len(els) == 4 {
		if rot.VerifiedBootHash, err = octets(els[3]); err != nil {
			return nil, err
		}
	}
	return rot, nil
}

// Marshal encodes the description in DER (the simulated vendor of
// hsm-sim writes it; a parse of it gives it back).
func (kd *KeyDescription) Marshal() ([]byte, error) {
	sw, err := kd.SoftwareEnforced.marshal()
	if err != nil {
		return nil, err
	}
	hw, err := kd.HardwareEnforced.marshal()
	if err != nil {
		return nil, err
	}
	return asn1.Marshal(struct {
		AttestationVersion       int
		AttestationSecurityLevel asn1.Enumerated
		KeyMintVersion           int
		KeyMintSecurityLevel     asn1.Enumerated
		Challenge                []byte
		UniqueID                 []byte
		SoftwareEnforced         asn1.RawValue
		HardwareEnforced         asn1.RawValue
	}{kd.AttestationVersion, asn1.Enumerated(kd.AttestationSecurityLevel), kd.KeyMintVersion, asn1.Enumerated(kd.KeyMintSecurityLevel),
		nonNil(kd.Challenge), nonNil(kd.UniqueID), asn1.RawValue{FullBytes: sw}, asn1.RawValue{FullBytes: hw}})
}

func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

func (al AuthorizationList) marshal() ([]byte, error) {
	var content []byte
	add := func(tag int, v any) error {
		inner, err := asn1.Marshal(v)
		if err != nil {
			return err
		}
		tagged, err := asn1.Marshal(asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: tag, IsCompound: true, Bytes: inner})
		if err != nil {
			return err
		}
		content = append(content, tagged...)
		return nil
	}
	type entry struct {
		tag int
		v   any
	}
	var entries []entry
	if al.Purposes != nil {
		ps := slices.Clone(al.Purposes)
		slices.Sort(ps)
		entries = append(entries, entry{tagPurpose, asn1Set(ps)})
	}
	for _, f := range []struct {
		tag int
		p   *int
	}{{tagAlgorithm, al.Algorithm}, {tagKeySize, al.KeySize}, {tagECCurve, al.ECCurve}, {tagOrigin, al.Origin}} {
		if f.p != nil {
			entries = append(entries, entry{f.tag, *f.p})
		}
	}
	if r := al.RootOfTrust; r != nil {
		rot := []any{nonNil(r.VerifiedBootKey), r.DeviceLocked, asn1.Enumerated(r.VerifiedBootState)}
		if r.VerifiedBootHash != nil {
			rot = append(rot, r.VerifiedBootHash)
		}
		entries = append(entries, entry{tagRootOfTrust, asn1Seq(rot)})
	}
	for _, f := range []struct {
		tag int
		p   *int
	}{{tagOSVersion, al.OSVersion}, {tagOSPatch, al.OSPatch}} {
		if f.p != nil {
			entries = append(entries, entry{f.tag, *f.p})
		}
	}
	for _, e := range entries {
		if err := add(e.tag, e.v); err != nil {
			return nil, err
		}
	}
	return asn1.Marshal(asn1.RawValue{Class: asn1.ClassUniversal, Tag: asn1.TagSequence, IsCompound: true, Bytes: content})
}

// asn1Set is a SET OF INTEGER; asn1Seq a SEQUENCE of the values given.
func asn1Set(ns []int) asn1.RawValue {
	var b []byte
	for _, n := range ns {
		e, _ := asn1.Marshal(n)
		b = append(b, e...)
	}
	return asn1.RawValue{Class: asn1.ClassUniversal, Tag: asn1.TagSet, IsCompound: true, Bytes: b}
}

func asn1Seq(vs []any) asn1.RawValue {
	var b []byte
	for _, v := range vs {
		e, _ := asn1.Marshal(v)
		b = append(b, e...)
	}
	return asn1.RawValue{Class: asn1.ClassUniversal, Tag: asn1.TagSequence, IsCompound: true, Bytes: b}
}
