package issuance

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"sync/atomic"
	"text/template"
	"time"

	"github.com/credgw/credgw/store"
	"github.com/smallstep/certificates/authority"
	"github.com/smallstep/certificates/authority/provisioner"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"go.step.sm/crypto/x509util"
)

// Errors a caller branches on.
var (
	// ErrBadRequest means the request (CSR, identity) cannot be issued;
	// the message says why.
	ErrBadRequest = errors.New("issuance: request refused")
	// ErrKeyReused is the ErrBadRequest of a CSR whose key credgw has
	// certified before (one key, one certificate): the device makes a new
	// key and asks again.
	ErrKeyReused = errors.New("issuance: key certified before")
	// ErrLint means the to-be-signed certificate failed the lint: a
	// profile or template defect, not the caller's.
	ErrLint = errors.New("issuance: certificate failed pre-issuance lint")
	// ErrNoEmail means the profile needs an email of record and the PIV
	// identity has none.
	ErrNoEmail = errors.New("issuance: no email of record")
	// ErrRefused means the operator's profile template refused the
	// request (its fail function): a policy decision, with its message.
	ErrRefused = errors.New("issuance: refused by the profile template")
	// ErrOtherIssuer: a certificate recorded under a CA name no configured
	// key answers for (an earlier key left out of ca.retired).
	ErrOtherIssuer = errors.New("issuance: no configured CA key answers for this certificate")
)

// Issuer is credgw's CA as the rest of credgw sees it.
type Issuer interface {
	// Issue lints, signs and records one certificate.
	Issue(ctx context.Context, req Request) (*Issued, error)
	// Revoke revokes a certificate (or an intent left by a crash).
	Revoke(ctx context.Context, serial string, reason RevocationReason) error
	// Chain is the issuing CA certificate and its chain to the root.
	Chain() []*x509.Certificate
	// CheckCSR checks a request's CSR as Issue will.
	CheckCSR(ctx context.Context, req Request) error
}

// Identity is the verified PIV identity a certificate is issued for.
type Identity struct {
	// RawSubject is the PIV Authentication certificate's subject DN: the
	// derived certificates carry the same name.
	RawSubject    []byte
	Email         string // email of record
	UPN           string
	PIVCertSHA256 string
	FASCN         []byte
	CardUUID      string
	PersonID      string
	// CardKey is the PIV Authentication certificate's public key: a CSR
	// may not reuse it.
	CardKey crypto.PublicKey
}

// Request asks for one certificate.
type Request struct {
	Profile  Profile
	CSR      *x509.CertificateRequest
	Identity Identity
	// CredentialSetID links the certificate to its enrollment.
	CredentialSetID string
	// HardwareBacked asks for …3.41; honoured only when the CA is
	// configured for hardware-backed devices.
	HardwareBacked bool
	// OtherKeys are the keys of the other certificates of the same
	// credential set: one key may not serve two profiles.
	OtherKeys []crypto.PublicKey
}

// Issued is a signed and recorded certificate.
type Issued struct {
	Certificate  *x509.Certificate
	Chain        []*x509.Certificate
	LintWarnings []string
}

// Config builds a CA.
type Config struct {
	// Name identifies the issuing CA in the store and in URLs.
	Name string
	// Chain is the issuing CA certificate first, then up to the root.
	Chain []*x509.Certificate
	// Signer is the issuing CA's key (an HSM key through pkcs11/).
	Signer crypto.Signer
	Store  store.IssuanceStore
	// BaseURL is the public http URL of credgw's plain-HTTP listener: the
	// certificates' OCSP, caIssuers and CRL DP URLs are under it.
	BaseURL string
	// Validity of issued certificates (default 365 days, at most 1096).
	Validity time.Duration
	// HardwareBackedDevices allows …3.41 for devices that say their keys
	// are in hardware (Common Policy: AAL3 needs in-person issuance; enable
	// only if the agency's process provides it).
	HardwareBackedDevices bool
	// Templates overrides profile templates.
	Templates map[Profile]string
	// Now is the clock.
	Now func() time.Time
	// Hooks the gateway counts with (nil: none). Issued is called for each
	// certificate signed and recorded, LintRefused for each certificate
	// the pre-issuance lint refused, with the profile; Signed with the
	// duration of each signature by the CA key (certificates, CRLs, OCSP).
	Issued      func(profile Profile)
	LintRefused func(profile Profile)
	Signed      func(time.Duration)
	// OCSPTryLater is called for each OCSP request answered tryLater
	// because the signing budget (OCSPSignRate) was spent.
	OCSPTryLater func()
	// StatusUnavailable is called for each status request the CA could
	// not answer ("crl": served 503; "ocsp": tryLater or internalError)
	// because the store or the key failed, with the cause: relying
	// parties that fail closed refuse every credential meanwhile.
	StatusUnavailable func(kind string, err error)
	// StatusOnly makes a retired CA: an earlier key of the issuing CA,
	// kept to answer OCSP and sign CRLs for the certificates it issued
	// (at their URLs, under its Name) until they expire. It issues
	// nothing.
	StatusOnly bool
	// Retired are the status-only CAs of the issuing CA's earlier keys:
	// Handler serves their URLs too, and Revoke hands them their
	// certificates.
	Retired []*CA
	// afterSign runs between signing and recording (crash tests).
	afterSign func(serial string) error
	// afterLint runs after the lint passed (tests change the certificate).
	afterLint func(cert *x509.Certificate)
	// afterCRL sees every CRL the CA signs (tests lint them).
	afterCRL func(der []byte)
	// noOCSPCache signs every OCSP response (the benchmark's baseline).
	noOCSPCache bool
}

