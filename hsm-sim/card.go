package hsmsim

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/credgw/credgw/piv"
	"github.com/credgw/credgw/pkcs11"
	"golang.org/x/crypto/ocsp"
)

// Variant is a kind of card, good or with exactly one defect.
type Variant string

// The card variants. Each bad one breaks exactly the check its name says.
const (
	Good        Variant = "good"
	Revoked     Variant = "revoked"       // the card's certificates are revoked at the issuer
	Expired     Variant = "expired"       // the card's certificates expired yesterday
	NotYetValid Variant = "not-yet-valid" // the card's certificates start tomorrow
	WrongPolicy Variant = "wrong-policy"  // PIV Auth asserts id-fpki-common-policy, not …3.13
	Untrusted   Variant = "untrusted"     // issued by a CA that does not chain to the configured root
	WrongKey    Variant = "wrong-key"     // the PIV Auth certificate certifies another key than 9A's

	// Key usage defects of the PIV Auth certificate (issue 14, point 6):
	// an EKU that does not allow client authentication, or a leaf that may
	// sign certificates or CRLs.
	EKUServerAuth  Variant = "eku-server-auth"  // EKU is serverAuth only
	EKUCodeSigning Variant = "eku-code-signing" // EKU is codeSigning only
	EKUCardAuth    Variant = "eku-card-auth"    // EKU is id-PIV-cardAuth only (a 9E profile on 9A)
	KUCertSign     Variant = "ku-cert-sign"     // keyUsage digitalSignature + keyCertSign, not a CA
	KUCRLSign      Variant = "ku-crl-sign"      // keyUsage digitalSignature + cRLSign, not a CA
)

// Variants lists every variant.
func Variants() []Variant {
	return []Variant{Good, Revoked, Expired, NotYetValid, WrongPolicy, Untrusted, WrongKey,
		EKUServerAuth, EKUCodeSigning, EKUCardAuth, KUCertSign, KUCRLSign}
}

// ParseVariant checks a variant name.
func ParseVariant(s string) (Variant, error) {
	for _, v := range Variants() {
		if string(v) == s {
			return v, nil
		}
	}
	names := make([]string, 0, len(Variants()))
	for _, v := range Variants() {
		names = append(names, string(v))
	}
	return "", fmt.Errorf("hsmsim: unknown card variant %q: use one of %s", s, strings.Join(names, ", "))
}

// CardSpec describes a card to make.
type CardSpec struct {
	// Name is the token label (≤ 32 bytes) and the cardholder's CN.
	Name string
	// PIN is the card PIN: 6–8 digits (FIPS 201-3 §4.3.1, SP 800-73-4).
	PIN []byte
	// Key is the type of all four keys (default p256).
	Key pkcs11.KeyType
	// Email, if set, goes in rfc822Name SANs; without it the card has no
	// Digital Signature and Key Management certificates (FIPS 201-3 §4.2.2:
	// they are mandatory only for cardholders with an email account).
	Email string
	// EmailOnlyInSignature keeps the email out of the PIV Authentication
	// certificate (many real cards): the Digital Signature certificate is
	// then the only place the email of record is found.
	EmailOnlyInSignature bool
	// UPN, if set, goes in the PIV Authentication certificate's SAN.
	UPN     string
	Variant Variant
	// FASCNIdentifier, if set, is the 14-digit agency code + system code +
	// credential number, to simulate a re-issued card of the same person.
	FASCNIdentifier string
	// ValidFor, if set, is how long the card's certificates are valid
	// (default a year).
	ValidFor time.Duration
}

// CardInfo is what hsm-sim records of a card.
type CardInfo struct {
	Name    string  `json:"name"`
	Variant Variant `json:"variant"`
	KeyType string  `json:"key_type"`
	// FASCN is the raw 25-byte FASC-N in hex.
	FASCN string `json:"fascn"`
	UUID  string `json:"uuid"`
	Email string `json:"email,omitempty"`
	UPN   string `json:"upn,omitempty"`
	// Serials maps PIV slot name ("9a" …) to certificate serial (hex).
	Serials map[string]string `json:"serials"`
	Issuer  string            `json:"issuer"`
	Created time.Time         `json:"created"`
}

// FASCNDecoded returns the card's FASC-N.
func (c *CardInfo) FASCNDecoded() (piv.FASCN, error) {
	b, err := hex.DecodeString(c.FASCN)
	if err != nil {
		return piv.FASCN{}, err
	}
	return piv.ParseFASCN(b)
}

