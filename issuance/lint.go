package issuance

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"

	zx509 "github.com/zmap/zcrypto/x509"
	"github.com/zmap/zlint/v3"
	"github.com/zmap/zlint/v3/lint"
	// The RFC 5280 lints register themselves in the global registry when
	// imported: named here, not left to the zlint package's own imports,
	// since the gate would pass everything with an empty registry.
	_ "github.com/zmap/zlint/v3/lints/rfc"
	"golang.org/x/crypto/cryptobyte"
	casn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// linter lints a to-be-signed certificate signed by a throwaway key under an
// issuer that looks exactly like the CA (name, key identifier, key type), as
// Boulder does: the lint sees the real encoding, and a lint failure signs
// nothing with the CA key. The TBSCertificate it linted is what the CA key
// then signs, byte for byte (see lintedOnly).
type linter struct {
	// lints and cfg are the registry's certificate lints and
	// configuration, looked up once: zlint.LintCertificateEx builds and
	// sorts the registry's name list and a result map on every call.
	lints  []*lint.CertificateLint
	cfg    lint.Configuration
	issuer *x509.Certificate // the CA certificate with the throwaway key
	key    crypto.Signer
	sig    []byte // a signature by key, of the right form for its type
}

// lintSources are the lints credgw gates on: RFC 5280. Others (CA/B Forum
// rules for public TLS) do not apply to a Federal PKI S/MIME/auth CA.
var lintSources = lint.SourceList{lint.RFC5280}

func newLinter(ca *x509.Certificate) (*linter, error) {
	reg, err := lint.GlobalRegistry().Filter(lint.FilterOptions{IncludeSources: lintSources})
	if err != nil {
		return nil, fmt.Errorf("issuance: lint registry: %w", err)
	}
	lints := reg.CertificateLints().Lints()
	if len(lints) == 0 {
		return nil, errors.New("issuance: lint registry: no RFC 5280 certificate lints are registered")
	}
	var key crypto.Signer
	switch k := ca.PublicKey.(type) {
	case *ecdsa.PublicKey:
		key, err = ecdsa.GenerateKey(k.Curve, rand.Reader)
	case *rsa.PublicKey:
		key, err = rsa.GenerateKey(rand.Reader, k.N.BitLen())
	default:
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	}
	if err != nil {
		return nil, err
	}
	fake := *ca
	fake.PublicKey = key.Public()
	// One signature by the throwaway key, over nothing in particular,
	// stands in the lint copy of every certificate: no lint verifies a
	// signature (they have no issuer key), and an ECDSA signing per
	// certificate was a twentieth of the issuance's CPU.
	digest := sha256.Sum256([]byte("credgw lint copy"))
	sig, err := key.Sign(rand.Reader, digest[:], crypto.SHA256)
	if err != nil {
		return nil, err
	}
	return &linter{lints: lints, cfg: reg.GetConfiguration(), issuer: &fake, key: key, sig: sig}, nil
}

// lint returns the warnings and the SHA-256 of the TBSCertificate it
// linted, or an ErrLint error naming every error or fatal finding.
func (l *linter) lint(tmpl *x509.Certificate, profile func(*x509.Certificate) error) (warnings []string, tbsHash [32]byte, err error) {
	der, tbsHash, err := l.sign(tmpl)
	if err != nil {
		return nil, tbsHash, fmt.Errorf("%w: the certificate cannot be encoded: %v", ErrLint, err)
	}
	if profile != nil {
		// The profile again, on what was encoded: a template's raw
		// "extensions" are encoded in place of the fields the template
		// check saw (policies, EKUs, key usage).
		enc, err := asEncoded(der)
		if err != nil {
			return nil, tbsHash, fmt.Errorf("%w: the encoded certificate does not parse: %v", ErrLint, err)
		}
		if err := profile(enc); err != nil {
			return nil, tbsHash, fmt.Errorf("%w: as encoded: %v", ErrLint, err)
		}
	}
	zc, err := zx509.ParseCertificate(der)
	if err != nil {
		return nil, tbsHash, fmt.Errorf("%w: the encoded certificate does not parse: %v", ErrLint, err)
	}
	var errs, warns []string
	l.run(zc, func(name string, r *lint.LintResult) {
		switch r.Status {
		case lint.Error, lint.Fatal:
			errs = append(errs, name+": "+r.Details)
		case lint.Warn:
			warns = append(warns, name)
		}
	})
	sort.Strings(errs)
	sort.Strings(warns)
	if len(errs) > 0 {
		return warns, tbsHash, fmt.Errorf("%w: %s", ErrLint, strings.Join(errs, "; "))
	}
	return warns, tbsHash, nil
}

// asEncoded parses an encoded certificate for checkProfile, which reads a
// template: every extension as an extra one (as a template's raw
// "extensions" are), and the names from the SAN extension alone.
func asEncoded(der []byte) (*x509.Certificate, error) {
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	c.ExtraExtensions = c.Extensions
	c.URIs, c.EmailAddresses, c.DNSNames, c.IPAddresses = nil, nil, nil, nil
	return c, nil
}

// run runs every lint of the gate on zc and hands each result to each.
func (l *linter) run(zc *zx509.Certificate, each func(name string, r *lint.LintResult)) {
	for _, lt := range l.lints {
		each(lt.Name, lt.Execute(zc, l.cfg)) // a lint that panics is Fatal
	}
}

