package issuance

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	zx509 "github.com/zmap/zcrypto/x509"
	"github.com/zmap/zlint/v3"
	"github.com/zmap/zlint/v3/lint"
)

// TestLintGate: a certificate that the profile check lets through but RFC
// 5280 forbids (a malformed rfc822Name from a card's certificate) is refused
// by the lint; its intent is closed as lint_failed, nothing is signed with
// the CA key, and the key may be used again.
func TestLintGate(t *testing.T) {
	ctx := context.Background()
	id := identity(t)
	id.Email = "not an email"
	key := p256(t)
	_, err := testCA.Issue(ctx, Request{Profile: DigitalSignature, CSR: newCSR(t, key), Identity: id})
	if !errors.Is(err, ErrLint) || !strings.Contains(err.Error(), "e_ext_san_rfc822_format_invalid") {
		t.Fatalf("err = %v, want ErrLint naming the lint", err)
	}
	spki, _ := SPKIHash(key.Public())
	if seen, _ := testStore.KeyCertified(ctx, spki); seen {
		t.Fatal("the refused key counts as certified")
	}
	id.Email = "alice@example.gov"
	if _, err := testCA.Issue(ctx, Request{Profile: DigitalSignature, CSR: newCSR(t, key), Identity: id}); err != nil {
		t.Fatalf("the same key after a lint refusal: %v", err)
	}
}

// TestZlintCommand runs the zlint command (RFC 5280 lints) on every profile:
// no error, no fatal.
func TestZlintCommand(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "zlint")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/zmap/zlint/v3/cmd/zlint").CombinedOutput(); err != nil {
		t.Fatalf("building zlint: %v\n%s", err, out)
	}
	for _, p := range Profiles() {
		c := issue(t, p, p256(t), identity(t)).Certificate
		f := filepath.Join(dir, string(p)+".pem")
		os.WriteFile(f, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}), 0o644)
		out, err := exec.Command(bin, "-includeSources", "RFC5280", f).Output()
		if err != nil {
			t.Fatalf("zlint %s: %v", p, err)
		}
		var results map[string]struct {
			Result string `json:"result"`
		}
		if err := json.Unmarshal(out, &results); err != nil {
			t.Fatalf("zlint output: %v\n%s", err, out)
		}
		ran := 0
		for name, r := range results {
			ran++
			if r.Result == "error" || r.Result == "fatal" {
				t.Errorf("%s: zlint %s: %s", p, name, r.Result)
			}
		}
		if ran < 50 {
			t.Fatalf("zlint ran %d lints", ran)
		}
	}
}

// TestCASignsOnlyLintedBytes: a certificate changed after the lint passed
// (here by a test hook, in real life by any later option or authority
// step) is refused before the CA key signs it, and the issued certificate's
// TBSCertificate is byte for byte the one the lint saw.
func TestCASignsOnlyLintedBytes(t *testing.T) {
	ctx := context.Background()
	var linted [32]byte
	cfg := testCA.cfg
	cfg.afterLint = func(c *x509.Certificate) {
		_, h, err := testCA.linter.lint(c, nil)
		if err != nil {
			t.Errorf("lint again: %v", err)
		}
		linted = h
	}
	ca, err := NewCA(cfg)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ca.Issue(ctx, Request{Profile: DerivedPIVAuth, CSR: newCSR(t, p256(t)), Identity: identity(t)})
	if err != nil {
		t.Fatal(err)
	}
	if sha256.Sum256(got.Certificate.RawTBSCertificate) != linted {
		t.Fatal("the signed TBSCertificate is not the one the lint passed")
	}

	changes := map[string]func(*x509.Certificate){
		"longer validity": func(c *x509.Certificate) { c.NotAfter = c.NotAfter.Add(time.Hour) },
		"extra EKU":       func(c *x509.Certificate) { c.ExtKeyUsage = append(c.ExtKeyUsage, x509.ExtKeyUsageServerAuth) },
		"CA bit":          func(c *x509.Certificate) { c.IsCA, c.BasicConstraintsValid = true, true },
	}
	for name, change := range changes {
		t.Run(name, func(t *testing.T) {
			var serial string
			cfg := testCA.cfg
			cfg.afterLint = func(c *x509.Certificate) { serial = c.SerialNumber.Text(16); change(c) }
			ca, err := NewCA(cfg)
			if err != nil {
				t.Fatal(err)
			}
			_, err = ca.Issue(ctx, Request{Profile: DerivedPIVAuth, CSR: newCSR(t, p256(t)), Identity: identity(t)})
			if !errors.Is(err, ErrNotLinted) {
				t.Fatalf("err = %v, want ErrNotLinted", err)
			}
			// Closed as refused: the sweep must not take it for a crash
			// after signing and revoke it.
			if rec, err := testStore.Certificate(ctx, serial); err != nil || rec.Status != "lint_failed" || rec.DER != nil {
				t.Fatalf("record %+v, %v: want an unsigned, refused intent", rec, err)
			}
		})
	}
}

