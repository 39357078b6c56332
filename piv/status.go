package piv

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/crypto/cryptobyte"
	casn1 "golang.org/x/crypto/cryptobyte/asn1"
	"golang.org/x/crypto/ocsp"
	"golang.org/x/sync/singleflight"
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
//
// A sign-in wave must not become a wave of fetches: one fetch per OCSP
// request (issuer key, serial) and per CRL serves every verification that
// needs it meanwhile, and the caches are bounded in size and age.
type statusChecker struct {
	opts Options

	mu   sync.Mutex
	ocsp *statusCache[ocspEntry] // issuer key hash ‖ serial
	crls *statusCache[*crlEntry] // URL ‖ issuer hash

	flights singleflight.Group
	// failed are the URLs whose last exchange timed out, and when: not asked
	// again for failedFetchRetry (under mu).
	failed map[string]failedFetch
	// joined, if set, is called when a verification waits on a fetch
	// (tests: release a slow responder once every waiter is there).
	joined func(flight string)
}

// failedFetchRetry is how long a status URL whose exchange timed out is
// not asked again: the verifications meanwhile fail over to the CRL (or
// fail closed) at once. (A refused connection or an HTTP error answers at
// once, and is asked again at once: a responder back up is used at once.)
// Without it, a linkage run over the cards of an issuer whose responder
// drops traffic waited the fetch timeout once per card, and a sign-in
// wave during an outage waited it once per singleflight. At most
// maxFailedURLs are remembered.
const (
	failedFetchRetry = 15 * time.Second
	maxFailedURLs    = 1024
)

// errRecentlyFailed: a status URL was not asked, as its last exchange
// timed out less than failedFetchRetry ago.
var errRecentlyFailed = errors.New("not asked again yet")

type failedFetch struct {
	at  time.Time
	err error
}

// Bounds of the status caches. An OCSP answer is ~100 bytes; a CRL of a
// large issuer is megabytes, and a deployment trusts a few dozen issuers.
const (
	maxCachedOCSP = 16384
	maxCachedCRLs = 64
)

type ocspEntry struct {
	status    int
	revokedAt time.Time
	reason    int // RFC 5280 CRLReason (0: unspecified, or none given)
}

// CRL extensions that decide what a CRL covers (RFC 5280 §5.2.4, §5.2.5).
var (
	oidDeltaCRLIndicator        = asn1.ObjectIdentifier{2, 5, 29, 27}
	oidIssuingDistributionPoint = asn1.ObjectIdentifier{2, 5, 29, 28}
)

// crlRevoked is a CRL entry: when, and why (RFC 5280 CRLReason; 0:
// unspecified, or no reason code).
type crlRevoked struct {
	at     time.Time
	reason int
}

type crlEntry struct {
	revoked map[string]crlRevoked // serial (hex) → its entry
	// onlyUser and onlyCA are the CRL's scope (its IDP): a CRL of CA
	// certificates only says nothing of a card, and the other way round.
	onlyUser, onlyCA bool
	// dp, when the IDP names its distribution point, are its URIs: the
	// CRL is the partition for a certificate naming one of them.
	dp []string
}

var (
	oidCRLNumber              = asn1.ObjectIdentifier{2, 5, 29, 20}
	oidAuthorityKeyIdentifier = asn1.ObjectIdentifier{2, 5, 29, 35}
)

// crlScope reads what a CRL fetched from u covers into e, or says why it
// cannot be used as the issuer's complete CRL for u (RFC 5280 §5.2.4,
// §5.2.5, §6.3.3): a delta CRL, a partition for another distribution
// point, one for some reasons only, an indirect CRL, one of attribute
// certificates, or one with a critical extension credgw does not know.
// Such a CRL lists only part of the revocations, so a serial it does not
// list is not a good card.
func crlScope(crl *x509.RevocationList, u string, e *crlEntry) error {
	for _, ext := range crl.Extensions {
		switch {
		case ext.Id.Equal(oidDeltaCRLIndicator):
			return fmt.Errorf("CRL from %s is a delta CRL; the issuer's complete CRL is needed", u)
		case ext.Id.Equal(oidIssuingDistributionPoint):
			if err := readIDP(ext.Value, e); err != nil {
				return fmt.Errorf("CRL from %s: %v", u, err)
			}
		case ext.Id.Equal(oidCRLNumber), ext.Id.Equal(oidAuthorityKeyIdentifier):
		case ext.Critical:
			return fmt.Errorf("CRL from %s has a critical extension %v that credgw does not know", u, ext.Id)
		}
	}
	return nil
}