// MaxValidity is the Common Policy ceiling (SSP profile: 1096 days).
const MaxValidity = 1096 * 24 * time.Hour

// DefaultValidity is one year.
const DefaultValidity = 365 * 24 * time.Hour

// CA is the issuing CA on the smallstep embedded authority.
type CA struct {
	cfg       Config
	auth      *authority.Authority
	linter    *linter
	signer    *lintedOnly // the CA key as the authority sees it
	templates map[Profile]*template.Template
	ocsp      *ocspResponder
	// lastCRL is the last CRL this CA served: served again while the
	// store is away, until its nextUpdate (currentCRL).
	lastCRL atomic.Pointer[store.StoredCRL]
	// ownCRLNumber is the number of the last stored CRL found signed by
	// this CA's key (ownCRL).
	ownCRLNumber atomic.Int64
}

var _ Issuer = (*CA)(nil)

// NewCA checks cfg, checks that the signer is the CA certificate's key, and
// builds the authority once.
func NewCA(cfg Config) (*CA, error) {
	if cfg.Name == "" || strings.ContainsAny(cfg.Name, "/ ") {
		return nil, fmt.Errorf("issuance: CA name %q: a word without slashes or spaces", cfg.Name)
	}
	if len(cfg.Chain) == 0 || cfg.Signer == nil || cfg.Store == nil {
		return nil, errors.New("issuance: a CA needs its certificate chain, its signer and a store")
	}
	ca := cfg.Chain[0]
	if !ca.IsCA || ca.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, errors.New("issuance: the first certificate of the chain is not a CA certificate with keyCertSign")
	}
	if pub, ok := cfg.Signer.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(ca.PublicKey) {
		return nil, fmt.Errorf("issuance: the CA key does not match the CA certificate %q: check ca.key and ca.certificate_file", ca.Subject)
	}
	if !strings.HasPrefix(cfg.BaseURL, "http://") {
		return nil, fmt.Errorf("issuance: base URL %q: the profiles require http AIA and CRL DP URLs", cfg.BaseURL)
	}
	// What ca import checks, again at every start: the chain files may
	// have been replaced, or ca.hardware_backed_devices turned on since.
	if missing, mapped := pathMissingPolicies(cfg.Chain, IssuedPolicies(cfg.HardwareBackedDevices)); !cfg.StatusOnly && len(missing) > 0 && !mapped {
		return nil, fmt.Errorf("issuance: the issuing CA's path to its root does not allow %s, which credgw would issue under: a CA certificate on it asserts neither the policy nor anyPolicy; relying parties that check policies would refuse the certificates (get a path that asserts them, or leave ca.hardware_backed_devices off for …3.41)",
			strings.Join(missing, ", "))
	}
	cfg.BaseURL = strings.TrimSuffix(cfg.BaseURL, "/")
	if cfg.Validity == 0 {
		cfg.Validity = DefaultValidity
	}
	if cfg.Validity < time.Hour || cfg.Validity > MaxValidity {
		return nil, fmt.Errorf("issuance: validity %s: between 1h and 1096 days", cfg.Validity)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	// Templates are parsed once (x509util.WithTemplate would parse and
	// build its function map on every certificate).
	templates := map[Profile]*template.Template{}
	for _, p := range Profiles() {
		text := defaultTemplates[p]
		if t, ok := cfg.Templates[p]; ok && t != "" {
			text = t
		}
		tmpl, err := parseTemplate(p, text)
		if err != nil {
			return nil, err
		}
		templates[p] = tmpl
	}
	// Every signature by the CA key is traced and timed.
	cfg.Signer = &observedSigner{key: cfg.Signer, signed: cfg.Signed}
	root := cfg.Chain[len(cfg.Chain)-1]
	chain := cfg.Chain
	signer := &lintedOnly{key: cfg.Signer}
	auth, err := authority.NewEmbedded(
		authority.WithX509SignerFunc(func() ([]*x509.Certificate, crypto.Signer, error) { return chain, signer, nil }),
		authority.WithX509RootCerts(root),
	)
	if err != nil {
		return nil, fmt.Errorf("issuance: authority: %w", err)
	}
	l, err := newLinter(ca)
	if err != nil {
		return nil, err
	}
	responder, err := newOCSPResponder(ca)
	if err != nil {
		return nil, err
	}
	return &CA{cfg: cfg, auth: auth, linter: l, signer: signer, templates: templates, ocsp: responder}, nil
}

