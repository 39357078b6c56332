package issuance

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"strings"
	"time"
)

// The issuing CA under a superior: a CSR for the HSM key, the checks on
// what the superior (the agency root) signed, and the root's CRL. In a real
// deployment the issuing CA is certified by the agency's or its SSP's root
// under the Federal Common Policy (STANDARDS.md §3.8), never self-rooted.

// ErrIssuingCA means a certificate offered as the issuing CA's is not one
// credgw can issue under; its message says what to ask the root operator
// for.
var ErrIssuingCA = errors.New("issuance: the issuing CA certificate is not usable")

// oidAnyPolicy is anyPolicy (RFC 5280 §4.2.1.4).
var oidAnyPolicy = asn1.ObjectIdentifier{2, 5, 29, 32, 0}

// IssuedPolicies are the certificate policies credgw's profiles assert: the
// issuing CA's certificate must allow each (or anyPolicy). …3.41 only when
// hardware-backed devices are enabled.
func IssuedPolicies(hardwareBackedDevices bool) []asn1.ObjectIdentifier {
	p := []asn1.ObjectIdentifier{oidCommonPolicy, oidDerivedPIVAuth}
	if hardwareBackedDevices {
		p = append(p, oidDerivedPIVAuthHW)
	}
	return p
}

// NameSuffix is a short key-derived suffix for default CA names (the first
// two bytes of the key identifier, in hex): two environments made with
// default names still get distinct issuer DNs, so a relying party or an NSS
// database that holds both never confuses them.
func NameSuffix(pub crypto.PublicKey) (string, error) {
	id, err := subjectKeyID(pub)
	if err != nil {
		return "", err
	}
	return hex.EncodeToString(id[:2]), nil
}

// IssuingCSR is the PKCS#10 request for the issuing CA key (an HSM signer):
// only the subject and the key. The superior decides the extensions;
// CheckIssuingCA then checks what it decided.
func IssuingCSR(key crypto.Signer, subject pkix.Name) ([]byte, error) {
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: subject}, key)
	if err != nil {
		return nil, fmt.Errorf("issuance: issuing CA CSR: %w", err)
	}
	return der, nil
}

// IssuingCARequirements are what the issuing CA certificate must allow.
type IssuingCARequirements struct {
	// Key is the issuing key (the HSM's public key).
	Key crypto.PublicKey
	// Validity is the longest leaf validity the CA will issue (ca.validity).
	Validity              time.Duration
	HardwareBackedDevices bool
	Now                   time.Time
	// Installed is the issuing CA certificate in use, if any: a
	// certificate for its key (a renewal) must keep its subject.
	Installed *x509.Certificate
}

