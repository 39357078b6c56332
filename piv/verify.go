package piv

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Why a PIV certificate is refused. Each wraps into a *VerifyError whose
// message says what is wrong and what to do.
var (
	ErrMalformed = errors.New("piv: malformed certificate")
	// ErrNotThisCard means a Digital Signature certificate is not bound
	// to the card beyond its subject name (sameCard): its email is not
	// taken, and the sign-in goes on without it.
	ErrNotThisCard       = errors.New("piv: the certificate is not shown to be this card's")
	ErrUntrusted         = errors.New("piv: certificate does not chain to a configured PIV trust anchor")
	ErrExpired           = errors.New("piv: certificate expired")
	ErrNotYetValid       = errors.New("piv: certificate not yet valid")
	ErrPolicy            = errors.New("piv: certificate policy not accepted")
	ErrKeyUsage          = errors.New("piv: key usage not accepted")
	ErrKey               = errors.New("piv: public key not accepted")
	ErrRevoked           = errors.New("piv: certificate revoked")
	ErrStatusUnavailable = errors.New("piv: revocation status unavailable")
)

// RevokedError is ErrRevoked with what the issuer said: where (OCSP or
// CRL), the RFC 5280 CRLReason (0: unspecified, or none given) and when.
type RevokedError struct {
	Source string
	Reason int
	At     time.Time
}

func (e *RevokedError) Error() string {
	return fmt.Sprintf("%v (%s, %s): the card must not be used", ErrRevoked, e.Source, e.At.UTC().Format(time.RFC3339))
}

// Is makes a RevokedError an ErrRevoked.
func (e *RevokedError) Is(target error) bool { return target == ErrRevoked }

// Compromise reports a revocation for a compromised key (keyCompromise,
// cACompromise): what the key signed is in doubt, not only from now.
func (e *RevokedError) Compromise() bool { return e.Reason == 1 || e.Reason == 2 }

// Policies that are never proof of a PIV card: derived PIV (the credential
// credgw issues) and PIV-I.
var refusedPolicies = []asn1.ObjectIdentifier{
	PolicyDerivedPIVAuth, PolicyDerivedPIVAuthHW,
	PolicyPIVIAuthentication, PolicyPIVICardAuth, PolicyPIVIContentSigning, PolicyPIVIHardware,
}

// Policies a card's Digital Signature certificate may assert (Common Policy:
// id-fpki-common-policy, -hardware, -high).
var signaturePolicies = []asn1.ObjectIdentifier{PolicyCommonPolicy, PolicyCommonHardware, PolicyCommonHigh}

// Options configures a Verifier.
type Options struct {
	// Roots are the PIV trust anchors (e.g. Federal Common Policy CA G2).
	Roots *x509.CertPool
	// Intermediates are CA certificates to build paths with, in addition
	// to those a caller sends.
	Intermediates []*x509.Certificate
	// Policies: the PIV Authentication certificate must itself assert one
	// of them. Default: id-fpki-common-authentication (…3.13).
	Policies []asn1.ObjectIdentifier
	// HTTPClient fetches OCSP responses and CRLs (http URLs only).
	HTTPClient *http.Client
	// OCSPTimeout and CRLTimeout bound each fetch (defaults 5 s and 10 s).
	OCSPTimeout, CRLTimeout time.Duration
	// MaxStatusAge is how long a fetched OCSP or CRL answer may be used
	// (default 5 minutes): every verification — a sign-in, and the checks
	// before an enrollment, a redemption or a renewal — rests on a status at
	// most this old, even when the answer's nextUpdate is hours away.
	MaxStatusAge time.Duration
	// NetworkWait, if set, is called when a verification starts waiting
	// for an OCSP or CRL answer on the network — its own fetch or one it
	// shares with others — and the function it returns when the wait is
	// over. The caller may lend out what it holds meanwhile (the gateway's
	// admission slot); an error from the end function fails the
	// verification.
	NetworkWait func(ctx context.Context) (end func() error)
	// PersonAttribute names the attribute that identifies the person across
	// card re-issues: "fascn" (the FASC-N identifier, default), "upn" or
	// "email".
	PersonAttribute string
	// Now is the clock (default time.Now).
	Now func() time.Time
	// StatusFetchFailed, if set, is called for each OCSP or CRL fetch that
	// failed (source "ocsp" or "crl"): the gateway counts them
	// (credgw_card_status_fetch_failures_total).
	StatusFetchFailed func(source string)
}

// Verifier validates PIV Authentication certificates as PKI-AUTH requires
// (FIPS 201-3 §6.2.3.1): path to a trust anchor, validity, the PIV
// Authentication policy on the leaf itself, key usage and extended key usage
// (checkPIVAuthUsage), and revocation status (OCSP, else CRL; neither ⇒
// refused). It is safe for concurrent use.
type Verifier struct {
	opts   Options
	trust  atomic.Pointer[trust]
	status *statusChecker
	// pathBuilds counts the paths built (crypto/x509 Verify calls).
	pathBuilds atomic.Int64
}