// Chain returns the issuing CA certificate and its chain.
func (c *CA) Chain() []*x509.Certificate { return c.cfg.Chain }

// Name is the issuing CA's name.
func (c *CA) Name() string { return c.cfg.Name }

// URLs of what the plain-HTTP listener serves for this CA.
func (c *CA) OCSPURL() string      { return c.cfg.BaseURL + "/ocsp/" + c.cfg.Name }
func (c *CA) CRLURL() string       { return c.cfg.BaseURL + "/crl/" + c.cfg.Name + ".crl" }
func (c *CA) CAIssuersURL() string { return c.cfg.BaseURL + "/ca/" + c.cfg.Name + ".p7c" }

// issuance carries one request through the authority's options, and the
// errors they find (the authority wraps them).
type issuance struct {
	// ctx is the Issue call's (its span): the authority's hooks get none.
	ctx      context.Context
	ca       *CA
	req      Request
	serial   *big.Int
	spki     string
	notAfter time.Time
	now      time.Time
	warnings []string
	// tbsHash is the SHA-256 of the TBSCertificate the lint passed: the
	// only one the CA key will sign for this issuance.
	tbsHash *[32]byte
	err     error
}

// notAfter is the end of a certificate issued at now. The validity counts
// from the backdated notBefore (the modifier's), so that ca.validity at its
// maximum stays within the profile's; never beyond the issuing CA.
func (c *CA) notAfter(now time.Time) time.Time {
	end := notBefore(now).Add(c.cfg.Validity)
	if caEnd := c.cfg.Chain[0].NotAfter; end.After(caEnd) {
		return caEnd
	}
	return end
}