// CheckIssuingCA checks a certificate the root operator signed for the
// issuing key, and its chain (issuer first, the self-signed root last).
// Each refusal wraps ErrIssuingCA and says what to ask the root operator for.
func CheckIssuingCA(cert *x509.Certificate, chain []*x509.Certificate, req IssuingCARequirements) error {
	refuse := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrIssuingCA, fmt.Sprintf(format, args...))
	}
	if pub, ok := cert.PublicKey.(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(req.Key) {
		return refuse("the certificate is for another key than the HSM's issuing key: ask the root operator to sign the CSR `credgw ca init --csr-out` wrote, unchanged")
	}
	if in := req.Installed; in != nil && bytes.Equal(in.RawSubjectPublicKeyInfo, cert.RawSubjectPublicKeyInfo) && !bytes.Equal(in.RawSubject, cert.RawSubject) {
		// The certificates issued so far name the installed subject as
		// their issuer; OCSP's name hash, the CRL's issuer and caIssuers
		// follow the CA certificate's (RFC 5280 §5.1.2.3, RFC 6960 §4.1.1).
		return refuse("the certificate renews the issuing key's certificate under another subject (%q, in use %q): the certificates already issued would get no OCSP answer or CRL: ask the root operator to keep the subject of the certificate in use", cert.Subject, in.Subject)
	}
	if !cert.BasicConstraintsValid || !cert.IsCA {
		return refuse("the certificate is not a CA certificate: ask the root operator for a subordinate CA certificate with basicConstraints cA TRUE, pathLenConstraint 0 (RFC 5280 §4.2.1.9)")
	}
	switch {
	case cert.MaxPathLen < 0 || (cert.MaxPathLen == 0 && !cert.MaxPathLenZero):
		return refuse("the certificate has no pathLenConstraint: ask the root operator for pathLenConstraint 0, since this CA issues only end-entity certificates (RFC 5280 §4.2.1.9)")
	case cert.MaxPathLen > 0:
		return refuse("the certificate allows pathLenConstraint %d: ask the root operator for pathLenConstraint 0, since this CA issues only end-entity certificates (RFC 5280 §4.2.1.9)", cert.MaxPathLen)
	}
	for _, e := range cert.Extensions {
		if e.Id.Equal(asn1.ObjectIdentifier{2, 5, 29, 15}) && !e.Critical {
			// Common Policy §6.1.7, RFC 5280 §4.2.1.3 (a CA's).
			return refuse("the certificate's keyUsage is not critical: ask the root operator to mark it critical (Common Policy §6.1.7, RFC 5280 §4.2.1.3)")
		}
	}
	if want := x509.KeyUsageCertSign | x509.KeyUsageCRLSign; cert.KeyUsage&want != want {
		return refuse("the certificate's keyUsage lacks keyCertSign or cRLSign: ask the root operator for keyUsage keyCertSign and cRLSign (and digitalSignature, for the CA's own OCSP responses) (RFC 5280 §4.2.1.3)")
	}
	if cert.KeyUsage&x509.KeyUsageDigitalSignature == 0 {
		// The issuing CA's key signs its OCSP responses itself.
		return refuse("the certificate's keyUsage lacks digitalSignature, which the CA's key needs to sign its own OCSP responses: ask the root operator for keyUsage digitalSignature, keyCertSign and cRLSign (RFC 5280 §4.2.1.3)")
	}
	if len(cert.ExtKeyUsage) > 0 || len(cert.UnknownExtKeyUsage) > 0 {
		// An EKU on a CA certificate constrains what it may issue for
		// (relying parties enforce it down the path), and none lists
		// all of clientAuth, emailProtection and smart-card logon
		// reliably across clients.
		if !slices.Contains(cert.ExtKeyUsage, x509.ExtKeyUsageAny) &&
			!(slices.Contains(cert.ExtKeyUsage, x509.ExtKeyUsageClientAuth) && slices.Contains(cert.ExtKeyUsage, x509.ExtKeyUsageEmailProtection)) {
			return refuse("the certificate's extendedKeyUsage does not allow clientAuth and emailProtection, which credgw's certificates carry: ask the root operator to leave the extension out of the subordinate CA certificate")
		}
	}
	if missing := missingPolicies(cert, IssuedPolicies(req.HardwareBackedDevices)); len(missing) > 0 {
		return refuse("the certificate's policies do not include %s, which credgw issues under: ask the root operator to include them (or anyPolicy) in certificatePolicies (RFC 5280 §4.2.1.4)", strings.Join(missing, ", "))
	}
	if !hasHTTP(cert.IssuingCertificateURL) {
		return refuse("the certificate has no http authorityInfoAccess caIssuers URL: ask the root operator to include one pointing at the root certificate (RFC 5280 §4.2.2.1)")
	}
	if !hasHTTP(cert.CRLDistributionPoints) {
		return refuse("the certificate has no http CRL distribution point: ask the root operator to include one, where the root's CRL is published (RFC 5280 §4.2.1.13)")
	}
	if req.Now.Before(cert.NotBefore) {
		return refuse("the certificate is not valid before %s: ask the root operator for one valid now", cert.NotBefore.UTC().Format(time.RFC3339))
	}
	if last := req.Now.Add(req.Validity); cert.NotAfter.Before(last) {
		return refuse("the certificate expires %s, before a leaf issued now would (ca.validity %s: %s): ask the root operator for a certificate valid until at least %s, or lower ca.validity",
			cert.NotAfter.UTC().Format(time.RFC3339), req.Validity, last.UTC().Format(time.RFC3339), last.UTC().Format(time.RFC3339))
	}
	if len(chain) == 0 {
		return refuse("no chain: give the root certificate (and any intermediate) the root operator sent")
	}
	root := chain[len(chain)-1]
	if root.CheckSignatureFrom(root) != nil || !slices.Equal(root.RawSubject, root.RawIssuer) {
		return refuse("the last certificate of the chain, %q, is not a self-signed root: ask the root operator for the full chain up to the root", root.Subject)
	}
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	roots.AddCert(root)
	for _, c := range chain[:len(chain)-1] {
		inter.AddCert(c)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: req.Now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return refuse("the certificate does not chain to the root %q: %v: ask the root operator for the chain that issued it", root.Subject, err)
	}
	if missing, mapped := pathMissingPolicies(append([]*x509.Certificate{cert}, chain...), IssuedPolicies(req.HardwareBackedDevices)); len(missing) > 0 && !mapped {
		return refuse("the path from the root does not allow %s, which credgw issues under: a CA certificate on it asserts neither the policy nor anyPolicy (or an inhibitAnyPolicy above it rules anyPolicy out), so relying parties that check policies refuse every certificate credgw makes: ask the root operator for a path that asserts them (RFC 5280 §6.1.3)", strings.Join(missing, ", "))
	}
	if errs, _, err := LintCACertificate(cert.Raw); err != nil {
		return refuse("%v", err)
	} else if len(errs) > 0 {
		return refuse("zlint finds %s: ask the root operator to correct the certificate", strings.Join(errs, "; "))
	}
	return nil
}

