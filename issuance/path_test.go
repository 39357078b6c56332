package issuance

import (
	"context"
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
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// agencyIntermediate is an intermediate CA under root asserting policies,
// as a signer for the issuing CA below it.
func agencyIntermediate(t *testing.T, root agencyRoot, policies []x509.OID, change func(*x509.Certificate)) agencyRoot {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().Add(-time.Hour)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{Organization: []string{"Agency"}, CommonName: "Agency Intermediate"},
		NotBefore: now, NotAfter: now.AddDate(10, 0, 0), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, Policies: policies,
		IssuingCertificateURL: []string{"http://pki.agency.example/root.crt"}, CRLDistributionPoints: []string{"http://pki.agency.example/root.crl"}}
	if change != nil {
		change(tmpl)
	}
	return agencyRoot{root.sign(t, tmpl, key.Public()), key}
}

// TestImportChecksThePathsPolicies: ca import checked the policies of the
// issuing CA certificate alone. Under an intermediate that asserts only
// …3.6, every derived PIV Authentication certificate credgw issued failed
// a relying party's policy check (openssl verify -explicit_policy -policy
// …3.40: "no explicit policy"). Every CA certificate below the root must
// now allow each policy credgw issues under (it, or anyPolicy where no
// inhibitAnyPolicy above forbids it).
func TestImportChecksThePathsPolicies(t *testing.T) {
	root := newAgencyRoot(t, "Agency Root CA")
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	req := IssuingCARequirements{Key: key.Public(), Validity: DefaultValidity, Now: time.Now()}
	anyPolicy := mustOID(oidAnyPolicy)
	for _, tc := range []struct {
		name     string
		policies []x509.OID
		change   func(*x509.Certificate)
		want     string // "" = accepted
	}{
		{"the intermediate allows the policies", []x509.OID{mustOID(oidCommonPolicy), mustOID(oidDerivedPIVAuth)}, nil, ""},
		{"anyPolicy", []x509.OID{anyPolicy}, nil, ""},
		{"the intermediate lacks …3.40", []x509.OID{mustOID(oidCommonPolicy)}, nil, "2.16.840.1.101.3.2.1.3.40"},
		{"no policies above", nil, nil, "2.16.840.1.101.3.2.1.3.6"},
		{"anyPolicy inhibited", []x509.OID{anyPolicy}, func(c *x509.Certificate) {
			// inhibitAnyPolicy 0 (crypto/x509 parses it, does not encode it)
			zero, _ := asn1.Marshal(0)
			c.ExtraExtensions = append(c.ExtraExtensions, pkix.Extension{Id: asn1.ObjectIdentifier{2, 5, 29, 54}, Critical: true, Value: zero})
		}, "2.16.840.1.101.3.2.1.3.40"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			inter := agencyIntermediate(t, root, tc.policies, tc.change)
			tmpl := goodIssuing()
			if tc.name == "anyPolicy inhibited" {
				tmpl.Policies = []x509.OID{anyPolicy}
			}
			iss := inter.sign(t, tmpl, key.Public())
			err := CheckIssuingCA(iss, []*x509.Certificate{inter.cert, root.cert}, req)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want != "" && (err == nil || !errors.Is(err, ErrIssuingCA) || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "ask the root operator")):
				t.Fatalf("got %v, want ErrIssuingCA naming %s", err, tc.want)
			}
		})
	}
}