// URI is the card's PKCS#11 URI (module and PIN source are the caller's).
func (c *CardInfo) URI(modulePath, pinFile string) string {
	u := &pkcs11.URI{Token: c.Name, ModulePath: modulePath, PINSource: pinFile}
	return u.String()
}

// certDir holds PEM copies of a card's certificates.
func (e *Env) certDir(name string) string { return filepath.Join(e.Dir, "cards", name) }

// NewCard makes a card: a token labelled spec.Name with keys generated on
// the token for 9A, 9C (CKA_ALWAYS_AUTHENTICATE), 9D and 9E (usable without
// login, as on a card), certificates from the simulated issuer following the
// Common Policy profiles, stored under OpenSC's CKA_IDs and labels.
func (e *Env) NewCard(ctx context.Context, m *pkcs11.Module, spec CardSpec) (*CardInfo, error) {
	if err := validateCardSpec(&spec); err != nil {
		return nil, err
	}
	if st, err := e.readState(); err != nil {
		return nil, err
	} else if _, ok := st.Cards[spec.Name]; ok {
		return nil, fmt.Errorf("hsmsim: a card named %q exists already", spec.Name)
	}
	fascn, err := newFASCN(spec.FASCNIdentifier)
	if err != nil {
		return nil, err
	}
	fascnRaw, err := fascn.Marshal()
	if err != nil {
		return nil, err
	}
	cardUUID, err := newUUID()
	if err != nil {
		return nil, err
	}
	puk, err := randomDigits(8)
	if err != nil {
		return nil, err
	}
	if _, err := m.InitToken(spec.Name, puk, spec.PIN); err != nil {
		return nil, fmt.Errorf("hsmsim: card %q: %w", spec.Name, err)
	}
	if err := os.MkdirAll(e.certDir(spec.Name), 0o700); err != nil {
		return nil, err
	}
	// The PUK (SO PIN) is kept so that tests can unblock or re-initialise.
	if err := writeFileAtomic(filepath.Join(e.certDir(spec.Name), "puk"), append(puk, '\n'), 0o600); err != nil {
		return nil, err
	}
	tok, err := m.OpenToken(ctx, pkcs11.TokenConfig{Label: spec.Name, PIN: spec.PIN})
	if err != nil {
		return nil, err
	}
	defer tok.Close()

	slots := []pkcs11.PIVSlot{pkcs11.PIVAuthentication, pkcs11.PIVSignature, pkcs11.PIVKeyManagement, pkcs11.PIVCardAuthentication}
	keys := map[string]*pkcs11.Signer{}
	for _, slot := range slots {
		ks := pkcs11.KeySpec{
			Type:               spec.Key,
			ID:                 slot.ID,
			Label:              slot.PrivateLabel,
			PublicLabel:        slot.PublicLabel,
			AlwaysAuthenticate: slot.AlwaysAuthenticate,
			NoLogin:            !slot.PINRequired,
		}
		if slot.KeyRef == pkcs11.PIVKeyManagement.KeyRef {
			ks.Usage = pkcs11.UsageDecrypt
			if !spec.Key.IsRSA() {
				ks.Usage = pkcs11.UsageDerive
			}
		}
		k, err := tok.GenerateKeyPair(ctx, ks)
		if err != nil {
			return nil, fmt.Errorf("hsmsim: card %q: key %s: %w", spec.Name, slot.Name, err)
		}
		keys[slot.Name] = k
	}

	is := e.trusted
	if spec.Variant == Untrusted {
		is = e.untrusted
	}
	now := time.Now().Truncate(time.Second)
	notBefore, notAfter := now.Add(-time.Hour), now.AddDate(1, 0, 0)
	if spec.ValidFor > 0 {
		notAfter = now.Add(spec.ValidFor)
	}
	switch spec.Variant {
	case Expired:
		notBefore, notAfter = now.AddDate(-1, 0, 0), now.AddDate(0, 0, -1)
	case NotYetValid:
		notBefore, notAfter = now.AddDate(0, 0, 1), now.AddDate(1, 0, 1)
	}
	info := &CardInfo{
		Name: spec.Name, Variant: spec.Variant, KeyType: spec.Key.String(),
		FASCN: hex.EncodeToString(fascnRaw), UUID: cardUUID, Email: spec.Email, UPN: spec.UPN,
		Serials: map[string]string{}, Issuer: is.name, Created: now,
	}
	p := profileInput{spec: spec, fascn: fascnRaw, uuid: cardUUID, notBefore: notBefore, notAfter: notAfter, is: is, baseURL: e.BaseURL}
	for _, slot := range slots {
		tmpl, err := p.template(slot)
		if err != nil {
			return nil, err
		}
		if tmpl == nil {
			continue // no email: no Digital Signature or Key Management certificate
		}
		pub := keys[slot.Name].Public()
		if slot.KeyRef == pkcs11.PIVAuthentication.KeyRef && spec.Variant == WrongKey {
			other, err := otherKey(spec.Key)
			if err != nil {
				return nil, err
			}
			pub = other
		}
		cert, err := issue(tmpl, is.ca, pub, is.caKey)
		if err != nil {
			return nil, fmt.Errorf("hsmsim: card %q: certificate %s: %w", spec.Name, slot.Name, err)
		}
		if err := tok.ImportCertificate(ctx, slot.ID, slot.CertLabel, cert); err != nil {
			return nil, err
		}
		if err := writePEM(filepath.Join(e.certDir(spec.Name), slot.Name+".crt"), cert); err != nil {
			return nil, err
		}
		info.Serials[slot.Name] = cert.SerialNumber.Text(16)
	}
	err = e.update(func(st *state) error {
		if _, ok := st.Cards[spec.Name]; ok {
			return fmt.Errorf("hsmsim: a card named %q exists already", spec.Name)
		}
		st.Cards[spec.Name] = info
		if st.Certs[is.name] == nil {
			st.Certs[is.name] = map[string]*certRecord{}
		}
		for slot, serial := range info.Serials {
			st.Certs[is.name][serial] = &certRecord{Card: spec.Name, Slot: slot, NotAfter: notAfter}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if spec.Variant == Revoked {
		if err := e.RevokeCard(spec.Name, ocsp.KeyCompromise); err != nil {
			return nil, err
		}
	}
	return info, nil
}

func validateCardSpec(spec *CardSpec) error {
	if spec.Name == "" || len(spec.Name) > 32 || strings.ContainsAny(spec.Name, "/\\\x00") || spec.Name != strings.TrimSpace(spec.Name) {
		return fmt.Errorf("hsmsim: card name %q: use 1-32 bytes, no slashes, no leading or trailing spaces", spec.Name)
	}
	if len(spec.PIN) < 6 || len(spec.PIN) > 8 {
		return fmt.Errorf("hsmsim: card PIN must be 6 to 8 digits (FIPS 201-3 §4.3.1), got %d characters", len(spec.PIN))
	}
	for _, c := range spec.PIN {
		if c < '0' || c > '9' {
			return errors.New("hsmsim: card PIN must be digits only (SP 800-73-4 §2.4.3)")
		}
	}
	if spec.Key == 0 {
		spec.Key = pkcs11.ECP256
	}
	if spec.Variant == "" {
		spec.Variant = Good
	}
	if _, err := ParseVariant(string(spec.Variant)); err != nil {
		return err
	}
	if spec.Email != "" && (!strings.Contains(spec.Email, "@") || strings.ContainsAny(spec.Email, " <>\"")) {
		return fmt.Errorf("hsmsim: email %q is not an address", spec.Email)
	}
	return nil
}

// RevokeCard revokes every certificate of the card at its issuer; OCSP and the
// CRL reflect it at once. Revoking a revoked card is not an error.
func (e *Env) RevokeCard(name string, reason int) error {
	return e.update(func(st *state) error {
		card, ok := st.Cards[name]
		if !ok {
			return fmt.Errorf("hsmsim: no card named %q", name)
		}
		now := e.now().Truncate(time.Second)
		for _, serial := range card.Serials {
			rec := st.Certs[card.Issuer][serial]
			if rec != nil && rec.RevokedAt == nil {
				rec.RevokedAt = &now
				rec.Reason = reason
			}
		}
		return nil
	})
}

// Cards lists the environment's cards.
func (e *Env) Cards() ([]*CardInfo, error) {
	st, err := e.readState()
	if err != nil {
		return nil, err
	}
	out := make([]*CardInfo, 0, len(st.Cards))
	for _, c := range st.Cards {
		out = append(out, c)
	}
	return out, nil
}

// Card returns one card's record.
func (e *Env) Card(name string) (*CardInfo, error) {
	st, err := e.readState()
	if err != nil {
		return nil, err
	}
	c, ok := st.Cards[name]
	if !ok {
		return nil, fmt.Errorf("hsmsim: no card named %q in %s", name, e.Dir)
	}
	return c, nil
}

// CardCertificate reads a card's certificate for a slot ("9a" …) from the
// environment's copy.
func (e *Env) CardCertificate(name, slot string) (*x509.Certificate, error) {
	return readCert(filepath.Join(e.certDir(name), slot+".crt"))
}

// profileInput carries what the card profiles need.
type profileInput struct {
	spec                CardSpec
	fascn               []byte
	uuid                string
	notBefore, notAfter time.Time
	is                  *issuer
	baseURL             string
}

// template builds the certificate for a PIV slot per STANDARDS §3.3 (SSP
// profile v2.2 worksheets 6–9): nil for Digital Signature and Key
// Management when the cardholder has no email.
func (p profileInput) template(slot pkcs11.PIVSlot) (*x509.Certificate, error) {
	base := pkix.Name{
		Country:            []string{"US"},
		Organization:       []string{"U.S. Government"},
		OrganizationalUnit: []string{"credgw Simulated Agency"},
	}
	t := &x509.Certificate{
		NotBefore:             p.notBefore,
		NotAfter:              p.notAfter,
		BasicConstraintsValid: false,
		OCSPServer:            []string{p.baseURL + ocspPath()},
		IssuingCertificateURL: []string{p.baseURL + p7cPath(p.is.name)},
		CRLDistributionPoints: []string{p.baseURL + crlPath(p.is.name)},
	}
	subject := base
	subject.CommonName = p.spec.Name
	switch slot.KeyRef {
	case pkcs11.PIVAuthentication.KeyRef:
		t.Subject = subject
		t.KeyUsage = x509.KeyUsageDigitalSignature
		t.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
		t.UnknownExtKeyUsage = []asn1.ObjectIdentifier{piv.EKUSmartCardLogon, piv.EKUPKINITClientAuth}
		t.Policies = policies(piv.PolicyCommonAuthentication)
		switch p.spec.Variant {
		case WrongPolicy:
			t.Policies = policies(piv.PolicyCommonPolicy)
		case EKUServerAuth:
			t.ExtKeyUsage, t.UnknownExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, nil
		case EKUCodeSigning:
			t.ExtKeyUsage, t.UnknownExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageCodeSigning}, nil
		case EKUCardAuth:
			t.ExtKeyUsage, t.UnknownExtKeyUsage = nil, []asn1.ObjectIdentifier{piv.EKUPIVCardAuth}
		case KUCertSign:
			t.KeyUsage |= x509.KeyUsageCertSign
		case KUCRLSign:
			t.KeyUsage |= x509.KeyUsageCRLSign
		}
		san := piv.SAN{FASCN: p.fascn, UUIDs: []string{p.uuid}}
		if p.spec.UPN != "" {
			san.UPNs = []string{p.spec.UPN}
		}
		if p.spec.Email != "" && !p.spec.EmailOnlyInSignature {
			san.Emails = []string{p.spec.Email}
		}
		return p.withSAN(t, san)
	case pkcs11.PIVSignature.KeyRef:
		if p.spec.Email == "" {
			return nil, nil
		}
		t.Subject = subject
		t.KeyUsage = x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment
		t.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection}
		t.Policies = policies(piv.PolicyCommonHardware)
		return p.withSAN(t, piv.SAN{Emails: []string{p.spec.Email}})
	case pkcs11.PIVKeyManagement.KeyRef:
		if p.spec.Email == "" {
			return nil, nil
		}
		t.Subject = subject
		t.KeyUsage = x509.KeyUsageKeyAgreement
		if p.spec.Key.IsRSA() {
			t.KeyUsage = x509.KeyUsageKeyEncipherment
		}
		t.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection}
		// id-fpki-common-policy so that a software copy of the key (the
		// derived credential's key history) is allowed: SP 800-157r1 App. A.
		t.Policies = policies(piv.PolicyCommonPolicy)
		return p.withSAN(t, piv.SAN{Emails: []string{p.spec.Email}})
	case pkcs11.PIVCardAuthentication.KeyRef:
		// Base DN, serialNumber=UUID (Common Policy §3.1.1); the EKU is
		// critical and names id-PIV-cardAuth only.
		subject := base
		subject.SerialNumber = p.uuid
		t.Subject = subject
		t.KeyUsage = x509.KeyUsageDigitalSignature
		t.Policies = policies(piv.PolicyCommonCardAuth)
		eku, err := asn1.Marshal([]asn1.ObjectIdentifier{piv.EKUPIVCardAuth})
		if err != nil {
			return nil, err
		}
		t.ExtraExtensions = append(t.ExtraExtensions, pkix.Extension{Id: asn1.ObjectIdentifier{2, 5, 29, 37}, Critical: true, Value: eku})
		return p.withSAN(t, piv.SAN{FASCN: p.fascn, UUIDs: []string{p.uuid}})
	}
	return nil, fmt.Errorf("hsmsim: no profile for slot %s", slot.Name)
}