// readIDP reads an issuingDistributionPoint (RFC 5280 §5.2.5).
func readIDP(der []byte, e *crlEntry) error {
	bad := errors.New("its issuingDistributionPoint does not parse")
	in := cryptobyte.String(der)
	var idp cryptobyte.String
	if !in.ReadASN1(&idp, casn1.SEQUENCE) || !in.Empty() {
		return bad
	}
	var dpn cryptobyte.String
	var hasDPN bool
	if !idp.ReadOptionalASN1(&dpn, &hasDPN, casn1.Tag(0).Constructed().ContextSpecific()) {
		return bad
	}
	if hasDPN {
		var names cryptobyte.String
		if !dpn.ReadASN1(&names, casn1.Tag(0).Constructed().ContextSpecific()) || !dpn.Empty() {
			return errors.New("its issuingDistributionPoint names its distribution point relative to the issuer; credgw matches full URIs only")
		}
		var uris []string
		for !names.Empty() {
			var name cryptobyte.String
			var tag casn1.Tag
			if !names.ReadAnyASN1(&name, &tag) {
				return bad
			}
			if tag == casn1.Tag(6).ContextSpecific() {
				uris = append(uris, string(name))
			}
		}
		if len(uris) == 0 {
			return errors.New("its issuingDistributionPoint names no URI; credgw matches distribution points by URI")
		}
		e.dp = uris
	}
	flag := func(tag uint8, out *bool) bool {
		var v cryptobyte.String
		var present bool
		if !idp.ReadOptionalASN1(&v, &present, casn1.Tag(tag).ContextSpecific()) {
			return false
		}
		if !present {
			return true
		}
		// [n] IMPLICIT BOOLEAN: one octet, 0xFF true, 0x00 false in DER.
		if len(v) != 1 || (v[0] != 0 && v[0] != 0xff) {
			return false
		}
		*out = v[0] == 0xff
		return true
	}
	var indirect, attrs, someReasons bool
	if !flag(1, &e.onlyUser) || !flag(2, &e.onlyCA) {
		return bad
	}
	var reasons cryptobyte.String
	if !idp.ReadOptionalASN1(&reasons, &someReasons, casn1.Tag(3).ContextSpecific()) {
		return bad
	}
	if !flag(4, &indirect) || !flag(5, &attrs) || !idp.Empty() {
		return bad
	}
	switch {
	case someReasons:
		return errors.New("it covers some reasons only (onlySomeReasons); the issuer's complete CRL is needed")
	case indirect:
		return errors.New("it is an indirect CRL, which credgw does not accept")
	case attrs:
		return errors.New("it covers attribute certificates only")
	case e.onlyUser && e.onlyCA:
		return errors.New("its issuingDistributionPoint says both onlyContainsUserCerts and onlyContainsCACerts")
	}
	return nil
}

func newStatusChecker(opts Options) *statusChecker {
	return &statusChecker{opts: opts,
		ocsp: newStatusCache[ocspEntry](maxCachedOCSP, opts.MaxStatusAge),
		crls: newStatusCache[*crlEntry](maxCachedCRLs, opts.MaxStatusAge)}
}

