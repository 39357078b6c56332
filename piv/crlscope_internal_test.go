package piv

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
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/cryptobyte"
	casn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// idp encodes an IssuingDistributionPoint (RFC 5280 §5.2.5) with the given
// fullName URIs and [1]..[5] fields as given.
func idp(uris []string, fields func(b *cryptobyte.Builder)) []byte {
	var b cryptobyte.Builder
	b.AddASN1(casn1.SEQUENCE, func(b *cryptobyte.Builder) {
		if len(uris) > 0 {
			b.AddASN1(casn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) { // distributionPoint
				b.AddASN1(casn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) { // fullName
					for _, u := range uris {
						b.AddASN1(casn1.Tag(6).ContextSpecific(), func(b *cryptobyte.Builder) { b.AddBytes([]byte(u)) })
					}
				})
			})
		}
		if fields != nil {
			fields(b)
		}
	})
	return b.BytesOrPanic()
}

func boolField(tag uint8) func(b *cryptobyte.Builder) {
	return func(b *cryptobyte.Builder) {
		b.AddASN1(casn1.Tag(tag).ContextSpecific(), func(b *cryptobyte.Builder) { b.AddUint8(0xff) })
	}
}

// TestCRLScope: a CRL is used for a certificate only when it is the
// issuer's complete CRL for that certificate (RFC 5280 §5.2.4, §5.2.5,
// §6.3.3): a delta CRL, a partition for another distribution point, one
// for CA certificates only, one for some reasons only, an indirect CRL, or
// one with a critical extension credgw does not know is not a CRL that
// says a card is good. With OCSP down, the card is then refused with
// ErrStatusUnavailable, never taken for good.
func TestCRLScope(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "scope test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	issuer, _ := x509.ParseCertificate(caDER)
	var exts []pkix.Extension
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{Number: big.NewInt(1),
			ThisUpdate: now.Add(-time.Minute), NextUpdate: now.Add(time.Hour), ExtraExtensions: exts,
			// The card is revoked: a CRL that says nothing of it must
			// not be taken for "good".
			RevokedCertificateEntries: []x509.RevocationListEntry{{SerialNumber: big.NewInt(99), RevocationTime: now.Add(-time.Minute)}},
		}, issuer, key)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Write(der)
	}))
	defer srv.Close()
	crlURL := srv.URL + "/ca.crl"
	leafKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leaf := func(serial int64) *x509.Certificate {
		der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "card"},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), CRLDistributionPoints: []string{crlURL}}, issuer, leafKey.Public(), key)
		if err != nil {
			t.Fatal(err)
		}
		c, _ := x509.ParseCertificate(der)
		return c
	}
	good, revoked := leaf(7), leaf(99)
	subDER, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(8), Subject: pkix.Name{CommonName: "sub CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign, CRLDistributionPoints: []string{crlURL}}, issuer, leafKey.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	subCA, _ := x509.ParseCertificate(subDER)
	ext := func(oid asn1.ObjectIdentifier, critical bool, v []byte) []pkix.Extension {
		return []pkix.Extension{{Id: oid, Critical: critical, Value: v}}
	}
	deltaIndicator, _ := asn1.Marshal(big.NewInt(1))
	tests := []struct {
		name   string
		exts   []pkix.Extension
		usable bool // the CRL counts for an end-entity certificate
		why    string
	}{
		{"complete CRL", nil, true, ""},
		{"IDP naming this distribution point", ext(oidIssuingDistributionPoint, true, idp([]string{crlURL}, nil)), true, ""},
		{"IDP onlyContainsUserCerts", ext(oidIssuingDistributionPoint, true, idp(nil, boolField(1))), true, ""},
		{"delta CRL", ext(oidDeltaCRLIndicator, true, deltaIndicator), false, "delta CRL"},
		{"partition of another distribution point", ext(oidIssuingDistributionPoint, true, idp([]string{srv.URL + "/other.crl"}, nil)), false, "distribution point"},
		{"IDP onlyContainsCACerts", ext(oidIssuingDistributionPoint, true, idp(nil, boolField(2))), false, "CA certificates"},
		{"IDP onlySomeReasons", ext(oidIssuingDistributionPoint, true, idp(nil, func(b *cryptobyte.Builder) {
			b.AddASN1(casn1.Tag(3).ContextSpecific(), func(b *cryptobyte.Builder) { b.AddBytes([]byte{0x07, 0x80}) })
		})), false, "some reasons"},
		{"indirect CRL", ext(oidIssuingDistributionPoint, true, idp(nil, boolField(4))), false, "indirect"},
		{"IDP onlyContainsAttributeCerts", ext(oidIssuingDistributionPoint, true, idp(nil, boolField(5))), false, "attribute"},
		{"unknown critical extension", ext(asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 99999, 1}, true, []byte{0x05, 0x00}), false, "critical extension"},
		{"unknown non-critical extension", ext(asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 99999, 1}, false, []byte{0x05, 0x00}), true, ""},
		{"IDP that does not parse", ext(oidIssuingDistributionPoint, true, []byte{0x30, 0x03, 0x01}), false, "issuingDistributionPoint"},
	}
	// RFC 5280 §6.3.3(b)(2)(i): any name of the IDP matching any name of
	// the certificate's CRL DP, not only the URL fetched.
	t.Run("IDP naming another of the certificate's distribution points", func(t *testing.T) {
		const ldap = "ldap://directory.example/cn=CA,o=Example?certificateRevocationList"
		der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(11), Subject: pkix.Name{CommonName: "card"},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), CRLDistributionPoints: []string{ldap, crlURL}}, issuer, leafKey.Public(), key)
		if err != nil {
			t.Fatal(err)
		}
		two, _ := x509.ParseCertificate(der)
		exts = ext(oidIssuingDistributionPoint, true, idp([]string{ldap}, nil))
		s := newStatusChecker(Options{HTTPClient: srv.Client(), OCSPTimeout: time.Minute, CRLTimeout: time.Minute,
			MaxStatusAge: DefaultMaxStatusAge, Now: time.Now})
		if src, err := s.check(context.Background(), two, issuer); err != nil || src != "crl" {
			t.Fatalf("%q, %v; want the CRL used", src, err)
		}
		// The same cached CRL says nothing of a certificate naming
		// only the http URL.
		if _, err := s.check(context.Background(), good, issuer); !errors.Is(err, ErrStatusUnavailable) {
			t.Fatalf("a certificate outside the partition: %v, want ErrStatusUnavailable", err)
		}
	})
	// The scope is the other way round for a CA certificate.
	for _, tc := range []struct {
		name   string
		field  uint8
		usable bool
	}{{"a CA under an authority revocation list", 2, true}, {"a CA under a CRL of end-entity certificates", 1, false}} {
		t.Run(tc.name, func(t *testing.T) {
			exts = ext(oidIssuingDistributionPoint, true, idp(nil, boolField(tc.field)))
			s := newStatusChecker(Options{HTTPClient: srv.Client(), OCSPTimeout: time.Minute, CRLTimeout: time.Minute,
				MaxStatusAge: DefaultMaxStatusAge, Now: time.Now})
			src, err := s.check(context.Background(), subCA, issuer)
			if tc.usable != (err == nil && src == "crl") || !tc.usable && !errors.Is(err, ErrStatusUnavailable) {
				t.Fatalf("%q, %v; want usable=%v", src, err, tc.usable)
			}
		})
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			exts = tc.exts
			s := newStatusChecker(Options{HTTPClient: srv.Client(), OCSPTimeout: time.Minute, CRLTimeout: time.Minute,
				MaxStatusAge: DefaultMaxStatusAge, Now: time.Now})
			src, err := s.check(context.Background(), good, issuer)
			if tc.usable {
				if err != nil || src != "crl" {
					t.Fatalf("good card: %q, %v; want crl", src, err)
				}
				if _, err := s.check(context.Background(), revoked, issuer); !errors.Is(err, ErrRevoked) {
					t.Fatalf("revoked card: %v, want ErrRevoked", err)
				}
				return
			}
			for _, c := range []*x509.Certificate{good, revoked} {
				_, err := s.check(context.Background(), c, issuer)
				if !errors.Is(err, ErrStatusUnavailable) || !strings.Contains(err.Error(), tc.why) {
					t.Fatalf("card %v: %v; want ErrStatusUnavailable saying %q", c.SerialNumber, err, tc.why)
				}
			}
		})
	}
}

// FuzzReadIDP: any issuingDistributionPoint value parses or is refused,
// never a panic; one that is accepted never claims both scopes.
func FuzzReadIDP(f *testing.F) {
	f.Add(idp([]string{"http://x/ca.crl"}, nil))
	f.Add(idp(nil, boolField(2)))
	f.Add(idp(nil, func(b *cryptobyte.Builder) {
		b.AddASN1(casn1.Tag(3).ContextSpecific(), func(b *cryptobyte.Builder) { b.AddBytes([]byte{0x07, 0x80}) })
	}))
	f.Add([]byte{0x30, 0x00})
	f.Fuzz(func(t *testing.T, der []byte) {
		var e crlEntry
		if readIDP(der, &e) == nil && e.onlyUser && e.onlyCA {
			t.Fatal("accepted an IDP with both scopes")
		}
	})
}
