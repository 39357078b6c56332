package issuance

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/credgw/credgw/piv"
	"github.com/credgw/credgw/store"
	"github.com/smallstep/certificates/authority/provisioner"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// checkCSR: only the public key is taken from a CSR (names and extensions
// come from the card and the profile). It must be signed by its key, be of
// an allowed type and size, and be new: not the card's key, not a key
// credgw certified before, not another profile's key of the same set.
func (is *issuance) checkCSR() error {
	// The signature is checked by the authority (and again by x509util);
	// Issue explains a failure. Checking it here too would cost a third
	// verification per certificate (CheckCSR, before a redemption, does).
	if err := checkCSRKey(is.req, is.notAfter); err != nil {
		return err
	}
	spki, err := SPKIHash(is.req.CSR.PublicKey)
	if err != nil {
		return fmt.Errorf("%w: %s CSR: %v", ErrBadRequest, is.req.Profile, err)
	}
	// A key certified before is refused by the intent's unique index (one
	// statement, safe with any number of replicas): see enforcer.
	is.spki = spki
	return nil
}

// CheckCSR runs what Issue checks of a request's CSR: its signature, its
// key's type and size for the certificate's validity, that the key is
// neither the card's nor another profile's, and that credgw has not
// certified it before (ErrKeyReused: the device makes a new key). A caller
// issuing several certificates together checks every CSR first, so that
// one refused does not leave the others issued. (Issue's intent still
// refuses a reused key that races this, by its unique index.)
func (c *CA) CheckCSR(ctx context.Context, req Request) error {
	if req.CSR == nil {
		return fmt.Errorf("%w: no CSR", ErrBadRequest)
	}
	if err := req.CSR.CheckSignature(); err != nil {
		return fmt.Errorf("%w: %s CSR: its signature is not by its key: %v", ErrBadRequest, req.Profile, err)
	}
	if err := checkCSRKey(req, c.notAfter(c.cfg.Now())); err != nil {
		return err
	}
	spki, err := SPKIHash(req.CSR.PublicKey)
	if err != nil {
		return fmt.Errorf("%w: %s CSR: %v", ErrBadRequest, req.Profile, err)
	}
	if certified, err := c.cfg.Store.KeyCertified(ctx, spki); err != nil {
		return err
	} else if certified {
		return reusedKey(req.Profile)
	}
	return nil
}

// reusedKey is the refusal of a CSR whose key credgw certified before.
func reusedKey(p Profile) error {
	return keyReused{fmt.Sprintf("%v: %s CSR: credgw has certified this key before: make a new key", ErrBadRequest, p)}
}

// checkCSRKey is checkCSR's part that needs no store.
func checkCSRKey(req Request, notAfter time.Time) error {
	csr := req.CSR
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s CSR: %s", ErrBadRequest, req.Profile, fmt.Sprintf(format, a...))
	}
	if err := allowedKey(csr.PublicKey); err != nil {
		return bad("%v", err)
	}
	if err := keyLastsUntil(csr.PublicKey, notAfter); err != nil {
		return bad("%v", err)
	}
	pub := csr.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	if req.Identity.CardKey != nil && pub.Equal(req.Identity.CardKey) {
		return bad("it carries the PIV card's own key: a derived credential needs a new key made on the device")
	}
	for _, k := range req.OtherKeys {
		if pub.Equal(k) {
			return bad("its key is also used for another profile of this credential: make one key per certificate")
		}
	}
	return nil
}

// allowedKey: RSA 2048/3072 with e = 65537, ECDSA P-256/P-384 (SP 800-78-5
// for PIV and derived PIV keys; Common Policy §6.1.5).
func allowedKey(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		if n := k.N.BitLen(); n != 2048 && n != 3072 {
			return fmt.Errorf("RSA-%d is not allowed: use RSA 2048 or 3072 (or EC P-256/P-384)", n)
		}
		if k.E != 65537 {
			return fmt.Errorf("RSA public exponent %d is not allowed: use 65537", k.E)
		}
		return nil
	case *ecdsa.PublicKey:
		if k.Curve == elliptic.P256() || k.Curve == elliptic.P384() {
			return nil
		}
		return fmt.Errorf("curve %s is not allowed: use P-256 or P-384", k.Curve.Params().Name)
	}
	return fmt.Errorf("%T keys are not allowed: use RSA or ECDSA", pub)
}

