package issuance

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/credgw/credgw/pkcs11"
)

// oidCommonAuth is id-fpki-common-authentication (the PIV card's policy).
var oidCommonAuth = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 2, 1, 3, 13}

// agencyRoot is a root made by the test, as an agency's would be.
type agencyRoot struct {
	cert *x509.Certificate
	key  crypto.Signer
}

func newAgencyRoot(t *testing.T, cn string) agencyRoot {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	now := time.Now().Add(-time.Hour)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{Organization: []string{"Agency"}, CommonName: cn},
		NotBefore: now, NotAfter: now.AddDate(20, 0, 0), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return agencyRoot{c, key}
}

// goodIssuing is what a root operator should sign for credgw.
func goodIssuing() *x509.Certificate {
	now := time.Now().Add(-time.Hour)
	return &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{Organization: []string{"Agency"}, CommonName: "credgw Issuing CA"},
		NotBefore: now, NotAfter: now.AddDate(5, 0, 0), IsCA: true, BasicConstraintsValid: true, MaxPathLenZero: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		Policies:              []x509.OID{mustOID(oidCommonPolicy), mustOID(oidDerivedPIVAuth), mustOID(oidDerivedPIVAuthHW)},
		IssuingCertificateURL: []string{"http://pki.agency.example/root.crt"},
		CRLDistributionPoints: []string{"http://pki.agency.example/root.crl"}}
}