// TestLintedOnlyRefuses: the CA signer signs neither a digest nor a message
// it was not given, and a message only once.
func TestLintedOnlyRefuses(t *testing.T) {
	s := &lintedOnly{key: p256(t)}
	msg := []byte("a TBSCertificate")
	if _, err := s.Sign(rand.Reader, make([]byte, 32), crypto.SHA256); !errors.Is(err, ErrNotLinted) {
		t.Fatalf("digest: %v", err)
	}
	if _, err := s.SignMessage(rand.Reader, msg, crypto.SHA256); !errors.Is(err, ErrNotLinted) {
		t.Fatalf("unknown message: %v", err)
	}
	s.allow(sha256.Sum256(msg))
	sig, err := s.SignMessage(rand.Reader, msg, crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(msg)
	if !ecdsa.VerifyASN1(s.Public().(*ecdsa.PublicKey), sum[:], sig) {
		t.Fatal("bad signature")
	}
	if _, err := s.SignMessage(rand.Reader, msg, crypto.SHA256); !errors.Is(err, ErrNotLinted) {
		t.Fatalf("second use: %v", err)
	}
}

// TestRSACAAlgorithms: under an RSA issuing CA whose certificate was signed
// with SHA-384 or RSA-PSS, smallstep signs leaves with that algorithm; the
// lint encodes the same, so issuance works and the leaf verifies.
func TestRSACAAlgorithms(t *testing.T) {
	ctx := context.Background()
	rootKey, err := rsa.GenerateKey(rand.Reader, 3072)
	if err != nil {
		t.Fatal(err)
	}
	issKey, err := rsa.GenerateKey(rand.Reader, 3072)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().Add(-time.Hour).Truncate(time.Second)
	root, err := selfOrParentSign(&x509.Certificate{Subject: pkix.Name{CommonName: "RSA root"}, NotBefore: now, NotAfter: now.AddDate(5, 0, 0),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}, nil, rootKey.Public(), rootKey)
	if err != nil {
		t.Fatal(err)
	}
	// The leaf's algorithm is the CA certificate's, except RSA-PSS with
	// another hash than SHA-256, which the Common Policy does not allow.
	want := map[x509.SignatureAlgorithm]x509.SignatureAlgorithm{
		x509.SHA384WithRSAPSS: x509.SHA256WithRSAPSS, x509.SHA512WithRSAPSS: x509.SHA256WithRSAPSS,
	}
	for _, alg := range []x509.SignatureAlgorithm{x509.SHA256WithRSA, x509.SHA384WithRSA, x509.SHA256WithRSAPSS, x509.SHA384WithRSAPSS, x509.SHA512WithRSAPSS} {
		t.Run(alg.String(), func(t *testing.T) {
			leafAlg := alg
			if w, ok := want[alg]; ok {
				leafAlg = w
			}
			iss, err := selfOrParentSign(&x509.Certificate{Subject: pkix.Name{CommonName: "RSA issuing " + alg.String()},
				NotBefore: now, NotAfter: now.AddDate(2, 0, 0), IsCA: true, BasicConstraintsValid: true, MaxPathLenZero: true,
				KeyUsage:           x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
				SignatureAlgorithm: alg,
				Policies:           []x509.OID{mustOID(oidCommonPolicy), mustOID(oidDerivedPIVAuth)},
			}, root, issKey.Public(), rootKey)
			if err != nil {
				t.Fatal(err)
			}
			ca, err := NewCA(Config{Name: "rsa", Chain: []*x509.Certificate{iss, root}, Signer: issKey, Store: testStore, BaseURL: baseURL})
			if err != nil {
				t.Fatal(err)
			}
			got, err := ca.Issue(ctx, Request{Profile: DerivedPIVAuth, CSR: newCSR(t, p256(t)), Identity: identity(t)})
			if err != nil {
				t.Fatal(err)
			}
			if got.Certificate.SignatureAlgorithm != leafAlg {
				t.Fatalf("leaf signed with %s (the CA certificate with %s), want %s", got.Certificate.SignatureAlgorithm, alg, leafAlg)
			}
			if err := got.Certificate.CheckSignatureFrom(iss); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestLintRunsTheRegistry: the gate's own loop runs every RFC 5280 lint
// of the registry, and finds what zlint.LintCertificateEx finds with the
// same registry on a certificate with both errors and warnings (none
// missed, none added).
func TestLintRunsTheRegistry(t *testing.T) {
	reg, err := lint.GlobalRegistry().Filter(lint.FilterOptions{IncludeSources: lintSources})
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1 << 62), Subject: pkix.Name{CommonName: "bench"}, PublicKey: p256(t).Public(),
		NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
		// An rfc822Name that is not an address (an error), and no
		// subject key identifier (a warning).
		EmailAddresses: []string{"not an email"},
	}
	warnings, _, lintErr := testCA.linter.lint(tmpl, nil)
	if !errors.Is(lintErr, ErrLint) {
		t.Fatalf("err = %v, want ErrLint", lintErr)
	}
	der, _, err := testCA.linter.sign(tmpl)
	if err != nil {
		t.Fatal(err)
	}
	zc, err := zx509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	// Every lint runs, with zlint's verdict.
	results := zlint.LintCertificateEx(zc, reg).Results
	ran := map[string]lint.LintStatus{}
	testCA.linter.run(zc, func(name string, r *lint.LintResult) { ran[name] = r.Status })
	if len(results) < 100 || len(ran) != len(results) {
		t.Fatalf("the gate ran %d lints, zlint runs %d RFC 5280 certificate lints", len(ran), len(results))
	}
	for name, r := range results {
		if got, ok := ran[name]; !ok || got != r.Status {
			t.Errorf("%s: the gate found %v (ran: %v), zlint %v", name, got, ok, r.Status)
		}
	}
	var wantErrs, wantWarns []string
	for name, r := range results {
		switch r.Status {
		case lint.Error, lint.Fatal:
			wantErrs = append(wantErrs, name)
		case lint.Warn:
			wantWarns = append(wantWarns, name)
		}
	}
	slices.Sort(wantErrs)
	slices.Sort(wantWarns)
	if len(wantErrs) == 0 || len(wantWarns) == 0 {
		t.Fatalf("the certificate should have errors and warnings: %v %v", wantErrs, wantWarns)
	}
	if !slices.Equal(warnings, wantWarns) {
		t.Errorf("warnings %v, zlint finds %v", warnings, wantWarns)
	}
	// The error names each finding as "name: details", joined by "; ".
	var gotErrs []string
	for _, f := range strings.Split(strings.TrimPrefix(lintErr.Error(), ErrLint.Error()+": "), "; ") {
		name, _, _ := strings.Cut(f, ":")
		gotErrs = append(gotErrs, name)
	}
	if !slices.Equal(gotErrs, wantErrs) {
		t.Errorf("errors %v, zlint finds %v", gotErrs, wantErrs)
	}
}

// TestMaxValidityIssues: ca.validity at the documented maximum (1096 days)
// issues: the minute notBefore is backdated comes out of the validity,
// not on top of it (the profile check refused every certificate).
func TestMaxValidityIssues(t *testing.T) {
	ctx := context.Background()
	key := p256(t)
	now := time.Now().Add(-time.Hour).Truncate(time.Second)
	root, err := selfOrParentSign(&x509.Certificate{Subject: pkix.Name{CommonName: "long root"}, NotBefore: now, NotAfter: now.AddDate(10, 0, 0),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}, nil, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	issKey := p256(t)
	iss, err := selfOrParentSign(&x509.Certificate{Subject: pkix.Name{CommonName: "long issuing CA"},
		NotBefore: now, NotAfter: now.AddDate(8, 0, 0), IsCA: true, BasicConstraintsValid: true, MaxPathLenZero: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		Policies: []x509.OID{mustOID(oidCommonPolicy), mustOID(oidDerivedPIVAuth)},
	}, root, issKey.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := NewCA(Config{Name: "long", Chain: []*x509.Certificate{iss, root}, Signer: issKey, Store: testStore, BaseURL: baseURL, Validity: MaxValidity})
	if err != nil {
		t.Fatal(err)
	}
	got, err := ca.Issue(ctx, Request{Profile: DerivedPIVAuth, CSR: newCSR(t, p256(t)), Identity: identity(t)})
	if err != nil {
		t.Fatalf("ca.validity %v: %v", MaxValidity, err)
	}
	if d := got.Certificate.NotAfter.Sub(got.Certificate.NotBefore); d != MaxValidity {
		t.Fatalf("validity %v, want %v", d, MaxValidity)
	}
}