// Issue runs the Boulder order: serial and intent, lint, sign, record.
func (c *CA) Issue(ctx context.Context, req Request) (*Issued, error) {
	if c.cfg.StatusOnly {
		return nil, fmt.Errorf("%w: CA %s is retired: it answers for its certificates and issues none", ErrRefused, c.cfg.Name)
	}
	rule, ok := rules[req.Profile]
	if !ok {
		return nil, fmt.Errorf("%w: unknown profile %q", ErrBadRequest, req.Profile)
	}
	if req.CSR == nil {
		return nil, fmt.Errorf("%w: no CSR", ErrBadRequest)
	}
	if len(req.Identity.RawSubject) == 0 {
		return nil, fmt.Errorf("%w: the PIV identity has no subject", ErrBadRequest)
	}
	if rule.needEmail && req.Identity.Email == "" {
		return nil, fmt.Errorf("%w: the %s certificate needs an rfc822Name, and the card gave none (its PIV Authentication and Digital Signature certificates carry no email)", ErrNoEmail, req.Profile)
	}
	ctx, span := tracer().Start(ctx, "issuance.issue", trace.WithAttributes(attribute.String("credgw.profile", string(req.Profile))))
	defer span.End()
	is := &issuance{ctx: ctx, ca: c, req: req, now: c.cfg.Now()}
	is.notAfter = c.notAfter(is.now)
	if err := is.checkCSR(); err != nil {
		return nil, err
	}
	var err error
	if is.serial, err = newSerial(); err != nil {
		return nil, err
	}
	data, err := is.templateData()
	if err != nil {
		return nil, err
	}
	chain, err := c.auth.SignWithContext(ctx, req.CSR, provisioner.SignOptions{},
		templateOption{tmpl: c.templates[req.Profile], data: data},
		csrValidator{is}, modifier{is}, validator{is}, enforcer{is})
	if is.tbsHash != nil {
		c.signer.forget(*is.tbsHash) // used, or never to be
	}
	if is.err != nil {
		span.SetStatus(codes.Error, "refused")
		return nil, is.err
	}
	if errors.Is(err, ErrNotLinted) {
		// Nothing was signed: close the intent as refused, or the sweep
		// would take it for a crash after signing and revoke it.
		err := fmt.Errorf("issuance: %w: the certificate changed after the lint", ErrNotLinted)
		if merr := c.cfg.Store.MarkLintFailed(context.WithoutCancel(ctx), is.serial.Text(16), err.Error()); merr != nil {
			err = errors.Join(err, merr)
		}
		return nil, err
	}
	if err != nil {
		var terr *x509util.TemplateError
		if errors.As(err, &terr) {
			return nil, fmt.Errorf("%w: %s", ErrRefused, terr.Message)
		}
		if cerr := req.CSR.CheckSignature(); cerr != nil {
			return nil, fmt.Errorf("%w: %s CSR: its signature does not verify (%v): sign the CSR with the key it carries", ErrBadRequest, req.Profile, cerr)
		}
		return nil, fmt.Errorf("issuance: sign: %w", err)
	}
	leaf := chain[0]
	serial := leaf.SerialNumber.Text(16)
	if c.cfg.afterSign != nil {
		if err := c.cfg.afterSign(serial); err != nil {
			return nil, err
		}
	}
	sum := sha256.Sum256(leaf.Raw)
	// Signed: record it even if the caller has gone.
	if err := c.cfg.Store.RecordIssued(context.WithoutCancel(ctx), serial, leaf.Raw, hex.EncodeToString(sum[:]), strings.Join(is.warnings, ","), c.cfg.Now()); err != nil {
		// The certificate is not returned; its intent row lets it be revoked.
		return nil, fmt.Errorf("issuance: record certificate %s: %w", serial, err)
	}
	span.SetAttributes(attribute.String("credgw.serial", serial))
	if c.cfg.Issued != nil {
		c.cfg.Issued(req.Profile)
	}
	return &Issued{Certificate: leaf, Chain: chain[1:], LintWarnings: is.warnings}, nil
}

// newSerial is a positive serial of 127 random bits: ≥ 64 random bits,
// ≤ 20 octets (Common Policy §7.1; CA/B BR 7.1).
func newSerial() (*big.Int, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return nil, err
	}
	b[0] &= 0x7f
	if b[0] == 0 {
		b[0] = 0x40
	}
	return new(big.Int).SetBytes(b), nil
}

// SPKIHash is the hex SHA-256 of a public key's SubjectPublicKeyInfo: how
// the store recognises a key it certified before.
func SPKIHash(pub crypto.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:]), nil
}

// subjectKeyID is RFC 5280 §4.2.1.2 method (1).
func subjectKeyID(pub crypto.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, err
	}
	var info struct {
		Algorithm asn1.RawValue
		PublicKey asn1.BitString
	}
	if _, err := asn1.Unmarshal(der, &info); err != nil {
		return nil, err
	}
	sum := sha1.Sum(info.PublicKey.Bytes)
	return sum[:], nil
}

// derivedPolicy is the one policy a derived PIV Authentication certificate
// asserts: …3.41 for a key attested in hardware on a CA that allows it,
// …3.40 otherwise.
func (is *issuance) derivedPolicy() asn1.ObjectIdentifier {
	if is.req.HardwareBacked && is.ca.cfg.HardwareBackedDevices {
		return oidDerivedPIVAuthHW
	}
	return oidDerivedPIVAuth
}

func (is *issuance) templateData() (x509util.TemplateData, error) {
	u := make([]byte, 16)
	if _, err := rand.Read(u); err != nil {
		return nil, err
	}
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	h := hex.EncodeToString(u)
	policy := is.derivedPolicy()
	_, isRSA := is.req.CSR.PublicKey.(*rsa.PublicKey)
	c := is.ca
	return x509util.TemplateData{
		"RawSubject": is.req.Identity.RawSubject,
		// SP 800-157 / Common Policy §3.1.1: a fresh UUID per certificate,
		// never the card's.
		"UUIDURN":               "urn:uuid:" + h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:],
		"Email":                 is.req.Identity.Email,
		"UPN":                   is.req.Identity.UPN,
		"RSAKey":                isRSA,
		"DerivedPIVAuthPolicy":  policy.String(),
		"OCSPServer":            []string{c.OCSPURL()},
		"IssuingCertificateURL": []string{c.CAIssuersURL()},
		"CRLDistributionPoints": []string{c.CRLURL()},
	}, nil
}