// maxPresentedIntermediates bounds the CA certificates a caller presents
// with its card: a real PIV path (card, issuing CA, agency root or bridge
// CAs) has a handful; more only buys an attacker signature checks.
const maxPresentedIntermediates = 8

// failedPathTTL is how long a chain that did not verify is refused
// without building its path again.
const failedPathTTL = time.Minute

// trust is what paths are built to: the anchors, the configured
// intermediates, and the paths built with them (a reload replaces all
// three at once, so no path built under the old anchors is reused).
type trust struct {
	roots *x509.CertPool
	inter *x509.CertPool
	paths *pathCache
}

func newTrust(roots *x509.CertPool, intermediates []*x509.Certificate) *trust {
	inter := x509.NewCertPool()
	for _, c := range intermediates {
		inter.AddCert(handleDNConstraints(c))
	}
	return &trust{roots: roots, inter: inter, paths: &pathCache{}}
}

// SetTrust replaces the trust anchors and intermediates (a reload of
// piv.trust_anchor_files and piv.intermediate_files). Sign-ins under way
// finish with what they started with; paths built before are forgotten.
// Cached card status is kept: it does not depend on the anchors.
func (v *Verifier) SetTrust(roots *x509.CertPool, intermediates []*x509.Certificate) error {
	if roots == nil {
		return errors.New("piv: no PIV trust anchors configured")
	}
	v.trust.Store(newTrust(roots, intermediates))
	return nil
}

// Defaults of the piv section (credgw.yaml) that the verifier uses.
const (
	DefaultOCSPTimeout     = 5 * time.Second
	DefaultCRLTimeout      = 10 * time.Second
	DefaultPersonAttribute = "fascn"
	DefaultMaxStatusAge    = 5 * time.Minute
)

