package piv_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"math/big"
	"testing"
	"time"

	"github.com/credgw/credgw/piv"
)

// TestPathPolicy: the card's PIV Authentication policy must be one that
// every CA between it and the anchor authorizes (RFC 5280 §6.1: the valid
// policy tree, with mappings), not only one the card asserts. A CA that
// asserts only the Common Policy (or nothing) cannot vouch for PIV
// Authentication cards, even though crypto/x509 builds the path (it
// requires explicit policy only when a CA asks for it).
//
// The certificates carry no status URLs: a path whose policies hold ends
// in ErrStatusUnavailable, one whose policies do not in ErrPolicy.
func TestPathPolicy(t *testing.T) {
	oid := func(a asn1.ObjectIdentifier) x509.OID {
		o, err := x509.OIDFromASN1OID(a)
		if err != nil {
			t.Fatal(err)
		}
		return o
	}
	auth := oid(piv.PolicyCommonAuthentication)
	common := oid(piv.PolicyCommonPolicy)
	anyPolicy := oid(asn1.ObjectIdentifier{2, 5, 29, 32, 0})
	agencyA, otherA := asn1.ObjectIdentifier{2, 16, 840, 1, 101, 99, 1}, asn1.ObjectIdentifier{2, 16, 840, 1, 101, 99, 2}
	agency, other := oid(agencyA), oid(otherA)
	type mapping struct{ Issuer, Subject asn1.ObjectIdentifier } // policyMappings' DER
	type ca struct {
		policies []x509.OID
		mappings []mapping
		// inhibitAny and inhibitMapping, when set, are the CA's
		// inhibitAnyPolicy and policyConstraints' inhibitPolicyMapping.
		inhibitAny, inhibitMapping *int
	}
	skip := func(v int) *int { return &v }
	tests := []struct {
		name string
		cas  []ca // from the anchor down to the card's issuer
		want error
	}{
		{"the issuing CA authorizes it", []ca{{policies: []x509.OID{common, auth}}}, piv.ErrStatusUnavailable},
		{"the issuing CA asserts anyPolicy", []ca{{policies: []x509.OID{anyPolicy}}}, piv.ErrStatusUnavailable},
		{"two CAs, both authorize it", []ca{{policies: []x509.OID{auth}}, {policies: []x509.OID{auth}}}, piv.ErrStatusUnavailable},
		{"the issuing CA asserts only the Common Policy", []ca{{policies: []x509.OID{common}}}, piv.ErrPolicy},
		{"the issuing CA asserts no policy", []ca{{}}, piv.ErrPolicy},
		{"the upper CA does not authorize it", []ca{{policies: []x509.OID{common}}, {policies: []x509.OID{auth}}}, piv.ErrPolicy},
		{"mapped from the upper CA's domain", []ca{{policies: []x509.OID{agency}},
			{policies: []x509.OID{agency}, mappings: []mapping{{agencyA, piv.PolicyCommonAuthentication}}}}, piv.ErrStatusUnavailable},
		{"mapped from a policy the upper CA does not assert", []ca{{policies: []x509.OID{other}},
			{policies: []x509.OID{agency}, mappings: []mapping{{agencyA, piv.PolicyCommonAuthentication}}}}, piv.ErrPolicy},
		{"mapped away below", []ca{{policies: []x509.OID{auth}},
			{policies: []x509.OID{auth}, mappings: []mapping{{piv.PolicyCommonAuthentication, otherA}}}}, piv.ErrPolicy},
		{"anyPolicy below a CA that inhibits it", []ca{{policies: []x509.OID{auth}, inhibitAny: skip(0)},
			{policies: []x509.OID{anyPolicy}}}, piv.ErrPolicy},
		{"anyPolicy one CA further than inhibited", []ca{{policies: []x509.OID{auth}, inhibitAny: skip(1)},
			{policies: []x509.OID{anyPolicy}}}, piv.ErrStatusUnavailable},
		{"a mapping below a CA that inhibits mappings", []ca{{policies: []x509.OID{agency}, inhibitMapping: skip(0)},
			{policies: []x509.OID{agency}, mappings: []mapping{{agencyA, piv.PolicyCommonAuthentication}}}}, piv.ErrPolicy},
	}
	issue := newIssuer(t)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rootKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			rootTmpl := &x509.Certificate{Subject: pkix.Name{CommonName: "policy test root"}, IsCA: true, BasicConstraintsValid: true,
				KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
			root := issue(rootTmpl, rootTmpl, rootKey.Public(), rootKey)
			parent, parentKey := root, rootKey
			var inter []*x509.Certificate
			for i, c := range tc.cas {
				k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
				tmpl := &x509.Certificate{Subject: pkix.Name{CommonName: "policy test CA " + string(rune('A'+i))}, IsCA: true, BasicConstraintsValid: true,
					KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, Policies: c.policies}
				if c.inhibitAny != nil {
					der, _ := asn1.Marshal(*c.inhibitAny)
					tmpl.ExtraExtensions = append(tmpl.ExtraExtensions, pkix.Extension{Id: asn1.ObjectIdentifier{2, 5, 29, 54}, Critical: true, Value: der})
				}
				if c.inhibitMapping != nil {
					// policyConstraints { inhibitPolicyMapping [1] IMPLICIT SkipCerts }
					der := []byte{0x30, 0x03, 0x81, 0x01, byte(*c.inhibitMapping)} // small values only
					tmpl.ExtraExtensions = append(tmpl.ExtraExtensions, pkix.Extension{Id: asn1.ObjectIdentifier{2, 5, 29, 36}, Critical: true, Value: der})
				}
				if len(c.mappings) > 0 {
					// crypto/x509 parses policyMappings but does not write them.
					der, err := asn1.Marshal(c.mappings)
					if err != nil {
						t.Fatal(err)
					}
					tmpl.ExtraExtensions = append(tmpl.ExtraExtensions, pkix.Extension{Id: asn1.ObjectIdentifier{2, 5, 29, 33}, Critical: true, Value: der})
				}
				cert := issue(tmpl, parent, k.Public(), parentKey)
				if c.inhibitAny != nil && (cert.InhibitAnyPolicy != *c.inhibitAny || *c.inhibitAny == 0 && !cert.InhibitAnyPolicyZero) ||
					c.inhibitMapping != nil && (cert.InhibitPolicyMapping != *c.inhibitMapping || *c.inhibitMapping == 0 && !cert.InhibitPolicyMappingZero) {
					t.Fatalf("CA %d: inhibitAnyPolicy %d/%v, inhibitPolicyMapping %d/%v not as made", i,
						cert.InhibitAnyPolicy, cert.InhibitAnyPolicyZero, cert.InhibitPolicyMapping, cert.InhibitPolicyMappingZero)
				}
				if len(cert.PolicyMappings) != len(c.mappings) {
					t.Fatalf("CA %d has %d policy mappings, want %d", i, len(cert.PolicyMappings), len(c.mappings))
				}
				inter = append(inter, cert)
				parent, parentKey = cert, k
			}
			cardKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			card := issue(&x509.Certificate{Subject: pkix.Name{CommonName: "policy test card"}, KeyUsage: x509.KeyUsageDigitalSignature,
				Policies: []x509.OID{auth}}, parent, cardKey.Public(), parentKey)
			roots := x509.NewCertPool()
			roots.AddCert(root)
			v, err := piv.NewVerifier(piv.Options{Roots: roots, Intermediates: inter, OCSPTimeout: time.Second, CRLTimeout: time.Second})
			if err != nil {
				t.Fatal(err)
			}
			_, err = v.VerifyPIVAuth(context.Background(), card, nil)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

// TestPathPolicyAnyPath: when a card has several paths to the anchors (a
// cross-certificate through a bridge beside the direct one), the card is
// accepted if one path authorizes its policy, whichever path crypto/x509
// lists first.
func TestPathPolicyAnyPath(t *testing.T) {
	auth, _ := x509.OIDFromASN1OID(piv.PolicyCommonAuthentication)
	common, _ := x509.OIDFromASN1OID(piv.PolicyCommonPolicy)
	issue := newIssuer(t)
	caTmpl := func(cn string, p ...x509.OID) *x509.Certificate {
		return &x509.Certificate{Subject: pkix.Name{CommonName: cn}, IsCA: true, BasicConstraintsValid: true,
			KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, Policies: p}
	}
	rootKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	root := issue(caTmpl("any-path root"), caTmpl("any-path root"), rootKey.Public(), rootKey)
	bridgeKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	bridge := issue(caTmpl("any-path bridge", common), root, bridgeKey.Public(), rootKey)
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	direct := issue(caTmpl("any-path issuing CA", auth), root, caKey.Public(), rootKey)
	crossed := issue(caTmpl("any-path issuing CA", auth), bridge, caKey.Public(), bridgeKey)
	card := issue(&x509.Certificate{Subject: pkix.Name{CommonName: "any-path card"}, KeyUsage: x509.KeyUsageDigitalSignature,
		Policies: []x509.OID{auth}}, direct, func() any { k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader); return k.Public() }(), caKey)
	roots := x509.NewCertPool()
	roots.AddCert(root)
	for name, inter := range map[string][]*x509.Certificate{
		"bridge listed first": {bridge, crossed, direct},
		"direct listed first": {direct, bridge, crossed},
	} {
		t.Run(name, func(t *testing.T) {
			v, err := piv.NewVerifier(piv.Options{Roots: roots, Intermediates: inter, OCSPTimeout: time.Second, CRLTimeout: time.Second})
			if err != nil {
				t.Fatal(err)
			}
			// No status URLs: a path whose policies hold ends here.
			if _, err := v.VerifyPIVAuth(context.Background(), card, nil); !errors.Is(err, piv.ErrStatusUnavailable) {
				t.Fatalf("err = %v, want the policy to hold on the direct path (ErrStatusUnavailable next)", err)
			}
		})
	}
}

// newIssuer signs test certificates: a new serial each, valid an hour
// either side of now.
func newIssuer(t *testing.T) func(tmpl, parent *x509.Certificate, pub any, key *ecdsa.PrivateKey) *x509.Certificate {
	now := time.Now()
	serial := int64(1)
	return func(tmpl, parent *x509.Certificate, pub any, key *ecdsa.PrivateKey) *x509.Certificate {
		t.Helper()
		serial++
		tmpl.SerialNumber = big.NewInt(serial)
		tmpl.NotBefore, tmpl.NotAfter = now.Add(-time.Hour), now.Add(time.Hour)
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, key)
		if err != nil {
			t.Fatal(err)
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
}