// pathMissingPolicies is RFC 5280 §6.1's policy processing, without
// policy mappings, for the CA certificates of path (the issuing CA first,
// the trust anchor last, whose own policies do not count): the policies of
// want that do not survive down to path[0]. A certificate keeps a policy
// when it asserts it, or anyPolicy while inhibit_anyPolicy allows
// (§6.1.3 (d), §6.1.4 (i)-(j)). mapped reports policy mappings on the
// path, which this does not follow.
func pathMissingPolicies(path []*x509.Certificate, want []asn1.ObjectIdentifier) (missing []string, mapped bool) {
	if len(path) < 2 {
		return nil, false
	}
	below := path[:len(path)-1] // the anchor's policies are not processed
	inhibit := len(below) + 1
	alive := slices.Clone(want)
	for i := len(below) - 1; i >= 0; i-- {
		c := below[i]
		mapped = mapped || len(c.PolicyMappings) > 0
		selfIssued := i > 0 && string(c.RawIssuer) == string(c.RawSubject)
		if !(hasPolicy(c, oidAnyPolicy) && (inhibit > 0 || selfIssued)) {
			alive = slices.DeleteFunc(alive, func(o asn1.ObjectIdentifier) bool { return !hasPolicy(c, o) })
		}
		if !selfIssued && inhibit > 0 {
			inhibit--
		}
		if (c.InhibitAnyPolicyZero || c.InhibitAnyPolicy > 0) && c.InhibitAnyPolicy < inhibit {
			inhibit = c.InhibitAnyPolicy
		}
	}
	for _, o := range want {
		if !slices.ContainsFunc(alive, o.Equal) {
			missing = append(missing, o.String())
		}
	}
	return missing, mapped
}

// hasPolicy reports whether c asserts o.
func hasPolicy(c *x509.Certificate, o asn1.ObjectIdentifier) bool {
	for _, p := range c.Policies {
		if p.EqualASN1OID(o) {
			return true
		}
	}
	return slices.ContainsFunc(c.PolicyIdentifiers, o.Equal)
}

func missingPolicies(cert *x509.Certificate, want []asn1.ObjectIdentifier) []string {
	has := func(o asn1.ObjectIdentifier) bool {
		for _, p := range cert.Policies {
			if p.Equal(mustOID(o)) {
				return true
			}
		}
		for _, p := range cert.PolicyIdentifiers {
			if p.Equal(o) {
				return true
			}
		}
		return false
	}
	if has(oidAnyPolicy) {
		return nil
	}
	var missing []string
	for _, o := range want {
		if !has(o) {
			missing = append(missing, o.String())
		}
	}
	return missing
}