// check returns "ocsp" or "crl" for a good status, ErrRevoked, or
// ErrStatusUnavailable with both reasons.
func (s *statusChecker) check(ctx context.Context, leaf, issuer *x509.Certificate) (string, error) {
	e, ocspErr := s.ocspStatus(ctx, leaf, issuer)
	if ocspErr == nil {
		switch e.status {
		case ocsp.Good:
			return "ocsp", nil
		case ocsp.Revoked:
			return "", &RevokedError{Source: "OCSP", Reason: e.reason, At: e.revokedAt}
		}
		ocspErr = errors.New("the responder does not know the certificate")
	}
	if err := ctx.Err(); err != nil {
		// The caller went away: its status is nobody's concern now,
		// and its absence is not the responders' fault.
		return "", fmt.Errorf("piv: revocation status: %w", err)
	}
	revoked, entry, crlErr := s.crlStatus(ctx, leaf, issuer)
	if crlErr == nil {
		if revoked {
			return "", &RevokedError{Source: "CRL", Reason: entry.reason, At: entry.at}
		}
		return "crl", nil
	}
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("piv: revocation status: %w", err)
	}
	return "", fmt.Errorf("%w: OCSP: %v; CRL: %v. Try again later", ErrStatusUnavailable, ocspErr, crlErr)
}

// shared runs fetch once for every caller asking for the same flight at the
// same time. The fetch belongs to none of them: it runs on a context of its
// own (each fetch has its timeout), so a caller that gives up leaves it
// running for the others, and nothing a caller's context carries (the
// gateway's admission slot) travels with it. Each caller's wait is its own
// network wait (Options.NetworkWait).
func shared[V any](ctx context.Context, s *statusChecker, flight string, fetch func(context.Context) (V, error)) (V, error) {
	var zero V
	ch := s.flights.DoChan(flight, func() (any, error) {
		// Only the trace travels: the fetch's span is a child of the
		// first caller's.
		return fetch(trace.ContextWithSpanContext(context.Background(), trace.SpanContextFromContext(ctx)))
	})
	if s.joined != nil {
		s.joined(flight)
	}
	end := func() error { return nil }
	if s.opts.NetworkWait != nil {
		end = s.opts.NetworkWait(ctx)
	}
	var r singleflight.Result
	select {
	case r = <-ch:
	case <-ctx.Done():
		r.Err = ctx.Err()
	}
	if err := end(); err != nil {
		return zero, errors.Join(r.Err, err)
	}
	if r.Err != nil {
		return zero, r.Err
	}
	return r.Val.(V), nil
}

func httpURL(urls []string) (string, bool) {
	for _, u := range urls {
		if p, err := url.Parse(u); err == nil && p.Scheme == "http" && p.Host != "" {
			return u, true
		}
	}
	return "", false
}

// ocspKey names a card's OCSP answer by its issuer (the whole certificate:
// two CAs that share a key under different names are two issuers, as the
// CertID's name hash says) and its serial.
func ocspKey(leaf, issuer *x509.Certificate) string {
	h := sha256.Sum256(issuer.Raw)
	return string(h[:]) + leaf.SerialNumber.String()
}

// SHA1Signed reports a signature made over SHA-1: status signatures must
// not be (Common Policy §7.1.3, SP 800-78), and crypto/x509's
// CheckSignature, which the OCSP and CRL checks use, still takes them.
func SHA1Signed(a x509.SignatureAlgorithm) bool {
	return a == x509.SHA1WithRSA || a == x509.ECDSAWithSHA1 || a == x509.DSAWithSHA1
}

func (s *statusChecker) ocspStatus(ctx context.Context, leaf, issuer *x509.Certificate) (ocspEntry, error) {
	if _, ok := httpURL(leaf.OCSPServer); !ok {
		// Nothing to fetch, so no failed fetch to count: CA
		// certificates often name only a CRL.
		return ocspEntry{}, errors.New("no http OCSP URL in the certificate's AIA")
	}
	key := ocspKey(leaf, issuer)
	if e, ok := s.cachedOCSP(key); ok {
		return e, nil
	}
	e, err := shared(ctx, s, "ocsp\x00"+key, func(ctx context.Context) (ocspEntry, error) {
		// A verification that missed the cache just before the previous
		// flight stored its answer finds it here.
		if e, ok := s.cachedOCSP(key); ok {
			return e, nil
		}
		return s.fetchOCSP(ctx, key, leaf, issuer)
	})
	return e, err
}