func (r agencyRoot) sign(t *testing.T, tmpl *x509.Certificate, pub crypto.PublicKey) *x509.Certificate {
	t.Helper()
	der, err := x509.CreateCertificate(rand.Reader, tmpl, r.cert, pub, r.key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestCheckIssuingCA: `ca import` accepts what a root operator should
// sign and refuses each defect with what to ask the root operator for.
func TestCheckIssuingCA(t *testing.T) {
	root, other := newAgencyRoot(t, "Agency Root CA"), newAgencyRoot(t, "Other Root CA")
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	otherKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tests := []struct {
		name     string
		change   func(c *x509.Certificate)
		pub      crypto.PublicKey
		signer   agencyRoot
		hardware bool
		want     string // "" = accepted
	}{
		{name: "good", want: ""},
		{name: "anyPolicy", change: func(c *x509.Certificate) { c.Policies = []x509.OID{mustOID(oidAnyPolicy)} }, hardware: true, want: ""},
		{name: "hardware needs .41", change: func(c *x509.Certificate) { c.Policies = c.Policies[:2] }, hardware: true, want: "2.16.840.1.101.3.2.1.3.41"},
		{name: "wrong key", pub: otherKey.Public(), want: "another key than the HSM's issuing key"},
		{name: "not a CA", change: func(c *x509.Certificate) {
			c.IsCA, c.MaxPathLenZero, c.KeyUsage = false, false, x509.KeyUsageDigitalSignature
		}, want: "not a CA certificate"},
		{name: "pathLen missing", change: func(c *x509.Certificate) { c.MaxPathLenZero, c.MaxPathLen = false, -1 }, want: "no pathLenConstraint"},
		{name: "pathLen 1", change: func(c *x509.Certificate) { c.MaxPathLenZero, c.MaxPathLen = false, 1 }, want: "allows pathLenConstraint 1"},
		{name: "no cRLSign", change: func(c *x509.Certificate) { c.KeyUsage = x509.KeyUsageCertSign }, want: "keyCertSign or cRLSign"},
		{name: "no keyUsage", change: func(c *x509.Certificate) { c.KeyUsage = 0 }, want: "keyCertSign or cRLSign"},
		{name: "keyUsage not critical", change: func(c *x509.Certificate) {
			// Go marks its own keyUsage critical; an extra one replaces it.
			ku, _ := asn1.Marshal(asn1.BitString{Bytes: []byte{0x86}, BitLength: 7})
			c.ExtraExtensions = append(c.ExtraExtensions, pkix.Extension{Id: asn1.ObjectIdentifier{2, 5, 29, 15}, Value: ku})
		}, want: "keyUsage is not critical"},
		{name: "no digitalSignature", change: func(c *x509.Certificate) { c.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign }, want: "lacks digitalSignature"},
		{name: "EKU without clientAuth", change: func(c *x509.Certificate) { c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection} }, want: "extendedKeyUsage"},
		{name: "EKU with clientAuth and emailProtection", change: func(c *x509.Certificate) {
			c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageEmailProtection}
		}, want: ""},
		{name: "wrong policy", change: func(c *x509.Certificate) { c.Policies = []x509.OID{mustOID(oidCommonAuth)} }, want: "do not include 2.16.840.1.101.3.2.1.3.6, 2.16.840.1.101.3.2.1.3.40"},
		{name: "no policies", change: func(c *x509.Certificate) { c.Policies = nil }, want: "anyPolicy"},
		{name: "no AIA", change: func(c *x509.Certificate) { c.IssuingCertificateURL = nil }, want: "no http authorityInfoAccess caIssuers URL: ask the root operator to include one"},
		{name: "AIA not http", change: func(c *x509.Certificate) { c.IssuingCertificateURL = []string{"ldap://dir.agency.example/cn=root"} }, want: "caIssuers"},
		{name: "no CRL DP", change: func(c *x509.Certificate) { c.CRLDistributionPoints = nil }, want: "no http CRL distribution point: ask the root operator to include one"},
		{name: "validity too short", change: func(c *x509.Certificate) { c.NotAfter = time.Now().Add(200 * 24 * time.Hour) }, want: "or lower ca.validity"},
		{name: "not yet valid", change: func(c *x509.Certificate) { c.NotBefore = time.Now().Add(24 * time.Hour) }, want: "not valid before"},
		{name: "another root", signer: other, want: "does not chain to the root"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tmpl := goodIssuing()
			if tt.change != nil {
				tt.change(tmpl)
			}
			signer := root
			if tt.signer.cert != nil {
				signer = tt.signer
			}
			certKey := tt.pub // the key the root signed for
			if certKey == nil {
				certKey = key.Public()
			}
			cert := signer.sign(t, tmpl, certKey)
			err := CheckIssuingCA(cert, []*x509.Certificate{root.cert}, IssuingCARequirements{Key: key.Public(),
				Validity: DefaultValidity, HardwareBackedDevices: tt.hardware, Now: time.Now()})
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tt.want != "" && (err == nil || !errors.Is(err, ErrIssuingCA) || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("got %v, want ErrIssuingCA with %q", err, tt.want)
			case tt.want != "" && !strings.Contains(err.Error(), "ask the root operator"):
				t.Fatalf("the refusal does not say what to ask for: %v", err)
			}
		})
	}
	// A renewal of the certificate in use (the same key) keeps its
	// subject: the certificates issued before name it as their issuer, and
	// OCSP, the CRL and caIssuers follow the CA certificate's name, so a
	// renamed one leaves every one of them without status.
	t.Run("renewal under another subject", func(t *testing.T) {
		installed := root.sign(t, goodIssuing(), key.Public())
		renamed := goodIssuing()
		renamed.Subject.CommonName = "Renamed Issuing CA"
		cert := root.sign(t, renamed, key.Public())
		err := CheckIssuingCA(cert, []*x509.Certificate{root.cert}, IssuingCARequirements{Key: key.Public(), Validity: DefaultValidity, Now: time.Now(), Installed: installed})
		if err == nil || !errors.Is(err, ErrIssuingCA) || !strings.Contains(err.Error(), "subject") || !strings.Contains(err.Error(), "ask the root operator") {
			t.Fatalf("got %v, want ErrIssuingCA about the subject", err)
		}
		// The same subject renewed: accepted.
		if err := CheckIssuingCA(root.sign(t, goodIssuing(), key.Public()), []*x509.Certificate{root.cert},
			IssuingCARequirements{Key: key.Public(), Validity: DefaultValidity, Now: time.Now(), Installed: installed}); err != nil {
			t.Fatalf("a renewal under the same subject: %v", err)
		}
	})
	t.Run("chain without root", func(t *testing.T) {
		cert := root.sign(t, goodIssuing(), key.Public())
		err := CheckIssuingCA(cert, []*x509.Certificate{cert}, IssuingCARequirements{Key: key.Public(), Validity: DefaultValidity, Now: time.Now()})
		if err == nil || !strings.Contains(err.Error(), "not a self-signed root") {
			t.Fatalf("got %v", err)
		}
	})
}

