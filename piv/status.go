package piv

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"time"

	"golang.org/x/crypto/ocsp"
)

const (
	maxOCSPResponse = 64 << 10
	maxCRL          = 32 << 20
	// clockSkew tolerates a responder clock slightly ahead of ours.
	clockSkew = 5 * time.Minute
)

// statusChecker finds a certificate's revocation status: OCSP from the AIA
// http URL, else the CRL from the CRL DP http URL; neither ⇒ fail closed.
// Answers are cached until their nextUpdate, and used for at most
// Options.MaxStatusAge after they were fetched: a card revoked at its
// issuer is refused within that age, not hours later.
type statusChecker struct {
	opts Options

	mu   sync.Mutex
	ocsp map[string]ocspEntry // issuer key hash ‖ serial
	crls map[string]*crlEntry // URL
}

type ocspEntry struct {
	status     int
	revokedAt  time.Time
	nextUpdate time.Time
	fetched    time.Time
}

type crlEntry struct {
	issuerRaw  []byte
	revoked    map[string]time.Time // serial (hex) → revocation time
	nextUpdate time.Time
	fetched    time.Time
}

// fresh reports whether a cached answer fetched at fetched, valid until
// nextUpdate, may still be used at now.
func (s *statusChecker) fresh(now, fetched, nextUpdate time.Time) bool {
	return now.Before(nextUpdate) && now.Sub(fetched) < s.opts.MaxStatusAge
}

func newStatusChecker(opts Options) *statusChecker {
	return &statusChecker{opts: opts, ocsp: map[string]ocspEntry{}, crls: map[string]*crlEntry{}}
}

// check returns "ocsp" or "crl" for a good status, ErrRevoked, or
// ErrStatusUnavailable with both reasons.
func (s *statusChecker) check(ctx context.Context, leaf, issuer *x509.Certificate) (string, error) {
	st, revokedAt, ocspErr := s.ocspStatus(ctx, leaf, issuer)
	if ocspErr == nil {
		switch st {
		case ocsp.Good:
			return "ocsp", nil
		case ocsp.Revoked:
			return "", fmt.Errorf("%w (OCSP, %s): the card must not be used", ErrRevoked, revokedAt.UTC().Format(time.RFC3339))
		}
		ocspErr = errors.New("the responder does not know the certificate")
	}
	revoked, at, crlErr := s.crlStatus(ctx, leaf, issuer)
	if crlErr == nil {
		if revoked {
			return "", fmt.Errorf("%w (CRL, %s): the card must not be used", ErrRevoked, at.UTC().Format(time.RFC3339))
		}
		return "crl", nil
	}
	return "", fmt.Errorf("%w: OCSP: %v; CRL: %v. Try again later", ErrStatusUnavailable, ocspErr, crlErr)
}

func httpURL(urls []string) (string, bool) {
	for _, u := range urls {
		if p, err := url.Parse(u); err == nil && p.Scheme == "http" && p.Host != "" {
			return u, true
		}
	}
	return "", false
}

func ocspKey(leaf, issuer *x509.Certificate) string {
	h := sha256.Sum256(issuer.RawSubjectPublicKeyInfo)
	return string(h[:]) + leaf.SerialNumber.String()
}

func (s *statusChecker) ocspStatus(ctx context.Context, leaf, issuer *x509.Certificate) (int, time.Time, error) {
	now := s.opts.Now()
	key := ocspKey(leaf, issuer)
	s.mu.Lock()
	e, ok := s.ocsp[key]
	s.mu.Unlock()
	if ok && s.fresh(now, e.fetched, e.nextUpdate) {
		return e.status, e.revokedAt, nil
	}
	u, ok := httpURL(leaf.OCSPServer)
	if !ok {
		return 0, time.Time{}, errors.New("no http OCSP URL in the certificate's AIA")
	}
	req, err := ocsp.CreateRequest(leaf, issuer, &ocsp.RequestOptions{Hash: crypto.SHA256})
	if err != nil {
		return 0, time.Time{}, err
	}
	body, err := s.fetch(ctx, http.MethodPost, u, req, "application/ocsp-request", s.opts.OCSPTimeout, maxOCSPResponse)
	if err != nil {
		return 0, time.Time{}, err
	}
	resp, err := ocsp.ParseResponseForCert(body, leaf, issuer)
	if err != nil {
		return 0, time.Time{}, fmt.Errorf("response from %s: %v", u, err)
	}
	if err := checkResponder(resp, issuer, now); err != nil {
		return 0, time.Time{}, fmt.Errorf("response from %s: %v", u, err)
	}
	if resp.SerialNumber.Cmp(leaf.SerialNumber) != 0 {
		return 0, time.Time{}, fmt.Errorf("response from %s is for another serial", u)
	}
	if resp.ThisUpdate.After(now.Add(clockSkew)) {
		return 0, time.Time{}, fmt.Errorf("response from %s has thisUpdate %s in the future", u, resp.ThisUpdate.UTC().Format(time.RFC3339))
	}
	if resp.NextUpdate.IsZero() || !now.Before(resp.NextUpdate) {
		return 0, time.Time{}, fmt.Errorf("response from %s is stale (nextUpdate %s)", u, resp.NextUpdate.UTC().Format(time.RFC3339))
	}
	s.mu.Lock()
	s.ocsp[key] = ocspEntry{status: resp.Status, revokedAt: resp.RevokedAt, nextUpdate: resp.NextUpdate, fetched: now}
	s.mu.Unlock()
	return resp.Status, resp.RevokedAt, nil
}