// RSA2048Until is the last moment a certificate for an RSA-2048 key may be
// valid: Common Policy §6.1.5 (and SP 800-131A / SP 800-78-5) require RSA
// keys of at least 3072 bits after 2030-12-31.
var RSA2048Until = time.Date(2030, 12, 31, 23, 59, 59, 0, time.UTC)

// keyLastsUntil refuses a key too weak for a certificate valid until
// notAfter.
func keyLastsUntil(pub crypto.PublicKey, notAfter time.Time) error {
	if k, ok := pub.(*rsa.PublicKey); ok && k.N.BitLen() < 3072 && notAfter.After(RSA2048Until) {
		return fmt.Errorf("RSA-%d may not be certified past 2030-12-31 and this certificate would be valid until %s (Common Policy §6.1.5): use RSA-3072 or EC P-256/P-384",
			k.N.BitLen(), notAfter.UTC().Format(time.DateOnly))
	}
	return nil
}

// csrValidator runs inside the authority; the checks ran already.
type csrValidator struct{ is *issuance }

func (v csrValidator) Valid(*x509.CertificateRequest) error { return nil }

// validator checks the finished template against the profile, so that no
// operator template can make a certificate outside STANDARDS.md §3.3.
type validator struct{ is *issuance }

func (v validator) Valid(cert *x509.Certificate, _ provisioner.SignOptions) error {
	if err := checkProfile(v.is.req.Profile, cert, v.is.ca.cfg.Chain, v.is.req.Identity.Email, v.is.derivedPolicy()); err != nil {
		v.is.err = fmt.Errorf("%w: %v", ErrLint, err)
		return v.is.err
	}
	return nil
}

