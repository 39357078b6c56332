package issuance

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"fmt"
	"sort"
	"strings"

	zx509 "github.com/zmap/zcrypto/x509"
	"github.com/zmap/zlint/v3"
	"github.com/zmap/zlint/v3/lint"
)

// linter lints a to-be-signed certificate signed by a throwaway key under an
// issuer that looks exactly like the CA (name, key identifier, key type), as
// Boulder does: the lint sees the real encoding, and a lint failure signs
// nothing with the CA key.
type linter struct {
	registry lint.Registry
	issuer   *x509.Certificate // the CA certificate with the throwaway key
	key      crypto.Signer
}

// lintSources are the lints credgw gates on: RFC 5280. Others (CA/B Forum
// rules for public TLS) do not apply to a Federal PKI S/MIME/auth CA.
var lintSources = lint.SourceList{lint.RFC5280}

func newLinter(ca *x509.Certificate) (*linter, error) {
	reg, err := lint.GlobalRegistry().Filter(lint.FilterOptions{IncludeSources: lintSources})
	if err != nil {
		return nil, fmt.Errorf("issuance: lint registry: %w", err)
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
	return &linter{registry: reg, issuer: &fake, key: key}, nil
}

// lint returns the warnings, or an ErrLint error naming every error or
// fatal finding.
func (l *linter) lint(tbs *x509.Certificate) ([]string, error) {
	der, err := x509.CreateCertificate(rand.Reader, tbs, l.issuer, tbs.PublicKey, l.key)
	if err != nil {
		return nil, fmt.Errorf("%w: the certificate cannot be encoded: %v", ErrLint, err)
	}
	zc, err := zx509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("%w: the encoded certificate does not parse: %v", ErrLint, err)
	}
	rs := zlint.LintCertificateEx(zc, l.registry)
	var errs, warns []string
	for name, r := range rs.Results {
		switch r.Status {
		case lint.Error, lint.Fatal:
			errs = append(errs, name+": "+r.Details)
		case lint.Warn:
			warns = append(warns, name)
		}
	}
	sort.Strings(errs)
	sort.Strings(warns)
	if len(errs) > 0 {
		return warns, fmt.Errorf("%w: %s", ErrLint, strings.Join(errs, "; "))
	}
	return warns, nil
}