// checkResponder: the response is signed by the issuer itself, or by a
// delegated responder the issuer certified for id-kp-OCSPSigning (RFC 6960
// §4.2.2.2). ParseResponseForCert has checked the signatures.
func checkResponder(resp *ocsp.Response, issuer *x509.Certificate, now time.Time) error {
	if resp.Certificate == nil || bytes.Equal(resp.Certificate.Raw, issuer.Raw) {
		return nil
	}
	rc := resp.Certificate
	if !slices.Contains(rc.ExtKeyUsage, x509.ExtKeyUsageOCSPSigning) {
		return errors.New("the responder certificate lacks id-kp-OCSPSigning")
	}
	if !bytes.Equal(rc.RawIssuer, issuer.RawSubject) {
		return errors.New("the responder certificate is not issued by the certificate's issuer")
	}
	if now.Before(rc.NotBefore) || now.After(rc.NotAfter) {
		return errors.New("the responder certificate is outside its validity")
	}
	return nil
}

func (s *statusChecker) crlStatus(ctx context.Context, leaf, issuer *x509.Certificate) (bool, time.Time, error) {
	u, ok := httpURL(leaf.CRLDistributionPoints)
	if !ok {
		return false, time.Time{}, errors.New("no http CRL distribution point")
	}
	now := s.opts.Now()
	s.mu.Lock()
	e, ok := s.crls[u]
	s.mu.Unlock()
	if !ok || !s.fresh(now, e.fetched, e.nextUpdate) || !bytes.Equal(e.issuerRaw, issuer.Raw) {
		var err error
		if e, err = s.fetchCRL(ctx, u, issuer, now); err != nil {
			return false, time.Time{}, err
		}
		s.mu.Lock()
		s.crls[u] = e
		s.mu.Unlock()
	}
	at, revoked := e.revoked[leaf.SerialNumber.Text(16)]
	return revoked, at, nil
}

func (s *statusChecker) fetchCRL(ctx context.Context, u string, issuer *x509.Certificate, now time.Time) (*crlEntry, error) {
	der, err := s.fetch(ctx, http.MethodGet, u, nil, "", s.opts.CRLTimeout, maxCRL)
	if err != nil {
		return nil, err
	}
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		return nil, fmt.Errorf("CRL from %s: %v", u, err)
	}
	if !bytes.Equal(crl.RawIssuer, issuer.RawSubject) {
		return nil, fmt.Errorf("CRL from %s is issued by %q, not the certificate's issuer", u, crl.Issuer)
	}
	if err := crl.CheckSignatureFrom(issuer); err != nil {
		return nil, fmt.Errorf("CRL from %s: bad signature: %v", u, err)
	}
	if crl.ThisUpdate.After(now.Add(clockSkew)) {
		return nil, fmt.Errorf("CRL from %s has thisUpdate in the future", u)
	}
	if crl.NextUpdate.IsZero() || !now.Before(crl.NextUpdate) {
		return nil, fmt.Errorf("CRL from %s is stale (nextUpdate %s)", u, crl.NextUpdate.UTC().Format(time.RFC3339))
	}
	e := &crlEntry{issuerRaw: issuer.Raw, revoked: map[string]time.Time{}, nextUpdate: crl.NextUpdate, fetched: now}
	for _, r := range crl.RevokedCertificateEntries {
		e.revoked[new(big.Int).Set(r.SerialNumber).Text(16)] = r.RevocationTime
	}
	return e, nil
}

// fetch does one bounded HTTP exchange.
func (s *statusChecker) fetch(ctx context.Context, method, u string, body []byte, contentType string, timeout time.Duration, limit int64) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, r)
	if err != nil {
		return nil, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := s.opts.HTTPClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s %s: HTTP %d", method, u, resp.StatusCode)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("%s %s: %v", method, u, err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s %s: response over %d bytes", method, u, limit)
	}
	return b, nil
}