// NewVerifier checks opts and fills in defaults.
func NewVerifier(opts Options) (*Verifier, error) {
	if opts.Roots == nil {
		return nil, errors.New("piv: no PIV trust anchors configured")
	}
	if len(opts.Policies) == 0 {
		opts.Policies = []asn1.ObjectIdentifier{PolicyCommonAuthentication}
	}
	for _, p := range opts.Policies {
		if slices.ContainsFunc(refusedPolicies, p.Equal) {
			return nil, fmt.Errorf("piv: policy %v is a derived or PIV-I policy and cannot be proof of a PIV card", p)
		}
	}
	switch opts.PersonAttribute {
	case "":
		opts.PersonAttribute = DefaultPersonAttribute
	case "fascn", "upn", "email":
	default:
		return nil, fmt.Errorf("piv: person attribute %q: use fascn, upn or email", opts.PersonAttribute)
	}
	if opts.HTTPClient == nil {
		opts.HTTPClient = &http.Client{}
	}
	// Redirects are not followed: the URL is the one a CA signed into the
	// certificate, and a redirect (anyone on the plain-HTTP path can send
	// one) could point the gateway at any address, a POST body and all.
	c := *opts.HTTPClient
	c.CheckRedirect = func(req *http.Request, _ []*http.Request) error {
		return fmt.Errorf("redirected to %s: credgw does not follow redirects for OCSP and CRLs "+
			"(the URL in the certificate must answer itself)", req.URL.Redacted())
	}
	opts.HTTPClient = &c
	if opts.MaxStatusAge <= 0 {
		opts.MaxStatusAge = DefaultMaxStatusAge
	}
	if opts.OCSPTimeout <= 0 {
		opts.OCSPTimeout = DefaultOCSPTimeout
	}
	if opts.CRLTimeout <= 0 {
		opts.CRLTimeout = DefaultCRLTimeout
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	v := &Verifier{opts: opts, status: newStatusChecker(opts)}
	v.trust.Store(newTrust(opts.Roots, opts.Intermediates))
	return v, nil
}

// Result is a verified PIV Authentication certificate.
type Result struct {
	Leaf     *x509.Certificate
	Chain    []*x509.Certificate // leaf first, trust anchor last
	Identity Identity
	// StatusSource is "ocsp" or "crl": where the good status came from.
	StatusSource string
}

// Fingerprint is the hex SHA-256 of the leaf.
func (r *Result) Fingerprint() string {
	h := sha256.Sum256(r.Leaf.Raw)
	return hex.EncodeToString(h[:])
}

// ParseCertificates parses DER certificates, refusing garbage with
// ErrMalformed.
func ParseCertificates(ders ...[]byte) ([]*x509.Certificate, error) {
	out := make([]*x509.Certificate, 0, len(ders))
	for i, der := range ders {
		if len(der) == 0 {
			return nil, fmt.Errorf("%w: certificate %d is empty", ErrMalformed, i)
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("%w: certificate %d: %v", ErrMalformed, i, err)
		}
		out = append(out, c)
	}
	return out, nil
}

// VerifyPIVAuth validates a PIV Authentication certificate with extra
// intermediates from the caller. The order of checks puts the cheap,
// local ones first; revocation status is fetched last.
func (v *Verifier) VerifyPIVAuth(ctx context.Context, leaf *x509.Certificate, intermediates []*x509.Certificate) (*Result, error) {
	if err := checkPresented(intermediates); err != nil {
		return nil, err
	}
	if err := checkKey(leaf); err != nil {
		return nil, err
	}
	if err := checkPIVAuthUsage(leaf); err != nil {
		return nil, err
	}
	if err := v.checkPolicy(leaf, v.opts.Policies, "PIV Authentication"); err != nil {
		return nil, err
	}
	chain, err := v.path(ctx, leaf, intermediates, v.opts.Policies)
	if err != nil {
		return nil, err
	}
	id, err := IdentityFromCertificate(leaf)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	id.PersonID = personID(id, v.opts.PersonAttribute)
	if id.PersonID == "" {
		return nil, fmt.Errorf("%w: the certificate has no %s, the configured person attribute", ErrMalformed, v.opts.PersonAttribute)
	}
	return &Result{Leaf: leaf, Chain: chain.certs, Identity: id, StatusSource: chain.status}, nil
}

// VerifyDigitalSignature validates the card's Digital Signature certificate
// the same way (path, validity, revocation), checks that it names the same
// subject as the PIV Authentication certificate, and returns its email: the
// email of record when the PIV Authentication certificate has none.
func (v *Verifier) VerifyDigitalSignature(ctx context.Context, cert, pivAuth *x509.Certificate, intermediates []*x509.Certificate) (string, error) {
	if err := checkPresented(intermediates); err != nil {
		return "", err
	}
	if !slices.Equal(cert.RawSubject, pivAuth.RawSubject) {
		return "", fmt.Errorf("%w: the Digital Signature certificate's subject %q is not the PIV Authentication certificate's %q", ErrMalformed, cert.Subject, pivAuth.Subject)
	}
	if err := v.checkPolicy(cert, signaturePolicies, "Digital Signature"); err != nil {
		return "", err
	}
	if !slices.Contains(cert.ExtKeyUsage, x509.ExtKeyUsageEmailProtection) || len(cert.EmailAddresses) == 0 {
		return "", fmt.Errorf("%w: the Digital Signature certificate has no emailProtection EKU and rfc822Name", ErrKeyUsage)
	}
	if err := v.sameCard(cert, pivAuth, intermediates); err != nil {
		return "", err
	}
	if _, err := v.path(ctx, cert, intermediates, signaturePolicies); err != nil {
		return "", fmt.Errorf("the Digital Signature certificate: %w", err)
	}
	return cert.EmailAddresses[0], nil
}

// sameCard: a subject name is not unique across CAs, so the email of
// record comes only from a Digital Signature certificate bound to the
// card's PIV Authentication certificate beyond its name: it names the
// card's UUID, or its issuing CA is the 9A's, or a sibling of it (issued
// by the same CA: an agency's CAs for identity and for email under one
// root, as on DoD CACs). A namesake's certificate from elsewhere in the
// trusted PKI is ErrNotThisCard.
func (v *Verifier) sameCard(cert, pivAuth *x509.Certificate, intermediates []*x509.Certificate) error {
	if sameCardUUID(cert, pivAuth) {
		return nil
	}
	sig, err := v.chainOf(cert, intermediates, signaturePolicies)
	if err != nil {
		return fmt.Errorf("the Digital Signature certificate: %w", err)
	}
	auth, err := v.chainOf(pivAuth, intermediates, v.opts.Policies)
	if err != nil {
		return fmt.Errorf("the PIV Authentication certificate: %w", err)
	}
	// One CA may have several certificates (renewed, cross-certified):
	// it is its name and key.
	sameCA := func(a, b *x509.Certificate) bool {
		return bytes.Equal(a.RawSubject, b.RawSubject) && bytes.Equal(a.RawSubjectPublicKeyInfo, b.RawSubjectPublicKeyInfo)
	}
	sigCA, authCA := sig[1], auth[1]
	if sameCA(sigCA, authCA) {
		return nil
	}
	if len(sig) > 2 && len(auth) > 2 && sameCA(sig[2], auth[2]) {
		return nil // siblings: issued by the same CA
	}
	return fmt.Errorf("%w: the Digital Signature certificate's issuing CA %q is neither the PIV Authentication certificate's (%q) "+
		"nor issued by the same CA, and it does not name the card's UUID: it may be another person's of the same name",
		ErrNotThisCard, sigCA.Subject, authCA.Subject)
}

// sameCardUUID: both certificates name one card UUID (urn:uuid: SAN).
func sameCardUUID(a, b *x509.Certificate) bool {
	for _, u := range a.URIs {
		if u.Scheme != "urn" || !strings.HasPrefix(strings.ToLower(u.Opaque), "uuid:") {
			continue
		}
		for _, w := range b.URIs {
			if w.Scheme == "urn" && strings.EqualFold(u.Opaque, w.Opaque) {
				return true
			}
		}
	}
	return false
}

func (v *Verifier) checkPolicy(c *x509.Certificate, want []asn1.ObjectIdentifier, what string) error {
	has := func(p asn1.ObjectIdentifier) bool {
		return slices.ContainsFunc(c.Policies, func(o x509.OID) bool { return o.EqualASN1OID(p) })
	}
	for _, p := range refusedPolicies {
		if has(p) {
			return fmt.Errorf("%w: the certificate asserts %v, a derived PIV or PIV-I policy; sign in with the PIV card itself", ErrPolicy, p)
		}
	}
	if slices.ContainsFunc(want, has) {
		return nil
	}
	var got []string
	for _, o := range c.Policies {
		got = append(got, o.String())
	}
	return fmt.Errorf("%w: the %s certificate asserts [%s]; it must itself assert one of %v", ErrPolicy, what, strings.Join(got, ", "), want)
}

var oidAnyPolicy = asn1.ObjectIdentifier{2, 5, 29, 32, 0}

// pathAuthorizes checks that a policy the certificate asserts from want is
// authorized by every CA between it and the anchor: RFC 5280's valid
// policy tree, followed up from the certificate. crypto/x509 builds the
// tree but refuses an empty one only when a CA requires explicit policy,
// so without this a CA that never was authorized for PIV Authentication
// (one asserting only id-fpki-common-policy, or no policy) could vouch
// for cards that assert it.
//
// Going up, a CA's policy mappings turn the policies of the domain below
// (subjectDomainPolicy) into those of its own (issuerDomainPolicy); a
// policy the CA maps away is no longer valid below it unless mapped to
// again. The CA must then assert one of them, or anyPolicy unless a CA
// above inhibits it; a mapping inhibited from above renames nothing.
// (requireExplicitPolicy crypto/x509 enforces itself.)
func pathAuthorizes(chain []*x509.Certificate, want []asn1.ObjectIdentifier) error {
	// Whether each CA's anyPolicy and policy mappings count, from the
	// inhibitAnyPolicy and inhibitPolicyMapping above it (RFC 5280
	// §6.1.3(d)(2), §6.1.4(b), (h)-(j)), counted down from the anchor.
	n := len(chain) - 1
	anyOK, mapOK := make([]bool, len(chain)), make([]bool, len(chain))
	inhibitAny, mapping := n+1, n+1
	for i := n - 1; i >= 1; i-- {
		c := chain[i]
		selfIssued := bytes.Equal(c.RawIssuer, c.RawSubject)
		anyOK[i] = inhibitAny > 0 || selfIssued
		mapOK[i] = mapping > 0
		if !selfIssued {
			inhibitAny, mapping = max(inhibitAny-1, 0), max(mapping-1, 0)
		}
		if (c.InhibitPolicyMapping > 0 || c.InhibitPolicyMappingZero) && c.InhibitPolicyMapping < mapping {
			mapping = c.InhibitPolicyMapping
		}
		if (c.InhibitAnyPolicy > 0 || c.InhibitAnyPolicyZero) && c.InhibitAnyPolicy < inhibitAny {
			inhibitAny = c.InhibitAnyPolicy
		}
	}
	valid := map[string]bool{}
	for _, o := range chain[0].Policies {
		if slices.ContainsFunc(want, o.EqualASN1OID) {
			valid[o.String()] = true
		}
	}
	for i := 1; i < len(chain)-1 && len(valid) > 0; i++ {
		ca := chain[i]
		mappedAway := map[string]bool{}
		for _, m := range ca.PolicyMappings {
			mappedAway[m.IssuerDomainPolicy.String()] = true
		}
		up := map[string]bool{}
		for p := range valid {
			// An inhibited mapping renames nothing; what it maps
			// away is gone all the same.
			for _, m := range ca.PolicyMappings {
				if mapOK[i] && m.SubjectDomainPolicy.String() == p {
					up[m.IssuerDomainPolicy.String()] = true
				}
			}
			if !mappedAway[p] {
				up[p] = true
			}
		}
		asserted := map[string]bool{}
		for _, o := range ca.Policies {
			asserted[o.String()] = true
		}
		if !asserted[oidAnyPolicy.String()] || !anyOK[i] {
			for p := range up {
				if !asserted[p] {
					delete(up, p)
				}
			}
		}
		if len(up) == 0 {
			var got []string
			for _, o := range ca.Policies {
				got = append(got, o.String())
			}
			return fmt.Errorf("%w: the issuing CA %q asserts [%s]; no CA between the certificate and the trust anchor may leave out the policy it asserts (%v)",
				ErrPolicy, ca.Subject.CommonName, strings.Join(got, ", "), want)
		}
		valid = up
	}
	if len(valid) == 0 {
		return fmt.Errorf("%w: the certificate asserts none of %v", ErrPolicy, want)
	}
	return nil
}

// Chains reports whether a certificate chains to the trust anchors, its
// validity, names and signatures only (no policy, no status): whether it
// could be a card of a trusted issuer, or is one anyone could have made.
func (v *Verifier) Chains(leaf *x509.Certificate, intermediates []*x509.Certificate) bool {
	if checkPresented(intermediates) != nil {
		return false
	}
	tr := v.trust.Load()
	pool := tr.inter
	if len(intermediates) > 0 {
		pool = tr.inter.Clone()
		for _, c := range intermediates {
			pool.AddCert(handleDNConstraints(c))
		}
	}
	// At a time the certificate itself is valid: an expired card is
	// still a card of its issuer.
	at := v.opts.Now()
	if at.After(leaf.NotAfter) {
		at = leaf.NotAfter
	}
	if at.Before(leaf.NotBefore) {
		at = leaf.NotBefore
	}
	chains, err := leaf.Verify(x509.VerifyOptions{Roots: tr.roots, Intermediates: pool, CurrentTime: at,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	return err == nil && slices.ContainsFunc(chains, func(c []*x509.Certificate) bool { return checkDNConstraints(c) == nil })
}

type verifiedPath struct {
	certs  []*x509.Certificate
	status string
}

// path checks validity, builds a path to the anchors with RFC 5280 policy
// processing set to policies (STANDARDS §5.1: path validation "SHOULD be set
// to the trusted policy OIDs"), and checks revocation status.
func (v *Verifier) path(ctx context.Context, leaf *x509.Certificate, intermediates []*x509.Certificate, policies []asn1.ObjectIdentifier) (verifiedPath, error) {
	chain, err := v.chainOf(leaf, intermediates, policies)
	if err != nil {
		return verifiedPath{}, err
	}
	source, err := v.status.check(ctx, leaf, chain[1])
	if err != nil {
		return verifiedPath{}, err
	}
	// Every CA between the card and the anchor is checked the same way,
	// failing closed (RFC 5280 §6.1.3(a)(3)): revoking an issuing CA is
	// the remedy for its compromise, and a revoked CA's key could
	// otherwise mint cards with any FASC-N and answer for them itself.
	// Their answers are cached as the card's are, so a sign-in wave
	// fetches a CA's CRL once.
	for i := 1; i < len(chain)-1; i++ {
		if _, err := v.status.check(ctx, chain[i], chain[i+1]); err != nil {
			return verifiedPath{}, fmt.Errorf("the card's issuing CA %q (serial %s): %w", chain[i].Subject.CommonName, chain[i].SerialNumber.Text(16), err)
		}
	}
	return verifiedPath{certs: chain, status: source}, nil
}

// chainOf is the certificate's verified chain (leaf first, anchor last,
// at least two certificates) for policies, without revocation status.
func (v *Verifier) chainOf(leaf *x509.Certificate, intermediates []*x509.Certificate, policies []asn1.ObjectIdentifier) ([]*x509.Certificate, error) {
	return v.chainAt(leaf, intermediates, policies, v.opts.Now())
}

// StatusAtExpiry is the revocation status of a PIV Authentication
// certificate that has expired (the linkage checks ask it once the card's
// end came): its path as of its last moment, then its status now (and its
// CAs'), OCSP then CRL as at sign-in. nil: not revoked; ErrRevoked:
// revoked, before its end or in the short while since (the first check
// after it), which counts the same; ErrStatusUnavailable: the responders
// cannot say. (A CA may drop an expired certificate from its CRL, RFC 5280
// §3.3.)
func (v *Verifier) StatusAtExpiry(ctx context.Context, leaf *x509.Certificate) error {
	chain, err := v.chainAt(leaf, nil, v.opts.Policies, leaf.NotAfter)
	if err != nil {
		return err
	}
	if _, err := v.status.check(ctx, leaf, chain[1]); err != nil {
		return err
	}
	// Its CAs too, as a sign-in checks them (path).
	for i := 1; i < len(chain)-1; i++ {
		if _, err := v.status.check(ctx, chain[i], chain[i+1]); err != nil {
			return fmt.Errorf("the card's issuing CA %q (serial %s): %w", chain[i].Subject.CommonName, chain[i].SerialNumber.Text(16), err)
		}
	}
	return nil
}

// chainAt is chainOf as of now.
func (v *Verifier) chainAt(leaf *x509.Certificate, intermediates []*x509.Certificate, policies []asn1.ObjectIdentifier, now time.Time) ([]*x509.Certificate, error) {
	if now.Before(leaf.NotBefore) {
		return nil, fmt.Errorf("%w: valid from %s", ErrNotYetValid, leaf.NotBefore.UTC().Format(time.RFC3339))
	}
	if now.After(leaf.NotAfter) {
		return nil, fmt.Errorf("%w: expired %s; the card must be renewed", ErrExpired, leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	// A chain built before is reused while every certificate in it is
	// valid: the signatures, names and policies it was checked for do not
	// change. Revocation is checked on every call.
	key := pathKey(leaf, intermediates, policies)
	tr := v.trust.Load()
	if err := tr.paths.failure(key, now); err != nil {
		return nil, err
	}
	chain := tr.paths.get(key, now)
	if chain == nil {
		v.pathBuilds.Add(1)
		pool := tr.inter
		if len(intermediates) > 0 {
			pool = tr.inter.Clone()
			for _, c := range intermediates {
				pool.AddCert(handleDNConstraints(c))
			}
		}
		chains, err := leaf.Verify(x509.VerifyOptions{
			Roots:               tr.roots,
			Intermediates:       pool,
			CurrentTime:         now,
			KeyUsages:           []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
			CertificatePolicies: toOIDs(policies),
		})
		if err != nil {
			err = fmt.Errorf("%w: %v (issuer %q)", ErrUntrusted, err, leaf.Issuer)
			tr.paths.fail(key, err, now.Add(failedPathTTL))
			return nil, err
		}
		// The first path that authorizes the card's policy: beside the
		// direct path there may be one through a bridge that does not.
		var perr error
		for _, c := range chains {
			if len(c) < 2 {
				continue
			}
			if err := pathAuthorizes(c, policies); err != nil {
				if perr == nil {
					perr = err
				}
				continue
			}
			if err := checkDNConstraints(c); err != nil {
				if perr == nil {
					perr = err
				}
				continue
			}
			chain = c
			break
		}
		if chain == nil {
			if perr != nil {
				return nil, perr
			}
			return nil, fmt.Errorf("%w: the certificate is itself a trust anchor", ErrUntrusted)
		}
		tr.paths.put(key, chain)
	}
	return chain, nil
}

// Extended key usages besides id-kp-clientAuth (which crypto/x509 parses
// into ExtKeyUsageClientAuth) that allow client authentication: one of the
// three must be in a PIV Authentication certificate's EKU when it has one
// (SSP profile v2.2 worksheet 6; STANDARDS §3.3).
var clientAuthEKUs = []asn1.ObjectIdentifier{EKUSmartCardLogon, EKUPKINITClientAuth}

// checkPIVAuthUsage checks the key usage and extended key usage of a PIV
// Authentication certificate (STANDARDS §3.3, COMMON §6.1.7, SSP profile
// v2.2 worksheet 6):
//
//   - keyUsage has digitalSignature; the certificate is no CA and its key
//     signs neither certificates nor CRLs (keyCertSign and cRLSign are
//     forbidden on every subscriber certificate).
//   - When an EKU is present it allows client authentication: clientAuth,
//     smartcardLogon or id-pkinit-KPClientAuth. id-PIV-cardAuth alone is a
//     Card Authentication (9E) certificate, which proves the card without
//     its PIN; serverAuth or codeSigning alone proves no client at all.
//   - anyExtendedKeyUsage and codeSigning are refused even beside
//     clientAuth: COMMON §6.1.7 says subscriber certificates "must not
//     contain anyExtendedKeyUsage or id-kp-codeSigning". So anyEKU does not
//     count as allowing client authentication, alone or not.
//
// A certificate without an EKU is accepted (issue 14: "when an EKU is
// present"), although COMMON §6.1.7 requires one on certificates issued
// after June 30, 2019. serverAuth beside clientAuth is accepted: the SSP
// profile v2.2 marks it optional for PIV Authentication.
func checkPIVAuthUsage(c *x509.Certificate) error {
	if c.IsCA {
		return fmt.Errorf("%w: the certificate is a CA (basicConstraints cA=TRUE); a PIV Authentication certificate must not be", ErrKeyUsage)
	}
	if c.KeyUsage&x509.KeyUsageDigitalSignature == 0 {
		return fmt.Errorf("%w: keyUsage lacks digitalSignature: a PIV Authentication certificate must have it", ErrKeyUsage)
	}
	for _, bad := range []struct {
		bit  x509.KeyUsage
		name string
	}{{x509.KeyUsageCertSign, "keyCertSign"}, {x509.KeyUsageCRLSign, "cRLSign"}} {
		if c.KeyUsage&bad.bit != 0 {
			return fmt.Errorf("%w: keyUsage has %s on a certificate that is no CA: a PIV Authentication certificate's key must not sign certificates or CRLs", ErrKeyUsage, bad.name)
		}
	}
	if len(c.ExtKeyUsage) == 0 && len(c.UnknownExtKeyUsage) == 0 {
		return nil
	}
	names := ekuNames(c)
	for _, bad := range []struct {
		eku  x509.ExtKeyUsage
		name string
	}{{x509.ExtKeyUsageAny, "anyExtendedKeyUsage"}, {x509.ExtKeyUsageCodeSigning, "codeSigning"}} {
		if slices.Contains(c.ExtKeyUsage, bad.eku) {
			return fmt.Errorf("%w: EKU [%s] has %s, which the Common Policy (§6.1.7) forbids on subscriber certificates", ErrKeyUsage, strings.Join(names, ", "), bad.name)
		}
	}
	client := slices.Contains(c.ExtKeyUsage, x509.ExtKeyUsageClientAuth) ||
		slices.ContainsFunc(c.UnknownExtKeyUsage, func(o asn1.ObjectIdentifier) bool { return slices.ContainsFunc(clientAuthEKUs, o.Equal) })
	if client {
		return nil
	}
	if len(c.ExtKeyUsage) == 0 && len(c.UnknownExtKeyUsage) == 1 && c.UnknownExtKeyUsage[0].Equal(EKUPIVCardAuth) {
		return fmt.Errorf("%w: EKU allows only id-PIV-cardAuth: that is a Card Authentication (9E) certificate; sign in with the PIV Authentication (9A) certificate, whose EKU allows client authentication", ErrKeyUsage)
	}
	return fmt.Errorf("%w: EKU allows only %s: a PIV Authentication certificate must allow client authentication (clientAuth, smartcardLogon or id-pkinit-KPClientAuth)", ErrKeyUsage, strings.Join(names, ", "))
}

// ekuNames names a certificate's extended key usages for messages.
func ekuNames(c *x509.Certificate) []string {
	known := map[x509.ExtKeyUsage]string{
		x509.ExtKeyUsageAny:             "anyExtendedKeyUsage",
		x509.ExtKeyUsageServerAuth:      "serverAuth",
		x509.ExtKeyUsageClientAuth:      "clientAuth",
		x509.ExtKeyUsageCodeSigning:     "codeSigning",
		x509.ExtKeyUsageEmailProtection: "emailProtection",
		x509.ExtKeyUsageTimeStamping:    "timeStamping",
		x509.ExtKeyUsageOCSPSigning:     "OCSPSigning",
	}
	var out []string
	for _, e := range c.ExtKeyUsage {
		if n, ok := known[e]; ok {
			out = append(out, n)
		} else {
			out = append(out, fmt.Sprintf("EKU #%d", e))
		}
	}
	for _, o := range c.UnknownExtKeyUsage {
		switch {
		case o.Equal(EKUPIVCardAuth):
			out = append(out, "id-PIV-cardAuth")
		case o.Equal(EKUPIVContentSigning):
			out = append(out, "id-PIV-content-signing")
		case o.Equal(EKUSmartCardLogon):
			out = append(out, "smartcardLogon")
		case o.Equal(EKUPKINITClientAuth):
			out = append(out, "id-pkinit-KPClientAuth")
		default:
			out = append(out, o.String())
		}
	}
	return out
}

// checkKey allows the PIV key types of SP 800-78: RSA 2048/3072 (and 4096,
// as the Common Policy allows), ECDSA P-256/P-384.
func checkKey(c *x509.Certificate) error {
	switch k := c.PublicKey.(type) {
	case *rsa.PublicKey:
		if n := k.N.BitLen(); n < 2048 || n > 4096 {
			return fmt.Errorf("%w: RSA-%d; PIV allows RSA 2048 to 4096", ErrKey, n)
		}
		return nil
	case *ecdsa.PublicKey:
		if k.Curve == elliptic.P256() || k.Curve == elliptic.P384() {
			return nil
		}
		return fmt.Errorf("%w: curve %s; PIV allows P-256 and P-384", ErrKey, k.Curve.Params().Name)
	}
	return fmt.Errorf("%w: %T; PIV allows RSA and ECDSA", ErrKey, c.PublicKey)
}

func personID(id Identity, attr string) string {
	switch attr {
	case "upn":
		return FoldPersonID(id.UPN)
	case "email":
		return FoldPersonID(id.Email)
	}
	return id.FASCN.Identifier()
}

func toOIDs(in []asn1.ObjectIdentifier) []x509.OID {
	out := make([]x509.OID, 0, len(in))
	for _, o := range in {
		ints := make([]uint64, len(o))
		for i, v := range o {
			ints[i] = uint64(v)
		}
		if oid, err := x509.OIDFromInts(ints); err == nil {
			out = append(out, oid)
		}
	}
	return out
}

// pathCache keeps chains x509 verification built, keyed by the leaf, the
// intermediates offered with it and the policy set, so that the RPCs of one
// TLS connection and a person's next sign-in do not verify the same
// signatures again. A hit is used only while every certificate of the chain
// is within its validity period; the trust anchors are fixed for the
// Verifier's life. Bounded: when full it starts again empty.
type pathCache struct {
	mu sync.Mutex
	m  map[[32]byte][]*x509.Certificate
	// failed holds chains that did not verify, until a time: a caller's
	// own chain is not rebuilt on every call of its connection.
	failed map[[32]byte]failedPath
}

type failedPath struct {
	err   error
	until time.Time
}

// failure is the error of a chain that did not verify, while it holds.
func (c *pathCache) failure(k [32]byte, now time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if f, ok := c.failed[k]; ok && now.Before(f.until) {
		return f.err
	}
	return nil
}

// fail remembers a chain that did not verify (bounded as the cache).
func (c *pathCache) fail(k [32]byte, err error, until time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.failed == nil || len(c.failed) >= maxCachedPaths {
		c.failed = make(map[[32]byte]failedPath)
	}
	c.failed[k] = failedPath{err: err, until: until}
}

// checkPresented bounds the CA certificates a caller presents, which are
// the caller's own making until a path proves otherwise: how many, their
// keys (what a PIV path's CAs have: a 16384-bit RSA key makes each
// signature check cost milliseconds), and at most two per subject (each
// certificate of a name is another candidate issuer, and crypto/x509
// tries them all: up to 100 signature checks; two allow a root both
// self-signed and cross-certified). The configured
// intermediates are not bounded so (the operator's, cross-certificates
// included).
func checkPresented(intermediates []*x509.Certificate) error {
	if len(intermediates) > maxPresentedIntermediates {
		return fmt.Errorf("%w: %d CA certificates presented with the card; a PIV path needs at most %d",
			ErrMalformed, len(intermediates), maxPresentedIntermediates)
	}
	for i, c := range intermediates {
		if err := checkCAKey(c); err != nil {
			return err
		}
		// Two of a name are common (a root both self-signed and
		// cross-certified, a rollover link); a third is not.
		distinct := [][]byte{c.Raw} // of this name, exact duplicates once
		for _, earlier := range intermediates[:i] {
			if bytes.Equal(earlier.RawSubject, c.RawSubject) && !slices.ContainsFunc(distinct, func(d []byte) bool { return bytes.Equal(d, earlier.Raw) }) {
				distinct = append(distinct, earlier.Raw)
			}
		}
		if len(distinct) > 2 {
			return fmt.Errorf("%w: three CA certificates named %q presented with the card; present one path (each CA once, or twice when cross-certified)",
				ErrMalformed, c.Subject)
		}
	}
	return nil
}

// CheckPresented is checkPresented for other checks of a caller's TLS
// chain (the configured client CAs of the portal and admin roles).
func CheckPresented(intermediates []*x509.Certificate) error { return checkPresented(intermediates) }

// CheckCAKey is checkCAKey for other CA certificates a caller sends (a
// device's trust anchors).
func CheckCAKey(c *x509.Certificate) error { return checkCAKey(c) }

// checkCAKey is the key of a presented CA certificate: RSA 2048 to 4096
// bits, or ECDSA P-256, P-384 or P-521 (FIPS 186-5; the Federal PKI's CAs).
func checkCAKey(c *x509.Certificate) error {
	switch k := c.PublicKey.(type) {
	case *rsa.PublicKey:
		if n := k.N.BitLen(); n >= 2048 && n <= 4096 {
			return nil
		}
		return fmt.Errorf("%w: the CA certificate %q presented with the card has an RSA-%d key; a PIV path's CAs have RSA 2048 to 4096 or ECDSA P-256, P-384, P-521",
			ErrMalformed, c.Subject, k.N.BitLen())
	case *ecdsa.PublicKey:
		if k.Curve == elliptic.P256() || k.Curve == elliptic.P384() || k.Curve == elliptic.P521() {
			return nil
		}
	}
	return fmt.Errorf("%w: the CA certificate %q presented with the card has a %s key; a PIV path's CAs have RSA 2048 to 4096 or ECDSA P-256, P-384, P-521",
		ErrMalformed, c.Subject, c.PublicKeyAlgorithm)
}

// maxCachedPaths bounds the cache (a chain is a few KiB).
const maxCachedPaths = 4096

func pathKey(leaf *x509.Certificate, intermediates []*x509.Certificate, policies []asn1.ObjectIdentifier) [32]byte {
	h := sha256.New()
	for _, c := range append([]*x509.Certificate{leaf}, intermediates...) {
		sum := sha256.Sum256(c.Raw)
		h.Write(sum[:])
	}
	for _, p := range policies {
		h.Write([]byte(p.String() + ";"))
	}
	var k [32]byte
	h.Sum(k[:0])
	return k
}

func (c *pathCache) get(k [32]byte, now time.Time) []*x509.Certificate {
	c.mu.Lock()
	chain := c.m[k]
	c.mu.Unlock()
	for _, cert := range chain {
		if now.Before(cert.NotBefore) || now.After(cert.NotAfter) {
			return nil
		}
	}
	return chain
}

func (c *pathCache) put(k [32]byte, chain []*x509.Certificate) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= maxCachedPaths {
		c.m = make(map[[32]byte][]*x509.Certificate)
	}
	c.m[k] = chain
}

// FoldPersonID is how person ids compare: ASCII letters folded to lower
// case, as in an email address or a UPN, which mail routing and directories
// compare without regard to case. Other characters are kept: the stores
// fold stored ids the same way (migration 00021), and a FASC-N identifier
// has only digits.
func FoldPersonID(id string) string {
	for i := 0; i < len(id); i++ {
		if 'A' <= id[i] && id[i] <= 'Z' {
			b := []byte(id)
			for j := i; j < len(b); j++ {
				if 'A' <= b[j] && b[j] <= 'Z' {
					b[j] += 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return id
}