func (p profileInput) withSAN(t *x509.Certificate, san piv.SAN) (*x509.Certificate, error) {
	ext, err := piv.MarshalSAN(san)
	if err != nil {
		return nil, err
	}
	t.ExtraExtensions = append(t.ExtraExtensions, ext)
	return t, nil
}

// otherKey makes a software key of the same type for the wrong-key variant.
func otherKey(kt pkcs11.KeyType) (crypto.PublicKey, error) {
	curve := elliptic.P256()
	switch kt {
	case pkcs11.ECP384:
		curve = elliptic.P384()
	case pkcs11.RSA2048, pkcs11.RSA3072:
		k, err := rsaKey(kt)
		if err != nil {
			return nil, err
		}
		return k, nil
	}
	k, err := ecdsa.GenerateKey(curve, rand.Reader)
	if err != nil {
		return nil, err
	}
	return k.Public(), nil
}

func rsaKey(kt pkcs11.KeyType) (crypto.PublicKey, error) {
	bits := 2048
	if kt == pkcs11.RSA3072 {
		bits = 3072
	}
	k, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		return nil, err
	}
	return k.Public(), nil
}

// newFASCN makes a FASC-N for a simulated card: agency 9999 and system 9999
// unless an identifier is given, a random credential number, CS 0, ICI 1.
func newFASCN(identifier string) (piv.FASCN, error) {
	if identifier == "" {
		cn, err := randomDigits(6)
		if err != nil {
			return piv.FASCN{}, err
		}
		identifier = "99999999" + string(cn)
	}
	if len(identifier) != 14 || strings.Trim(identifier, "0123456789") != "" {
		return piv.FASCN{}, fmt.Errorf("hsmsim: FASC-N identifier %q: give 14 digits (agency code, system code, credential number)", identifier)
	}
	pi, err := randomDigits(10)
	if err != nil {
		return piv.FASCN{}, err
	}
	return piv.FASCN{
		AgencyCode: identifier[:4], SystemCode: identifier[4:8], CredentialNumber: identifier[8:],
		CredentialSeries: "0", IndividualCredentialIssue: "1", PersonIdentifier: string(pi),
		OrganizationalCategory: "1", OrganizationalIdentifier: identifier[:4], PersonOrgAssociation: "1",
	}, nil
}

func randomDigits(n int) ([]byte, error) {
	out := make([]byte, n)
	for i := range out {
		d, err := rand.Int(rand.Reader, big.NewInt(10))
		if err != nil {
			return nil, err
		}
		out[i] = byte('0' + d.Int64())
	}
	return out, nil
}

// newUUID is a random RFC 4122 version 4 UUID.
func newUUID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:], nil
}

// NewCAToken initialises a SoftHSM token for a CA key (and escrow KEK) with
// random PINs; the user PIN goes to pinFile (0600), the SO PIN beside it.
func (e *Env) NewCAToken(m *pkcs11.Module, label, pinFile string) error {
	pin, err := randomDigits(12)
	if err != nil {
		return err
	}
	so, err := randomDigits(12)
	if err != nil {
		return err
	}
	if _, err := m.InitToken(label, so, pin); err != nil {
		return fmt.Errorf("hsmsim: CA token %q: %w", label, err)
	}
	if err := os.MkdirAll(filepath.Dir(pinFile), 0o700); err != nil {
		return err
	}
	if err := writeFileAtomic(pinFile+".so", append(so, '\n'), 0o600); err != nil {
		return err
	}
	return writeFileAtomic(pinFile, append(pin, '\n'), 0o600)
}
