package issuance

import (
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	zx509 "github.com/zmap/zcrypto/x509"
	"github.com/zmap/zlint/v3"
	"github.com/zmap/zlint/v3/lint"
)

// crlLintSources are the zlint CRL lints credgw answers to: RFC 5280 and
// the community lints. The CA/B Forum lints are for publicly trusted TLS
// CAs, not a Federal PKI issuing CA.
var crlLintSources = lint.SourceList{lint.RFC5280, lint.Community}

// zlintCRL returns every error, fatal or warning zlint's CRL lints find.
func zlintCRL(der []byte) []string {
	crl, err := zx509.ParseRevocationList(der)
	if err != nil {
		return []string{"the CRL does not parse: " + err.Error()}
	}
	reg, err := lint.GlobalRegistry().Filter(lint.FilterOptions{IncludeSources: crlLintSources})
	if err != nil {
		return []string{err.Error()}
	}
	var out []string
	for name, r := range zlint.LintRevocationListEx(crl, reg).Results {
		if r.Status == lint.Error || r.Status == lint.Fatal || r.Status == lint.Warn {
			out = append(out, fmt.Sprintf("%s (%s): %s", name, r.Status, r.Details))
		}
	}
	sort.Strings(out)
	return out
}

// lintCRL fails t on any zlint finding in der.
func lintCRL(t testing.TB, der []byte) {
	t.Helper()
	for _, f := range zlintCRL(der) {
		t.Errorf("zlint CRL: %s", f)
	}
}

// crlLints collects the findings on every CRL the test CAs sign (the
// afterCRL hook); TestMain fails the run on any.
var crlLints crlLintLog

type crlLintLog struct {
	mu       sync.Mutex
	n        int
	findings []string
}

func (l *crlLintLog) check(der []byte) {
	f := zlintCRL(der)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.n++
	l.findings = append(l.findings, f...)
}

func (l *crlLintLog) report() (int, []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.n, l.findings
}

// TestZlintCRLCatchesRevocationAfterThisUpdate: the helper is not blind —
// the CRL credgw made before this fix (thisUpdate a minute back, a
// revocation just now) is reported.
func TestZlintCRLCatchesRevocationAfterThisUpdate(t *testing.T) {
	der := oldStyleCRL(t)
	found := false
	for _, f := range zlintCRL(der) {
		if strings.HasPrefix(f, "e_crl_revocation_time_after_this_update") {
			found = true
		}
	}
	if !found {
		t.Fatalf("zlint did not report the old CRL: %v", zlintCRL(der))
	}
}

// oldStyleCRL is a CRL dated as credgw dated them before: thisUpdate one
// minute back, a certificate revoked now.
func oldStyleCRL(t *testing.T) []byte {
	t.Helper()
	key := p256(t)
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "old style"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, SubjectKeyId: []byte{1, 2, 3, 4},
	}
	caDER, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number: big.NewInt(1), ThisUpdate: now.Add(-time.Minute).Truncate(time.Second), NextUpdate: now.Add(time.Hour),
		RevokedCertificateEntries: []x509.RevocationListEntry{{SerialNumber: big.NewInt(7), RevocationTime: now}},
	}, ca, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}