// TestIssuedWithinNameConstraints: a CA on the path whose name constraints
// permit only some email domains: credgw signed a certificate for an
// address outside them, which every relying party then refused ("permitted
// subtree violation"). A certificate outside a CA's name constraints (its
// email, its subject) is now refused before anything is signed.
func TestIssuedWithinNameConstraints(t *testing.T) {
	root := newAgencyRoot(t, "Agency Root CA")
	inter := agencyIntermediate(t, root, []x509.OID{mustOID(oidAnyPolicy)}, func(c *x509.Certificate) {
		c.PermittedEmailAddresses = []string{"agency.example"}
	})
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	iss := inter.sign(t, goodIssuing(), key.Public())
	cfg := testCA.cfg
	cfg.Name, cfg.Chain, cfg.Signer = "constrained", []*x509.Certificate{iss, inter.cert, root.cert}, key
	ca, err := NewCA(cfg)
	if err != nil {
		t.Fatal(err)
	}
	outside := identity(t) // alice@example.gov
	if _, err := ca.Issue(context.Background(), Request{Profile: DigitalSignature, CSR: newCSR(t, p256(t)), Identity: outside}); !errors.Is(err, ErrLint) || !strings.Contains(err.Error(), "name constraints") {
		t.Fatalf("an email outside the path's name constraints: %v, want ErrLint naming them", err)
	}
	inside := identity(t)
	inside.Email = "alice@agency.example"
	got, err := ca.Issue(context.Background(), Request{Profile: DigitalSignature, CSR: newCSR(t, p256(t)), Identity: inside})
	if err != nil {
		t.Fatalf("an email within them: %v", err)
	}
	// As relying parties check it (crypto/x509 refuses any URI without a
	// host under a name-constrained CA, whatever its constraints: see
	// docs/key-ceremony.md), OpenSSL applies RFC 5280's rules.
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Fatal("openssl is needed (make deps)")
	}
	dir := t.TempDir()
	write := func(name string, certs ...*x509.Certificate) string {
		var b []byte
		for _, c := range certs {
			b = append(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
		}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	if out, err := exec.Command("openssl", "verify", "-CAfile", write("root.pem", root.cert), "-untrusted", write("chain.pem", iss, inter.cert),
		"-purpose", "any", write("leaf.pem", got.Certificate)).CombinedOutput(); err != nil {
		t.Fatalf("the certificate issued within them does not verify: %s", out)
	}
}

// TestNewCAChecksThePathsPolicies: the path's policies were checked by ca
// import alone; turning ca.hardware_backed_devices on afterwards, or
// chain files replaced by hand, let credgw assert a policy its path does
// not allow. NewCA (serve's start) refuses such a path too.
func TestNewCAChecksThePathsPolicies(t *testing.T) {
	root := newAgencyRoot(t, "Agency Root CA")
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := goodIssuing()
	tmpl.Policies = []x509.OID{mustOID(oidCommonPolicy), mustOID(oidDerivedPIVAuth)} // no …3.41
	iss := root.sign(t, tmpl, key.Public())
	cfg := testCA.cfg
	cfg.Name, cfg.Chain, cfg.Signer = "no-hardware", []*x509.Certificate{iss, root.cert}, key
	if _, err := NewCA(cfg); err != nil {
		t.Fatalf("without hardware-backed devices: %v", err)
	}
	cfg.HardwareBackedDevices = true
	if _, err := NewCA(cfg); err == nil || !strings.Contains(err.Error(), "2.16.840.1.101.3.2.1.3.41") {
		t.Fatalf("hardware-backed devices under a path without …3.41: %v", err)
	}
}

// TestNotBeforeNotBeforeTheCA: leaves are backdated a minute for lagging
// clocks, also when the CA certificate itself started less than a minute
// before: the leaf then began before its issuer, and a device checking a
// key history's certificate as of its own start found the CA "not yet
// valid" and refused the whole package (after a re-key, the code used
// up). A leaf's notBefore is never before its CA certificate's.
func TestNotBeforeNotBeforeTheCA(t *testing.T) {
	root := newAgencyRoot(t, "Agency Root CA")
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := goodIssuing()
	tmpl.NotBefore = time.Now().Add(-10 * time.Second).Truncate(time.Second) // signed moments ago
	iss := root.sign(t, tmpl, key.Public())
	cfg := testCA.cfg
	cfg.Name, cfg.Chain, cfg.Signer = "fresh-ca", []*x509.Certificate{iss, root.cert}, key
	ca, err := NewCA(cfg)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ca.Issue(context.Background(), Request{Profile: DigitalSignature, CSR: newCSR(t, p256(t)), Identity: identity(t)})
	if err != nil {
		t.Fatal(err)
	}
	if got.Certificate.NotBefore.Before(iss.NotBefore) {
		t.Fatalf("the leaf starts %s, before its CA certificate (%s)", got.Certificate.NotBefore, iss.NotBefore)
	}
	roots, inters := x509.NewCertPool(), x509.NewCertPool()
	roots.AddCert(root.cert)
	inters.AddCert(iss)
	if _, err := got.Certificate.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inters, CurrentTime: got.Certificate.NotBefore,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Fatalf("verified as of its own start: %v", err)
	}
}