// sign encodes tmpl under the look-alike issuer. x509.CreateCertificate
// encodes; the capture signer takes the TBSCertificate from it and stops
// it there, since CreateCertificate would otherwise verify the throwaway
// signature (a wasted ECDSA verification per certificate). The certificate
// is then put together here: TBSCertificate, its own signature
// AlgorithmIdentifier, and the throwaway key's one signature (l.sig).
func (l *linter) sign(tmpl *x509.Certificate) ([]byte, [32]byte, error) {
	c := &tbsCapture{pub: l.key.Public()}
	_, err := x509.CreateCertificate(rand.Reader, tmpl, l.issuer, tmpl.PublicKey, c)
	if !errors.Is(err, errCaptured) {
		if err == nil {
			err = errors.New("the encoder did not ask for a signature")
		}
		return nil, [32]byte{}, err
	}
	in := cryptobyte.String(c.tbs)
	var body, alg cryptobyte.String
	if !in.ReadASN1(&body, casn1.SEQUENCE) ||
		!body.SkipOptionalASN1(casn1.Tag(0).Constructed().ContextSpecific()) || // version
		!body.SkipASN1(casn1.INTEGER) || // serialNumber
		!body.ReadASN1Element(&alg, casn1.SEQUENCE) { // signature
		return nil, [32]byte{}, errors.New("the TBSCertificate does not parse")
	}
	var b cryptobyte.Builder
	b.AddASN1(casn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddBytes(c.tbs)
		b.AddBytes(alg)
		b.AddASN1BitString(l.sig)
	})
	der, err := b.Bytes()
	return der, sha256.Sum256(c.tbs), err
}

var errCaptured = errors.New("issuance: TBSCertificate captured for the lint")

// tbsCapture is the lint signer: it keeps the message x509 asks it to sign
// and signs nothing.
type tbsCapture struct {
	pub  crypto.PublicKey
	tbs  []byte
	opts crypto.SignerOpts
}

func (c *tbsCapture) Public() crypto.PublicKey { return c.pub }

func (c *tbsCapture) Sign(io.Reader, []byte, crypto.SignerOpts) ([]byte, error) {
	return nil, errors.New("issuance: the lint signer signs whole messages only")
}

func (c *tbsCapture) SignMessage(_ io.Reader, msg []byte, opts crypto.SignerOpts) ([]byte, error) {
	c.tbs, c.opts = msg, opts
	return nil, errCaptured
}

// lintedOnly is the CA key as the smallstep authority sees it: it signs a
// TBSCertificate only if the lint passed on exactly those bytes (its
// SHA-256 is in the set, once). An option, modifier or authority step that
// changed the certificate after the lint would be refused here, before the
// HSM sees it. CRLs and OCSP responses are signed with the key directly.
type lintedOnly struct {
	key    crypto.Signer
	linted sync.Map // [32]byte → the issuance's context.Context (its span)
}

// ErrNotLinted means the authority asked the CA key to sign a certificate
// other than the one the lint passed.
var ErrNotLinted = errors.New("issuance: refusing to sign a certificate the lint did not pass")

func (s *lintedOnly) allow(h [32]byte) { s.allowIn(context.Background(), h) }

// allowIn allows h, to be signed under ctx's span.
func (s *lintedOnly) allowIn(ctx context.Context, h [32]byte) { s.linted.Store(h, ctx) }
func (s *lintedOnly) forget(h [32]byte)                       { s.linted.Delete(h) }

func (s *lintedOnly) Public() crypto.PublicKey { return s.key.Public() }

func (s *lintedOnly) Sign(io.Reader, []byte, crypto.SignerOpts) ([]byte, error) {
	return nil, fmt.Errorf("%w: the CA signer was asked to sign a digest, not a certificate", ErrNotLinted)
}

func (s *lintedOnly) SignMessage(r io.Reader, msg []byte, opts crypto.SignerOpts) ([]byte, error) {
	v, ok := s.linted.LoadAndDelete(sha256.Sum256(msg))
	if !ok {
		return nil, ErrNotLinted
	}
	if o, ok := s.key.(*observedSigner); ok {
		return o.signMessage(v.(context.Context), r, msg, opts)
	}
	return crypto.SignMessage(s.key, r, msg, opts)
}

// caLints are the lints a CA certificate must pass: RFC 5280, and the
// subordinate-CA lints that find a path a relying party cannot check for
// revocation (their source is the CA/B Forum, their reason RFC 5280 path
// validation with revocation along the whole path).
var caLints = []string{"e_sub_ca_crl_distribution_points_missing", "e_sub_ca_crl_distribution_points_does_not_contain_url", "w_sub_ca_aia_missing", "e_sub_ca_aia_missing"}

// LintCACertificate runs zlint on a DER CA certificate (zcrypto's parser)
// and returns the errors and warnings it finds, as "lint: details".
func LintCACertificate(der []byte) (errs, warns []string, err error) {
	zc, err := zx509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("issuance: the CA certificate does not parse (zcrypto): %w", err)
	}
	var regs []lint.Registry
	for _, f := range []lint.FilterOptions{{IncludeSources: lintSources}, {IncludeNames: caLints}} {
		reg, err := lint.GlobalRegistry().Filter(f)
		if err != nil {
			return nil, nil, fmt.Errorf("issuance: lint registry: %w", err)
		}
		regs = append(regs, reg)
	}
	seen := map[string]bool{}
	for _, reg := range regs {
		for name, r := range zlint.LintCertificateEx(zc, reg).Results {
			if seen[name] {
				continue
			}
			seen[name] = true
			switch r.Status {
			case lint.Error, lint.Fatal:
				errs = append(errs, name+": "+r.Details)
			case lint.Warn:
				warns = append(warns, name+": "+r.Details)
			}
		}
	}
	sort.Strings(errs)
	sort.Strings(warns)
	return errs, warns, nil
}
