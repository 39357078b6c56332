package piv

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"
)

// nameConstraintsExt is a name constraints extension with directoryName
// subtrees (and, if given, an otherName one, which nothing here handles).
func nameConstraintsExt(t *testing.T, critical bool, permitted, excluded []pkix.Name, otherName bool) pkix.Extension {
	t.Helper()
	subtrees := func(names []pkix.Name, tag int) asn1.RawValue {
		var body []byte
		for _, n := range names {
			dn, err := asn1.Marshal(n.ToRDNSequence())
			if err != nil {
				t.Fatal(err)
			}
			base, _ := asn1.Marshal(asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 4, IsCompound: true, Bytes: dn})
			st, _ := asn1.Marshal(asn1.RawValue{Class: asn1.ClassUniversal, Tag: asn1.TagSequence, IsCompound: true, Bytes: base})
			body = append(body, st...)
		}
		if otherName && tag == 0 {
			oid, _ := asn1.Marshal(asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 311, 20, 2, 3})
			val, _ := asn1.Marshal(asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: []byte{0x0c, 0x01, 'x'}})
			base, _ := asn1.Marshal(asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: append(oid, val...)})
			st, _ := asn1.Marshal(asn1.RawValue{Class: asn1.ClassUniversal, Tag: asn1.TagSequence, IsCompound: true, Bytes: base})
			body = append(body, st...)
		}
		return asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: tag, IsCompound: true, Bytes: body}
	}
	var body []byte
	if len(permitted) > 0 || otherName {
		b, _ := asn1.Marshal(subtrees(permitted, 0))
		body = append(body, b...)
	}
	if len(excluded) > 0 {
		b, _ := asn1.Marshal(subtrees(excluded, 1))
		body = append(body, b...)
	}
	v, err := asn1.Marshal(asn1.RawValue{Class: asn1.ClassUniversal, Tag: asn1.TagSequence, IsCompound: true, Bytes: body})
	if err != nil {
		t.Fatal(err)
	}
	return pkix.Extension{Id: asn1.ObjectIdentifier{2, 5, 29, 30}, Critical: critical, Value: v}
}