// checkProfile is the profile as rules, applied to a template or a
// certificate. derivedPolicy is the policy a derived PIV Authentication
// certificate must assert, alone (issuance.derivedPolicy).
func checkProfile(p Profile, cert *x509.Certificate, chain []*x509.Certificate, email string, derivedPolicy asn1.ObjectIdentifier) error {
	ca := chain[0]
	r := rules[p]
	var errs []string
	bad := func(format string, a ...any) { errs = append(errs, fmt.Sprintf(format, a...)) }
	wantKU := r.keyUsage
	if _, ok := cert.PublicKey.(*rsa.PublicKey); ok && r.keyUsageRSA != 0 {
		wantKU = r.keyUsageRSA
	}
	if cert.KeyUsage != wantKU {
		bad("keyUsage %b, the profile wants %b", cert.KeyUsage, wantKU)
	}
	for _, e := range r.ekuRequired {
		if !slices.Contains(cert.ExtKeyUsage, e) {
			bad("extKeyUsage lacks %v", e)
		}
	}
	for _, e := range r.ekuForbidden {
		if slices.Contains(cert.ExtKeyUsage, e) {
			bad("extKeyUsage %v is forbidden", e)
		}
	}
	for _, o := range cert.UnknownExtKeyUsage {
		if hasOID(r.oidsForbidden, o) {
			bad("extKeyUsage %v is forbidden", o)
		}
	}
	has := false
	for _, pol := range cert.Policies {
		for _, want := range r.policies {
			if pol.EqualASN1OID(want) {
				has = true
			}
		}
	}
	if !has || len(cert.Policies) == 0 {
		bad("certificatePolicies %v, the profile wants one of %v", cert.Policies, r.policies)
	}
	// Only the profile's policies: a derived credential asserting the PIV
	// card's own policy (…3.13) would pass for a card.
	for _, pol := range cert.Policies {
		if !slices.ContainsFunc(r.policies, pol.EqualASN1OID) {
			bad("certificatePolicies asserts %v, which the profile does not (it allows %v)", pol, r.policies)
		}
	}
	// …3.41 is the CA's decision (an attested hardware key), never a
	// template's: exactly the decided policy.
	if p == DerivedPIVAuth {
		for _, pol := range cert.Policies {
			if !pol.EqualASN1OID(derivedPolicy) {
				bad("certificatePolicies asserts %v; this certificate's is %v alone (…3.41 only for a key attested in hardware, with ca.hardware_backed_devices)", pol, derivedPolicy)
			}
		}
	}
	uris, emails, others, err := sanNames(cert)
	if err != nil {
		bad("subjectAltName: %v", err)
	}
	if len(cert.DNSNames) > 0 || len(cert.IPAddresses) > 0 {
		others = append(others, "dNSName or iPAddress")
	}
	for _, o := range others {
		bad("subjectAltName has %s; the profile has a UUID URI, an email and a UPN only", o)
	}
	uuids := 0
	for _, u := range uris {
		if strings.HasPrefix(u, "urn:uuid:") {
			uuids++
		}
	}
	if uuids != 1 {
		bad("%d urn:uuid: SANs, the profile wants exactly one fresh UUID", uuids)
	}
	if r.needEmail && !slices.Equal(emails, []string{email}) {
		bad("rfc822Name %v, the profile wants the email of record", emails)
	}
	for name, urls := range map[string][]string{"OCSP": cert.OCSPServer, "caIssuers": cert.IssuingCertificateURL, "CRL DP": cert.CRLDistributionPoints} {
		if len(urls) == 0 {
			bad("no %s URL", name)
		}
		for _, s := range urls {
			if u, err := url.Parse(s); err != nil || u.Scheme != "http" {
				bad("%s URL %q is not http", name, s)
			}
		}
	}
	if cert.IsCA {
		bad("CA certificate")
	}
	for _, e := range cert.ExtraExtensions {
		if hasOID(forbiddenExtensions, e.Id) {
			bad("extension %v is forbidden", e.Id)
		}
		if e.Critical && !hasOID(allowedCritical, e.Id) {
			bad("extension %v may not be critical", e.Id)
		}
	}
	if d := cert.NotAfter.Sub(cert.NotBefore); d <= 0 || d > MaxValidity {
		bad("validity %s, the profile allows up to 1096 days", d)
	}
	if cert.NotAfter.After(ca.NotAfter) {
		bad("notAfter %s is beyond the CA certificate's %s", cert.NotAfter, ca.NotAfter)
	}
	if len(cert.Raw) > 0 { // as encoded: the subject and names are final
		if err := withinNameConstraints(cert, emails, uris, chain); err != nil {
			bad("%v", err)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("profile %s: %s", p, strings.Join(errs, "; "))
	}
	return nil
}

// withinNameConstraints checks cert's names against the name constraints
// of every CA certificate on chain (RFC 5280 §4.2.1.10, as relying parties
// enforce them on the path): its email addresses (of its SAN) against rfc822Name
// subtrees, its subject against directoryName subtrees (piv's RFC 4518
// comparison), and its URIs (a urn:uuid, which has no host) against any
// URI subtree, which no URN can satisfy. A certificate outside them would
// be refused by every relying party: mis-issuance.
func withinNameConstraints(cert *x509.Certificate, emails, uris []string, chain []*x509.Certificate) error {
	for _, ca := range chain {
		for _, e := range emails {
			if len(ca.PermittedEmailAddresses) > 0 && !slices.ContainsFunc(ca.PermittedEmailAddresses, func(c string) bool { return emailWithin(e, c) }) {
				return fmt.Errorf("email %s is outside the name constraints of CA %q (permitted %v)", e, ca.Subject, ca.PermittedEmailAddresses)
			}
			if slices.ContainsFunc(ca.ExcludedEmailAddresses, func(c string) bool { return emailWithin(e, c) }) {
				return fmt.Errorf("email %s is within names CA %q excludes (its name constraints)", e, ca.Subject)
			}
		}
		if len(uris) > 0 && len(ca.PermittedURIDomains)+len(ca.ExcludedURIDomains) > 0 {
			return fmt.Errorf("CA %q has URI name constraints, which the certificate's urn:uuid (no host) cannot satisfy", ca.Subject)
		}
	}
	if err := piv.CheckDNConstraints(append([]*x509.Certificate{cert}, chain...)); err != nil {
		return fmt.Errorf("the subject and the name constraints: %v", err)
	}
	return nil
}

// emailWithin reports whether a mailbox is within an rfc822Name
// constraint: a mailbox (exact, host without regard to case), a host, or
// ".domain" for the hosts under it (RFC 5280 §4.2.1.10).
func emailWithin(email, constraint string) bool {
	local, host, ok := strings.Cut(email, "@")
	if !ok {
		return false
	}
	if cl, ch, isMailbox := strings.Cut(constraint, "@"); isMailbox {
		return local == cl && strings.EqualFold(host, ch)
	}
	if strings.HasPrefix(constraint, ".") {
		return len(host) > len(constraint) && strings.EqualFold(host[len(host)-len(constraint):], constraint)
	}
	return strings.EqualFold(host, constraint)
}

// enforcer runs last before signing: it records the intent with the serial,
// then lints the to-be-signed certificate. A lint error ends the intent and
// nothing is signed.
type enforcer struct{ is *issuance }

func (e enforcer) Enforce(cert *x509.Certificate) error {
	is := e.is
	ctx := context.Background()
	id := is.req.Identity
	serial := cert.SerialNumber.Text(16)
	err := is.ca.cfg.Store.CreateIssuanceIntent(ctx, store.CertificateRecord{
		Serial: serial, Issuer: is.ca.cfg.Name, Profile: string(is.req.Profile), SPKISHA256: is.spki,
		PIVCertSHA256: id.PIVCertSHA256, FASCN: id.FASCN, CardUUID: id.CardUUID, PersonID: id.PersonID,
		CredentialSetID: is.req.CredentialSetID, NotBefore: cert.NotBefore, NotAfter: cert.NotAfter, CreatedAt: is.now,
	})
	if errors.Is(err, store.ErrConflict) {
		is.err = reusedKey(is.req.Profile)
		return is.err
	}
	if err != nil {
		is.err = fmt.Errorf("issuance: record intent: %w", err)
		return is.err
	}
	_, span := tracer().Start(is.ctx, "issuance.lint", trace.WithAttributes(
		attribute.String("credgw.profile", string(is.req.Profile)), attribute.String("credgw.serial", serial)))
	warnings, tbsHash, err := is.ca.linter.lint(cert, func(enc *x509.Certificate) error {
		return checkProfile(is.req.Profile, enc, is.ca.cfg.Chain, is.req.Identity.Email, is.derivedPolicy())
	})
	span.SetAttributes(attribute.Int("credgw.lint.warnings", len(warnings)))
	if err != nil {
		span.SetStatus(codes.Error, "lint refused the certificate")
		span.End()
		if is.ca.cfg.LintRefused != nil {
			is.ca.cfg.LintRefused(is.req.Profile)
		}
		if merr := is.ca.cfg.Store.MarkLintFailed(ctx, serial, err.Error()); merr != nil {
			err = errors.Join(err, merr)
		}
		is.err = err
		return err
	}
	span.End()
	is.warnings = warnings
	is.tbsHash = &tbsHash
	is.ca.signer.allowIn(is.ctx, tbsHash)
	if is.ca.cfg.afterLint != nil {
		is.ca.cfg.afterLint(cert)
	}
	return nil
}

var oidSubjectAltName = asn1.ObjectIdentifier{2, 5, 29, 17}

// sanNames returns the URIs and rfc822Names of a template, whether Go's
// fields hold them or x509util encoded the SAN as an extra extension (it does
// so when a UPN otherName is present).
// sanNames returns the URIs and emails of a certificate's SAN, and a
// description of each other name in it but a UPN (the names no profile
// has: a FASC-N, a dNSName, a directoryName...).
func sanNames(cert *x509.Certificate) (uris, emails, others []string, err error) {
	for _, u := range cert.URIs {
		uris = append(uris, u.String())
	}
	emails = append(emails, cert.EmailAddresses...)
	for _, e := range cert.ExtraExtensions {
		if !e.Id.Equal(oidSubjectAltName) {
			continue
		}
		if e.Critical {
			return nil, nil, nil, errors.New("critical, but the subject is not empty")
		}
		var names []asn1.RawValue
		if rest, err := asn1.Unmarshal(e.Value, &names); err != nil || len(rest) > 0 {
			return nil, nil, nil, errors.New("not a GeneralNames SEQUENCE")
		}
		for _, n := range names {
			switch {
			case n.Class == asn1.ClassContextSpecific && n.Tag == 6:
				uris = append(uris, string(n.Bytes))
			case n.Class == asn1.ClassContextSpecific && n.Tag == 1:
				emails = append(emails, string(n.Bytes))
			case n.Class == asn1.ClassContextSpecific && n.Tag == 0:
				// otherName: type-id, then [0] EXPLICIT value.
				var typeID asn1.ObjectIdentifier
				if _, err := asn1.Unmarshal(n.Bytes, &typeID); err != nil {
					others = append(others, "an otherName that does not parse")
				} else if !typeID.Equal(oidUPN) {
					others = append(others, "an otherName "+typeID.String())
				}
			default:
				others = append(others, fmt.Sprintf("a name of tag [%d]", n.Tag))
			}
		}
	}
	return uris, emails, others, nil
}

// oidUPN is Microsoft's userPrincipalName otherName.
var oidUPN = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 311, 20, 2, 3}