// templateOption feeds the profile template to x509util: what
// x509util.WithTemplate does, with a template parsed once.
type templateOption struct {
	tmpl *template.Template
	data x509util.TemplateData
}

func (t templateOption) Options(provisioner.SignOptions) []x509util.Option {
	return []x509util.Option{func(cr *x509.CertificateRequest, o *x509util.Options) error {
		// parseTemplate's "fail" keeps no state: one template serves all.
		buf := new(bytes.Buffer)
		t.data.SetCertificateRequest(cr)
		if err := t.tmpl.Execute(buf, t.data); err != nil {
			var terr *x509util.TemplateError
			if errors.As(err, &terr) {
				return terr
			}
			return fmt.Errorf("error executing template: %w", err)
		}
		o.CertBuffer = buf
		return nil
	}}
}

// notBefore is a certificate's notBefore for an issuance at now: a minute
// back, for relying parties whose clocks run a little behind.
func notBefore(now time.Time) time.Time { return now.Add(-time.Minute).Truncate(time.Second) }

// modifier sets what no template may choose: serial, validity (the
// authority issues notBefore == notAfter without it), key identifier, the
// exact subject DN of the card, and no CA bit.
type modifier struct{ is *issuance }

func (m modifier) Modify(cert *x509.Certificate, _ provisioner.SignOptions) error {
	is := m.is
	cert.SerialNumber = is.serial
	cert.NotBefore = notBefore(is.now)
	if ca := is.ca.cfg.Chain[0]; cert.NotBefore.Before(ca.NotBefore) {
		// Backdated, but never before its issuer: a device checks a key
		// history's certificate as of its own start.
		cert.NotBefore = ca.NotBefore
	}
	cert.NotAfter = is.notAfter.Truncate(time.Second)
	cert.RawSubject = is.req.Identity.RawSubject
	cert.IsCA, cert.BasicConstraintsValid = false, false
	// x509util marks a template SAN critical when its subject struct is
	// empty; the subject here is the card's DN, so RFC 5280 §4.2.1.6 wants
	// it non-critical.
	for i, e := range cert.ExtraExtensions {
		if e.Id.Equal(oidSubjectAltName) {
			cert.ExtraExtensions[i].Critical = false
		}
	}
	skid, err := subjectKeyID(cert.PublicKey)
	if err != nil {
		return err
	}
	cert.SubjectKeyId = skid
	// The signature algorithm the CA will use, decided here so that the
	// lint encodes the very TBSCertificate the CA key signs: smallstep's
	// softcas signs a leaf of an RSA CA with the algorithm that signed the
	// CA certificate (RSA-PSS, SHA-384…); Go's default otherwise.
	if ca := is.ca.cfg.Chain[0]; cert.SignatureAlgorithm == x509.UnknownSignatureAlgorithm {
		if _, ok := ca.PublicKey.(*rsa.PublicKey); ok {
			cert.SignatureAlgorithm = leafRSASignature(ca.SignatureAlgorithm)
		}
	}
	return nil
}

// leafRSASignature is the algorithm an RSA CA signs a leaf with, after
// the one that signed its own certificate: PKCS#1 v1.5 with that hash,
// and RSASSA-PSS only with SHA-256, the one PSS variant the Common Policy
// allows (COMMON §7.1.3; STANDARDS "CA signature algs"), so a CA
// certificate signed with RSA-PSS SHA-384 or SHA-512 signs its leaves
// with RSA-PSS SHA-256. Anything else is Go's default.
func leafRSASignature(a x509.SignatureAlgorithm) x509.SignatureAlgorithm {
	switch a {
	case x509.SHA256WithRSA, x509.SHA384WithRSA, x509.SHA512WithRSA, x509.SHA256WithRSAPSS:
		return a
	case x509.SHA384WithRSAPSS, x509.SHA512WithRSAPSS:
		return x509.SHA256WithRSAPSS
	}
	return x509.UnknownSignatureAlgorithm
}

// keyReused is ErrBadRequest and ErrKeyReused, with its own message.
type keyReused struct{ msg string }

func (e keyReused) Error() string { return e.msg }
func (e keyReused) Is(target error) bool {
	return target == ErrBadRequest || target == ErrKeyReused
}