func (s *statusChecker) cachedOCSP(key string) (ocspEntry, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ocsp.get(key, s.opts.Now())
}

func (s *statusChecker) fetchOCSP(ctx context.Context, key string, leaf, issuer *x509.Certificate) (e ocspEntry, err error) {
	ctx, span := tracer().Start(ctx, "piv.ocsp_fetch", trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(attribute.String("credgw.card.serial", leaf.SerialNumber.Text(16))))
	defer func() { s.fetched(span, "ocsp", err) }()
	var none ocspEntry
	u, ok := httpURL(leaf.OCSPServer)
	if !ok {
		return none, errors.New("no http OCSP URL in the certificate's AIA")
	}
	span.SetAttributes(attribute.String("url.full", u))
	req, err := ocsp.CreateRequest(leaf, issuer, &ocsp.RequestOptions{Hash: crypto.SHA256})
	if err != nil {
		return none, err
	}
	now := s.opts.Now() // the answer's age counts from before the request
	body, err := s.fetch(ctx, http.MethodPost, u, req, "application/ocsp-request", s.opts.OCSPTimeout, maxOCSPResponse)
	if err != nil {
		return none, err
	}
	resp, err := ocsp.ParseResponseForCert(body, leaf, issuer)
	if err != nil {
		return none, fmt.Errorf("response from %s: %v", u, err)
	}
	// A delegated responder's certificate is checked here; the issuer's
	// own (sent along) belongs to path validation.
	if SHA1Signed(resp.SignatureAlgorithm) || resp.Certificate != nil && !bytes.Equal(resp.Certificate.Raw, issuer.Raw) && SHA1Signed(resp.Certificate.SignatureAlgorithm) {
		return none, fmt.Errorf("response from %s is signed with SHA-1, which status signatures may not use", u)
	}
	if err := checkResponder(resp, issuer, now); err != nil {
		return none, fmt.Errorf("response from %s: %v", u, err)
	}
	if err := checkOCSPCertID(body, leaf, issuer); err != nil {
		return none, fmt.Errorf("response from %s: %v", u, err)
	}
	if resp.SerialNumber.Cmp(leaf.SerialNumber) != 0 {
		return none, fmt.Errorf("response from %s is for another serial", u)
	}
	if resp.ThisUpdate.After(now.Add(clockSkew)) {
		return none, fmt.Errorf("response from %s has thisUpdate %s in the future", u, resp.ThisUpdate.UTC().Format(time.RFC3339))
	}
	if resp.NextUpdate.IsZero() || !now.Before(resp.NextUpdate) {
		return none, fmt.Errorf("response from %s is stale (nextUpdate %s)", u, resp.NextUpdate.UTC().Format(time.RFC3339))
	}
	// Last, as it may fetch a CRL: the delegated responder's own status.
	if err := s.checkDelegatedStatus(ctx, resp.Certificate, issuer, leaf); err != nil {
		return none, fmt.Errorf("response from %s: %v", u, err)
	}
	e = ocspEntry{status: resp.Status, revokedAt: resp.RevokedAt, reason: resp.RevocationReason}
	s.mu.Lock()
	s.ocsp.put(key, e, now, resp.NextUpdate)
	s.mu.Unlock()
	return e, nil
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

// oidOCSPNoCheck is id-pkix-ocsp-nocheck (RFC 6960 §4.2.2.2.1).
var oidOCSPNoCheck = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 48, 1, 5}