// TestDevIssuingCALints: the self-made issuing CA certificate carries CRL
// DP and AIA caIssuers under the base URL, and zlint finds no error or
// warning on it (the sub-CA lints included).
func TestDevIssuingCALints(t *testing.T) {
	c := testInit.Issuing
	if len(c.CRLDistributionPoints) != 1 || c.CRLDistributionPoints[0] != baseURL+RootCRLPath ||
		len(c.IssuingCertificateURL) != 1 || c.IssuingCertificateURL[0] != baseURL+RootCertPath {
		t.Fatalf("CRL DP %v, AIA %v", c.CRLDistributionPoints, c.IssuingCertificateURL)
	}
	errs, warns, err := LintCACertificate(c.Raw)
	if err != nil || len(errs) > 0 || len(warns) > 0 {
		t.Fatalf("zlint: %v errors %v warnings %v", err, errs, warns)
	}
	// The lint can fail: a certificate without them is reported.
	root := newAgencyRoot(t, "Agency Root CA")
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	bare := goodIssuing()
	bare.CRLDistributionPoints, bare.IssuingCertificateURL = nil, nil
	errs, warns, _ = LintCACertificate(root.sign(t, bare, key.Public()).Raw)
	if got := strings.Join(append(errs, warns...), " "); !strings.Contains(got, "e_sub_ca_crl_distribution_points_missing") || !strings.Contains(got, "w_sub_ca_aia_missing") {
		t.Fatalf("a bare sub-CA lints clean: %q", got)
	}
}