// TestDirectoryNameConstraints: crypto/x509 does not process
// directoryName name constraints (RFC 5280 §4.2.1.10, §6.1.3(b)-(c)): a CA
// whose critical constraints name subtrees of DNs made every card under it
// "unhandled critical extension" (refused, all of them), and non-critical
// ones were ignored (a card outside them accepted). credgw checks them on
// the path: a card whose subject is within a permitted subtree and in no
// excluded one is accepted, another is refused; constraints of a kind
// nothing here handles (otherName) still refuse, critical.
func TestDirectoryNameConstraints(t *testing.T) {
	now := time.Now()
	mk := func(tmpl *x509.Certificate, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey) {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
		tmpl.SerialNumber = serial
		tmpl.NotBefore, tmpl.NotAfter = now.Add(-time.Hour), now.Add(time.Hour)
		tmpl.Policies = []x509.OID{mustOID(PolicyCommonAuthentication)}
		if parent == nil {
			parent, parentKey = tmpl, k
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, k.Public(), parentKey)
		if err != nil {
			t.Fatal(err)
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		return c, k
	}
	ca := func(name string) *x509.Certificate {
		return &x509.Certificate{Subject: pkix.Name{CommonName: name}, IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	}
	root, rootKey := mk(ca("Root"), nil, nil)
	agency := pkix.Name{Country: []string{"US"}, Organization: []string{"U.S. Government"}, OrganizationalUnit: []string{"Agency"}}
	contractors := pkix.Name{Country: []string{"US"}, Organization: []string{"U.S. Government"}, OrganizationalUnit: []string{"Agency"},
		CommonName: "Contractors"}
	card := func(issuer *x509.Certificate, key *ecdsa.PrivateKey, subject pkix.Name) *x509.Certificate {
		c, _ := mk(&x509.Certificate{Subject: subject, KeyUsage: x509.KeyUsageDigitalSignature}, issuer, key)
		return c
	}
	person := func(ou, cn string) pkix.Name {
		return pkix.Name{Country: []string{"US"}, Organization: []string{"U.S. Government"}, OrganizationalUnit: []string{ou}, CommonName: cn}
	}
	pool := x509.NewCertPool()
	pool.AddCert(root)
	for _, tc := range []struct {
		name      string
		ext       pkix.Extension
		subject   pkix.Name
		untrusted bool
	}{
		{"critical, within the permitted subtree", nameConstraintsExt(t, true, []pkix.Name{agency}, nil, false), person("Agency", "Pat Doe"), false},
		{"critical, the permitted subtree in another case", nameConstraintsExt(t, true, []pkix.Name{agency}, nil, false), person("AGENCY", "Pat Doe"), false},
		{"critical, outside the permitted subtree", nameConstraintsExt(t, true, []pkix.Name{agency}, nil, false), person("Other Agency", "Pat Doe"), true},
		{"not critical, outside the permitted subtree", nameConstraintsExt(t, false, []pkix.Name{agency}, nil, false), person("Other Agency", "Pat Doe"), true},
		{"within an excluded subtree", nameConstraintsExt(t, true, []pkix.Name{agency}, []pkix.Name{contractors}, false),
			pkix.Name{Country: []string{"US"}, Organization: []string{"U.S. Government"}, OrganizationalUnit: []string{"Agency"}, CommonName: "Contractors",
				SerialNumber: "7"}, true},
		{"critical, with an otherName subtree nothing handles", nameConstraintsExt(t, true, []pkix.Name{agency}, nil, true), person("Agency", "Pat Doe"), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tmpl := ca("Issuing CA")
			tmpl.ExtraExtensions = []pkix.Extension{tc.ext}
			issuing, issuingKey := mk(tmpl, root, rootKey)
			leaf := card(issuing, issuingKey, tc.subject)
			for _, configured := range []bool{false, true} {
				opts := Options{Roots: pool}
				presented := []*x509.Certificate{issuing}
				if configured {
					opts.Intermediates, presented = presented, nil
				}
				v, err := NewVerifier(opts)
				if err != nil {
					t.Fatal(err)
				}
				chain, err := v.chainOf(leaf, presented, []asn1.ObjectIdentifier{PolicyCommonAuthentication})
				if tc.untrusted {
					if !errors.Is(err, ErrUntrusted) {
						t.Fatalf("configured %v: %v, want ErrUntrusted", configured, err)
					}
					continue
				}
				if err != nil || len(chain) != 3 {
					t.Fatalf("configured %v: %d certificates, %v", configured, len(chain), err)
				}
			}
		})
	}
	// The CA certificates given are not changed (the pools share them).
	tmpl := ca("Issuing CA")
	tmpl.ExtraExtensions = []pkix.Extension{nameConstraintsExt(t, true, []pkix.Name{agency}, nil, false)}
	issuing, _ := mk(tmpl, root, rootKey)
	before := len(issuing.UnhandledCriticalExtensions)
	if v, err := NewVerifier(Options{Roots: pool, Intermediates: []*x509.Certificate{issuing}}); err != nil || v == nil {
		t.Fatal(err)
	}
	if len(issuing.UnhandledCriticalExtensions) != before || !strings.Contains(issuing.UnhandledCriticalExtensions[0].String(), "2.5.29.30") {
		t.Fatalf("the configured certificate was changed: %v", issuing.UnhandledCriticalExtensions)
	}
}

func mustOID(o asn1.ObjectIdentifier) x509.OID {
	ints := make([]uint64, len(o))
	for i, v := range o {
		ints[i] = uint64(v)
	}
	oid, err := x509.OIDFromInts(ints)
	if err != nil {
		panic(err)
	}
	return oid
}

// FuzzDNSubtrees: any extension value parses or is refused, without a
// panic, and what parses is checked against any subject without one.
func FuzzDNSubtrees(f *testing.F) {
	for _, critical := range []bool{true, false} {
		f.Add(nameConstraintsExt(&testing.T{}, critical, []pkix.Name{{Organization: []string{"A"}}}, []pkix.Name{{CommonName: "x"}}, critical).Value)
	}
	f.Add([]byte{0x30, 0x00})
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := parseDNSubtrees(b)
		if err != nil {
			return
		}
		subject := pkix.Name{Country: []string{"US"}, Organization: []string{"A"}, CommonName: "x"}.ToRDNSequence()
		for _, base := range append(st.permitted, st.excluded...) {
			withinDN(subject, base)
		}
	})
}

// TestDNConstraintValuesNotStrings: a constraint whose attribute value
// encoding/asn1 cannot read as text (a UniversalString) is refused as
// invalid, so that the path is refused: read as nil it excluded nothing
// and permitted any subject whose value printed "<nil>".
func TestDNConstraintValuesNotStrings(t *testing.T) {
	atv, err := asn1.Marshal(struct {
		Type  asn1.ObjectIdentifier
		Value asn1.RawValue
	}{asn1.ObjectIdentifier{2, 5, 4, 10}, asn1.RawValue{Tag: 28, Bytes: []byte{0, 0, 0, 'A'}}})
	if err != nil {
		t.Fatal(err)
	}
	set, _ := asn1.Marshal(asn1.RawValue{Tag: asn1.TagSet, IsCompound: true, Bytes: atv})
	name, _ := asn1.Marshal(asn1.RawValue{Tag: asn1.TagSequence, IsCompound: true, Bytes: set})
	base, _ := asn1.Marshal(asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 4, IsCompound: true, Bytes: name})
	subtree, _ := asn1.Marshal(asn1.RawValue{Tag: asn1.TagSequence, IsCompound: true, Bytes: base})
	excluded, _ := asn1.Marshal(asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 1, IsCompound: true, Bytes: subtree})
	ext, _ := asn1.Marshal(asn1.RawValue{Tag: asn1.TagSequence, IsCompound: true, Bytes: excluded})
	if _, err := parseDNSubtrees(ext); err == nil {
		t.Fatal("a UniversalString constraint was taken")
	}
}