// checkDelegatedStatus: a delegated responder's certificate (one the
// issuer certified for OCSP signing, not the issuer itself) without
// id-pkix-ocsp-nocheck has its own status checked, on the issuer's CRL
// (RFC 6960 §4.2.2.2.1): a responder whose certificate was revoked (its
// key compromised) must not go on vouching for cards. Unknown status
// fails the OCSP answer; the card's CRL is asked instead.
//
// The responder certificate's own CRL distribution point is used, else the
// card's (the same issuer's CRL): a responder certificate often names none.
func (s *statusChecker) checkDelegatedStatus(ctx context.Context, rc, issuer, card *x509.Certificate) error {
	if rc == nil || bytes.Equal(rc.Raw, issuer.Raw) {
		return nil
	}
	for _, e := range rc.Extensions {
		if e.Id.Equal(oidOCSPNoCheck) {
			return nil
		}
	}
	complete := false
	if _, ok := httpURL(rc.CRLDistributionPoints); !ok && card != nil {
		withDP := *rc
		withDP.CRLDistributionPoints = card.CRLDistributionPoints
		rc, complete = &withDP, true
	}
	revoked, _, err := s.crlStatusOf(ctx, rc, issuer, complete)
	if err != nil {
		return fmt.Errorf("the delegated responder's certificate has no id-pkix-ocsp-nocheck and its own status is unknown: %v", err)
	}
	if revoked {
		return fmt.Errorf("the delegated responder's certificate (serial %s) is revoked by its issuer", rc.SerialNumber.Text(16))
	}
	return nil
}

func (s *statusChecker) crlStatus(ctx context.Context, leaf, issuer *x509.Certificate) (bool, crlRevoked, error) {
	return s.crlStatusOf(ctx, leaf, issuer, false)
}

// crlStatusOf is crlStatus; complete refuses a partitioned CRL (one with
// an issuing distribution point naming DPs): a certificate that names no
// distribution point of its own is covered by the complete CRL only (RFC
// 5280 §6.3.3), whatever URL it is looked up at.
func (s *statusChecker) crlStatusOf(ctx context.Context, leaf, issuer *x509.Certificate, complete bool) (bool, crlRevoked, error) {
	u, ok := httpURL(leaf.CRLDistributionPoints)
	if !ok {
		return false, crlRevoked{}, errors.New("no http CRL distribution point")
	}
	// One entry per URL and issuer: a CRL is used only for the issuer it
	// was checked against.
	ih := sha256.Sum256(issuer.Raw)
	key := u + "\x00" + string(ih[:])
	e, ok := s.cachedCRL(key)
	if !ok {
		var err error
		e, err = shared(ctx, s, "crl\x00"+key, func(ctx context.Context) (*crlEntry, error) {
			if e, ok := s.cachedCRL(key); ok {
				return e, nil
			}
			return s.fetchCRL(ctx, key, u, issuer)
		})
		if err != nil {
			return false, crlRevoked{}, err
		}
	}
	switch {
	case complete && e.dp != nil:
		return false, crlRevoked{}, fmt.Errorf("the CRL from %s is the partition for distribution point %v, not a complete CRL", u, e.dp)
	case e.dp != nil && !slices.ContainsFunc(leaf.CRLDistributionPoints, func(d string) bool { return slices.Contains(e.dp, d) }):
		return false, crlRevoked{}, fmt.Errorf("the CRL from %s is the partition for distribution point %v, none of the certificate's %v", u, e.dp, leaf.CRLDistributionPoints)
	case e.onlyCA && !leaf.IsCA:
		return false, crlRevoked{}, fmt.Errorf("the CRL from %s covers CA certificates only", u)
	case e.onlyUser && leaf.IsCA:
		return false, crlRevoked{}, fmt.Errorf("the CRL from %s covers end-entity certificates only", u)
	}
	r, revoked := e.revoked[leaf.SerialNumber.Text(16)]
	return revoked, r, nil
}

func (s *statusChecker) cachedCRL(key string) (*crlEntry, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.crls.get(key, s.opts.Now())
}