// TestInitCANamesDistinct: two environments made with default names get
// distinct root and issuing CA names; names the operator gives are kept.
func TestInitCANamesDistinct(t *testing.T) {
	ctx := context.Background()
	a, err := InitCA(ctx, InitOptions{Dir: filepath.Join(t.TempDir(), "a"), BaseURL: "http://gw.example"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := InitCA(ctx, InitOptions{Dir: filepath.Join(t.TempDir(), "b"), BaseURL: "http://gw.example"})
	if err != nil {
		t.Fatal(err)
	}
	if a.Root.Subject.String() == b.Root.Subject.String() || a.Issuing.Subject.String() == b.Issuing.Subject.String() {
		t.Fatalf("same names: %s / %s and %s / %s", a.Root.Subject, a.Issuing.Subject, b.Root.Subject, b.Issuing.Subject)
	}
	suffix, _ := NameSuffix(a.Issuing.PublicKey)
	if !strings.HasSuffix(a.Issuing.Subject.CommonName, " "+suffix) {
		t.Fatalf("issuing CN %q lacks the key suffix %s", a.Issuing.Subject.CommonName, suffix)
	}
	named, err := InitCA(ctx, InitOptions{Dir: filepath.Join(t.TempDir(), "n"), RootName: "Agency Dev Root", IssuingName: "Agency Dev Issuing"})
	if err != nil {
		t.Fatal(err)
	}
	if named.Root.Subject.CommonName != "Agency Dev Root" || named.Issuing.Subject.CommonName != "Agency Dev Issuing" {
		t.Fatalf("given names changed: %s, %s", named.Root.Subject, named.Issuing.Subject)
	}
	// The first root CRL is there, signed by the root.
	der, err := os.ReadFile(a.RootCRLFile)
	if err != nil {
		t.Fatal(err)
	}
	crl, err := x509.ParseRevocationList(der)
	if err != nil || crl.CheckSignatureFrom(a.Root) != nil {
		t.Fatalf("root CRL: %v", err)
	}
}

// TestInitCSR: the CSR mode makes the issuing key in the token and a CSR
// for it, no root; asked again, it uses the same key; it may run beside an
// installed CA (a re-key).
func TestInitCSR(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	o := InitOptions{Dir: dir, Token: testTok, KeyID: []byte{0x33}, Organization: "Agency", CSRFile: filepath.Join(dir, "issuing.csr")}
	res, err := InitCA(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(o.CSRFile)
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "CERTIFICATE REQUEST" {
		t.Fatalf("CSR file: %q", b)
	}
	csr, err := x509.ParseCertificateRequest(blk.Bytes)
	if err != nil || csr.CheckSignature() != nil {
		t.Fatalf("CSR: %v", err)
	}
	key, err := testTok.Signer(ctx, pkcs11.KeyRef{ID: []byte{0x33}})
	if err != nil {
		t.Fatal(err)
	}
	if !key.Public().(*ecdsa.PublicKey).Equal(csr.PublicKey) || res.ReusedKey || res.Root != nil {
		t.Fatalf("CSR key is not the token's, or reused %v, or a root was made", res.ReusedKey)
	}
	if _, err := os.Stat(filepath.Join(dir, "root.key")); err == nil {
		t.Fatal("CSR mode wrote a root key")
	}
	again, err := InitCA(ctx, o)
	if err != nil || !again.ReusedKey || !again.CSR.PublicKey.(*ecdsa.PublicKey).Equal(csr.PublicKey) {
		t.Fatalf("again: %v, reused %v", err, again != nil && again.ReusedKey)
	}
	// A re-key: a CSR for a new key beside the CA in use (its root.crt and
	// issuing.crt in the directory) was refused as replacing a CA.
	for _, f := range []string{"root.crt", "issuing.crt"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("in use"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	o.KeyID, o.CSRFile = []byte{0x34}, filepath.Join(dir, "issuing-2.csr")
	if _, err := InitCA(ctx, o); err != nil {
		t.Fatalf("a CSR for a new key beside the CA in use: %v", err)
	}
}

// TestSignRootCRL: the root's CRL is signed by the root, keeps the
// previous entries, numbers upwards, and refuses a key that is not the
// root's.
func TestSignRootCRL(t *testing.T) {
	root := newAgencyRoot(t, "Agency Root CA")
	now := time.Now()
	der, err := SignRootCRL(RootCRLOptions{Root: root.cert, Key: root.key, Now: now,
		Revoke: []x509.RevocationListEntry{{SerialNumber: big.NewInt(0x1a2b), ReasonCode: 5}}})
	if err != nil {
		t.Fatal(err)
	}
	first, err := x509.ParseRevocationList(der)
	if err != nil || first.CheckSignatureFrom(root.cert) != nil {
		t.Fatalf("CRL: %v", err)
	}
	if !first.NextUpdate.Equal(first.ThisUpdate.Add(DefaultRootCRLNextUpdate)) || len(first.RevokedCertificateEntries) != 1 {
		t.Fatalf("thisUpdate %s nextUpdate %s entries %d", first.ThisUpdate, first.NextUpdate, len(first.RevokedCertificateEntries))
	}
	if first.RevokedCertificateEntries[0].RevocationTime.After(first.ThisUpdate) {
		t.Fatal("a revocation later than thisUpdate")
	}
	der, err = SignRootCRL(RootCRLOptions{Root: root.cert, Key: root.key, Now: now, Previous: first, NextUpdate: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	second, _ := x509.ParseRevocationList(der)
	if second.Number.Cmp(first.Number) <= 0 || len(second.RevokedCertificateEntries) != 1 {
		t.Fatalf("number %s after %s, %d entries", second.Number, first.Number, len(second.RevokedCertificateEntries))
	}
	other := newAgencyRoot(t, "Other")
	if _, err := SignRootCRL(RootCRLOptions{Root: root.cert, Key: other.key, Now: now}); err == nil {
		t.Fatal("signed with a key that is not the root's")
	}
	// Only the reasons for a CA certificate: not certificateHold (Common
	// Policy §4.9.13), not removeFromCRL (delta CRLs only, RFC 5280
	// §5.3.1), not the unused 7, not aACompromise, nothing undefined.
	for code, ok := range map[int]bool{0: true, 1: true, 2: true, 3: true, 4: true, 5: true, 9: true, 6: false, 7: false, 8: false, 10: false, 42: false} {
		_, err := SignRootCRL(RootCRLOptions{Root: root.cert, Key: root.key, Now: now,
			Revoke: []x509.RevocationListEntry{{SerialNumber: big.NewInt(99), ReasonCode: code}}})
		if ok != (err == nil) || !ok && !strings.Contains(err.Error(), "reason") {
			t.Errorf("reason code %d: %v", code, err)
		}
	}
}

// TestInitCARefusesAnExistingCA: ca init never replaces a CA. The
// certificates may have been moved to the names the config gives them
// (credgw ca init does that), so the keys are what count: a root or
// issuing key file already in the directory, or a key already under the
// issuing key's CKA_ID in the token, refuses the run before anything is
// written or generated.
func TestInitCARefusesAnExistingCA(t *testing.T) {
	ctx := context.Background()
	t.Run("key files", func(t *testing.T) {
		dir := t.TempDir()
		first, err := InitCA(ctx, InitOptions{Dir: dir, Organization: "Agency"})
		if err != nil {
			t.Fatal(err)
		}
		// credgw ca init moves the certificates to the configured names.
		for _, f := range []string{first.RootFile, first.IssuingFile} {
			if err := os.Rename(f, f+".placed"); err != nil {
				t.Fatal(err)
			}
		}
		keys := map[string][]byte{}
		for _, f := range []string{first.RootKeyFile, first.IssuingKeyFile} {
			if keys[f], err = os.ReadFile(f); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := InitCA(ctx, InitOptions{Dir: dir, Organization: "Agency"}); err == nil || !strings.Contains(err.Error(), "exists already") {
			t.Fatalf("a second ca init in the same directory: %v, want a refusal", err)
		}
		for f, b := range keys {
			if now, _ := os.ReadFile(f); string(now) != string(b) {
				t.Errorf("%s was replaced", filepath.Base(f))
			}
		}
	})
	t.Run("key in the token", func(t *testing.T) {
		id := []byte{0x44}
		// The token outlives a run (go test -count N).
		t.Cleanup(func() {
			for _, c := range []pkcs11.Class{pkcs11.ClassPrivateKey, pkcs11.ClassPublicKey} {
				testTok.DeleteObjects(ctx, pkcs11.Query{Class: c, ID: id})
			}
		})
		if _, err := InitCA(ctx, InitOptions{Dir: t.TempDir(), Token: testTok, KeyID: id, Organization: "Agency"}); err != nil {
			t.Fatal(err)
		}
		before, err := testTok.Signer(ctx, pkcs11.KeyRef{ID: id})
		if err != nil {
			t.Fatal(err)
		}
		_, err = InitCA(ctx, InitOptions{Dir: t.TempDir(), Token: testTok, KeyID: id, Organization: "Agency"})
		if err == nil || !strings.Contains(err.Error(), "already holds") {
			t.Fatalf("a second ca init with the same token key: %v, want a refusal", err)
		}
		// One key under the id, the first one.
		after, err := testTok.Signer(ctx, pkcs11.KeyRef{ID: id})
		if err != nil {
			t.Fatalf("the token's issuing key after the refused run: %v", err)
		}
		if !after.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(before.Public()) {
			t.Fatal("the token's issuing key changed")
		}
	})
}