func hasHTTP(urls []string) bool {
	for _, u := range urls {
		if strings.HasPrefix(u, "http://") {
			return true
		}
	}
	return false
}

// RootCRLOptions are the inputs of the root's CRL.
type RootCRLOptions struct {
	Root *x509.Certificate
	Key  crypto.Signer
	// NextUpdate is how long the CRL is good for (default 30 days).
	NextUpdate time.Duration
	// Previous, if given, is the root's last CRL: its entries are kept and
	// the new number is above its number.
	Previous *x509.RevocationList
	// Revoke adds entries (revocation time now, if zero).
	Revoke []x509.RevocationListEntry
	Now    time.Time
}

// DefaultRootCRLNextUpdate is how long a root CRL is good for: an offline
// root signs one at least monthly (Common Policy §4.9.7).
const DefaultRootCRLNextUpdate = 30 * 24 * time.Hour

// SignRootCRL signs the root's CRL with the offline root key: the CRL the
// issuing CA certificate's CRL DP points at, so that relying parties that
// check revocation along the whole path find it.
func SignRootCRL(o RootCRLOptions) ([]byte, error) {
	if o.Root == nil || o.Key == nil {
		return nil, errors.New("issuance: root CRL: the root certificate and key are required")
	}
	if pub, ok := o.Key.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(o.Root.PublicKey) {
		return nil, fmt.Errorf("issuance: root CRL: the key is not the key of %q", o.Root.Subject)
	}
	if !o.Root.IsCA || o.Root.KeyUsage&x509.KeyUsageCRLSign == 0 {
		return nil, fmt.Errorf("issuance: root CRL: %q is not a CA with keyUsage cRLSign", o.Root.Subject)
	}
	if o.NextUpdate == 0 {
		o.NextUpdate = DefaultRootCRLNextUpdate
	}
	now := o.Now.Truncate(time.Second)
	// The number is the time (monotonic across ceremonies without state),
	// above the previous one in any case.
	number := big.NewInt(now.Unix())
	var entries []x509.RevocationListEntry
	if p := o.Previous; p != nil {
		if err := p.CheckSignatureFrom(o.Root); err != nil {
			return nil, fmt.Errorf("issuance: root CRL: the previous CRL is not the root's: %w", err)
		}
		if p.Number != nil && p.Number.Cmp(number) >= 0 {
			number = new(big.Int).Add(p.Number, big.NewInt(1))
		}
		entries = append(entries, p.RevokedCertificateEntries...)
	}
	for _, e := range o.Revoke {
		if !RevocationReason(e.ReasonCode).forCA() {
			return nil, fmt.Errorf("issuance: root CRL: serial %x: reason code %d is not one for a CA certificate: use 0 (unspecified), 1 (keyCompromise), 2 (cACompromise), 3 (affiliationChanged), 4 (superseded), 5 (cessationOfOperation) or 9 (privilegeWithdrawn)",
				e.SerialNumber, e.ReasonCode)
		}
		if e.RevocationTime.IsZero() {
			e.RevocationTime = now
		}
		// RFC 5280 §5.1.2.4: no revocation later than thisUpdate.
		if e.RevocationTime.After(now) {
			e.RevocationTime = now
		}
		if slices.ContainsFunc(entries, func(x x509.RevocationListEntry) bool { return x.SerialNumber.Cmp(e.SerialNumber) == 0 }) {
			continue
		}
		entries = append(entries, e)
	}
	tmpl := &x509.RevocationList{
		Number: number, ThisUpdate: now, NextUpdate: now.Add(o.NextUpdate),
		RevokedCertificateEntries: entries,
	}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, o.Root, o.Key)
	if err != nil {
		return nil, fmt.Errorf("issuance: sign root CRL: %w", err)
	}
	return der, nil
}

// caSubject is a CA subject: C (optional), O, CN.
func caSubject(country, organization, cn string) pkix.Name {
	n := pkix.Name{Organization: []string{organization}, CommonName: cn}
	if country != "" {
		n.Country = []string{country}
	}
	return n
}