func (s *statusChecker) fetchCRL(ctx context.Context, key, u string, issuer *x509.Certificate) (_ *crlEntry, err error) {
	ctx, span := tracer().Start(ctx, "piv.crl_fetch", trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(attribute.String("url.full", u)))
	defer func() { s.fetched(span, "crl", err) }()
	now := s.opts.Now()
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
	if SHA1Signed(crl.SignatureAlgorithm) {
		return nil, fmt.Errorf("CRL from %s is signed with SHA-1, which status signatures may not use", u)
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
	e := &crlEntry{revoked: map[string]crlRevoked{}}
	if err := crlScope(crl, u, e); err != nil {
		return nil, err
	}
	for _, r := range crl.RevokedCertificateEntries {
		e.revoked[new(big.Int).Set(r.SerialNumber).Text(16)] = crlRevoked{at: r.RevocationTime, reason: r.ReasonCode}
	}
	s.mu.Lock()
	s.crls.put(key, e, now, crl.NextUpdate)
	s.mu.Unlock()
	return e, nil
}

// fetch does one bounded HTTP exchange, unless the last one with u timed
// out less than failedFetchRetry ago.
func (s *statusChecker) fetch(ctx context.Context, method, u string, body []byte, contentType string, timeout time.Duration, limit int64) ([]byte, error) {
	now := s.opts.Now()
	s.mu.Lock()
	f, down := s.failed[u]
	s.mu.Unlock()
	if down && now.Sub(f.at) < failedFetchRetry && !now.Before(f.at) {
		return nil, fmt.Errorf("%w (until %s): its last exchange timed out: %w", errRecentlyFailed, f.at.Add(failedFetchRetry).UTC().Format(time.RFC3339), f.err)
	}
	b, timedOut, err := s.exchange(ctx, method, u, body, contentType, timeout, limit)
	now = s.opts.Now() // the wait counts from the failure
	s.mu.Lock()
	defer s.mu.Unlock()
	if !timedOut {
		delete(s.failed, u)
		return b, err
	}
	if s.failed == nil {
		s.failed = map[string]failedFetch{}
	}
	if len(s.failed) >= maxFailedURLs {
		for k, v := range s.failed {
			if now.Sub(v.at) >= failedFetchRetry {
				delete(s.failed, k)
			}
		}
	}
	if len(s.failed) < maxFailedURLs {
		s.failed[u] = failedFetch{at: now, err: err}
	}
	return nil, err
}

// exchange does one bounded HTTP exchange; timedOut reports a failure by
// its timeout (a responder that drops traffic, or answers too slowly).
func (s *statusChecker) exchange(ctx context.Context, method, u string, body []byte, contentType string, timeout time.Duration, limit int64) (_ []byte, timedOut bool, _ error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	timeoutOf := func(err error) bool {
		var ne net.Error
		return ctx.Err() != nil || errors.As(err, &ne) && ne.Timeout()
	}
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, r)
	if err != nil {
		return nil, false, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := s.opts.HTTPClient.Do(req)
	if err != nil {
		return nil, timeoutOf(err), fmt.Errorf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, false, fmt.Errorf("%s %s: HTTP %d", method, u, resp.StatusCode)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, timeoutOf(err), fmt.Errorf("%s %s: %v", method, u, err)
	}
	if int64(len(b)) > limit {
		return nil, false, fmt.Errorf("%s %s: response over %d bytes", method, u, limit)
	}
	return b, false, nil
}

// tracer is PKI-AUTH's, from the global provider: a no-op until the
// gateway installs one.
//
// It is looked up at each span, not kept: the gateway may install and
// replace the global provider after this package is loaded.
func tracer() trace.Tracer { return otel.Tracer("github.com/credgw/credgw/piv") }

// fetched ends a fetch's span and reports a failure (Options.StatusFetchFailed).
func (s *statusChecker) fetched(span trace.Span, source string, err error) {
	if err != nil {
		span.SetStatus(codes.Error, "fetch failed")
		if s.opts.StatusFetchFailed != nil && !errors.Is(err, errRecentlyFailed) {
			s.opts.StatusFetchFailed(source)
		}
	}
	span.End()
}
